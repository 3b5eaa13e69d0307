"""The shared store behind the response cache, the rate limiter and the fleet board.

One small async interface, `SharedStore`, with two implementations:

* `disk.DiskStore` (STORE_BACKEND=diskcache, the default): a diskcache directory shared by
  the processes of one machine, with the token buckets in a memory-mapped table beside
  it (`buckets.BucketTable`). Calls that take microseconds and never wait long for another
  process (reads, a token-bucket take) run inline on the event loop; writes that may
  wait on another process's lock go to the executor.
* `redis.RedisStore` (STORE_BACKEND=redis): one Redis shared by every host, through the
  `redis.asyncio` client with a connection pool and short socket timeouts. The token
  bucket, the bounded cache write and the cache read are Lua scripts using Redis's own
  clock (`TIME`), so they are atomic and immune to clock skew between hosts (the
  scripts are the `.lua` files beside it).

Each user gets its own namespace (a diskcache directory, or a Redis key prefix).

When Redis cannot be reached a call raises `StoreUnavailable` and a circuit breaker
opens: for `BREAKER_SECONDS` every call raises at once instead of waiting for a
timeout, then the next call tries Redis again. The users decide what degraded means
(see docs/deployment.md: cache bypassed, local rate limit, fleet view of this instance only).

A full or read-only data directory degrades the disk store the same way: while
`core.ops.disk.DataDisk` says writes cannot be made, and when a write fails because the disk
refused it, a call raises `StoreUnavailable`; the next call after space returns works.
"""
from __future__ import annotations

from collections.abc import Sequence
from concurrent.futures import Executor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol

if TYPE_CHECKING:
    from core.ops.disk import DataDisk
    from core.store.redis import RedisConnection

CACHE_MEMO_ENTRIES = 256  # recent answers each process keeps in memory (DiskStore's memo)


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached now (Redis down, or its breaker open)."""


class Bucket(NamedTuple):
    """A token bucket after one take: whether a token was taken, and what is left.
    (A named tuple: a frozen dataclass costs a µs more to make, on every request.)"""

    allowed: bool
    tokens: float


def refill_and_take(tokens: float, stamp: float, now: float, *, capacity: float,
                    per_second: float) -> Bucket:
    """The token-bucket step: refill for the time since `stamp`, then take one token
    if there is one. Shared by the disk store and the rate limiter's local fallback
    (Redis runs the same step in Lua)."""
    tokens = min(float(capacity), tokens + max(0.0, now - stamp) * per_second)
    allowed = tokens >= 1.0
    return Bucket(allowed, tokens - 1.0 if allowed else tokens)


class SharedStore(Protocol):
    """What the cache, the rate limiter and the fleet board need from a shared store."""

    backend: str

    async def get(self, key: str) -> Any | None:
        """The value under `key` (and mark it recently used), or None."""

    async def set(self, key: str, value: Any, *, ttl: float, max_entries: int | None = None) -> None:
        """Store `value` for `ttl` seconds; with `max_entries`, evict the least recently
        used entries beyond that many."""

    async def set_many(self, items: Sequence[tuple[str, Any]], *, ttl: float,
                       max_entries: int | None = None) -> None:
        """`set` for each (key, value), in one round trip (one transaction on diskcache)."""

    async def delete(self, key: str) -> None:
        """Remove `key` (no error when it is absent)."""

    async def clear(self) -> int:
        """Remove every entry of this namespace; returns how many were removed."""

    async def count(self) -> int:
        """How many live entries this namespace holds."""

    async def take(self, key: str, *, capacity: float, per_second: float) -> Bucket:
        """Take one token from the bucket `key` (atomic across every process/host)."""

    async def publish(self, key: str, value: dict[str, Any], *, ttl: float) -> None:
        """Put a snapshot under `key` that disappears after `ttl` seconds."""

    async def snapshots(self) -> list[dict[str, Any]]:
        """Every live snapshot of this namespace, ordered by key."""

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the store answers."""

    def close(self) -> None:
        """Release files (diskcache); Redis pools are closed by `close_async`."""


@dataclass
class Stores:
    """The three namespaces of one process, and how to close them."""

    backend: str
    cache: SharedStore
    ratelimit: SharedStore
    fleet: SharedStore
    redis: RedisConnection | None = None

    async def ping(self) -> str:
        """'ok' when the shared store answers, 'degraded' when it does not."""
        try:
            await self.fleet.ping()  # Redis: the namespaces share one connection
            if self.redis is None:
                await self.cache.ping()
                await self.ratelimit.ping()
            return "ok"
        except StoreUnavailable:
            return "degraded"

    async def aclose(self) -> None:
        """Close files and the Redis pool."""
        for store in (self.cache, self.ratelimit, self.fleet):
            store.close()
        if self.redis is not None:
            await self.redis.close()


def open_stores(backend: str, *, data_dir: Path, redis_url: str, executor: Executor,
                cache_max_bytes: int, prefix: str = "shenlun:",
                disk: DataDisk | None = None) -> Stores:
    """The cache, rate-limit and fleet namespaces on the configured backend (on
    diskcache, degraded while `disk` cannot take writes)."""
    if backend == "redis":
        # Imported only for this backend: redis.asyncio costs start-up time.
        from core.store.redis import RedisConnection, RedisStore
        connection = RedisConnection(redis_url)
        return Stores(backend, cache=RedisStore(connection, prefix + "cache:"),
                      ratelimit=RedisStore(connection, prefix + "ratelimit:"),
                      fleet=RedisStore(connection, prefix + "fleet:"), redis=connection)
    from core.store.disk import DiskStore
    return Stores(
        backend,
        # No write on a read (see DiskStore.get): access_time is set when an entry is
        # stored and refreshed by _touch, and both bounds evict by it (bounded).
        cache=DiskStore(data_dir / "cache", executor, size_limit=cache_max_bytes, bounded=True, disk=disk,
                        memo_entries=CACHE_MEMO_ENTRIES),
        # the buckets live in buckets.shm in this directory (core/store/buckets.py)
        ratelimit=DiskStore(data_dir / "shared" / "ratelimit", executor, disk=disk),
        fleet=DiskStore(data_dir / "shared" / "fleet", executor,
                        eviction_policy="least-recently-stored", disk=disk),
    )
