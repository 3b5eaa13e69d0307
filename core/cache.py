"""The LLM response cache: a diskcache directory shared by every process on the machine.

Entries expire after `CACHE_TTL_SECONDS`; at most `MAX_CACHE_SIZE` entries are kept
(least recently used evicted first) and the directory is bounded in bytes. Reads run
on the event loop (SQLite reads in WAL mode take microseconds and never wait for a
writer); writes go to the executor, since a write may wait for another process's lock.

A read does not write. diskcache's own LRU policy turns every hit into a write
transaction (it stamps `access_time`), which made a hit cost ~3x a plain read and
serialized the hits of every instance on the database's write lock. Instead, a hit
stamps `access_time` itself, off the loop, at most once per TOUCH_INTERVAL seconds per
key and process: the entry cap still evicts the least recently used, to within a second.
"""
from __future__ import annotations

import asyncio
import logging
import os
import time
from concurrent.futures import Executor
from pathlib import Path
from typing import Any

import diskcache

log = logging.getLogger("shenlun.cache")
TOUCH_INTERVAL = 1.0  # seconds: how stale a hit's recorded access time may be


class ResponseCache:
    """Cached chat answers keyed by a hash of everything that shapes the answer."""

    def __init__(self, directory: Path, *, ttl_seconds: int, max_entries: int, max_bytes: int,
                 executor: Executor) -> None:
        self.directory = Path(directory)
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._executor = executor
        self._cache = diskcache.Cache(
            str(self.directory), size_limit=max_bytes,
            # No write on a read (see the module docstring): access_time is set when an
            # entry is stored and refreshed by _touch, and the entry cap evicts by it.
            eviction_policy="least-recently-stored",
            timeout=5,
        )
        # The entry cap evicts by access_time; diskcache indexes it only under its LRU policy.
        self._cache._sql("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")
        self._touched: dict[str, float] = {}  # key → when this process last stamped it

    async def get(self, key: str) -> dict[str, Any] | None:
        """The cached value, or None (expired, evicted, missing or unreadable)."""
        try:
            value = self._cache.get(key, default=None, retry=True)
        except Exception:  # a damaged entry is a miss, never a failed request
            log.warning("cache read failed", exc_info=True)
            value = None
        if value is not None:
            self._touch(key)
        return value

    def _touch(self, key: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) > 4 * self.max_entries:
            self._touched.clear()
        self._touched[key] = now
        asyncio.get_running_loop().run_in_executor(self._executor, self._touch_sync, key)

    def _touch_sync(self, key: str) -> None:
        try:
            # raw = 1: diskcache stores str keys as themselves (schema of diskcache 5.x).
            self._cache._sql("UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1",
                             (time.time(), key))
        except Exception:  # best effort: a missed stamp only ages the entry sooner
            log.debug("cache access stamp failed", exc_info=True)

    async def set(self, key: str, value: dict[str, Any]) -> None:
        """Store a complete answer; failures are logged, never raised to the user."""
        loop = asyncio.get_running_loop()
        try:
            await loop.run_in_executor(self._executor, self._set_sync, key, value)
        except Exception:
            log.warning("cache write failed", exc_info=True)

    def _set_sync(self, key: str, value: dict[str, Any]) -> None:
        self._cache.set(key, value, expire=self.ttl_seconds, retry=True)
        excess = len(self._cache) - self.max_entries
        if excess > 0:
            self._evict_least_recently_used(excess)

    def _evict_least_recently_used(self, count: int) -> None:
        # diskcache bounds bytes, not entries; its table keeps access_time for the
        # LRU policy, so the oldest keys come from there (schema of diskcache 5.x).
        expired = self._cache.expire()
        count -= expired
        if count <= 0:
            return
        rows = self._cache._sql(
            "SELECT key FROM Cache ORDER BY access_time LIMIT ?", (count,)).fetchall()
        for (key,) in rows:
            self._cache.delete(key, retry=True)

    def __len__(self) -> int:
        return len(self._cache)

    async def clear(self) -> int:
        """Remove every entry, for every process; returns how many were removed."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, lambda: self._cache.clear(retry=True))

    def check(self) -> None:
        """Raise unless an entry can be written and read back, and the directory
        itself takes a new file (as diskcache needs for large values)."""
        probe_key = f"health:{os.getpid()}"
        self._cache.set(probe_key, b"ok", expire=60, retry=True)
        if self._cache.get(probe_key) != b"ok":
            raise OSError("cache read-back mismatch")
        self._cache.delete(probe_key, retry=True)
        probe_file = self.directory / f".health-{os.getpid()}"
        probe_file.write_bytes(b"ok")
        if probe_file.read_bytes() != b"ok":
            raise OSError("cache directory read-back mismatch")
        probe_file.unlink()

    def close(self) -> None:
        self._cache.close()
