"""What each per-request step of a cache hit costs, in process (µs of process CPU, the
fastest of 7 batches: on a shared machine wall time counts the neighbours' turns on
the cores), and how a cache miss's CPU splits between the LLM call and the rest.

    .venv/bin/python bench/hit_costs.py [-n 1000] [--misses 400]
    BENCH_SERVICE_ROOT=/path/to/other/tree .venv/bin/python bench/hit_costs.py   # the same steps there

Builds the service's real context (bundled corpus indexed, response cache on a real
diskcache directory, rate limiter on its bucket file, the fake LLM in a thread for the
one miss that fills the cache, the server's GC settings) and times the steps a cache
hit takes besides Tornado's own: the chat service's answer, the answer's JSON encoding,
the knowledge version, the rate-limit check, metrics, the access-log line (seed format,
to /dev/null), the body's decoding and validation and, in a tree that has it, the
look-up that spares a repeated body both. Then misses (unique questions, use_knowledge
false) against the fake upstream in a process of its own: process CPU per whole miss,
per miss with cache: false (no cache write), per LLM call alone (gateway session +
openai client), and per cache write. bench/b1 and b2 measure whole requests against a
bare Tornado handler; this says where the difference goes.
"""
from __future__ import annotations

import argparse
import asyncio
import gc
import json
import logging
import os
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
from core.chat.service import ChatRequest  # noqa: E402
from core.config import Settings  # noqa: E402
from core.context import build_context  # noqa: E402
from core.ops.logs import configure_logging  # noqa: E402
from handlers.base import log_request  # noqa: E402
from server import GC_YOUNG_THRESHOLD  # noqa: E402

QUESTION = "乡村振兴类材料的归纳概括题怎么答？"
BATCHES = 7


class AnsweredHit:
    """The attributes `log_request` reads from a handler that answered a cache hit."""

    class request:  # stands for Tornado's HTTPServerRequest
        remote_ip, method, path = "127.0.0.1", "POST", "/api/chat"

        @staticmethod
        def request_time() -> float:
            return 0.0012

    request_id, cache_status = "0123456789abcdef0123456789abcdef", "HIT"

    def get_status(self) -> int:
        return 200


def fastest_us(samples: list[float]) -> float:
    return min(samples) * 1e6


def per_call(fn: Callable[[], object], n: int) -> float:
    fn()
    batches = []
    for _ in range(BATCHES):
        started = time.process_time()
        for _ in range(n):
            fn()
        batches.append((time.process_time() - started) / n)
    return fastest_us(batches)


async def per_await(fn: Callable[[], Awaitable[object]], n: int) -> float:
    await fn()
    batches = []
    for _ in range(BATCHES):
        started = time.process_time()
        for _ in range(n):
            await fn()
        batches.append((time.process_time() - started) / n)
    return fastest_us(batches)


async def hit_rows(chat, knowledge: bool, n: int) -> list[tuple[str, float]]:
    """The chat service's answer to a cache hit, and the encoding of that answer."""
    req = ChatRequest.from_payload({"message": QUESTION, "mode": "summarize", "use_knowledge": knowledge})
    await chat.answer(req)
    result = await chat.answer(req)
    if result.cache_status != "HIT":
        raise RuntimeError(f"the second identical request was {result.cache_status}")
    tag = "knowledge on" if knowledge else "use_knowledge=false"
    # A tree from before the encoded answers (BENCH_SERVICE_ROOT) encodes the body dict.
    encode = getattr(result, "encoded", lambda: json.dumps(result.body, ensure_ascii=False))
    return [(f"ChatService.answer, cache hit ({tag})", await per_await(lambda: chat.answer(req), n)),
            (f"the answer's JSON ({tag})", per_call(encode, n))]


async def measure(ctx, n: int) -> list[tuple[str, float]]:
    rows = [*await hit_rows(ctx.chat, True, n), *await hit_rows(ctx.chat, False, n)]
    rows.append(("knowledge version (IndexHealer.version)", per_call(ctx.knowledge.healer.version, n)))
    rows.append(("rate-limit check (RateLimiter.check)", await per_await(lambda: ctx.limiter.check("ip:127.0.0.1"), n)))

    def record() -> None:
        ctx.metrics.request_started("/api/chat")
        ctx.metrics.request_finished(path="/api/chat", endpoint="/api/chat", method="POST", status=200,
                                     seconds=0.001, cache="HIT", error_code=None)

    rows.append(("metrics (started + finished)", per_call(record, n)))
    hit = AnsweredHit()
    rows.append(("access-log line (seed format)", per_call(lambda: log_request(hit), n)))
    payload = {"message": QUESTION, "mode": "summarize", "use_knowledge": True}
    raw = json.dumps(payload, ensure_ascii=False).encode()
    rows.append(("body JSON + validation (first time)", per_call(lambda: ChatRequest.from_payload(json.loads(raw)), n)))
    recent = getattr(ctx.chat, "recent_requests", None)  # a tree from before it validates every body
    if recent is not None:
        recent.put(raw, ChatRequest.from_payload(payload))
        rows.append(("the same body again (RecentBodies.get)", per_call(lambda: recent.get(raw), n)))
    return rows


async def cpu_per_call(make: Callable[[int], Awaitable[object]], n: int) -> float:
    """Process CPU (every thread: the cache write runs on the executor) per call, µs."""
    await make(-1)
    started = time.process_time()
    for i in range(n):
        await make(i)
    return (time.process_time() - started) / n * 1e6


async def miss_rows(ctx, n: int) -> list[tuple[str, float]]:
    chat, asked = ctx.chat, [0]

    def req(**extra: object) -> ChatRequest:
        asked[0] += 1
        return ChatRequest.from_payload({"message": f"请概括基层治理的主要经验（第{asked[0]}问）",
                                         "use_knowledge": False, **extra})

    async def llm_alone(i: int) -> None:
        prompt = chat._prompt(req(), [])
        async with chat.gateway.session() as call:
            await call.complete(prompt, temperature=0.7, max_tokens=1024)

    first = await chat.answer(req())
    cached = getattr(first, "answer_json", first.body)  # an older tree cached a dict
    return [("CPU per cache miss (whole, cache write included)", await cpu_per_call(lambda i: chat.answer(req()), n)),
            ("CPU per miss with cache: false (no write)", await cpu_per_call(lambda i: chat.answer(req(cache=False)), n)),
            ("CPU per LLM call alone (session + openai client)", await cpu_per_call(llm_alone, n)),
            ("CPU per cache write (executor + diskcache)",
             await cpu_per_call(lambda i: ctx.cache.set(f"bench:{i}", cached), n))]


async def run(settings: Settings, n: int, misses: int) -> list[tuple[str, float]]:
    ctx = build_context(settings)
    try:
        await asyncio.gather(*map(asyncio.wrap_future, ctx.warm_up()))
        # As server.py does once started: without it a step that allocates pays for
        # full collections walking the index and jieba's dictionaries.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        return [*await measure(ctx, n), *await miss_rows(ctx, misses)]
    finally:
        await ctx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="calls per batch")
    parser.add_argument("--misses", type=int, default=400, help="misses per figure")
    args = parser.parse_args()
    work = common.tmpdir()
    data = common.fresh_data_dir(work, "data", common.knowledge_template(work))
    logs = work / "logs"
    logs.mkdir()
    fake = common.start_upstream(log_dir=logs)  # its own process: its CPU is not counted
    try:
        settings = Settings.from_env({}, data_dir=data, openai_base_url=fake.base_url,
                                     openai_api_key="sk-bench-not-a-real-key", llm_model="fake-model",
                                     rate_limit_per_minute=1_000_000, max_cache_size=100_000)
        configure_logging(level="INFO", fmt=settings.log_format, server_id="bench")
        devnull = open(os.devnull, "w")  # for the life of the run
        logging.getLogger().handlers[0].setStream(devnull)
        rows = asyncio.run(run(settings, args.n, args.misses))
    finally:
        fake.stop()
    print(f"service tree: {common.SERVICE_ROOT}")
    for name, us in rows:
        print(f"{name:<52} {us:8.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
