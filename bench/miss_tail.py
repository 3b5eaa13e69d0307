"""Where the slowest cache misses spend their time: one miss at a time, in process.

    .venv/bin/python bench/miss_tail.py [-n 1000] [--show 8]
    BENCH_SERVICE_ROOT=/path/to/other/tree .venv/bin/python bench/miss_tail.py   # the same there

Builds the service's real context (response cache on a real diskcache directory at the
default entry cap, so writes evict as in production) against the fake upstream in a
process of its own, answers `n` unique questions (use_knowledge false) one after the
other and times, per miss, the cache lookup, the LLM call (gateway session) and the
cache write (the batch writer's run: inside the answer before issue 17 (8), after it
since, so it runs during the next miss), wall and this thread's CPU, and records every
garbage collection that ran during it (gc.callbacks). Prints p50/p99 of the whole
answer, its CPU, the median miss's phases and the slowest misses'.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
from core.chat.service import ChatRequest, ChatService  # noqa: E402
from core.config import Settings  # noqa: E402
from core.context import build_context  # noqa: E402
from core.llm import LLMSession  # noqa: E402
from core.ops.logs import configure_logging  # noqa: E402
from core.traffic.cache import ResponseCache  # noqa: E402

PHASES: dict[str, float] = {}  # label → wall seconds; label + " cpu" → thread CPU seconds
COLLECTIONS: list[list[float]] = []  # [seconds, generation] of each GC during the miss


def timed(cls: type, name: str, label: str) -> None:
    """Add the time `cls.name` takes to PHASES[label], and the thread CPU the loop spent
    meanwhile to PHASES[label + " cpu"] (the methods stay the service's)."""
    original = getattr(cls, name)

    async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
        started, cpu = time.perf_counter(), time.thread_time()
        try:
            return await original(self, *args, **kwargs)
        finally:
            PHASES[label] = PHASES.get(label, 0.0) + time.perf_counter() - started
            PHASES[label + " cpu"] = PHASES.get(label + " cpu", 0.0) + time.thread_time() - cpu

    setattr(cls, name, wrapper)


def on_gc(phase: str, info: dict[str, int]) -> None:
    if phase == "start":
        COLLECTIONS.append([time.perf_counter(), info["generation"]])
    elif COLLECTIONS:
        COLLECTIONS[-1][0] = time.perf_counter() - COLLECTIONS[-1][0]


def ms(seconds: float) -> float:
    return round(seconds * 1000, 2)


async def run(settings: Settings, n: int, show: int) -> None:
    ctx = build_context(settings)
    try:
        await asyncio.gather(*map(asyncio.wrap_future, ctx.warm_up()))
        asked = 0

        def req() -> ChatRequest:
            nonlocal asked
            asked += 1
            return ChatRequest.from_payload({"message": f"请概括基层治理的主要经验（第{asked}问）",
                                             "use_knowledge": False})

        for _ in range(50):  # warm: connections, the cache at its entry cap
            await ctx.chat.answer(req())
        rows = []
        for _ in range(n):
            request = req()
            PHASES.clear()
            COLLECTIONS.clear()
            started, cpu = time.perf_counter(), time.thread_time()
            await ctx.chat.answer(request)
            PHASES["cpu"] = time.thread_time() - cpu
            rows.append((time.perf_counter() - started, dict(PHASES), [(ms(s), int(g)) for s, g in COLLECTIONS]))
        await asyncio.sleep(0.05)  # the last write
        rows.sort(key=lambda row: row[0])
        cpus = sorted(row[1]["cpu"] for row in rows)
        print(f"service tree: {common.SERVICE_ROOT}; {common.machine_load()}")
        print(f"{n} misses one at a time: p50 {ms(rows[n // 2][0])} ms, p99 {ms(rows[int(n * 0.99)][0])} ms; "
              f"loop thread CPU per miss p50 {ms(cpus[n // 2])} ms, p99 {ms(cpus[int(n * 0.99)])} ms")
        print("median miss:", {k: ms(v) for k, v in rows[n // 2][1].items()})
        print(f"slowest {show} (ms; gc = [(ms, generation)] during the miss):")
        for total, phases, collections in rows[-show:]:
            print(f"  {ms(total):7.2f}", {k: ms(v) for k, v in phases.items()}, "gc", collections)
    finally:
        await ctx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="misses to time")
    parser.add_argument("--show", type=int, default=8, help="slowest misses to print")
    args = parser.parse_args()
    timed(ChatService, "_lookup", "lookup")
    timed(LLMSession, "complete", "llm")
    timed(ResponseCache, "_write_batches", "write")
    gc.callbacks.append(on_gc)
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    fake = common.start_upstream(log_dir=logs)
    try:
        settings = Settings.from_env({}, data_dir=common.fresh_data_dir(work, "data"),
                                     openai_base_url=fake.base_url, openai_api_key="sk-bench-not-a-real-key",
                                     llm_model="fake-model", rate_limit_per_minute=1_000_000)
        configure_logging(level="INFO", fmt=settings.log_format, server_id="bench")
        logging.getLogger().handlers[0].setStream(open(os.devnull, "w"))
        asyncio.run(run(settings, args.n, args.show))
    finally:
        fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
