"""The per-process cap on LLM work (a `tornado.locks.Semaphore`).

Per process by design: each instance protects its own event loop and its own share
of the upstream; the fleet-wide limit is the rate limiter's job.
"""
from __future__ import annotations

import datetime
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import tornado.util
from tornado.locks import Semaphore

from core.errors import ServerBusy


class ConcurrencySlots:
    """At most `limit` holders at once; a newcomer waits up to `queue_timeout`
    seconds (0 = not at all) and then gets `ServerBusy`."""

    def __init__(self, limit: int, queue_timeout: float = 0.0) -> None:
        self.limit = limit
        self.queue_timeout = queue_timeout
        self.in_use = 0
        self._semaphore = Semaphore(limit)

    @property
    def available(self) -> int:
        return self.limit - self.in_use

    @asynccontextmanager
    async def hold(self) -> AsyncIterator[None]:
        """Hold one slot for the body of the `async with`; released on every exit
        path, cancellation included."""
        try:
            # A zero timedelta means "wait for ever" to Tornado; one microsecond
            # means "only if a slot is free now or frees up this loop iteration".
            wait = datetime.timedelta(seconds=max(self.queue_timeout, 1e-6))
            await self._semaphore.acquire(timeout=wait)
        except tornado.util.TimeoutError:
            raise ServerBusy(retry_after=1) from None
        self.in_use += 1
        try:
            yield
        finally:
            self.in_use -= 1
            self._semaphore.release()
