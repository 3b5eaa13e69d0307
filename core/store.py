"""The shared store behind the response cache, the rate limiter and the fleet board.

One small async interface, `SharedStore`, with two implementations:

* `DiskStore` (STORE_BACKEND=diskcache, the default): a diskcache directory shared by
  the processes of one machine. Calls that take microseconds and never wait for another
  process (reads, the token-bucket transaction) run inline on the event loop; writes
  that may wait on another process's lock go to the executor.
* `RedisStore` (STORE_BACKEND=redis): one Redis shared by every host, through the
  `redis.asyncio` client with a connection pool and short socket timeouts. The token
  bucket, the bounded cache write and the cache read are Lua scripts using Redis's own
  clock (`TIME`), so they are atomic and immune to clock skew between hosts.

Each user gets its own namespace (a diskcache directory, or a Redis key prefix).

When Redis cannot be reached a call raises `StoreUnavailable` and a circuit breaker
opens: for `BREAKER_SECONDS` every call raises at once instead of waiting for a
timeout, then the next call tries Redis again. The users decide what degraded means
(see docs/deployment.md: cache bypassed, local rate limit, fleet view of this instance only).

A full or read-only data directory degrades the disk store the same way: while
`core.disk.DataDisk` says writes cannot be made, and when a write fails because the disk
refused it, a call raises `StoreUnavailable`; the next call after space returns works.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Protocol

import diskcache

from core.disk import DataDisk

log = logging.getLogger("shenlun.store")
TOUCH_INTERVAL = 1.0    # seconds: how stale a diskcache hit's recorded access time may be
BREAKER_SECONDS = 2.0   # how long Redis is skipped after a failure
REDIS_TIMEOUT = 0.5     # socket connect/read timeout (seconds)
REDIS_POOL_SIZE = 64


class StoreUnavailable(RuntimeError):
    """The shared store cannot be reached now (Redis down, or its breaker open)."""


@dataclass(frozen=True)
class Bucket:
    """A token bucket after one take: whether a token was taken, and what is left."""

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


# --------------------------------------------------------------------------- diskcache

class DiskStore:
    """A diskcache directory shared by the processes of one machine."""

    backend = "diskcache"

    def __init__(self, directory: Path, executor: Executor, *, size_limit: int = 2 ** 40,
                 eviction_policy: str = "none", bounded: bool = False,
                 disk: DataDisk | None = None) -> None:
        self.directory = Path(directory)
        self._executor = executor
        self._disk = disk
        self._cache = diskcache.Cache(str(self.directory), size_limit=size_limit,
                                      eviction_policy=eviction_policy, timeout=5)
        if bounded:
            # The entry cap evicts by access_time; diskcache indexes it only under its LRU policy.
            self._cache._sql("CREATE INDEX IF NOT EXISTS Cache_access_time ON Cache (access_time)")
        self._touched: dict[str, float] = {}  # key → when this process last stamped it

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
        value = self._cache.get(key, default=None, retry=True)
        if value is not None:
            self._touch(key)
        return value

    def _touch(self, key: str) -> None:
        now = time.monotonic()
        if now - self._touched.get(key, -TOUCH_INTERVAL) < TOUCH_INTERVAL:
            return
        if len(self._touched) > 4096:
            self._touched.clear()
        self._touched[key] = now
        asyncio.get_running_loop().run_in_executor(self._executor, self._touch_sync, key)

    def _touch_sync(self, key: str) -> None:
        try:
            with self._writing():
                # raw = 1: diskcache stores str keys as themselves (schema of diskcache 5.x).
                self._cache._sql("UPDATE Cache SET access_time = ? WHERE key = ? AND raw = 1",
                                 (time.time(), key))
        except Exception:  # best effort: a missed stamp only ages the entry sooner
            log.debug("cache access stamp failed", exc_info=True)

    async def set(self, key: str, value: Any, *, ttl: float, max_entries: int | None = None) -> None:
        await self._off_loop(self._set_sync, key, value, ttl, max_entries)

    def _set_sync(self, key: str, value: Any, ttl: float, max_entries: int | None) -> None:
        with self._writing():
            self._cache.set(key, value, expire=ttl, retry=True)
            if max_entries is not None:
                excess = len(self._cache) - max_entries
                if excess > 0:
                    self._evict_least_recently_used(excess)

    def _evict_least_recently_used(self, count: int) -> None:
        # diskcache bounds bytes, not entries; the oldest keys come from access_time.
        count -= self._cache.expire()
        if count <= 0:
            return
        rows = self._cache._sql(
            "SELECT key FROM Cache ORDER BY access_time LIMIT ?", (count,)).fetchall()
        for (key,) in rows:
            self._cache.delete(key, retry=True)

    async def delete(self, key: str) -> None:
        await self._off_loop(self._write_sync, lambda: self._cache.delete(key, retry=True))

    async def clear(self) -> int:
        return await self._off_loop(self._write_sync, lambda: self._cache.clear(retry=True))

    def _write_sync(self, write: Any) -> Any:
        with self._writing():
            return write()

    async def count(self) -> int:
        return len(self._cache)

    async def take(self, key: str, *, capacity: float, per_second: float,
                   now: float | None = None) -> Bucket:
        # One SQLite transaction (~50 µs), inline: N processes together admit what one would.
        with self._writing(), self._cache.transact(retry=True):
            now = time.time() if now is None else now
            tokens, stamp = self._cache.get(key, default=(float(capacity), now), retry=True)
            bucket = refill_and_take(tokens, stamp, now, capacity=capacity, per_second=per_second)
            # An idle bucket expires once it would be full again, so the store stays small.
            self._cache.set(key, (bucket.tokens, now), expire=capacity / per_second, retry=True)
        return bucket

    async def publish(self, key: str, value: dict[str, Any], *, ttl: float) -> None:
        await self._off_loop(self._write_sync,
                             lambda: self._cache.set(key, value, expire=ttl, retry=True))

    async def snapshots(self) -> list[dict[str, Any]]:
        self._usable()  # as with Redis down: the fleet view shows this instance only
        return await self._off_loop(self._snapshots_sync)

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


# --------------------------------------------------------------------------- Redis

# KEYS[1] bucket; ARGV capacity, tokens per second. Returns {allowed, tokens as text}.
_TAKE = """
local capacity = tonumber(ARGV[1])
local rate = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1])
local stamp = tonumber(state[2])
if tokens == nil or stamp == nil then
  tokens = capacity
  stamp = now
end
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate)
local allowed = 0
if tokens >= 1 then
  tokens = tokens - 1
  allowed = 1
end
redis.call('HSET', KEYS[1], 'tokens', string.format('%.17g', tokens), 'stamp', string.format('%.17g', now))
redis.call('PEXPIRE', KEYS[1], math.max(1, math.ceil(capacity / rate * 1000)))
return {allowed, string.format('%.17g', tokens)}
"""

# KEYS[1] entry, KEYS[2] recency zset, KEYS[3] expiry zset. Returns the value or nil.
_GET = """
local value = redis.call('GET', KEYS[1])
if value then
  local t = redis.call('TIME')
  redis.call('ZADD', KEYS[2], 'XX', tonumber(t[1]) + tonumber(t[2]) / 1000000, KEYS[1])
end
return value
"""

# Drop index members whose entry has expired (their TTL passed). KEYS[2], KEYS[3] as above.
_PRUNE = """
local function prune(recency, expiry, now)
  local gone = redis.call('ZRANGEBYSCORE', expiry, '-inf', now, 'LIMIT', 0, 1000)
  for _, key in ipairs(gone) do
    redis.call('ZREM', recency, key)
    redis.call('ZREM', expiry, key)
  end
end
"""

# KEYS[1] entry, KEYS[2] recency, KEYS[3] expiry; ARGV value, ttl ms, max entries (0 = none).
_SET = _PRUNE + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local ttl_ms = tonumber(ARGV[2])
redis.call('SET', KEYS[1], ARGV[1], 'PX', ttl_ms)
redis.call('ZADD', KEYS[2], now, KEYS[1])
redis.call('ZADD', KEYS[3], now + ttl_ms / 1000, KEYS[1])
local cap = tonumber(ARGV[3])
if cap > 0 then
  prune(KEYS[2], KEYS[3], now)
  local excess = redis.call('ZCARD', KEYS[2]) - cap
  if excess > 0 then
    local victims = redis.call('ZRANGE', KEYS[2], 0, excess - 1)
    for _, key in ipairs(victims) do
      redis.call('DEL', key)
      redis.call('ZREM', KEYS[2], key)
      redis.call('ZREM', KEYS[3], key)
    end
  end
end
return 1
"""

# KEYS[1] recency, KEYS[2] expiry. Returns the number of live entries.
_COUNT = _PRUNE + """
local t = redis.call('TIME')
prune(KEYS[1], KEYS[2], tonumber(t[1]) + tonumber(t[2]) / 1000000)
return redis.call('ZCARD', KEYS[1])
"""

# KEYS[1] recency, KEYS[2] expiry. Deletes every indexed entry; returns how many existed.
_CLEAR = """
local removed = 0
local keys = redis.call('ZRANGE', KEYS[1], 0, -1)
for _, key in ipairs(keys) do
  removed = removed + redis.call('DEL', key)
end
redis.call('DEL', KEYS[1], KEYS[2])
return removed
"""


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
        # Imported here: ~70 ms of start-up that the diskcache backend does not need.
        import redis.asyncio as aioredis
        from redis import exceptions as redis_errors
        from redis.asyncio.retry import Retry
        from redis.backoff import NoBackoff

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
        self.scripts = {name: self.client.register_script(source) for name, source in
                        (("take", _TAKE), ("get", _GET), ("set", _SET),
                         ("count", _COUNT), ("clear", _CLEAR))}
        self._warned = False
        # What "Redis blinked" looks like to the client (BusyLoadingError is a ConnectionError).
        self._unreachable = (OSError, asyncio.TimeoutError, redis_errors.ConnectionError,
                             redis_errors.TimeoutError)

    async def call(self, operation: Any) -> Any:
        """Await `operation()` unless the breaker is open; connection failures and
        timeouts open it and become StoreUnavailable."""
        if self.breaker.open:
            raise StoreUnavailable("redis skipped (circuit open)")
        try:
            result = await operation()
        except self._unreachable as exc:
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
        return await self._conn.call(collect)

    async def ping(self) -> None:
        await self._conn.call(self._redis.ping)

    def close(self) -> None:
        return None  # the shared connection is closed once, by `Stores.aclose`


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
        connection = RedisConnection(redis_url)
        return Stores(backend, cache=RedisStore(connection, prefix + "cache:"),
                      ratelimit=RedisStore(connection, prefix + "ratelimit:"),
                      fleet=RedisStore(connection, prefix + "fleet:"), redis=connection)
    return Stores(
        backend,
        # No write on a read (see DiskStore.get): access_time is set when an entry is
        # stored and refreshed by _touch, and the entry cap evicts by it.
        cache=DiskStore(data_dir / "cache", executor, size_limit=cache_max_bytes,
                        eviction_policy="least-recently-stored", bounded=True, disk=disk),
        # buckets are tiny; never evict a live one by size
        ratelimit=DiskStore(data_dir / "shared" / "ratelimit", executor, disk=disk),
        fleet=DiskStore(data_dir / "shared" / "fleet", executor,
                        eviction_policy="least-recently-stored", disk=disk),
    )
