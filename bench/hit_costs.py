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

    .venv/bin/python bench/hit_costs.py --calls 300 [--top 25]

instead counts what a whole hit makes the server's thread do, through real HTTP: the
service's app (server.py's make_app and make_server on this context) and bench/bare_server.py's
handler listen on loopback ports of this process's event loop, a client thread sends the
same keep-alive requests to each, and cProfile, enabled on the loop's thread only, counts
the server's Python calls (ours and Tornado's, not the client's). Call counts do not move
with the machine's load as b1's requests/s do; it prints them per request for the hit and
the bare handler, and the functions with the most calls or own time per request beyond
the bare handler's (own time is cProfile's, inflated, to compare the two columns only).
"""
from __future__ import annotations

import argparse
import asyncio
import cProfile
import gc
import http.client
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


def send(port: int, body: bytes, n: int) -> bytes:
    """POST `body` to /api/chat `n` times on one keep-alive connection; the last answer."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        for _ in range(n):
            conn.request("POST", "/api/chat", body, {"Content-Type": "application/json"})
            answer = conn.getresponse()
            raw = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"/api/chat answered {answer.status}: {raw[:200]!r}")
        return raw
    finally:
        conn.close()


async def profiled(port: int, body: bytes, n: int) -> dict[str, tuple[int, float]]:
    """{function: (calls, own seconds)} of this (the loop's) thread while `n` requests are answered."""
    loop = asyncio.get_running_loop()
    await loop.run_in_executor(None, send, port, body, 20)  # warm
    profile = cProfile.Profile()
    profile.enable()  # this thread only: the client's thread is not counted
    await loop.run_in_executor(None, send, port, body, n)
    profile.disable()
    profile.create_stats()
    return {f"{func} ({Path(file).name}:{line})": (calls, own)
            for (file, line, func), (_, calls, own, _, _) in profile.stats.items()}  # type: ignore[attr-defined]


async def calls_rows(ctx, settings: Settings, n: int, top: int) -> list[str]:
    """Python calls per request, hit against bare, with the largest extras."""
    import bare_server
    import tornado.web
    from tornado.httpserver import HTTPServer
    from tornado.netutil import bind_sockets

    from server import make_app, make_server

    def listen(server: HTTPServer) -> int:
        sockets = bind_sockets(0, "127.0.0.1")
        server.add_sockets(sockets)
        return sockets[0].getsockname()[1]

    body = json.dumps({"message": QUESTION, "mode": "summarize"}, ensure_ascii=False).encode()
    ours = listen(make_server(make_app(settings, ctx), settings))
    hit = json.loads(await asyncio.get_running_loop().run_in_executor(None, send, ours, body, 2))
    bare = listen(HTTPServer(tornado.web.Application([(r"/api/chat", bare_server.ChatHandler, {"answer": hit})])))
    counts = {"hit": await profiled(ours, body, n), "bare": await profiled(bare, body, n)}
    total = {name: sum(c for c, _ in stats.values()) / n for name, stats in counts.items()}
    lines = [f"Python calls per request: cache hit {total['hit']:.0f}, bare Tornado {total['bare']:.0f} "
             f"(ratio {total['hit'] / total['bare']:.2f}; {n} keep-alive requests each)"]
    extra = {f: (c / n - counts["bare"].get(f, (0, 0.0))[0] / n, own / n * 1e6)
             for f, (c, own) in counts["hit"].items()}
    for title, rank in (("calls per request beyond the bare handler's", 0), ("own µs per request (cProfile)", 1)):
        lines.append(f"-- {title}")
        for f, (more, own) in sorted(extra.items(), key=lambda kv: -kv[1][rank])[:top]:
            lines.append(f"{more:+7.1f} calls {own:8.1f} µs  {f}")
    return lines


async def run(settings: Settings, n: int, misses: int, calls: int = 0, top: int = 25) -> list[tuple[str, float]] | list[str]:
    ctx = build_context(settings)
    try:
        await asyncio.gather(*map(asyncio.wrap_future, ctx.warm_up()))
        # As server.py does once started: without it a step that allocates pays for
        # full collections walking the index and jieba's dictionaries.
        gc.freeze()
        gc.set_threshold(GC_YOUNG_THRESHOLD, 10, 10)
        if calls:
            return await calls_rows(ctx, settings, calls, top)
        return [*await measure(ctx, n), *await miss_rows(ctx, misses)]
    finally:
        await ctx.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=1000, help="calls per batch")
    parser.add_argument("--misses", type=int, default=400, help="misses per figure")
    parser.add_argument("--calls", type=int, default=0, metavar="N",
                        help="count the server's Python calls over N whole hits instead (and bare's)")
    parser.add_argument("--top", type=int, default=25, help="functions listed with --calls")
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
        rows = asyncio.run(run(settings, args.n, args.misses, args.calls, args.top))
    finally:
        fake.stop()
    print(f"service tree: {common.SERVICE_ROOT}")
    for row in rows:
        print(row if isinstance(row, str) else f"{row[0]:<52} {row[1]:8.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
