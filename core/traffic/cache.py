"""The LLM response cache, on the shared store (diskcache per machine, or Redis).

Entries expire after `CACHE_TTL_SECONDS`; at most `MAX_CACHE_SIZE` entries are kept
(least recently used evicted first). On diskcache the directory is also bounded in
bytes, reads run on the event loop and writes on the executor (see `core.store`).

When the store is unreachable (Redis down) `get` raises `StoreUnavailable` and the
chat answers without the cache (X-Cache: BYPASS); writes are dropped. Any other read
failure (a damaged entry) is a miss, never a failed request.
"""
from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.store import SharedStore, StoreUnavailable
from core.store.disk import DiskStore

log = logging.getLogger("shenlun.cache")


class ResponseCache:
    """Cached chat answers keyed by a hash of everything that shapes the answer."""

    def __init__(self, store: SharedStore, *, ttl_seconds: int, max_entries: int) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._last_count = 0  # reported while the store is unreachable

    @property
    def directory(self) -> Path | None:
        """The cache directory (diskcache backend), else None."""
        return self.store.directory if isinstance(self.store, DiskStore) else None

    async def get(self, key: str) -> Any | None:
        """The cached value, or None (expired, evicted, missing or unreadable).

        Raises StoreUnavailable when the shared store cannot be reached."""
        try:
            return await self.store.get(key)
        except StoreUnavailable:
            raise
        except Exception:  # a damaged entry is a miss, never a failed request
            log.warning("cache read failed", exc_info=True)
            return None

    async def set(self, key: str, value: Any) -> None:
        """Store a complete answer; failures are logged, never raised to the user."""
        try:
            await self.store.set(key, value, ttl=self.ttl_seconds, max_entries=self.max_entries)
        except StoreUnavailable:
            log.debug("cache write skipped: store unavailable")
        except Exception:
            log.warning("cache write failed", exc_info=True)

    async def count(self) -> int:
        """Live entries (the last known figure while the store is unreachable)."""
        try:
            self._last_count = await self.store.count()
        except StoreUnavailable:
            pass
        return self._last_count

    async def clear(self) -> int:
        """Remove every entry, for every process; returns how many were removed.

        Raises StoreUnavailable when the shared store cannot be reached."""
        return await self.store.clear()

    def check(self) -> None:
        """Raise unless the cache store takes a write and reads it back (see
        `DiskStore.check_sync`). Blocking: run it off the loop. A no-op on Redis, whose
        reachability is the `store` check."""
        if isinstance(self.store, DiskStore):
            self.store.check_sync()
