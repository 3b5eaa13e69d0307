"""Answer-sheet discipline: counting, the word band, the self-check, one revision.

Counting follows the examiners' rule (`char_count` below): every character,
punctuation included, whitespace not. After the model answers an exam-mode question,
`self_check()` measures the answer against what the 题目 asks — the band of 85–100 %
of the limit, the 文种's format parts, the number of points — and names at most one
revision: condense (over the limit), expand (under the band) or revise (a format part
missing). The chat service makes that one call and never a second; what still fails
is reported in `checks`, never hidden.
"""
from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from core.chat.prompts import EXAM_MODES, PromptBook, TaskSpec, band, default_book, fill
from core.validation import Integer


def char_count(text: str) -> int:
    """Length of an answer as an examiner counts it: every character, punctuation
    included, except whitespace (spaces, tabs, line breaks)."""
    # str.split() cuts on exactly what str.isspace() calls whitespace, in C: ~20× the
    # speed of a Python loop over the characters (a cache hit counts its whole answer).
    return sum(map(len, text.split()))


ANSWER_MODES = EXAM_MODES
# The word limit a client may ask for (chat, /v1 and grading): 10 to 10,000 characters.
WORD_LIMIT = Integer(10, 10_000)
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


def _revision(messages: Sequence[dict[str, str]], answer: str, request: str) -> list[dict[str, str]]:
    return [*({"role": m["role"], "content": m["content"]} for m in messages),
            {"role": "assistant", "content": answer}, {"role": "user", "content": request}]


def condense_messages(messages: Sequence[dict[str, str]], answer: str, limit: int, low: int | None = None,
                      book: PromptBook | None = None) -> list[dict[str, str]]:
    """The conversation that asks the model to shorten its own over-long answer."""
    lo, hi = band(limit, low)
    return _revision(messages, answer, fill((book or default_book()).common("压缩"),
                                             count=char_count(answer), limit=limit, low=lo, high=hi))


# --- plain text for the answer sheet ---

_MARKER = re.compile(r"\s?\[(\d{1,3})\]")
GROUNDS = re.compile(r"^\s*依据\s*[：:]\s*(\[.*\])\s*$")
_MD_LINE = re.compile(r"^\s{0,3}(?:#{1,6}\s+|>\s?|[-*+]\s+(?=\S))")
_MD_INLINE = re.compile(r"\*\*|__|`+|(?<!\S)\*(?=\S)|(?<=\S)\*(?!\S)")
_TABLE_RULE = re.compile(r"^\s*\|?\s*:?-{3,}.*$")
MARKDOWN = re.compile(r"(?m)^\s{0,3}#{1,6}\s|\*\*|__|`|^\s*[-*+]\s+\S|^\s*\|.*\|\s*$")


def has_markdown(text: str) -> bool:
    """Whether `text` carries Markdown that does not belong on an answer sheet."""
    return bool(MARKDOWN.search(text))


def strip_markdown(text: str) -> str:
    """`text` without Markdown syntax (headings, emphasis, bullets, table rules);
    the words stay."""
    lines = []
    for line in text.splitlines():
        if _TABLE_RULE.match(line):
            continue
        line = _MD_INLINE.sub("", _MD_LINE.sub("", line))
        if line.strip().startswith("|"):
            line = "，".join(c.strip() for c in line.strip().strip("|").split("|") if c.strip())
        lines.append(line.rstrip())
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def answer_lines(text: str) -> list[str]:
    return [line.strip() for line in text.splitlines() if line.strip()]


def plain_answer(text: str) -> tuple[str, list[dict[str, Any]]]:
    """An exam answer made fit for the sheet: Markdown and `[n]` markers taken out,
    a final `依据：[...]` line parsed. Returns the text and the citations
    (`{"sentence": i, "sources": [n]}`, i counting the answer's non-empty lines from 1;
    source numbers unchecked)."""
    lines = text.strip().splitlines()
    cited: dict[int, set[int]] = {}
    if lines and (grounds := GROUNDS.match(lines[-1])):
        lines = lines[:-1]
        try:
            for item in json.loads(grounds.group(1)):
                sentence, sources = int(item["sentence"]), [int(n) for n in item["sources"]]
                cited.setdefault(sentence, set()).update(sources)
        except (ValueError, TypeError, KeyError):
            pass  # a malformed grounds line is dropped, not shown on the sheet
    kept: list[str] = []
    for line in strip_markdown("\n".join(lines)).splitlines():
        numbers = [int(n) for n in _MARKER.findall(line)]
        line = _MARKER.sub("", line)
        if line.strip():
            kept.append(line)
            if numbers:
                cited.setdefault(len(kept), set()).update(numbers)
        elif kept and kept[-1]:
            kept.append("")
    lines_kept = len(answer_lines("\n".join(kept)))
    citations = [{"sentence": i, "sources": sorted(ns)} for i, ns in sorted(cited.items())
                 if 1 <= i <= lines_kept and ns]
    return "\n".join(kept).strip(), citations


# --- the self-check ---

_POINT_LINE = re.compile(r"^\s*(?:\d{1,2}\s*[.．、)）]|[（(]\s*[\d一二三四五六七八九十]{1,2}\s*[)）]|"
                         r"[一二三四五六七八九十]{1,2}\s*[、是]|第[一二三四五六七八九十]{1,2}[，,、是：:]|[①-⑳])")
_INLINE_POINT = re.compile(r"[一二三四五六七八九十]是")
_DATE = re.compile(r"(?:\d{4}|[○〇零一二三四五六七八九十]{2,4}|[×xX某]{1,4})\s*年")
_ORG = re.compile(r"(?:办|局|厅|委|委员会|政府|中心|街道|办事处|社区|村委会|居委会|协会|部|处|会|组|站|所|院|"
                  r"馆|队|室|公司|书记|主任|镇长|县长|市长)$")
_END = tuple("。！？!?；;，,：:")


def count_points(text: str) -> int:
    """Numbered points: lines opened by 1. /（1）/ 一、/ 第一，/ ①, or 一是…二是 inline."""
    by_line = sum(1 for line in answer_lines(text) if _POINT_LINE.match(line))
    return max(by_line, len(set(_INLINE_POINT.findall(text))))


def _salutation(line: str) -> bool:
    """A 称谓 line (各位居民：) or a text opened by a short addressee and a colon."""
    if line.endswith(("：", ":")) and char_count(line) <= 30 and "。" not in line:
        return True
    head = re.split(r"[：:]", line, maxsplit=1)[0]
    return head != line and 2 <= len(head) <= 14 and not any(c in head for c in "，,。")


def _has_part(part: str, lines: list[str]) -> bool:
    if not lines:
        return False
    if part == "标题":
        first = lines[0]
        return len(lines) > 1 and char_count(first) <= 30 and not first.endswith(_END)
    if part == "称谓":
        return any(_salutation(line) for line in lines[:3])
    if part == "正文":
        return any(char_count(line) >= 30 for line in lines)
    if part == "号召":
        return any(("让我们" in line or "！" in line or "行动起来" in line) for line in lines[-4:])
    if part == "落款":
        return any(char_count(line) <= 30 and not line.endswith(_END) and (_DATE.search(line) or _ORG.search(line))
                   for line in lines[1:][-3:])
    if part == "结束语":
        return any("谢谢" in line for line in lines[-2:])
    return True


@dataclass
class SelfCheck:
    """What was checked on an answer and what failed; `revision` names the one call
    that could fix it (None when nothing can or need be fixed by the model)."""

    char_count: int
    limit: int | None = None
    low: int | None = None
    points: int | None = None
    points_expected: tuple[int, int] | None = None
    parts: dict[str, bool] = field(default_factory=dict)
    genre: str | None = None
    markdown: bool = False
    markers: int = 0
    revised: str | None = None       # set by the caller: the revision asked for, if any
    revision_kept: bool | None = None  # and whether its answer replaced the first one

    @property
    def within_band(self) -> bool | None:
        if not self.limit:
            return None
        return (self.low or 0) <= self.char_count <= self.limit

    @property
    def points_ok(self) -> bool | None:
        if self.points_expected is None or self.points is None:
            return None
        return self.points_expected[0] <= self.points <= self.points_expected[1]

    @property
    def missing_parts(self) -> list[str]:
        return [p for p, ok in self.parts.items() if not ok]

    @property
    def passed(self) -> bool:
        return (self.within_band is not False and self.points_ok is not False
                and not self.missing_parts and not self.markdown and not self.markers)

    @property
    def revision(self) -> str | None:
        if self.limit and self.char_count > self.limit:
            return "condense"
        if self.limit and self.low and self.char_count < self.low:
            return "expand"
        if self.missing_parts:
            return "revise"
        return None

    def rank(self) -> tuple[int, int, int, int]:
        """Smaller is better: over the limit, missing parts, out of band, distance to it."""
        over = int(bool(self.limit and self.char_count > self.limit))
        distance = 0
        if self.limit:
            distance = max(0, self.char_count - self.limit, (self.low or 0) - self.char_count)
        return over, len(self.missing_parts), int(self.within_band is False), distance

    def as_dict(self) -> dict[str, Any]:
        return {
            "passed": self.passed, "char_count": self.char_count, "word_limit": self.limit,
            "band": [self.low, self.limit] if self.limit else None, "within_band": self.within_band,
            "points": self.points, "points_expected": list(self.points_expected) if self.points_expected else None,
            "points_ok": self.points_ok, "genre": self.genre, "format_parts": self.parts,
            "missing_parts": self.missing_parts, "markdown": self.markdown, "citation_markers": self.markers,
            "revised": self.revised, "revision_kept": self.revision_kept,
        }


def self_check(text: str, spec: TaskSpec) -> SelfCheck:
    """Check an exam answer against what its 题目 asks (see the module docstring)."""
    lines = answer_lines(text)
    parts = {p: _has_part(p, lines) for p in spec.required_parts} if spec.genre else {}
    low = band(spec.limit, spec.low)[0] if spec.limit else None
    return SelfCheck(char_count=char_count(text), limit=spec.limit, low=low,
                     points=count_points(text) if spec.points else None, points_expected=spec.points,
                     parts=parts, genre=spec.genre.name if spec.genre else None,
                     markdown=has_markdown(text), markers=len(_MARKER.findall(text)))


def revision_messages(messages: Sequence[dict[str, str]], answer: str, check: SelfCheck,
                      book: PromptBook | None = None) -> list[dict[str, str]]:
    """The conversation asking for the one revision `check.revision` names."""
    book = book or default_book()
    kind = check.revision
    limit = check.limit or check.char_count
    low = check.low or 0
    if kind == "condense":
        return condense_messages(messages, answer, limit, low, book)
    template = book.common("扩写" if kind == "expand" else "修改")
    missing = "缺少" + "、".join(check.missing_parts) if check.missing_parts else ""
    return _revision(messages, answer, fill(template, count=check.char_count, limit=limit, low=low,
                                            high=limit, missing=missing))
