"""Readiness checks for GET /health: the cache takes a write, the index answers.

The probes run on a dedicated one-thread executor with a deadline, so /health
answers promptly while chats and searches keep the other workers busy.
"""
from __future__ import annotations

import asyncio
import logging
from concurrent.futures import Executor
from typing import Any, Callable

log = logging.getLogger("shenlun.health")
PROBE_DEADLINE_SECONDS = 2.0


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
