"""`DiskStore`: the shared store on a diskcache directory (STORE_BACKEND=diskcache).

Shared by the processes of one machine. Calls that take microseconds and never wait for
another process (reads, a token-bucket take) run inline on the event loop;
writes that may wait on another process's lock go to the executor. While
`core.ops.disk.DataDisk` says writes cannot be made, or a write fails because the disk
refused it, a call raises `StoreUnavailable`.
"""
from __future__ import annotations

import asyncio
import logging
import math
import os
import time
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from concurrent.futures import Executor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import diskcache

from core.ops.disk import DataDisk
from core.store import Bucket, StoreUnavailable
from core.store.buckets import BucketTable

log = logging.getLogger("shenlun.store")
TOUCH_INTERVAL = 1.0    # seconds: how stale a diskcache hit's recorded access time may be
CHECKPOINT_EVERY = 200  # cache entries written between two WAL checkpoints, per process
STORE_TIMEOUT = 5  # seconds a write waits for SQLite's lock (on the executor)
MEMO_MAX_CHARS = 65_536  # longer values are read from SQLite every time
CLEARED_MARKER = ".cleared"  # clear() touches it after emptying: every process drops its memo
CULL_LIMIT = 10  # entries a write evicts while the byte bound is reached (diskcache's default)
# A bounded store's eviction, one statement (RETURNING: SQLite >= 3.35): every expired
# entry, then the least recently used live ones, as many as bring the count to the
# entry cap, or CULL_LIMIT while the volume is over the byte bound. Count, size and
# volume are diskcache's own (Settings rows its triggers keep, expired entries counted;
# page_count as Cache.volume reads it); the IN list is made before a row goes. The
# live test is not indexable on purpose: SQLite walks access_time's index and stops at
# the limit (an indexable OR had it sort every live row: 1.5 ms at 2,000 entries); the
# expired query is written twice, as a WITH table SQLite materialised it (+20 µs).
EVICT_OVER_BOUNDS = """
DELETE FROM Cache WHERE rowid IN (
    SELECT rowid FROM Cache WHERE expire_time < :now
    UNION ALL
    SELECT rowid FROM (
        SELECT rowid FROM Cache WHERE ifnull(expire_time, :now) >= :now ORDER BY access_time
        LIMIT max(0, max((SELECT value FROM Settings WHERE key = 'count') - :cap,
                         CASE WHEN (SELECT value FROM Settings WHERE key = 'size')
                                   + (SELECT page_count FROM pragma_page_count) * :page_size
                                   >= :size_limit THEN :cull ELSE 0 END)
                     - (SELECT count(*) FROM Cache WHERE expire_time < :now))))
RETURNING key, filename
"""


class DiskStore:
    """A diskcache directory shared by the processes of one machine. A `bounded` store
    applies its bounds itself, by access_time: the entry cap a write names
    (`max_entries`) and `size_limit` in bytes (diskcache's `eviction_policy` unused)."""

    backend = "diskcache"

    def __init__(self, directory: Path, executor: Executor, *, size_limit: int = 2 ** 40,
                 eviction_policy: str = "none", bounded: bool = False,
                 disk: DataDisk | None = None, memo_entries: int = 0) -> None:
        self.directory = Path(directory)
        self._executor = executor
        self._disk = disk
        # No checkpoint inside a write: SQLite's autocheckpoint ran one (1–2 fdatasync,
        # up to tens of ms) in every ~200th cache write, the p99 of a miss; writes
        # checkpoint off the loop instead, every CHECKPOINT_EVERY (see set_many).
        options: dict[str, Any] = {"size_limit": size_limit, "eviction_policy": eviction_policy,
                                   "sqlite_wal_autocheckpoint": 0}
        self._bounded = bounded
        if bounded:
            # Both bounds are this store's (EVICT_OVER_BOUNDS, in the write's transaction):
            # diskcache's own cull in every set (an expired-row query, Cache.volume's two,
            # a store_time index to keep) was ~20 % of a write's CPU at the entry cap.
            options.update(eviction_policy="none", cull_limit=0)
        self._cache = diskcache.Cache(str(self.directory), timeout=STORE_TIMEOUT, **options)
        self._writes = 0
        self._checkpointing = False
        self._unwaiting: Any = None  # the connection _never_wait switched the busy handler off on
        if bounded:
            # The bounds evict by access_time; diskcache indexes it only under its LRU policy.
            self._cache._sql("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")
            # Made by diskcache's least-recently-stored policy, this store's before; unused.
            self._cache._sql("DROP INDEX IF EXISTS Cache_store_time")
        ((self._page_size,),) = self._cache._sql("PRAGMA page_size").fetchall()
        self._touched: dict[str, float] = {}  # key → when this process last stamped it
        # Hits whose stamp is still on its way to SQLite (the executor's thread may wake
        # late on a busy machine): a write that evicts applies them first, so a hit made
        # before it always counts (key → the hit's time).
        self._unstamped: dict[str, float] = {}
        self._buckets: BucketTable | None = None  # opened by the first take
        # The entries this process wrote or read last, with their expiry, so a repeated
        # hit skips SQLite (~10 % of a cache hit's CPU, bench/profile_hot_paths.py). A
        # clear in any process is seen through CLEARED_MARKER's mtime (one stat per get);
        # an entry another process evicted at the entry cap may still be answered from
        # here until its own expiry: it is still a valid answer.
        self._memo_entries = memo_entries
        self._memo: OrderedDict[str, tuple[Any, float]] = OrderedDict()
        self._marker = self.directory / CLEARED_MARKER
        self._memo_mark = self._cleared_mark()

    # --- a full or read-only disk: degraded like Redis down ---

    def _usable(self) -> None:
        """StoreUnavailable while the data directory cannot take writes."""
        if self._disk is not None and not self._disk.writable:
            raise StoreUnavailable("data directory not writable")

    @contextmanager
    def _writing(self) -> Iterator[None]:
        """Around a write, on the thread that makes it: refused up front while the disk
        cannot take it; the disk refusing it (SQLite rolled it back) is StoreUnavailable."""
        self._usable()
        try:
            yield
        except Exception as exc:
            if self._disk is None or self._disk.failed(exc) is None:
                raise
            raise StoreUnavailable(f"data directory refused a write ({type(exc).__name__})") from exc

    async def get(self, key: str) -> Any | None:
        self._usable()  # a full disk bypasses the cache, as a Redis outage does
        # A read does not write: diskcache's own LRU policy turns every hit into a write
        # transaction. A hit stamps access_time itself, off the loop, at most once per
        # TOUCH_INTERVAL per key and process; the entry cap evicts by it.
        held = self._held(key) if self._memo_entries else None
        if held is not None:
            self._touch(key)
            return held
        value, expires = self._cache.get(key, default=None, expire_time=True, retry=True)
        if value is not None:
            self._touch(key)
            self._remember(key, value, math.inf if expires is None else expires)
        return value

    def _held(self, key: str) -> Any | None:
        """The memo's live value for `key`, after dropping the memo if any process cleared."""
        mark = self._cleared_mark()  # before SQLite is read: a clear after it is seen next time
        if mark != self._memo_mark:
            self._memo.clear()
            self._memo_mark = mark
        held = self._memo.get(key)
        return held[0] if held is not None and held[1] > time.time() else None

    def _cleared_mark(self) -> int:
        try:
            return os.stat(self._marker).st_mtime_ns
        except FileNotFoundError:
            return 0

    def _remember(self, key: str, value: Any, expires: float) -> None:
        if not self._memo_entries:
            return
        if isinstance(value, str) and len(value) <= MEMO_MAX_CHARS:
            self._memo[key] = (value, expires)
            self._memo.move_to_end(key)
            if len(self._memo) > self._memo_entries:
                self._memo.popitem(last=False)
        else:
            self._memo.pop(key, None)

    def _touch(self, key: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) > 4096:
            self._touched.clear()
        self._touched[key] = now
        self._unstamped[key] = time.time()
        asyncio.get_running_loop().run_in_executor(self._executor, self._touch_sync, key)

    def _touch_sync(self, key: str) -> None:
        try:
            with self._writing():
                self._stamp(key, self._cache._sql)
        except Exception:  # best effort: a missed stamp only ages the entry sooner
            log.debug("cache access stamp failed", exc_info=True)

    def _stamp(self, key: str, sql: Any) -> None:
        """Write `key`'s pending hit stamp through `sql` (the connection's execute)."""
        stamp = self._unstamped.get(key)
        if stamp is not None:
            # raw = 1: diskcache stores str keys as themselves (schema of diskcache 5.x).
            sql("UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1", (stamp, key))
            # Only once it is in: until then a write on the other thread stamps it too.
            self._unstamped.pop(key, None)

    async def set(self, key: str, value: Any, *, ttl: float, max_entries: int | None = None) -> None:
        await self.set_many([(key, value)], ttl=ttl, max_entries=max_entries)

    async def set_many(self, items: Sequence[tuple[str, Any]], *, ttl: float,
                       max_entries: int | None = None) -> None:
        # Inline when SQLite's write lock is free at once: the write is ~0.35 ms of CPU at
        # the entry cap (bench/cache_write.py; about half of it SQLite's commit of ~16 WAL
        # pages) and no fsync (WAL, synchronous=NORMAL, no checkpoint in a write), where the
        # executor's round trip alone cost ~0.2 ms and its thread's wake-up made the
        # tail of a miss (bench/b2_cache_miss.py). When another process holds the lock,
        # the write waits for it on the executor, never on the loop.
        try:
            evicted = self._set_many_sync(items, ttl, max_entries, wait=False)
        except diskcache.Timeout:
            evicted = await self._off_loop(self._set_many_sync, items, ttl, max_entries)
        expires = time.time() + ttl
        for key, value in items:
            self._remember(key, value, expires)
        for key in evicted:  # what this write pushed out is gone from this process too
            self._memo.pop(key, None)
        self._writes += len(items)
        if self._writes >= CHECKPOINT_EVERY and not self._checkpointing:
            self._writes, self._checkpointing = 0, True
            asyncio.get_running_loop().run_in_executor(self._executor, self._checkpoint)

    def _set_many_sync(self, items: Sequence[tuple[str, Any]], ttl: float,
                       max_entries: int | None, wait: bool = True) -> list[str]:
        """Write `items` and apply the bound in one transaction, one commit. With `wait`
        False, diskcache.Timeout at once when the write lock is taken. Returns the keys
        the bound evicted."""
        # diskcache's own set for the insert (its file for a large value); the bounds in
        # one statement, where diskcache's cull, len, expire and a delete per key were
        # eight, and no busy_timeout switched off and on (bench/cache_write.py).
        if not wait:
            self._never_wait()
        with self._writing(), self._cache._transact(retry=wait) as (sql, cleanup):
            for key, value in items:
                self._cache.set(key, value, expire=ttl, retry=True)
            if not self._bounded:
                return []
            for key in list(self._unstamped):
                self._stamp(key, sql)
            rows = sql(EVICT_OVER_BOUNDS, {
                "now": time.time(), "cap": 2 ** 62 if max_entries is None else max_entries,
                "size_limit": self._cache.size_limit, "page_size": self._page_size, "cull": CULL_LIMIT}).fetchall()
            for _, filename in rows:
                cleanup(filename)  # diskcache removes the files once the commit is in
            return [key for key, _ in rows]

    def _never_wait(self) -> None:
        """The calling thread's connection (the loop's) without SQLite's busy handler, for
        good: a write lock another process holds fails a write there at once, instead of
        holding the loop up to the store's timeout."""
        # Once per connection, where switching it off and on around each write cost 5-9 %
        # of a write's CPU at the entry cap (two statements; bench/cache_write.py). Reads
        # there lose nothing: in WAL a reader never waits for a writer, and the lock that
        # would stop it (another connection's exclusive locking mode) cannot be taken
        # while this connection is open. A connection of the write's own was worse: each
        # write discarded the page cache of the loop's reading one (reads +60-100 µs).
        connection = self._cache._con
        if connection is not self._unwaiting:
            connection.execute("PRAGMA busy_timeout = 0")
            self._unwaiting = connection

    def _checkpoint(self) -> None:
        try:
            self._cache._sql("PRAGMA wal_checkpoint(PASSIVE)")
        except Exception:  # best effort: the next round tries again
            log.debug("cache checkpoint failed", exc_info=True)
        finally:
            self._checkpointing = False

    async def delete(self, key: str) -> None:
        self._memo.pop(key, None)
        await self._off_loop(self._write_sync, lambda: self._cache.delete(key, retry=True))

    async def clear(self) -> int:
        self._memo.clear()
        return int(await self._off_loop(self._write_sync, self._clear_sync))

    def _clear_sync(self) -> int:
        removed = self._cache.clear(retry=True)
        # After emptying: a process that sees the new mark and reads SQLite again finds
        # nothing; one that read an entry just before has it dropped at its next get.
        self._marker.touch()
        return int(removed)

    def _write_sync(self, write: Any) -> Any:
        with self._writing():
            return write()

    async def count(self) -> int:
        return len(self._cache)

    async def take(self, key: str, *, capacity: float, per_second: float,
                   now: float | None = None) -> Bucket:
        # Inline: a few µs in the shared mapped table (core/store/buckets.py), whose lock
        # makes it atomic across processes, so N processes together admit what one would.
        # Its blocks are allocated when it is made: only that can meet a full disk.
        self._usable()  # degraded with the rest of the store while the disk is
        if self._buckets is None:
            with self._writing():
                self._buckets = BucketTable(self.directory / "buckets.shm")
        return self._buckets.take(key, capacity=capacity, per_second=per_second, now=now)

    async def publish(self, key: str, value: dict[str, Any], *, ttl: float) -> None:
        await self._off_loop(self._write_sync,
                             lambda: self._cache.set(key, value, expire=ttl, retry=True))

    async def snapshots(self) -> list[dict[str, Any]]:
        self._usable()  # as with Redis down: the fleet view shows this instance only
        rows: list[dict[str, Any]] = await self._off_loop(self._snapshots_sync)
        return rows

    def _snapshots_sync(self) -> list[dict[str, Any]]:
        rows = []
        for key in sorted(self._cache.iterkeys()):
            value = self._cache.get(key)
            if value is not None:
                rows.append(value)
        return rows

    async def ping(self) -> None:
        # A local directory: reachable unless its disk refuses writes (/health's cache
        # probe checks the rest properly).
        self._usable()

    def check_sync(self) -> None:
        """Raise unless an entry can be written and read back, and the directory itself
        takes a new file (as diskcache needs for large values). For /health, off the loop."""
        probe_key = f"health:{id(self)}"
        with self._writing():  # a full disk: StoreUnavailable, which /health reads "degraded"
            self._cache.set(probe_key, b"ok", expire=60, retry=True)
            if self._cache.get(probe_key) != b"ok":
                raise OSError("store read-back mismatch")
            self._cache.delete(probe_key, retry=True)
            probe_file = self.directory / f".health-{os.getpid()}"
            probe_file.write_bytes(b"ok")
            if probe_file.read_bytes() != b"ok":
                raise OSError("store directory read-back mismatch")
            probe_file.unlink()

    async def _off_loop(self, fn: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._cache.close()
        if self._buckets is not None:
            self._buckets.close()
            self._buckets = None
