"""Readiness checks for GET /health: the cache takes a write, the index answers;
and the LLM upstream's last state as real calls found it (`UpstreamState`).

The probes run on a dedicated one-thread executor with a deadline, so /health
answers promptly while chats and searches keep the other workers busy. A passing round
is reused for FRESH_SECONDS: balancers poll /health often, and under CPU load every
thread hop waits for the GIL behind the search threads (bench/b7_event_loop.py). A
failing round is never reused, so recovery shows at the next call.
"""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import Executor
from datetime import datetime, timezone
from typing import Any, Callable

log = logging.getLogger("shenlun.health")
PROBE_DEADLINE_SECONDS = 2.0
FRESH_SECONDS = 1.0


async def run_checks(probes: dict[str, Callable[[], Any]], executor: Executor) -> dict[str, str]:
    """Run each probe off the loop; 'ok' when it returns, 'fail: …' when it raises or
    takes longer than the deadline."""
    loop = asyncio.get_running_loop()
    results: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(loop.run_in_executor(executor, probe), PROBE_DEADLINE_SECONDS)
            results[name] = "ok"
        except asyncio.TimeoutError:
            results[name] = "fail: timed out"
        except Exception as exc:
            log.warning("health check %s failed: %s", name, exc)
            results[name] = f"fail: {type(exc).__name__}"
    return results


class HealthProbes:
    """The readiness probes of one process (per process: each checks its own view)."""

    def __init__(self, probes: dict[str, Callable[[], Any]], executor: Executor,
                 fresh_seconds: float = FRESH_SECONDS) -> None:
        self._probes = probes
        self._executor = executor
        self._fresh_seconds = fresh_seconds
        self._passed_at: float | None = None
        self._passed: dict[str, str] = {}

    async def run(self) -> dict[str, str]:
        """Each probe's result ('ok' or 'fail: …'), at most FRESH_SECONDS old when all passed."""
        now = time.monotonic()
        if self._passed_at is not None and now - self._passed_at < self._fresh_seconds:
            return dict(self._passed)
        results = await run_checks(self._probes, self._executor)
        if all(v == "ok" for v in results.values()):
            self._passed_at, self._passed = now, dict(results)
        else:
            self._passed_at = None
        return results


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
    return datetime.fromtimestamp(ts, timezone.utc).isoformat(timespec="seconds")
