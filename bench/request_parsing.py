"""Bench: CPU cost of reading a request body (json.loads + the request shape's checks).

Request parsing is on every request's path (a cache hit included, bench/b1_cache_hit.py).
Prints, per body, the process CPU time of json.loads alone (the bare reference, same run)
and of json.loads + validation, best of 7 rounds. Point BENCH_SERVICE_ROOT at another
copy of the project to measure its core/ with the same bodies.

    .venv/bin/python bench/request_parsing.py [--number 5000]
"""
from __future__ import annotations

import argparse
import json
import sys
import time
import timeit
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
from core.chat.openai_compat import CompletionRequest  # noqa: E402
from core.chat.service import ChatRequest  # noqa: E402
from core.grading import GradeRequest  # noqa: E402
from core.knowledge.service import parse_documents  # noqa: E402

BODIES = {
    "chat (b1 body)": (ChatRequest.from_payload, {
        "message": "乡村振兴类材料的归纳概括题怎么答？", "mode": "summarize", "use_knowledge": True}),
    "chat (every field)": (ChatRequest.from_payload, {
        "message": "怎么答？", "mode": "概括", "material": "资料" * 200, "question": "概括问题", "word_limit": 200,
        "temperature": 0.3, "max_tokens": 800, "stream": False, "cache": True,
        "messages": [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "你好！"}]}),
    "grade": (GradeRequest.from_payload, {
        "answer": "答案" * 100, "question": "概括问题", "material": "资料" * 300, "word_limit": 200,
        "scoring_points": [{"label": "设施不足", "score": 2, "phrasings": ["设施不足", "设施缺乏"]}]}),
    "knowledge add": (parse_documents, {
        "title": "标题", "content": "正文" * 500, "tags": ["甲", "乙"], "category": "c"}),
    "/v1 completion": (CompletionRequest.from_payload, {
        "model": "shenlun-summarize", "temperature": 0.5,
        "messages": [{"role": "user", "content": "【资料】甲乙丙\n【题目】概括"}]}),
}


def best(fn, number: int) -> float:
    """Best per-call CPU seconds of `fn` over 7 rounds."""
    return min(timeit.repeat(fn, number=number, repeat=7, timer=time.process_time)) / number


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--number", type=int, default=5000, help="calls per round")
    args = parser.parse_args(argv)
    print(f"core/ measured: {common.SERVICE_ROOT}")
    print(f"{'body':20s} {'json.loads':>12s} {'+ validation':>14s} {'validation':>12s}")
    for name, (parse, body) in BODIES.items():
        raw = json.dumps(body, ensure_ascii=False)
        bare = best(lambda raw=raw: json.loads(raw), args.number)
        full = best(lambda raw=raw, parse=parse: parse(json.loads(raw)), args.number)
        print(f"{name:20s} {bare * 1e6:10.2f}µs {full * 1e6:12.2f}µs {(full - bare) * 1e6:10.2f}µs")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
