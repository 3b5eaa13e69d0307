"""Run every benchmark and print one table of every figure with its ratio to the
reference taken in the same run.

    python bench/run_all.py [--only b1,b3] [--budget 570]

Each bench runs as its own process (bench/bN_*.py) with a time limit; the whole run
keeps within --budget seconds (default 9.5 min) by giving the knowledge bench, which
runs last, what is left (it drops its 10k-document stage when that would not fit).
Results: bench/results/<bench>.json, and the table in bench/results/latest.md.
Loopback only; every process a bench starts is stopped when it ends.
Figures are printed, never asserted: the machines are shared and noisy.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
import loadgen  # noqa: E402

# (name, script, time limit in seconds, extra arguments)
BENCHES = [
    ("b1_cache_hit", "b1_cache_hit.py", 120, []),
    ("b2_cache_miss", "b2_cache_miss.py", 120, []),
    ("b3_slow_upstream", "b3_slow_upstream.py", 90, []),
    ("b6_shared_state", "b6_shared_state.py", 60, []),
    ("b7_event_loop", "b7_event_loop.py", 90, []),
    ("b8_memory_startup", "b8_memory_startup.py", 90, []),
    ("b9_stream_relay", "b9_stream_relay.py", 300, []),
    ("b10_openai_api", "b10_openai_api.py", 120, []),
    ("b4_fleet", "b4_fleet.py", 200, []),
    ("b5_knowledge", "b5_knowledge.py", 400, []),
]
ORDER = ["b1_cache_hit", "b2_cache_miss", "b3_slow_upstream", "b4_fleet", "b5_knowledge",
         "b6_shared_state", "b7_event_loop", "b8_memory_startup"]


def machine() -> str:
    try:
        import psutil
        mem = f"{psutil.virtual_memory().total / 2**30:.0f} GiB"
    except Exception:
        mem = "?"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{os.cpu_count()} cores ({cpu}), {mem}, {platform.system()} {platform.release()}, "
            f"Python {platform.python_version()}, load generator: {'wrk' if loadgen.wrk_available() else 'python (wrk not found)'}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="comma-separated bench names or prefixes (b1,b5)")
    ap.add_argument("--budget", type=float, default=570.0, help="seconds for the whole run")
    args = ap.parse_args(argv)
    wanted = [w for w in args.only.split(",") if w]
    started = time.monotonic()
    common.RESULTS.mkdir(parents=True, exist_ok=True)
    print(f"machine: {machine()}; {common.machine_load()}", flush=True)
    if common.SERVICE_ROOT != common.ROOT:
        print(f"service under test: {common.SERVICE_ROOT}", flush=True)
    ran: dict[str, str] = {}
    for name, script, limit, extra in BENCHES:
        if wanted and not any(name.startswith(w) for w in wanted):
            continue
        stale = common.RESULTS / f"{name}.json"
        if stale.exists():
            stale.unlink()
        left = args.budget - (time.monotonic() - started)
        if left < 20:
            ran[name] = f"skipped: the {args.budget:.0f} s budget was used up"
            print(f"== {name}: {ran[name]}", flush=True)
            continue
        cmd = [sys.executable, str(common.BENCH / script), *extra]
        if name == "b5_knowledge":
            cmd += ["--budget", str(int(left - 10))]
        print(f"== {name} (limit {min(limit, left):.0f} s)", flush=True)
        t0 = time.monotonic()
        # Its own session, so that on a timeout the bench gets SIGTERM first (its handler
        # stops every server it started) and its process group SIGKILL only after.
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                start_new_session=True)
        try:
            output, _ = proc.communicate(timeout=min(limit, left))
            ran[name] = f"exit {proc.returncode} in {time.monotonic() - t0:.0f} s"
            if proc.returncode != 0:
                print(output[-3000:])
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.communicate(timeout=40)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.communicate()
            ran[name] = f"stopped at its {min(limit, left):.0f} s limit"
        print(f"   {ran[name]}", flush=True)

    rows, notes = [], []
    for name in ORDER:
        path = common.RESULTS / f"{name}.json"
        if not path.exists():
            if name in ran:
                notes.append(f"{name}: no result ({ran[name]})")
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        rows += data["rows"]
        notes += [f"{name}: {n}" for n in data["notes"]
                  if n.startswith(("SKIPPED", "fleet of", "reindex", "10k", "streaming:", "add answered"))
                  or "errors direct=" in n or "error answers" in n]
    total = time.monotonic() - started
    print()
    print(f"== all benchmarks ({total:.0f} s; {machine()}; {common.machine_load()}) ==")
    print(common.table(rows))
    for note in notes:
        print(f"  note: {note}")
    latest = common.RESULTS / "latest.md"
    latest.write_text(
        f"Run of {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {total:.0f} s; {machine()}; "
        f"{common.machine_load()} at the end.\n\n" + common.table(rows, markdown=True) + "\n\n"
        + "".join(f"- {n}\n" for n in notes), encoding="utf-8")
    print(f"  table: {latest}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
