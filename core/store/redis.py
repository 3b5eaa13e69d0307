"""`RedisStore`: the shared store on one Redis for every host (STORE_BACKEND=redis).

Through the `redis.asyncio` client with a connection pool and short socket timeouts.
The token bucket, the bounded cache write and the cache read are Lua scripts (the
`lua/*.lua` files beside this module) using Redis's own clock (`TIME`), so they are
atomic and immune to clock skew between hosts. When Redis cannot be reached a call
raises `StoreUnavailable` and a circuit breaker opens for `BREAKER_SECONDS`.
"""
from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import redis.asyncio as aioredis
from redis import exceptions as redis_errors
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff

from core.store import Bucket, StoreUnavailable

log = logging.getLogger("shenlun.store")
BREAKER_SECONDS = 2.0   # how long Redis is skipped after a failure
REDIS_TIMEOUT = 0.5     # socket connect/read timeout (seconds)
REDIS_POOL_SIZE = 64
_LUA = Path(__file__).with_name("lua")


def _script(name: str) -> str:
    """The Lua source of one script; `set` and `count` use the prune helper first."""
    text = (_LUA / f"{name}.lua").read_text(encoding="utf-8")
    return (_LUA / "prune.lua").read_text(encoding="utf-8") + text if name in ("set", "count") else text


# What "Redis blinked" looks like to the client (BusyLoadingError is a ConnectionError).
_UNREACHABLE = (OSError, asyncio.TimeoutError, redis_errors.ConnectionError,
                redis_errors.TimeoutError)


class CircuitBreaker:
    """After a failure, refuse calls for `seconds`, then let the next one try."""

    def __init__(self, seconds: float = BREAKER_SECONDS) -> None:
        self.seconds = seconds
        self._open_until = 0.0

    @property
    def open(self) -> bool:
        return time.monotonic() < self._open_until

    def trip(self) -> None:
        self._open_until = time.monotonic() + self.seconds

    def reset(self) -> None:
        self._open_until = 0.0


class RedisConnection:
    """One Redis client (connection pool) and its breaker, shared by the namespaces
    of one process."""

    def __init__(self, url: str, *, timeout: float = REDIS_TIMEOUT,
                 breaker_seconds: float = BREAKER_SECONDS) -> None:
        self.url = url
        self.breaker = CircuitBreaker(breaker_seconds)
        # No retries: the breaker decides when to try again; a request never waits
        # for more than one timeout.
        # A blocking pool: a burst beyond REDIS_POOL_SIZE waits (up to `timeout`) for a
        # free connection instead of failing with "Too many connections".
        pool = aioredis.BlockingConnectionPool.from_url(
            url, max_connections=REDIS_POOL_SIZE, timeout=timeout,
            socket_timeout=timeout, socket_connect_timeout=timeout,
            retry=Retry(NoBackoff(), 0), health_check_interval=30)
        self.client = aioredis.Redis(connection_pool=pool)
        self.scripts = {name: self.client.register_script(_script(name))
                        for name in ("take", "get", "set", "count", "clear")}
        self._warned = False

    async def call(self, operation: Any) -> Any:
        """Await `operation()` unless the breaker is open; connection failures and
        timeouts open it and become StoreUnavailable."""
        if self.breaker.open:
            raise StoreUnavailable("redis skipped (circuit open)")
        try:
            result = await operation()
        except _UNREACHABLE as exc:
            self.breaker.trip()
            if not self._warned:
                log.warning("redis unreachable (%s): degraded for at least %.0fs",
                            type(exc).__name__, self.breaker.seconds)
                self._warned = True
            raise StoreUnavailable(str(exc)) from exc
        if self._warned:
            log.warning("redis reachable again: shared store restored")
            self._warned = False
        return result

    async def close(self) -> None:
        await self.client.aclose(close_connection_pool=True)


class RedisStore:
    """One namespace (key prefix) in a shared Redis."""

    backend = "redis"

    def __init__(self, connection: RedisConnection, prefix: str) -> None:
        self._conn = connection
        self._redis = connection.client
        self.prefix = prefix
        self._recency = prefix + "~recency"  # entry keys by last access (cache bound)
        self._expiry = prefix + "~expiry"    # entry keys by expiry time

    def _key(self, key: str) -> str:
        return self.prefix + key

    async def get(self, key: str) -> Any | None:
        raw = await self._conn.call(lambda: self._conn.scripts["get"](
            keys=[self._key(key), self._recency, self._expiry]))
        return None if raw is None else json.loads(raw)

    async def set(self, key: str, value: Any, *, ttl: float, max_entries: int | None = None) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        await self._conn.call(lambda: self._conn.scripts["set"](
            keys=[self._key(key), self._recency, self._expiry],
            args=[blob, max(1, int(ttl * 1000)), max_entries or 0]))

    async def set_many(self, items: Sequence[tuple[str, Any]], *, ttl: float,
                       max_entries: int | None = None) -> None:
        for key, value in items:  # each its own script: the bound holds after each
            await self.set(key, value, ttl=ttl, max_entries=max_entries)

    async def delete(self, key: str) -> None:
        await self._conn.call(lambda: self._redis.delete(self._key(key)))

    async def clear(self) -> int:
        return int(await self._conn.call(lambda: self._conn.scripts["clear"](
            keys=[self._recency, self._expiry])))

    async def count(self) -> int:
        return int(await self._conn.call(lambda: self._conn.scripts["count"](
            keys=[self._recency, self._expiry])))

    async def take(self, key: str, *, capacity: float, per_second: float) -> Bucket:
        allowed, tokens = await self._conn.call(lambda: self._conn.scripts["take"](
            keys=[self._key(key)], args=[capacity, per_second]))
        return Bucket(bool(int(allowed)), float(tokens))

    async def publish(self, key: str, value: dict[str, Any], *, ttl: float) -> None:
        blob = json.dumps(value, ensure_ascii=False)
        await self._conn.call(lambda: self._redis.set(self._key(key), blob,
                                                      px=max(1, int(ttl * 1000))))

    async def snapshots(self) -> list[dict[str, Any]]:
        async def collect() -> list[dict[str, Any]]:
            keys = sorted([k async for k in self._redis.scan_iter(match=self.prefix + "*", count=200)])
            if not keys:
                return []
            return [json.loads(v) for v in await self._redis.mget(keys) if v is not None]
        rows: list[dict[str, Any]] = await self._conn.call(collect)
        return rows

    async def ping(self) -> None:
        await self._conn.call(self._redis.ping)

    def close(self) -> None:
        return None  # the shared connection is closed once, by `Stores.aclose`
