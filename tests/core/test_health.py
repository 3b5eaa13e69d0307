"""/health's probe rounds (core.ops.health.HealthProbes): when a call reuses the last
round, when it starts the next one in the background, when it waits for one. Real
probes on a real one-thread executor; a probe blocked on an Event stands for a slow one."""
from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.ops.health import HealthProbes

FRESH = 0.4  # seconds a passing round is reused in these tests


class GatedProbe:
    """A probe that counts its runs and, while the gate is closed, blocks until it opens."""

    def __init__(self) -> None:
        self.gate = threading.Event()
        self.gate.set()
        self.runs = 0
        self.fail = False

    def __call__(self) -> None:
        self.runs += 1
        self.gate.wait(10)
        if self.fail:
            raise OSError("probe failed")


@pytest.fixture
def probes():
    probe = GatedProbe()
    executor = ThreadPoolExecutor(1)
    yield probe, HealthProbes({"disk": probe}, executor, fresh_seconds=FRESH)
    probe.gate.set()
    executor.shutdown(wait=True)


async def test_a_poll_past_half_the_age_answers_at_once_and_refreshes_behind(probes):
    probe, health = probes
    assert await health.run() == {"disk": "ok"} and probe.runs == 1
    assert await health.run() == {"disk": "ok"} and probe.runs == 1  # young: reused, no round
    await asyncio.sleep(FRESH * 0.6)
    probe.gate.clear()  # the next round hangs until the gate opens
    # Answered from the last round although the round it started cannot finish.
    assert await asyncio.wait_for(health.run(), FRESH * 0.3) == {"disk": "ok"}
    await asyncio.sleep(0.05)
    assert probe.runs == 2
    assert await health.run() == {"disk": "ok"} and probe.runs == 2  # no second round meanwhile
    probe.gate.set()
    await asyncio.sleep(FRESH * 0.45)  # the refreshed round started at ~0.6 FRESH: still young
    assert await health.run() == {"disk": "ok"} and probe.runs == 2


async def test_a_round_older_than_fresh_is_waited_for_and_shared(probes):
    probe, health = probes
    await health.run()
    await asyncio.sleep(FRESH * 1.1)  # nobody polled: the round is too old to answer with
    probe.gate.clear()
    first, second = asyncio.ensure_future(health.run()), asyncio.ensure_future(health.run())
    await asyncio.sleep(0.1)
    assert not first.done() and not second.done()
    probe.fail = True
    probe.gate.set()
    assert (await first)["disk"] == "fail: OSError" and (await second)["disk"] == "fail: OSError"
    assert probe.runs == 2  # both calls waited for the same round
    probe.fail = False
    assert await health.run() == {"disk": "ok"} and probe.runs == 3  # a failing round is never reused


async def test_a_caller_that_goes_away_does_not_cancel_the_shared_round(probes):
    probe, health = probes
    probe.gate.clear()
    gone, staying = asyncio.ensure_future(health.run()), asyncio.ensure_future(health.run())
    await asyncio.sleep(0.05)
    gone.cancel()
    probe.gate.set()
    assert await staying == {"disk": "ok"} and probe.runs == 1
