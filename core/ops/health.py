"""Readiness checks for GET /health: the data directory's disk, the cache takes a
write, the index answers; and the LLM upstream's last state as real calls found it
(`UpstreamState`).

The probes run on a dedicated one-thread executor with a deadline, so /health
answers promptly while chats and searches keep the other workers busy. A passing round
is reused for FRESH_SECONDS: balancers poll /health often, and under CPU load every
thread hop waits for the GIL behind the search threads (bench/b7_event_loop.py). A call
that finds the round past half that age starts the next one in the background and
answers at once, so a client polling at least twice a second never waits for a round;
one that finds it older waits for a round, as the first call does. Calls that arrive
while a round runs share it. A failing round is never reused, so recovery shows at the
next call.

A probe returns nothing ("ok"), or a `Reading`: a named state ("full", "rebuilding",
"empty"…) and figures for the body (free bytes, document count). A shared store that
cannot be used now (StoreUnavailable) reads "degraded". HEALTHY_STATES answer 200.
"""
from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from concurrent.futures import Executor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from core.ops.disk import DataDisk
from core.store import Stores, StoreUnavailable

log = logging.getLogger("shenlun.health")
PROBE_DEADLINE_SECONDS = 2.0
FRESH_SECONDS = 1.0


# "empty" (no documents) and "degraded" (shared store unreachable) still answer: 200.
HEALTHY_STATES = frozenset({"ok", "empty", "degraded"})


@dataclass(frozen=True)
class Reading:
    """A probe's answer when "ok" is not the whole story."""

    state: str
    figures: dict[str, Any] = field(default_factory=dict)


async def run_checks(probes: dict[str, Callable[[], Any]], executor: Executor,
                     figures: dict[str, Any] | None = None) -> dict[str, str]:
    """Run each probe off the loop; 'ok' when it returns, its state when it returns a
    Reading (whose figures go into `figures`), 'degraded' when the shared store is
    unavailable, 'fail: …' when it raises or takes longer than the deadline."""
    loop = asyncio.get_running_loop()
    results: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            value = await asyncio.wait_for(loop.run_in_executor(executor, probe),
                                           PROBE_DEADLINE_SECONDS)
            results[name] = value.state if isinstance(value, Reading) else "ok"
            if isinstance(value, Reading) and figures is not None:
                figures.update(value.figures)
        except TimeoutError:
            results[name] = "fail: timed out"
        except StoreUnavailable:
            results[name] = "degraded"
        except Exception as exc:
            log.warning("health check %s failed: %s", name, exc)
            results[name] = f"fail: {type(exc).__name__}"
    return results


def healthy(checks: dict[str, str]) -> bool:
    """Whether these check results answer 200."""
    return all(state in HEALTHY_STATES for state in checks.values())


def disk_probe(disk: DataDisk) -> Callable[[], Reading]:
    """The data directory's disk: "ok", "full" or "read_only", and its free bytes."""
    def probe() -> Reading:
        seen = disk.probe()
        return Reading(seen.state, {"disk_free_bytes": seen.free_bytes})
    return probe


def knowledge_probe(status: Callable[[], tuple[str, int]]) -> Callable[[], Reading]:
    """The knowledge index ("ok", "empty", "rebuilding") and the document count, from
    KnowledgeBase.status. An empty base is logged (once per change), not a failure."""
    last: list[str] = []

    def probe() -> Reading:
        state, documents = status()
        if state == "empty" and last != ["empty"]:
            log.warning("the knowledge base has no documents: searches find nothing and chats "
                        "use no material (scripts/reindex.py imports data/knowledge)")
        last[:] = [state]
        return Reading(state, {"documents": documents})
    return probe


class HealthProbes:
    """The readiness probes of one process (per process: each checks its own view)."""

    def __init__(self, probes: dict[str, Callable[[], Any]], executor: Executor, *,
                 stores: Stores | None = None, llm_name: str = "",
                 fresh_seconds: float = FRESH_SECONDS) -> None:
        self._probes = probes
        self._stores = stores
        self._llm_name = llm_name
        self._executor = executor
        self._fresh_seconds = fresh_seconds
        self._passed_at: float | None = None
        self._passed: dict[str, str] = {}
        self._round: asyncio.Task[dict[str, str]] | None = None  # the round running now
        self.figures: dict[str, Any] = {}  # of the latest round: free bytes, documents…

    async def run(self) -> dict[str, str]:
        """Each probe's result ('ok', a state, or 'fail: …'), at most FRESH_SECONDS old
        when all passed; `figures` then holds that round's figures."""
        if self._passed_at is not None:
            age = time.monotonic() - self._passed_at
            if age < self._fresh_seconds:
                if age >= self._fresh_seconds / 2:
                    self._start_round()  # answered from the last round; the next is on its way
                return dict(self._passed)
        # Shielded: a caller that goes away does not cancel the round others wait for.
        return dict(await asyncio.shield(self._start_round()))

    def _start_round(self) -> asyncio.Task[dict[str, str]]:
        if self._round is None:
            self._round = asyncio.get_running_loop().create_task(self._new_round())
        return self._round

    async def _new_round(self) -> dict[str, str]:
        started = time.monotonic()  # a passing round counts from its start: never fresher than it is
        try:
            figures: dict[str, Any] = {}
            results = await run_checks(self._probes, self._executor, figures)
            self.figures = figures
            if healthy(results):
                self._passed_at, self._passed = started, dict(results)
            else:
                self._passed_at = None
            return results
        finally:
            self._round = None


    async def report(self) -> tuple[bool, dict[str, str]]:
        """Whether this instance is ready (200), and the checks /health shows: the
        probes, the shared store and the LLM provider's name."""
        checks = await self.run()
        ok = healthy(checks)
        if self._stores is not None:
            # Redis unreachable is "degraded", not a failure: this instance still answers
            # (cache bypassed, local rate limit), so it stays in the balancer's rotation.
            checks["store"] = await self._stores.ping()
            if checks["store"] == "degraded" and self._stores.backend == "redis":
                checks["cache"] = "degraded"
        checks["llm"] = self._llm_name
        return ok, checks


class UpstreamState:
    """The LLM upstream's last known state in this process, as the real calls found it.

    /health reports it without calling the upstream (a probe that spent a model call
    every few seconds per instance would cost money and prove little more). "unknown"
    until the first call; then "ok", or "failing" since the first failure of the run.
    """

    def __init__(self) -> None:
        self.state = "unknown"
        self.since: float | None = None
        self.error: tuple[str, str] | None = None  # (code, message) of the last failure

    def succeeded(self) -> None:
        """A call got an answer (or at least its first delta)."""
        if self.state == "failing":
            log.info("llm upstream answers again (failing since %s)", _iso(self.since))
        if self.state != "ok":
            self.state, self.since, self.error = "ok", time.time(), None

    def failed(self, code: str, message: str) -> None:
        """A call failed on the upstream's side (error status, unreachable, timeout)."""
        if self.state != "failing":
            log.warning("llm upstream failing: %s (%s)", code, message)
            self.state, self.since = "failing", time.time()
        self.error = (code, message)

    def as_dict(self) -> dict[str, Any]:
        """{"state", "since" (ISO 8601 UTC or null), "error", "message"} for /health."""
        code, message = self.error or (None, None)
        return {"state": self.state, "since": _iso(self.since), "error": code, "message": message}


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")
