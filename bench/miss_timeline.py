"""Where one cache miss at concurrency 1 spends its time through HTTP: a timeline of
server-side stamps, wall and the loop thread's CPU per gap.

    .venv/bin/python bench/miss_timeline.py [--duration 6]
    BENCH_SERVICE_ROOT=/path/to/other/tree .venv/bin/python bench/miss_timeline.py   # the same there

The service runs as in bench/b2_cache_miss.py (server.py's own start-up, the fake upstream
in a process of its own, unique questions, use_knowledge false, one client connection),
in a process that first wraps a few methods to stamp `perf_counter` and `thread_time`:
request read (Tornado hands the body to the handler) → handler (ChatService.answer) →
upstream opened (CurlTransport.open) → upstream head (its first header line, read in the
loop's socket_action) → upstream body done → answer ready (answer returns) → finished
(BaseHandler.on_finish, after the response was written to the socket) → cache write
done (the batch writer's end: inside the answer before issue 17 (8), after it since).
Wall minus CPU in a gap is waiting: the fake, the client, or this process being woken.
Prints p50 and p99 of each gap over every miss after the warm-up.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

ORDER = ("read", "handler", "opened", "head", "body", "ready", "finished", "written")


def serve(out: Path) -> int:
    """server.py's main() with the stamps wrapped in (this process is the service)."""
    import tornado.web

    import server
    from core.chat.service import ChatService
    from core.curl_transport import CurlStream, CurlTransport
    from core.traffic.cache import ResponseCache
    from handlers.base import BaseHandler

    rows: list[dict[str, tuple[float, float]]] = []

    def stamp(name: str) -> None:
        if rows and name not in rows[-1]:
            rows[-1][name] = (time.perf_counter(), time.thread_time())

    def wrap(cls: type, name: str, before: str | None, after: str | None = None, *, coro: bool = False) -> None:
        original = getattr(cls, name)
        if coro:
            async def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
                if before:
                    stamp(before)
                try:
                    return await original(self, *args, **kwargs)
                finally:
                    if after:
                        stamp(after)
        else:
            def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:  # type: ignore[misc]
                if before:
                    stamp(before)
                try:
                    return original(self, *args, **kwargs)
                finally:
                    if after:
                        stamp(after)
        setattr(cls, name, wrapper)

    delegate = tornado.web._HandlerDelegate
    body_read = delegate.finish

    def read(self: Any) -> Any:
        if self.request.path == "/api/chat":
            rows.append({"read": (time.perf_counter(), time.thread_time())})
        return body_read(self)

    delegate.finish = read
    wrap(ChatService, "answer", "handler", "ready", coro=True)
    wrap(CurlTransport, "open", "opened")
    wrap(CurlStream, "header_line", "head")
    wrap(CurlStream, "fetched", "body")
    wrap(BaseHandler, "on_finish", "finished")
    wrap(ResponseCache, "_write_batches", None, "written", coro=True)
    try:
        return server.main([])
    finally:
        out.write_text(json.dumps(rows))


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def report(rows: list[dict[str, list[float]]], skip: int) -> None:
    rows_all = rows
    total = len(rows) - skip
    rows = [r for r in rows[skip:] if all(k in r for k in ORDER[:-1])]
    if len(rows) < total:
        print(f"{total - len(rows)} of {total} misses lack a stamp; one of them: {sorted(rows_all[-1])}")
    gaps: dict[str, tuple[list[float], list[float]]] = {}
    for i, row in enumerate(rows):
        names = sorted(row, key=lambda k: row[k][0])
        for a, b in zip(names, names[1:], strict=False):
            wall, cpu = gaps.setdefault(f"{a} → {b}", ([], []))
            wall.append((row[b][0] - row[a][0]) * 1000)
            cpu.append((row[b][1] - row[a][1]) * 1000)
        wall, cpu = gaps.setdefault("read → finished (the service's part)", ([], []))
        wall.append((row["finished"][0] - row["read"][0]) * 1000)
        cpu.append((row["finished"][1] - row["read"][1]) * 1000)
        if i + 1 < len(rows):
            nxt = rows[i + 1]["read"]
            wall, cpu = gaps.setdefault("finished → next read (client, wake-up)", ([], []))
            wall.append((nxt[0] - row["finished"][0]) * 1000)
            cpu.append((nxt[1] - row["finished"][1]) * 1000)
    print(f"{len(rows)} misses at c=1 (after {skip} warm-up); ms, wall p50/p99 | loop CPU p50/p99; "
          "a gap seen in fewer misses says so")
    for name, (wall, cpu) in gaps.items():
        seen = "" if len(wall) >= len(rows) - 1 else f"  (in {len(wall)})"
        print(f"  {name:44s} {pct(wall, .5):6.3f} {pct(wall, .99):7.3f} | {pct(cpu, .5):6.3f} {pct(cpu, .99):6.3f}{seen}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=6.0, help="seconds of load after a 1 s warm-up")
    ap.add_argument("--serve", type=Path, help=argparse.SUPPRESS)  # the instrumented service
    args, _ = ap.parse_known_args()
    if args.serve:
        return serve(args.serve)
    common.ensure_venv()
    import loadgen
    from b2_cache_miss import QUESTION

    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    out = work / "stamps.json"
    upstream = common.start_upstream(log_dir=logs)
    service = common.start_server(common.fresh_data_dir(work, "data"), upstream=upstream.base_url,
                                  log_dir=logs, MAX_CONCURRENT_REQUESTS=100,
                                  python=[sys.executable, str(Path(__file__).resolve()), "--serve", str(out)])
    try:
        chat = json.dumps({"message": QUESTION, "use_knowledge": False}, ensure_ascii=False)
        print(f"service tree: {common.SERVICE_ROOT}; before: {common.machine_load()}")
        result = loadgen.run(loadgen.Target(service.url + "/api/chat", "POST", chat, unique=True),
                             concurrency=1, duration=args.duration, warmup=1.0)
        print(f"client: {result.tool}, {result.requests} requests, p50 {result.p50_ms:.2f} ms, "
              f"p99 {result.p99_ms:.2f} ms, errors {result.errors}; after: {common.machine_load()}")
    finally:
        service.stop()
        upstream.stop()
    rows = json.loads(out.read_text())
    report(rows, skip=max(50, len(rows) - result.requests))
    return 0


if __name__ == "__main__":
    sys.exit(main())
