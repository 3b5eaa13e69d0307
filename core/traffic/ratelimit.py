"""A token bucket per client, shared by every process (and host) on the shared store.

Capacity is `RATE_LIMIT_PER_MINUTE` and the bucket refills at that many tokens a
minute; an idle client's bucket expires once it would be full again, so the store
stays small. On diskcache each check is a few microseconds on the event loop in a
memory-mapped table every process of the host shares (core/store/buckets.py); on Redis
it is one Lua script using Redis's clock.

When the store is unreachable (Redis down) the check falls back to a bucket in this
process with the limit divided by `INSTANCES`, so the instances of a host together do
not admit more than the fleet limit while degraded.
"""
from __future__ import annotations

import math
import time
from typing import NamedTuple

from core.store import Bucket, SharedStore, StoreUnavailable, refill_and_take

LOCAL_BUCKETS_MAX = 10_000  # clients remembered by the degraded, per-process fallback


class Decision(NamedTuple):
    """The outcome of one check, with what the rate-limit headers need (handlers/base.py)."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int   # until the bucket is full again
    retry_after: int     # until the next token, when refused (else 0)


class LocalBuckets:
    """Token buckets in this process only: the fallback while the store is down."""

    def __init__(self, per_minute: int) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0
        self._buckets_per_process: dict[str, tuple[float, float]] = {}

    def take(self, client: str, now: float | None = None) -> Bucket:
        """Take a token from `client`'s local bucket."""
        now = time.monotonic() if now is None else now
        tokens, stamp = self._buckets_per_process.get(client, (float(self.limit), now))
        bucket = refill_and_take(tokens, stamp, now, capacity=self.limit, per_second=self.rate)
        if len(self._buckets_per_process) >= LOCAL_BUCKETS_MAX:
            self._buckets_per_process.clear()
        self._buckets_per_process[client] = (bucket.tokens, now)
        return bucket


class RateLimiter:
    """Fleet-wide token buckets keyed by client identity."""

    def __init__(self, store: SharedStore, per_minute: int, *, instances: int = 1) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self._store = store
        self.fallback = LocalBuckets(max(1, per_minute // max(1, instances)))

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    async def check(self, client: str) -> Decision:
        """Take one token from `client`'s bucket if there is one (never raises
        because the store is down: the local fallback answers then)."""
        try:
            bucket = await self._store.take(f"bucket:{client}", capacity=self.limit,
                                            per_second=self.rate)
            limit, rate = self.limit, self.rate
        except StoreUnavailable:
            bucket = self.fallback.take(client)
            limit, rate = self.fallback.limit, self.fallback.rate
        allowed, tokens = bucket.allowed, bucket.tokens
        missing = limit - tokens
        return Decision(
            allowed=allowed, limit=limit, remaining=int(tokens),
            reset_seconds=math.ceil(missing / rate) if missing > 0 else 0,
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / rate)),
        )
