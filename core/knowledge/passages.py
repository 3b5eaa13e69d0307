"""Splitting documents into passages: the unit that is indexed, retrieved and quoted.

A passage is about `TARGET_CHARS` long and ends on a paragraph or, failing that, a
sentence boundary: long enough to carry a method or a point with its explanation, short
enough that four of them fit a prompt's budget and a highlighted snippet comes from the
part of the document that matched.
"""
from __future__ import annotations

import re

TARGET_CHARS = 500   # a passage is closed at the first boundary past this length
MAX_CHARS = 700      # never longer: a longer sentence is cut at a comma, or hard
MIN_TAIL_CHARS = 120  # a shorter last passage joins the one before it (if that fits)

_SENTENCE_END = re.compile(r"(?<=[。！？；!?;…])")
_SOFT_BREAK = re.compile(r"(?<=[，、,：:）)])")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s")


def _units(text: str) -> list[tuple[str, bool]]:
    """(unit, continues_line): paragraphs, the sentences of paragraphs that are too long,
    and pieces of sentences that are still too long, so every unit is at most MAX_CHARS.
    `continues_line` is true for the second and later units cut from one line."""
    units: list[tuple[str, bool]] = []
    for line in text.splitlines():
        line = line.rstrip()
        if not line.strip():
            continue
        if len(line) <= MAX_CHARS:
            units.append((line, False))
            continue
        first = True
        for sentence in filter(None, _SENTENCE_END.split(line)):
            while sentence:
                if len(sentence) <= MAX_CHARS:
                    cut = len(sentence)
                else:
                    cuts = [m.start() for m in _SOFT_BREAK.finditer(sentence, 0, MAX_CHARS)]
                    cut = cuts[-1] if cuts and cuts[-1] > MAX_CHARS // 2 else MAX_CHARS
                units.append((sentence[:cut], not first))
                sentence, first = sentence[cut:], False
    return units


def split_passages(text: str) -> list[str]:
    """The passages of a document's content, in order; never empty for non-blank text.

    Paragraphs are packed together up to TARGET_CHARS; a Markdown heading starts a new
    passage once the current one has some substance, so a passage rarely straddles two
    sections. Lines are joined with newlines, pieces of one long line with nothing.
    """
    passages: list[str] = []
    current: list[str] = []
    size = 0
    for unit, continues_line in _units(text):
        if current and (size >= TARGET_CHARS or size + len(unit) > MAX_CHARS
                        or (_HEADING.match(unit) and size >= MIN_TAIL_CHARS)):
            passages.append("\n".join(current))
            current, size = [], 0
        if current and continues_line:
            current[-1] += unit
        else:
            current.append(unit)
        size += len(unit)
    if current:
        passages.append("\n".join(current))
    if len(passages) > 1 and len(passages[-1]) < MIN_TAIL_CHARS \
            and len(passages[-2]) + len(passages[-1]) <= MAX_CHARS:
        passages[-2:] = [passages[-2] + "\n" + passages[-1]]
    return passages
