"""Word-limit discipline for answers: counting, condensing, the grid answer sheet.

Counting follows the examiners' rule (`core.prompts.char_count`): every character,
punctuation included, whitespace not. An answer over its limit is condensed by
asking the model once more (`condense_messages`); what still exceeds is reported,
never hidden.
"""
from __future__ import annotations

from typing import Sequence

from core.prompts import char_count

ANSWER_MODES = frozenset({"summarize", "countermeasure", "analyze", "document", "essay"})
_SENTENCE_END = "。！？!?；;\n"


def is_over(text: str, limit: int | None) -> bool:
    """True when `text` counts more characters than a given limit."""
    return bool(limit) and char_count(text) > limit  # type: ignore[operator]


def counted_prefix(text: str, limit: int) -> str:
    """The part of `text` that fits in `limit` counted characters — what the grid of
    an answer sheet holds; examiners do not mark what lies beyond it."""
    counted = 0
    for i, ch in enumerate(text):
        if not ch.isspace():
            counted += 1
            if counted > limit:
                return text[:i]
    return text


def trim_to_limit(text: str, limit: int) -> str:
    """`text` cut to `limit` counted characters, at the last sentence end when one
    exists in the second half of the fitting part (else at the limit itself)."""
    if char_count(text) <= limit:
        return text
    fitting = counted_prefix(text, limit)
    cut = max(fitting.rfind(ch) for ch in _SENTENCE_END)
    if cut >= 0 and char_count(fitting[:cut + 1]) >= limit // 2:
        fitting = fitting[:cut + 1]
    return fitting.rstrip()


def condense_messages(messages: Sequence[dict[str, str]], answer: str, limit: int) -> list[dict[str, str]]:
    """The conversation that asks the model to shorten its own over-long answer."""
    target = max(10, int(limit * 0.9))
    return [
        *({"role": m["role"], "content": m["content"]} for m in messages),
        {"role": "assistant", "content": answer},
        {"role": "user", "content": (
            f"你的回答共{char_count(answer)}字（标点计入字数），超过了{limit}字的限制。"
            f"请在不丢失要点的前提下压缩改写为不超过{limit}字（建议{target}字左右）："
            "合并同类要点、删去铺垫和重复，保留原有的结构与分条。直接输出改写后的答案，不要任何说明。")},
    ]
