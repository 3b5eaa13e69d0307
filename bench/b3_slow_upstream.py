"""Bench 3: a slow upstream (1 s per answer) with MAX_CONCURRENT_REQUESTS=100, one process.

Whole answers: 100 clients, each asking a new question as soon as it has its answer;
the ceiling is 100 answers/s (100 slots, 1 s each). Streaming: time to the first delta
through the service vs straight from the upstream (same fake, same 1 s before the first
chunk), so the difference is what the service adds.

    python bench/b3_slow_upstream.py [--duration 10] [--stream-duration 4]
Target: >= 90% of 100 answers/s.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
import loadgen  # noqa: E402

from core.chat.prompts import build_prompt  # noqa: E402

SLOTS = 100
LATENCY = 1.0
QUESTION = "如何理解“枫桥经验”在新时代的发展？（第{n}问）"


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--duration", type=float, default=10.0)
    ap.add_argument("--stream-duration", type=float, default=4.0)
    ap.add_argument("--stream-concurrency", type=int, default=10)
    ap.add_argument("--tool", default="auto", choices=("auto", "wrk", "python"))
    args = ap.parse_args(argv)
    report = Report("b3_slow_upstream", f"upstream {LATENCY:.0f} s per answer, {SLOTS} slots, 1 process")
    work = common.tmpdir()
    logs = work / "logs"
    logs.mkdir()
    # 50 chunks/s per stream, a fast model's pace (8 characters a chunk).
    upstream = common.start_upstream(log_dir=logs, latency=LATENCY, chunk_delay=0.02)
    server = common.start_server(common.fresh_data_dir(work, "data"), upstream=upstream.base_url,
                                 log_dir=logs, MAX_CONCURRENT_REQUESTS=SLOTS)
    report.note(f"before: {common.machine_load()}")
    whole = loadgen.Target(server.url + "/api/chat", "POST",
                           json.dumps({"message": QUESTION, "use_knowledge": False}, ensure_ascii=False),
                           unique=True)
    # No warm-up run: a warm-up that ends cuts 100 requests off mid-answer, and their
    # slots stay taken until the upstream answers, so the next run would start on 503s.
    m = common.measure(whole, concurrency=SLOTS, duration=args.duration, warmup=0,
                       watch={"service": server.proc.pid}, tool=args.tool)
    r = m.result
    # Closed loop, no think time: throughput = clients / mean answer time (Little's law),
    # free of the rounding of "whole 1-second batches finished inside the window".
    rate = SLOTS / (r.mean_ms / 1000) if r.mean_ms and not r.errors else r.rps
    report.note(f"whole answers: {r.as_dict()}, service CPU {m.cpu_us['service']:.0f} µs/answer")
    report.add(f"answers/s with {SLOTS} slots", rate, "rps", reference="theoretical 100/s",
               ref_value=SLOTS / LATENCY, target=">= 0.90", met=rate >= 0.9 * SLOTS / LATENCY,
               note=f"c={SLOTS}, {r.tool}, {r.requests} answers, {r.errors} errors, "
                    f"counted in window {r.rps:.0f}/s")
    report.add("answer p99 (upstream takes 1000 ms)", r.p99_ms, "ms", reference="upstream latency",
               ref_value=LATENCY * 1000)

    # Streaming: time to first delta, service vs direct, alternating rounds.
    prompt = build_prompt(mode="chat", question=QUESTION, history=(), material="", task="",
                          word_limit=None, sources=())
    direct = loadgen.Target(upstream.base_url + "/chat/completions", "POST", json.dumps(
        {"model": "fake-model", "messages": prompt.messages, "temperature": 0.7, "max_tokens": 1024,
         "stream": True}, ensure_ascii=False), unique=True)
    service = loadgen.Target(server.url + "/api/chat", "POST", json.dumps(
        {"message": QUESTION, "use_knowledge": False, "stream": True}, ensure_ascii=False), unique=True)
    samples: dict[str, list[float]] = {"direct": [], "service": []}
    errors = 0
    for _ in range(2):
        for name, target, marker in (("direct", direct, b'"content"'), ("service", service, b'{"delta"')):
            got, err = loadgen.first_event_latencies(target, marker, concurrency=args.stream_concurrency,
                                                     duration=args.stream_duration / 2)
            samples[name] += got
            errors += err
    d50, d99 = (loadgen.percentile(samples["direct"], q) * 1000 for q in (50, 99))
    s50, s99 = (loadgen.percentile(samples["service"], q) * 1000 for q in (50, 99))
    cfg = f"c={args.stream_concurrency}, {len(samples['service'])}/{len(samples['direct'])} samples"
    report.add("stream: time to first delta added, p50", s50 - d50, "ms", reference="direct TTFD p50",
               ref_value=d50, ratio=s50 / d50 if d50 else None, note=cfg)
    report.add("stream: time to first delta added, p99", s99 - d99, "ms", reference="direct TTFD p99",
               ref_value=d99, ratio=s99 / d99 if d99 else None, note=cfg)
    if errors:
        report.note(f"streaming: {errors} failed requests")
    report.note(f"after: {common.machine_load()}")
    server.stop()
    upstream.stop()
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
