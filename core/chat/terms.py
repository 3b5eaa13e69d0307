"""What a 题目 states about its own answer: the word limit, the word floor, the full score.

The one reader of those terms, for chat (`read_task` fits the answer to them) and for
grading (the grader holds the answer to them), so that an answer the assistant writes
for "300字左右" is one the grader takes as within the limit. Plain `re`, no other
import: both packages import it without a cycle and at no cost.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

_NUM = r"(\d{2,5})"
# N～M字, 1000—1200字, 800至1000字 (a doubled dash, ——, too).
_RANGE = re.compile(_NUM + r"\s*[～~〜\-—–－至到]+\s*" + _NUM + r"\s*字")
# 不超过N字, 限N字, 字数N字, 以内：N字; N字以内, N字之内, N字以下. 字数N字左右 is an 'about'.
_AT_MOST = re.compile(r"(?:不超过|不多于|不得超过|限|字数|以内[:：]?\s*)" + _NUM + r"\s*字(?!\s*左右)|"
                      + _NUM + r"\s*字(?:以内|之内|以下)")
_ABOUT = re.compile(_NUM + r"\s*字左右")
_AT_LEAST = re.compile(r"(?:不少于|不低于|至少)" + _NUM + r"\s*字")
_SCORE = re.compile(r"[（(]\s*(\d{1,3})\s*分\s*[）)]")
ABOUT_SHARE = 0.10   # N字左右 is read as N ± 10 %, as examiners tolerate it


@dataclass(frozen=True)
class Length:
    """The length a question asks for: an upper limit and a lower bound (either may be None)."""

    upper: int | None = None
    lower: int | None = None


def read_length(question: str) -> Length:
    """The length a 题目 states: `N～M字` (M the limit, N the floor), else `N字左右`
    (N ± 10 %), then `不超过N字` / `N字以内` (the limit) and `不少于N字` (the floor),
    each overriding that bound of the 左右; `Length()` when it states none."""
    if m := _RANGE.search(question):
        lo, hi = sorted((int(m.group(1)), int(m.group(2))))
        return Length(upper=hi, lower=lo)
    upper = lower = None
    if m := _ABOUT.search(question):
        n = int(m.group(1))
        upper, lower = round(n * (1 + ABOUT_SHARE)), round(n * (1 - ABOUT_SHARE))
    if m := _AT_MOST.search(question):
        upper = int(m.group(1) or m.group(2))
    if m := _AT_LEAST.search(question):
        lower = int(m.group(1))
    return Length(upper=upper, lower=lower)


def read_full_score(question: str) -> int | None:
    """The score a 题目 states, `（15分）` (1–100; None when it states none)."""
    m = _SCORE.search(question)
    value = int(m.group(1)) if m else None
    return value if value and 1 <= value <= 100 else None
