"""testkit/fake_llm.py's fake OpenAI-compatible server, in a process of its own.

    python bench/fake_upstream.py [--latency S] [--chunk-delay S] [--answer-chars N] [--chunk-chars N]

Prints `PORT <n>` on its first line, then serves on 127.0.0.1:<n> until SIGTERM/SIGINT.
A process of its own, so the fake does not share a GIL with the load generator or the
service under test. Every answer is the same text of --answer-chars characters.
"""
from __future__ import annotations

import argparse
import signal
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from testkit.fake_llm import FakeLLM  # noqa: E402

SAMPLE = ("归纳概括题要求全面准确地从给定资料中提炼要点，忠于资料原意，不展开分析、不提对策；"
          "按总括句加分条要点作答，要点用序号标出，每条以关键词开头，同类合并、避免重复。")


class _Discard(list):
    """The fake keeps every request body for tests; a benchmark must not grow forever."""

    def append(self, item: object) -> None:
        return None


def answer_text(chars: int) -> str:
    return (SAMPLE * (chars // len(SAMPLE) + 1))[:chars]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--latency", type=float, default=0.0)
    parser.add_argument("--chunk-delay", type=float, default=0.0)
    parser.add_argument("--answer-chars", type=int, default=600)
    parser.add_argument("--chunk-chars", type=int, default=8, help="characters per stream chunk")
    args = parser.parse_args()
    fake = FakeLLM()
    fake.latency = args.latency
    fake.chunk_delay = args.chunk_delay
    fake.chunk_chars = args.chunk_chars
    text = answer_text(args.answer_chars)
    fake.reply = lambda body: text
    fake.requests = _Discard()
    fake.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    print(f"PORT {fake.port}", flush=True)
    while not stop.wait(1.0):
        pass
    fake.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
