"""The LLM response cache, on the shared store (diskcache per machine, or Redis).

Entries expire after `CACHE_TTL_SECONDS`; at most `MAX_CACHE_SIZE` entries are kept
(least recently used evicted first). On diskcache the directory is also bounded in
bytes, reads run on the event loop and writes on the executor (see `core.store`).

When the store is unreachable (Redis down) `get` raises `StoreUnavailable` and the
chat answers without the cache (X-Cache: BYPASS); writes are dropped. Any other read
failure (a damaged entry) is a miss, never a failed request.

Writes of one process go to the store one batch at a time (group commit): a `put`
opens a batch that is written WRITE_DELAY later, in one `set_many` (one transaction on
diskcache), with every `put` made meanwhile; one made while a batch is being written
joins the next. Under load the writes of many misses share one commit instead of each
waiting in SQLite's busy handler for the others; one miss alone is written while the
loop would be idle (waiting for the next request's upstream), not ahead of the next
request. `set` returns when its batch is in the store.

A miss's answer is not held back for its write: the chat service `put`s it (the write
is scheduled, not awaited), so the answer goes out first and the write follows ~2 ms
later. Until it is in the store, `get` in this process answers from the entries not yet
written, so a repeat here hits at once (one read while its write is under way writes it
again: the entry cap evicts by the last use, which a hit stamps in the store and this
read could not); a repeat sent to another process or host within that window misses and
asks the model again (its answer is cached too, the last write wins). `flush()` waits
for the writes still out (before the store closes).
"""
from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

from core.store import SharedStore, StoreUnavailable
from core.store.disk import DiskStore

log = logging.getLogger("shenlun.cache")
# How long a batch waits for more writes before it goes to the store. At c=1 the write
# (~0.35 ms of CPU at the entry cap) then runs while the next miss waits for its
# upstream instead of in front of that request; under load more misses share a commit.
# Against a copy without it, alternating on b2's load (three runs): c=1 p50 4.49 → 4.12,
# 4.43 → 3.75, 3.02 → 2.96 ms, CPU per miss -7 %, -15 %, -3 %; c=16 misses/s +11 %, +3 %,
# +5 % (bench/b2_cache_miss.py --baseline). Another process sees the entry this much later.
WRITE_DELAY = 0.002


class ResponseCache:
    """Cached chat answers keyed by a hash of everything that shapes the answer."""

    def __init__(self, store: SharedStore, *, ttl_seconds: int, max_entries: int) -> None:
        self.store = store
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._last_count = 0  # reported while the store is unreachable
        self._next: dict[str, Any] = {}  # the batch that waits for the one in the store's hands
        self._next_written: asyncio.Future[None] | None = None
        self._batch: dict[str, Any] = {}  # the batch in the store's hands
        self._writer: asyncio.Future[None] | None = None

    @property
    def directory(self) -> Path | None:
        """The cache directory (diskcache backend), else None."""
        return self.store.directory if isinstance(self.store, DiskStore) else None

    async def get(self, key: str) -> Any | None:
        """The cached value, or None (expired, evicted, missing or unreadable).

        Raises StoreUnavailable when the shared store cannot be reached."""
        # An answer put here and not yet in the store (both dicts are empty but for
        # the few milliseconds before a write lands).
        pending = self._next.get(key) if self._next else None
        if pending is None and self._batch:
            pending = self._batch.get(key)
            if pending is not None:  # used before it landed: written again, so the entry
                self._written(key, pending)  # cap sees it as recently used (a hit stamps it)
        if pending is not None:
            return pending
        try:
            return await self.store.get(key)
        except StoreUnavailable:
            raise
        except Exception:  # a damaged entry is a miss, never a failed request
            log.warning("cache read failed", exc_info=True)
            return None

    def put(self, key: str, value: Any) -> None:
        """Store a complete answer with the next batch, without waiting for it (readable
        here at once). Failures are logged, never raised to the user."""
        self._written(key, value)

    async def set(self, key: str, value: Any) -> None:
        """`put`, then wait until its batch is in the store."""
        # Shielded: a caller that gives up does not cancel the future its batch shares.
        await asyncio.shield(self._written(key, value))

    def _written(self, key: str, value: Any) -> asyncio.Future[None]:
        """Add to the next batch; the future its write sets."""
        self._next[key] = value
        if self._next_written is None:
            self._next_written = asyncio.get_running_loop().create_future()
        if self._writer is None:
            # A task of its own: a caller that gives up cancels neither its batch nor the next.
            self._writer = asyncio.ensure_future(self._write_batches())
        return self._next_written

    async def flush(self) -> None:
        """Wait for the writes still out."""
        if self._writer is not None:
            await asyncio.shield(self._writer)

    async def _write_batches(self) -> None:
        """Write batches until none waits (the one writer task)."""
        try:
            while self._next_written is not None:
                await asyncio.sleep(WRITE_DELAY)
                batch, written = self._next, self._next_written
                self._next, self._next_written, self._batch = {}, None, batch
                try:
                    if batch:  # emptied by a clear
                        await self.store.set_many(list(batch.items()), ttl=self.ttl_seconds,
                                                  max_entries=self.max_entries)
                except StoreUnavailable:
                    log.debug("cache write skipped: store unavailable")
                except Exception:
                    log.warning("cache write failed", exc_info=True)
                finally:
                    self._batch = {}
                    written.set_result(None)
        finally:
            self._writer = None

    async def count(self) -> int:
        """Live entries (the last known figure while the store is unreachable)."""
        try:
            self._last_count = await self.store.count()
        except StoreUnavailable:
            pass
        return self._last_count

    async def clear(self) -> int:
        """Remove every entry, for every process; returns how many were removed, the
        answers of this process not written yet (WRITE_DELAY) among them.

        Raises StoreUnavailable when the shared store cannot be reached."""
        pending, self._next = self._next, {}  # answers given before the clear go with it
        return await self.store.clear() + len(pending)

    def check(self) -> None:
        """Raise unless the cache store takes a write and reads it back (see
        `DiskStore.check_sync`). Blocking: run it off the loop. A no-op on Redis, whose
        reachability is the `store` check."""
        if isinstance(self.store, DiskStore):
            self.store.check_sync()
