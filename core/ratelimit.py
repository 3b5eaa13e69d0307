"""A token bucket per client, shared by every process on the machine.

Buckets live in a diskcache directory; each check is one SQLite transaction
(`BEGIN IMMEDIATE`), so N processes together admit what one would. Capacity is
`RATE_LIMIT_PER_MINUTE` and the bucket refills at that many tokens a minute; an idle
client's bucket expires once it would be full again, so the store stays small.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path

import diskcache


@dataclass(frozen=True)
class Decision:
    """The outcome of one check, with what the rate-limit headers need."""

    allowed: bool
    limit: int
    remaining: int
    reset_seconds: int   # until the bucket is full again
    retry_after: int     # until the next token, when refused (else 0)

    def headers(self) -> dict[str, str]:
        return {"X-RateLimit-Limit": str(self.limit),
                "X-RateLimit-Remaining": str(self.remaining),
                "X-RateLimit-Reset": str(self.reset_seconds)}


class RateLimiter:
    """Fleet-wide (one machine) token buckets keyed by client identity."""

    def __init__(self, directory: Path, per_minute: int) -> None:
        self.limit = per_minute
        self.rate = per_minute / 60.0  # tokens per second
        self._store = diskcache.Cache(str(directory), timeout=5,
                                      # buckets are tiny; never evict a live one by size
                                      size_limit=2 ** 40, eviction_policy="none")
        self.refused = 0  # this process's refusals, for metrics

    @property
    def enabled(self) -> bool:
        return self.limit > 0

    def check(self, client: str, now: float | None = None) -> Decision:
        """Take one token from `client`'s bucket if there is one."""
        key = f"bucket:{client}"
        full_after = self.limit / self.rate
        with self._store.transact(retry=True):
            now = time.time() if now is None else now
            tokens, stamp = self._store.get(key, default=(float(self.limit), now), retry=True)
            tokens = min(float(self.limit), tokens + max(0.0, now - stamp) * self.rate)
            allowed = tokens >= 1.0
            if allowed:
                tokens -= 1.0
            self._store.set(key, (tokens, now), expire=full_after, retry=True)
        if not allowed:
            self.refused += 1
        missing = self.limit - tokens
        return Decision(
            allowed=allowed, limit=self.limit, remaining=int(tokens),
            reset_seconds=math.ceil(missing / self.rate) if missing > 0 else 0,
            retry_after=0 if allowed else max(1, math.ceil((1.0 - tokens) / self.rate)),
        )

    def close(self) -> None:
        self._store.close()
