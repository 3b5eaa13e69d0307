"""The data directory's disk as a named state: "ok", "full" or "read_only".

A full or failing disk is a degraded state, not a crash. Writes that cannot be made are
refused before they start (`InsufficientStorage`, 507), and a write that fails half-way
is rolled back by whoever made it (SQLite's transaction, Whoosh's uncommitted segment)
and reported the same way; reads never consult this. The shared store treats the state
like a Redis outage (see core/store/).

The state comes from `statvfs` (free bytes below `reserve_bytes` is "full", a read-only
mount is "read_only") and from write failures seen by this process (ENOSPC, EROFS, EIO,
SQLite's "database or disk is full"…), which are remembered for FAILURE_HOLD_SECONDS
unless space grows meanwhile. Nothing needs a restart: once space returns the next look
says "ok". One object per process (per data directory), built by core/context.py.
"""
from __future__ import annotations

import errno
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from core.errors import InsufficientStorage

log = logging.getLogger("shenlun.disk")

OK, FULL, READ_ONLY = "ok", "full", "read_only"
# Below this many free bytes a write is refused up front: an add of a big batch, its
# index segment and SQLite's WAL need room, and a disk at its last bytes stalls anyway.
RESERVE_BYTES = 1 << 20
FAILURE_HOLD_SECONDS = 2.0  # how long a failed write marks the disk, unless space grows
STAT_SECONDS = 0.25         # statvfs is cached this long: it is asked on every shared-store call

_FULL_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT})
_READ_ONLY_ERRNOS = frozenset({errno.EROFS, errno.EIO})
_MESSAGES = {
    FULL: InsufficientStorage.message,
    READ_ONLY: "数据目录所在磁盘只读或读写出错，暂时无法写入（查询不受影响）",
}


@dataclass(frozen=True)
class DiskState:
    """What /health reports about the data directory."""

    state: str        # OK, FULL or READ_ONLY
    free_bytes: int


def classify(exc: BaseException | None) -> str | None:
    """FULL or READ_ONLY when `exc` (or an exception it was raised from) says the disk
    refused a write; None for any other failure."""
    seen = 0
    while exc is not None and seen < 8:
        if isinstance(exc, OSError) and exc.errno is not None:
            if exc.errno in _FULL_ERRNOS:
                return FULL
            if exc.errno in _READ_ONLY_ERRNOS:
                return READ_ONLY
        if isinstance(exc, sqlite3.OperationalError):
            text = str(exc)
            if "disk is full" in text:
                return FULL
            if "readonly database" in text or "disk I/O error" in text:
                return READ_ONLY
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None


def refusal(state: str) -> InsufficientStorage:
    """The 507 answer for a write refused because the disk is in `state`."""
    return InsufficientStorage(_MESSAGES.get(state, _MESSAGES[FULL]))


class DataDisk:
    """The disk under one data directory, as this process sees it."""

    def __init__(self, path: Path, *, reserve_bytes: int = RESERVE_BYTES) -> None:
        self.path = Path(path)
        self.reserve_bytes = reserve_bytes
        self._lock = threading.Lock()
        self._stat: tuple[float, DiskState] | None = None  # (when, from statvfs)
        self._failure: tuple[float, str, int] | None = None  # (when, state, free bytes then)
        self._reported = OK

    def state(self) -> DiskState:
        """The disk's state now (statvfs at most STAT_SECONDS old, plus recent failures).
        Cheap enough for the event loop."""
        now = time.monotonic()
        cached = self._stat
        if cached is None or now - cached[0] >= STAT_SECONDS:
            cached = (now, self._statvfs())
            self._stat = cached
        seen = cached[1]
        failure = self._failure
        if seen.state == OK and failure is not None:
            when, state, free_then = failure
            if now - when < FAILURE_HOLD_SECONDS and seen.free_bytes <= free_then + self.reserve_bytes:
                seen = DiskState(state, seen.free_bytes)
            else:
                self._failure = None
        self._report(seen)
        return seen

    def _statvfs(self) -> DiskState:
        try:
            st = os.statvfs(self.path)
        except OSError as exc:
            return DiskState(classify(exc) or READ_ONLY, 0)
        free = st.f_bavail * st.f_frsize
        if st.f_flag & os.ST_RDONLY:
            return DiskState(READ_ONLY, free)
        return DiskState(FULL if free < self.reserve_bytes else OK, free)

    def _report(self, seen: DiskState) -> None:
        # One log line per change of state and process, not one per refused request.
        with self._lock:
            if seen.state == self._reported:
                return
            before, self._reported = self._reported, seen.state
        if seen.state == OK:
            log.warning("data directory writable again (%d bytes free): writes and the shared "
                        "store restored", seen.free_bytes)
        else:
            log.warning("data directory disk %s (was %s, %d bytes free): writes answer 507, the "
                        "shared store is degraded (cache bypassed, local rate limit); reads go on",
                        seen.state, before, seen.free_bytes)

    @property
    def writable(self) -> bool:
        """Whether a write should be attempted now."""
        return self.state().state == OK

    def failed(self, exc: BaseException) -> str | None:
        """Record `exc` if it is the disk refusing a write; returns its state (or None)."""
        state = classify(exc)
        if state is not None:
            self._stat = None  # look again at once
            self._failure = (time.monotonic(), state, self._statvfs().free_bytes)
            self.state()
        return state

    def check_writable(self) -> None:
        """Raise InsufficientStorage (507) unless a write should be attempted now."""
        seen = self.state()
        if seen.state != OK:
            raise refusal(seen.state)

    @contextmanager
    def writing(self) -> Iterator[None]:
        """Refuse up front when the disk is not writable; turn the disk refusing a write
        inside the body into InsufficientStorage. Other errors pass unchanged."""
        self.check_writable()
        try:
            yield
        except Exception as exc:
            state = self.failed(exc)
            if state is None:
                raise
            raise refusal(state) from exc

    def probe(self) -> DiskState:
        """The state after a real write: a small file created, synced and removed in the
        data directory (catches what statvfs cannot see: quotas, I/O errors). Blocking:
        for /health, off the loop."""
        seen = self.state()
        if seen.state != OK:
            return seen
        probe = self.path / f".disk-probe-{os.getpid()}"
        try:
            with open(probe, "wb") as fh:
                fh.write(b"ok")
                fh.flush()
                os.fsync(fh.fileno())
            probe.unlink()
        except OSError as exc:
            if self.failed(exc) is None:
                raise
            try:
                probe.unlink()
            except OSError:
                pass
        return self.state()
