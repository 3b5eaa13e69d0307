"""Bench 8: memory per instance (idle and under load) and start-up time to the first
200 on /health, against a bare Tornado process (bench/bare_server.py) as the floor.

Start-up is measured from spawning `python server.py` to the first 200 of /health
(polled every 10 ms): imports, settings, opening the index and the shared stores, with
the project's bytecode compiled beforehand, as any start after the first one from a
checkout (or an image built by the Dockerfile) has it. The phases are the server's own
(its "listening" log line). Right after that first 200, one chat (a cache miss on the
fake upstream) and one search are timed, against a second of each: the LLM client and
jieba's dictionaries load before the server listens, and these say whether the first
requests still pay for anything. Under load: cache hits, misses and searches at once for a few seconds,
RSS sampled every 100 ms, the peak reported. Where the memory goes: a separate process
imports the server and builds its context under tracemalloc, and the live Python
allocations are printed by package (tracemalloc sees Python's allocations, not RSS).

    python bench/b8_memory_startup.py [--starts 3] [--duration 5] [--baseline DIR]

With `--baseline DIR` (another copy of the project, e.g. an earlier commit) it only
compares start-ups: this copy and that one started one after the other, `--starts`
times each, against the same fake upstream and knowledge base.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
import loadgen  # noqa: E402

MB = 1024 * 1024


_BREAKDOWN = """
import collections, sys, tracemalloc
tracemalloc.start()
from core.config import Settings
from core.context import build_context
ctx = build_context(Settings.from_env())
for loading in ctx.warm_up():  # as the server does before it listens
    loading.result()
by_package = collections.Counter()
for stat in tracemalloc.take_snapshot().statistics("filename"):
    path = stat.traceback[0].filename
    parts = path.split("site-packages/")[-1].split("/") if "site-packages" in path else path.split("/")[-3:]
    if "site-packages" in path:
        key = parts[0]
    elif "/core/" in path or "/handlers/" in path:
        key = "project " + parts[-2]
    elif "importlib" in path:
        key = "module code (imports)"
    else:
        key = "stdlib " + parts[-1]
    by_package[key] += stat.size
total = sum(by_package.values())
print(f"traced {total / 2**20:.1f} MiB:", ", ".join(f"{k} {v / 2**20:.1f}" for k, v in by_package.most_common(8)))
"""


def breakdown(data_dir: Path, upstream: str) -> str:
    """Python allocations by package after building the server's context."""
    env = common.server_env(data_dir, common.free_port(), "breakdown", upstream)
    out = subprocess.run([sys.executable, "-c", _BREAKDOWN], cwd=common.SERVICE_ROOT, env=env,
                         capture_output=True, text=True, timeout=120)
    return out.stdout.strip() or out.stderr[-500:]


_PHASES = re.compile(r"started in ([\d.]+)s: modules ([\d.]+), resources ([\d.]+), handlers ([\d.]+)")
_SEARCH = "/api/knowledge/search?q=%E5%9F%BA%E5%B1%82%E6%B2%BB%E7%90%86"


def timed(method: str, url: str, body: dict | None = None) -> float:
    """Seconds one request takes (it must answer 200)."""
    started = time.monotonic()
    status, _, payload = common.http(method, url, body, timeout=60)
    if status != 200:
        raise RuntimeError(f"{method} {url}: {status} {payload[:200]!r}")
    return time.monotonic() - started


def first_requests(server: common.Server, n: int) -> dict[str, float]:
    """The first chat and search right after /health 200, and a second of each."""
    chat = server.url + "/api/chat"
    out = {"first chat": timed("POST", chat, {"message": f"第{n}次启动：如何写好倡议书？", "mode": "document"}),
           "first search": timed("GET", server.url + _SEARCH)}
    out["second chat"] = timed("POST", chat, {"message": f"第{n}次启动：如何写好讲话稿？", "mode": "document"})
    out["second search"] = timed("GET", server.url + _SEARCH + "&offset=1")
    return out


def compare_start_ups(report: Report, work: Path, template: Path, upstream: str, logs: Path,
                      starts: int, baseline: Path) -> None:
    """Start-up of this copy against `baseline`'s, alternating (noisy machines drift)."""
    wall: dict[str, list[float]] = {"this copy": [], "baseline": []}
    cpu: dict[str, list[float]] = {"this copy": [], "baseline": []}
    for i in range(starts):
        for side, root in (("baseline", baseline), ("this copy", None)):
            server = common.start_server(common.fresh_data_dir(work, f"cmp{i}{side[0]}", template), root=root,
                                         upstream=upstream, log_dir=logs, MAX_CONCURRENT_REQUESTS=100)
            wall[side].append(server.startup_s)
            cpu[side].append(common.cpu_seconds(server.proc.pid))
            server.stop()
    note = f"median of {starts}, alternating"
    report.add("start-up to first /health 200, this copy", common.median(wall["this copy"]), "s",
               reference=f"baseline {baseline}", ref_value=common.median(wall["baseline"]), note=note)
    report.add("CPU time to first /health 200, this copy", common.median(cpu["this copy"]), "s",
               reference="baseline", ref_value=common.median(cpu["baseline"]), note=note)
    report.note(f"fastest start-up: this copy {min(wall['this copy']):.2f} s, baseline {min(wall['baseline']):.2f} s")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--starts", type=int, default=3)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--baseline", type=Path, help="only compare start-ups with this project copy")
    args = ap.parse_args(argv)
    report = Report("b8_memory_startup", "RSS per instance and start-up time")
    report.note(f"before: {common.machine_load()}")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    template = common.knowledge_template(work)
    upstream = common.start_upstream(log_dir=logs)
    # Bytecode as a deployed checkout has it (written by its first start, or by the
    # Dockerfile's compileall): an environment with PYTHONDONTWRITEBYTECODE would
    # otherwise compile the project's modules at every start (~0.5 s more).
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    for root in (common.SERVICE_ROOT, *([args.baseline] if args.baseline else [])):
        subprocess.run([sys.executable, "-m", "compileall", "-q", "core", "handlers", "server.py"],
                       cwd=root, check=True, timeout=300)
    if args.baseline:
        compare_start_ups(report, work, template, upstream.base_url, logs, args.starts, args.baseline)
        upstream.stop()
        return finish(report)
    starts, bare_starts, phases, cpu, bare_cpu = [], [], [], [], []
    firsts: dict[str, list[float]] = {}
    server = None
    for i in range(args.starts):
        if server is not None:
            server.stop()
        server = common.start_server(common.fresh_data_dir(work, f"data{i}", template),
                                     upstream=upstream.base_url, log_dir=logs, MAX_CONCURRENT_REQUESTS=100)
        starts.append(server.startup_s)
        cpu.append(common.cpu_seconds(server.proc.pid))  # less noisy than wall time on a busy machine
        for name, seconds in first_requests(server, i).items():
            firsts.setdefault(name, []).append(seconds)
        found = _PHASES.findall(server.proc.log(tail=20000))
        if found:
            phases.append([float(x) for x in found[-1]])
        bare = common.start_bare({"answer": "x"}, log_dir=logs)
        bare_starts.append(bare.startup_s)
        bare_cpu.append(common.cpu_seconds(bare.proc.pid))
        if i < args.starts - 1:
            bare.stop()
    time.sleep(1.0)
    idle = common.rss_bytes(server.proc.pid)
    bare_idle = common.rss_bytes(bare.proc.pid)
    report.add("start-up to first /health 200", common.median(starts), "s", reference="bare Tornado start-up",
               ref_value=common.median(bare_starts), note=f"median of {args.starts}, bundled knowledge")
    report.add("CPU time to first /health 200", common.median(cpu), "s", reference="bare Tornado",
               ref_value=common.median(bare_cpu), note=f"median of {args.starts}; user + system")
    if phases:
        names = ("to listen", "modules", "resources", "handlers + listen")
        report.note(f"start-up phases in the server (median of {len(phases)}, s): " + ", ".join(
            f"{name} {common.median([p[k] for p in phases]):.2f}" for k, name in enumerate(names)))
    for kind in ("chat", "search"):
        report.add(f"first {kind} right after /health 200", common.median(firsts[f"first {kind}"]) * 1000,
                   "ms", reference=f"second {kind}", ref_value=common.median(firsts[f"second {kind}"]) * 1000,
                   note=f"median of {args.starts}" + (" (cache miss, fake upstream)" if kind == "chat" else ""))
    report.add("RSS idle", idle / MB, "MiB", reference="bare Tornado RSS", ref_value=bare_idle / MB)

    report.note("memory by package (tracemalloc, live Python allocations after start-up and warm-up): "
                + breakdown(common.fresh_data_dir(work, "breakdown", template), upstream.base_url))
    peak = [idle]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.1):
            try:
                peak.append(common.rss_bytes(server.proc.pid))
            except Exception:
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    hit_body = json.dumps({"message": "乡村振兴类材料的归纳概括题怎么答？", "mode": "summarize"}, ensure_ascii=False)
    common.http("POST", server.url + "/api/chat", hit_body.encode())
    targets = [
        loadgen.Target(server.url + "/api/chat", "POST", hit_body),
        loadgen.Target(server.url + "/api/chat", "POST",
                       json.dumps({"message": "第{n}个问题：如何写好倡议书？", "mode": "document"}, ensure_ascii=False),
                       unique=True),
        loadgen.Target(server.url + "/api/knowledge/search?q=%E5%9F%BA%E5%B1%82%E6%B2%BB%E7%90%86"),
    ]
    threads = [threading.Thread(target=loadgen.run_python, args=(t,),
                                kwargs={"concurrency": 16, "duration": args.duration, "warmup": 0})
               for t in targets]
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 60)
    stop.set()
    sampler.join(5)
    after = common.rss_bytes(server.proc.pid)
    report.add("RSS peak under load (hits + misses + searches, 3x16 clients)", max(peak) / MB, "MiB",
               reference="RSS idle", ref_value=idle / MB)
    report.add("RSS after the load", after / MB, "MiB", reference="RSS idle", ref_value=idle / MB)
    bare.stop()
    server.stop()
    upstream.stop()
    report.note(f"after: {common.machine_load()}")
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
