"""Bench 1: overhead on a cache hit.

`/api/chat` answered from the shared cache vs a bare Tornado JSON handler answering the
same object (bench/bare_server.py), one process each, same load generator, same
concurrency. Two request shapes: the default one (use_knowledge true: the cache key
holds the knowledge base's version, so a hit reads that version and retrieves nothing)
and use_knowledge false (the gateway alone: auth, rate limit, validation, cache read,
metrics, logs).

    python bench/b1_cache_hit.py [--duration 4] [--rounds 3] [--concurrency 32]
Target: service requests/s >= 60% of bare Tornado's.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report

common.ensure_venv()
import loadgen  # noqa: E402

QUESTION = "乡村振兴类材料的归纳概括题怎么答？"


def chat_body(use_knowledge: bool) -> str:
    return json.dumps({"message": QUESTION, "mode": "summarize", "use_knowledge": use_knowledge},
                      ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    args = common.cache_hit_args(__doc__, argv)
    report = Report("b1_cache_hit", "cache hit vs bare Tornado, 1 process each")
    logs, upstream, server = common.service_on_bundled_corpus(common.tmpdir())
    hit_kn = common.prime_cache(server.url, "/api/chat", chat_body(True))
    common.prime_cache(server.url, "/api/chat", chat_body(False))
    size = len(json.dumps(hit_kn, ensure_ascii=False).encode())
    bare = common.start_bare(hit_kn, log_dir=logs)
    runs = {
        "bare": (loadgen.Target(bare.url + "/api/chat", "POST", chat_body(True)), {"server": bare.proc.pid}),
        "hit": (loadgen.Target(server.url + "/api/chat", "POST", chat_body(True)), {"server": server.proc.pid}),
        "hit_noknowledge": (loadgen.Target(server.url + "/api/chat", "POST", chat_body(False)),
                            {"server": server.proc.pid}),
    }
    s, tool = common.cache_hit_rounds(report, runs, args)
    b, h, p = s["bare"], s["hit"], s["hit_noknowledge"]
    cfg = f"c={args.concurrency}, {tool}, answer {size} B, median of {args.rounds}"
    report.add("cache hit requests/s (default request, knowledge on)", h["rps"], "rps",
               reference="bare Tornado JSON handler", ref_value=b["rps"], target=">= 0.60",
               met=h["rps"] >= 0.6 * b["rps"], note=cfg)
    report.add("cache hit requests/s (use_knowledge=false)", p["rps"], "rps",
               reference="bare Tornado JSON handler", ref_value=b["rps"], target=">= 0.60",
               met=p["rps"] >= 0.6 * b["rps"], note=cfg)
    for label, res in (("default", h), ("use_knowledge=false", p)):
        report.add(f"cache hit p50 ({label})", res["p50"], "ms", reference="bare p50", ref_value=b["p50"])
        report.add(f"cache hit p99 ({label})", res["p99"], "ms", reference="bare p99", ref_value=b["p99"])
        report.add(f"server CPU per cache hit ({label})", res["cpu_server"], "µs/req",
                   reference="bare CPU per request", ref_value=b["cpu_server"])
    return common.finish_cache_hits(report, s, bare, server, upstream)


if __name__ == "__main__":
    sys.exit(main())
