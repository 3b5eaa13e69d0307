"""`BucketTable`: the token buckets of the disk store, in a memory-mapped file that every
process of the host maps (`buckets.shm` in the rate-limit store directory).

The protocol, all of it under an exclusive `flock` of the file:

* The file is a header (magic, slot count) and a fixed number of 40-byte slots: the key's
  16-byte BLAKE2b digest, tokens, stamp, expiry (floats, wall-clock seconds). A key's home
  slot comes from its digest; a take looks at up to `PROBE` slots from there (linear
  probing) and stops at a slot never used: slots are reused, never emptied, so no key
  lives beyond one.
* A key not found takes the first unused or expired slot of its window, else the
  stalest (the oldest stamp): a forgotten bucket starts full, which is what an expired
  one does too (it expires when it would be full again).
* The kernel drops a `flock` when its holder dies, however it dies, so a killed process
  never leaves the table locked. A slot is written by one `pack_into`; a process killed
  inside that copy could tear one slot, and a slot whose numbers are not finite reads as
  expired (a full bucket). The lock is held for microseconds; a holder that is stopped,
  not dead, makes a take give up after `LOCK_WAIT` seconds with `StoreUnavailable` (the
  rate limiter's local fallback answers) instead of blocking the event loop.
* The file is created at full size with its blocks allocated (`posix_fallocate`): a store
  into the map never meets a full disk, which would be SIGBUS rather than an error. A file
  of the wrong size or without the magic is rebuilt under the lock, every bucket full.
* The `flock` belongs to the open file: each process opens its own table (a forked child
  must not reuse its parent's); threads sharing one table queue on a thread lock first.

One take costs a few microseconds; the one-statement SQLite transaction it replaced cost
~75 µs on the event loop (bench/hit_costs.py, docs/benchmarks.md).
"""
from __future__ import annotations

import fcntl
import hashlib
import math
import mmap
import os
import struct
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from core.store import Bucket, StoreUnavailable, refill_and_take

MAGIC = b"shenlun-bucket-1"
SLOTS = 65_536          # 2.5 MiB; clients seen within a minute (an idle bucket expires then)
PROBE = 8               # slots a key may live in, from its home slot on
LOCK_WAIT = 0.2         # seconds a take waits for another process's lock before giving up
_HEADER = struct.Struct("<16sQ")
HEADER_SIZE = 64
_SLOT = struct.Struct("<16sddd")  # digest, tokens, stamp, expires
_UNUSED = bytes(16)


def table_size(slots: int) -> int:
    """Bytes of a table file with `slots` slots."""
    return HEADER_SIZE + slots * _SLOT.size


class BucketTable:
    """Token buckets shared by the processes of one host through one mapped file."""

    def __init__(self, path: Path, *, slots: int = SLOTS) -> None:
        self.path = Path(path)
        self.slots = slots
        self.size = table_size(slots)
        self._header = _HEADER.pack(MAGIC, slots)
        self._threads = threading.Lock()
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            with self.locked():  # mapped under the lock: nobody rebuilds it meanwhile
                self._ensure_table()
                self._map = mmap.mmap(self._fd, self.size, mmap.MAP_SHARED)
        except BaseException:
            os.close(self._fd)
            raise

    @contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the table's lock (every process's takes wait meanwhile)."""
        self._lock()
        try:
            yield
        finally:
            self._unlock()

    def _lock(self) -> None:
        # The flock excludes other open files, not threads sharing this one: those
        # queue on a lock of their own first.
        self._threads.acquire()
        try:
            fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                self._wait_for_lock()
            except BaseException:
                self._threads.release()
                raise

    def _unlock(self) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)
        self._threads.release()

    def _wait_for_lock(self) -> None:
        deadline = time.monotonic() + LOCK_WAIT
        while True:
            time.sleep(0.0001)
            try:
                fcntl.flock(self._fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                return
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise StoreUnavailable("token bucket table locked by a stalled process") from None

    def _ensure_table(self) -> None:
        """Under the lock: rebuild the file unless it has our size and header."""
        if os.fstat(self._fd).st_size == self.size and os.pread(self._fd, _HEADER.size, 0) == self._header:
            return
        os.ftruncate(self._fd, 0)  # every slot unused: every bucket full
        os.posix_fallocate(self._fd, 0, self.size)
        os.pwrite(self._fd, self._header, 0)

    def take(self, key: str, *, capacity: float, per_second: float, now: float | None = None) -> Bucket:
        """Take one token from the bucket `key` (atomic across the host's processes)."""
        digest = hashlib.blake2b(key.encode(), digest_size=16).digest()
        home = int.from_bytes(digest[:8], "little")
        slots, mm, unpack = self.slots, self._map, _SLOT.unpack_from
        self._lock()  # not `locked()`: its generator costs as much as the lock itself
        try:
            now = time.time() if now is None else now
            if os.fstat(self._fd).st_size != self.size or mm[:_HEADER.size] != self._header:
                self._ensure_table()  # cut short or overwritten under us
            tokens, stamp = float(capacity), now   # a new bucket starts full
            chosen = stalest = -1
            stalest_stamp = math.inf
            for probe in range(PROBE):
                offset = HEADER_SIZE + (home + probe) % slots * _SLOT.size
                slot_digest, slot_tokens, slot_stamp, expires = unpack(mm, offset)
                if slot_digest == digest:
                    chosen = offset
                    if math.isfinite(slot_tokens) and math.isfinite(slot_stamp):
                        tokens, stamp = slot_tokens, slot_stamp
                    break
                if slot_digest == _UNUSED:  # never used: the key is not further on
                    chosen = offset if chosen < 0 else chosen
                    break
                if chosen < 0 and not expires >= now:  # expired (or torn: NaN)
                    chosen = offset
                elif slot_stamp < stalest_stamp:
                    stalest, stalest_stamp = offset, slot_stamp
            if chosen < 0:
                chosen = stalest
            bucket = refill_and_take(tokens, stamp, now, capacity=capacity, per_second=per_second)
            _SLOT.pack_into(mm, chosen, digest, bucket.tokens, now, now + capacity / per_second)
        finally:
            self._unlock()
        return bucket

    def close(self) -> None:
        """Unmap and close the file (the buckets stay in it)."""
        self._map.close()
        os.close(self._fd)
