"""Bench 10: what the OpenAI-compatible door adds on a cache hit.

The same question answered from the shared cache through `/api/chat` and through
`/v1/chat/completions` (same server process, same load generator, alternating rounds),
plus a bare Tornado handler answering the /v1 body as the floor.

    python bench/b10_openai_api.py [--duration 4] [--rounds 3] [--concurrency 32]
Target: /v1 requests/s >= 0.90x /api/chat's (at most 10 % added cost).
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
API_BODY = json.dumps({"message": QUESTION, "mode": "summarize"}, ensure_ascii=False)
V1_BODY = json.dumps({"model": "shenlun-summarize", "messages": [{"role": "user", "content": QUESTION}]},
                     ensure_ascii=False)


def main(argv: list[str] | None = None) -> int:
    args = common.cache_hit_args(__doc__, argv)
    report = Report("b10_openai_api", "/v1/chat/completions vs /api/chat, cache hits, one process")
    logs, upstream, server = common.service_on_bundled_corpus(common.tmpdir())
    common.prime_cache(server.url, "/api/chat", API_BODY)
    v1_answer = common.prime_cache(server.url, "/v1/chat/completions", V1_BODY)
    bare = common.start_bare(v1_answer, log_dir=logs)
    pid = {"server": server.proc.pid}
    runs = {
        "bare": (loadgen.Target(bare.url + "/api/chat", "POST", V1_BODY), {"server": bare.proc.pid}),
        "api": (loadgen.Target(server.url + "/api/chat", "POST", API_BODY), pid),
        "v1": (loadgen.Target(server.url + "/v1/chat/completions", "POST", V1_BODY), pid),
    }
    s, tool = common.cache_hit_rounds(report, runs, args)
    cfg = f"c={args.concurrency}, {tool}, median of {args.rounds}"
    api, v1, b = s["api"], s["v1"], s["bare"]
    report.add("/v1 cache hit requests/s", v1["rps"], "rps", reference="/api/chat cache hit",
               ref_value=api["rps"], target=">= 0.90", met=v1["rps"] >= 0.9 * api["rps"], note=cfg)
    report.add("/v1 server CPU per cache hit", v1["cpu_server"], "µs/req", reference="/api/chat CPU per hit",
               ref_value=api["cpu_server"], target="<= 1.10", met=v1["cpu_server"] <= 1.1 * api["cpu_server"])
    report.add("/v1 cache hit requests/s vs bare", v1["rps"], "rps", reference="bare Tornado JSON handler",
               ref_value=b["rps"], note=cfg)
    report.add("/v1 cache hit p99", v1["p99"], "ms", reference="/api/chat p99", ref_value=api["p99"])
    return common.finish_cache_hits(report, s, bare, server, upstream)


if __name__ == "__main__":
    sys.exit(main())
