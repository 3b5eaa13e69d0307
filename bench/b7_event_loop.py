"""Bench 7: event-loop health under load.

Every concurrency slot (MAX_CONCURRENT_REQUESTS, default 10) holds a slow chat (the
upstream takes 25 s), knowledge searches run from 4 clients without pause, and /health
is polled by one client: its p50/p99 against the same poll on the idle server before.
/health answers from the loop after its probes (cache write/read, index) on their own
one-thread executor, so it shows how long the loop and the GIL make a request wait.
A note gives the server's busy threads' time on a CPU and waiting for one (Linux), to
tell a busy machine from a busy process.

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
    before = _threads(server.proc.pid)
    started = time.monotonic()
    loaded = loadgen.run_python(health, concurrency=1, duration=args.duration, warmup=0.5)
    _note_threads(report, before, _threads(server.proc.pid), time.monotonic() - started)
    for t in searchers:
        t.join(args.duration + 30)
    report.note(f"loaded /health: {loaded.as_dict()}")
    report.add("/health p50 under load", loaded.p50_ms, "ms", reference="idle /health p50", ref_value=idle.p50_ms,
               note=f"{SLOTS} slots held, 4 search clients")
    report.add("/health p99 under load", loaded.p99_ms, "ms", reference="idle /health p99", ref_value=idle.p99_ms,
               target="≤ 20 ms", met=loaded.p99_ms <= 20)
    if search_results:
        rps = sum(r.rps for r in search_results)
        p99 = max(r.p99_ms for r in search_results)
        report.add("searches/s meanwhile (4 clients, 80 docs)", rps, "rps", note=f"worst client p99 {p99:.0f} ms")
    report.note(f"after: {common.machine_load()}")
    server.stop()
    upstream.stop()
    return finish(report)


def _threads(pid: int) -> dict[int, tuple[int, int, int]]:
    """Linux: each thread of the server → (nice, ns on a CPU, ns waiting for one)."""
    out: dict[int, tuple[int, int, int]] = {}
    for task in Path(f"/proc/{pid}/task").glob("*"):
        try:
            on_cpu, waiting, _ = map(int, (task / "schedstat").read_text().split())
            nice = int((task / "stat").read_text().rsplit(")", 1)[1].split()[16])
        except (OSError, ValueError, IndexError):
            continue
        out[int(task.name)] = (nice, on_cpu, waiting)
    return out


def _note_threads(report: Report, before: dict, after: dict, seconds: float) -> None:
    # Where the loop's waits come from: the server's busy threads' share of the wall time
    # on a CPU and waiting for one (runnable, not scheduled: a busy machine); the loop is
    # the process's first thread (its id is the pid), the search thread runs niced.
    busy = []
    for tid, (nice, on_cpu, waiting) in sorted(after.items()):
        _, cpu0, wait0 = before.get(tid, (nice, 0, 0))
        cpu, wait = (on_cpu - cpu0) / 1e9 / seconds, (waiting - wait0) / 1e9 / seconds
        if cpu >= 0.05:
            name = "loop" if tid == min(after) else f"thread {tid}"
            busy.append(f"{name} (nice {nice}): on a CPU {cpu:.0%}, waiting for one {wait:.0%}")
    if busy:
        report.note("under load, " + "; ".join(busy))


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
