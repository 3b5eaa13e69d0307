"""Bench 7: event-loop health under load.

Every concurrency slot (MAX_CONCURRENT_REQUESTS, default 10) holds a slow chat (the
upstream takes 25 s), knowledge searches run from 4 clients without pause, and /health
is polled by one client: its p50/p99 against the same poll on the idle server before.
/health answers from the loop after its probes (cache write/read, index) on their own
one-thread executor, so it shows how long the loop and the GIL make a request wait.

    python bench/b7_event_loop.py [--duration 8]
"""
from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
import loadgen  # noqa: E402

SLOTS = 10
QUERIES = ["乡村振兴", "基层治理", "枫桥经验", "营商环境", "生态文明", "共同富裕", "数字政府", "归纳概括"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=8.0)
    args = ap.parse_args(argv)
    report = Report("b7_event_loop", f"/health while {SLOTS} slow chats hold every slot and searches run")
    report.note(f"before: {common.machine_load()}")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    upstream = common.start_upstream(log_dir=logs, latency=25.0)
    server = common.start_server(common.fresh_data_dir(work, "data", common.knowledge_template(work)),
                                 upstream=upstream.base_url, log_dir=logs, MAX_CONCURRENT_REQUESTS=SLOTS,
                                 SHUTDOWN_GRACE_SECONDS=1)
    health = loadgen.Target(server.url + "/health")
    idle = loadgen.run_python(health, concurrency=1, duration=3, warmup=0.5)
    report.note(f"idle /health: {idle.as_dict()}")

    chats = []
    for n in range(SLOTS):
        body = json.dumps({"message": f"第{n}题：请分析材料中基层减负的做法", "mode": "analyze"},
                          ensure_ascii=False).encode()
        t = threading.Thread(target=lambda b=body: _quiet(common.http, "POST", server.url + "/api/chat", b,
                                                          timeout=40), daemon=True)
        t.start()
        chats.append(t)
    # Wait until every slot is taken: /api/metrics counts the requests in flight.
    deadline = time.monotonic() + 15
    held = 0
    while time.monotonic() < deadline and held < SLOTS:
        time.sleep(0.1)
        status, _, raw = common.http("GET", server.url + "/api/metrics")
        held = json.loads(raw).get("concurrent_requests", 0) if status == 200 else 0
    report.note(f"slow chats in flight: {held} of {SLOTS} slots")
    search_results: list[loadgen.LoadResult] = []
    searchers = [threading.Thread(target=lambda q=q: search_results.append(loadgen.run_python(
        loadgen.Target(server.url + "/api/knowledge/search?q=" + _quote(q)), concurrency=1,
        duration=args.duration, warmup=0.5))) for q in QUERIES[:4]]
    for t in searchers:
        t.start()
    loaded = loadgen.run_python(health, concurrency=1, duration=args.duration, warmup=0.5)
    for t in searchers:
        t.join(args.duration + 30)
    report.note(f"loaded /health: {loaded.as_dict()}")
    report.add("/health p50 under load", loaded.p50_ms, "ms", reference="idle /health p50", ref_value=idle.p50_ms,
               note=f"{SLOTS} slots held, 4 search clients")
    report.add("/health p99 under load", loaded.p99_ms, "ms", reference="idle /health p99", ref_value=idle.p99_ms,
               target="< 100 ms", met=loaded.p99_ms < 100)
    if search_results:
        rps = sum(r.rps for r in search_results)
        p99 = max(r.p99_ms for r in search_results)
        report.add("searches/s meanwhile (4 clients, 80 docs)", rps, "rps", note=f"worst client p99 {p99:.0f} ms")
    report.note(f"after: {common.machine_load()}")
    server.stop()
    upstream.stop()
    return finish(report)


def _quote(text: str) -> str:
    from urllib.parse import quote
    return quote(text)


def _quiet(fn, *args, **kwargs):
    try:
        return fn(*args, **kwargs)
    except Exception:
        return None


if __name__ == "__main__":
    sys.exit(main())
