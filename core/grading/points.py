"""Scoring points: where they come from and how an answer is judged against them.

A point comes from a practice item's rubric (label, weight, synonym phrasings), else
from the reference answer (one point per item of the answer), else from the material
(its TF-IDF keywords, grouped by the sentences that carry them). Judging is literal
and explainable: a phrasing found verbatim is a hit; otherwise the share of the
point's content words present in one answer sentence (or two adjacent ones) decides
hit / partial / missed. Evidence is always a slice of the answer itself.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field

from core.grading.rubric import (CREDIT, EXTRACTED_HIT_COVERAGE, EXTRACTED_PARTIAL_COVERAGE,
                                 EXTRACTED_POINTS, HIT_COVERAGE, PARTIAL_COVERAGE)
from core.grading.text import (Span, compact, content_words, coverage, cue_bonus, cue_kind,
                               head_of, keywords, paragraphs, question_focus, sentences,
                               split_items, windows, without_topic)

MAX_REFERENCE_POINTS = 12
POINT_KEYWORDS = 5


@dataclass(frozen=True)
class ScoringPoint:
    """One thing an examiner gives marks for."""

    id: str
    label: str
    weight: float = 1.0
    phrasings: tuple[str, ...] = ()   # any of these, verbatim, is a hit
    keywords: tuple[str, ...] = ()    # content words looked for when no phrasing is verbatim
    dimension: str = "points"         # "points", or "theme" (立意 of an essay)
    source: str = "rubric"            # rubric | reference | material | question

    def word_sets(self, topic: str = "") -> list[tuple[str, ...]]:
        """The content-word sets an answer window is measured against, without the
        words of the question's topic (`topic`)."""
        sets = [content_words(p) for p in self.phrasings]
        if self.keywords:
            sets.append(tuple(self.keywords))
        return [without_topic(s, topic) for s in sets if s]


@dataclass
class Judgement:
    """How an answer fares on one point, with the answer's own words as evidence."""

    point: ScoringPoint
    status: str                      # hit | partial | missed
    coverage: float = 0.0
    evidence: list[str] = field(default_factory=list)
    judged_by: str = "rules"         # rules | llm | rules+llm
    note: str = ""

    @property
    def credit(self) -> float:
        return CREDIT[self.status]


def status_for(cov: float, source: str = "rubric") -> str:
    """hit / partial / missed for a coverage; extracted points are matched more loosely."""
    hit, partial = (HIT_COVERAGE, PARTIAL_COVERAGE) if source == "rubric" else \
        (EXTRACTED_HIT_COVERAGE, EXTRACTED_PARTIAL_COVERAGE)
    if cov >= hit:
        return "hit"
    if cov >= partial:
        return "partial"
    return "missed"


def best_window(point: ScoringPoint, text: str, topic: str = "") -> tuple[float, Span | None]:
    """The answer window covering most of the point, and that coverage (1.0 when a
    phrasing appears verbatim, whitespace aside)."""
    spans = windows(text)
    for phrase in point.phrasings:
        target = compact(phrase)
        if len(target) < 2:
            continue
        for span in spans:  # sentences come first, so the shortest window wins
            if target in compact(span.text):
                return 1.0, span
    best, best_span = 0.0, None
    sets = point.word_sets(topic)
    for span in spans:
        for words in sets:
            cov = coverage(words, span.text)
            if cov > best + 1e-9:
                best, best_span = cov, span
    return best, best_span


def judge(point: ScoringPoint, text: str, topic: str = "") -> Judgement:
    """Judge one point against (the counted part of) an answer; words of `topic`
    (the question's focus) do not count as evidence."""
    cov, span = best_window(point, text, topic)
    status = status_for(cov, point.source)
    evidence = [span.text] if span is not None and status != "missed" else []
    return Judgement(point=point, status=status, coverage=round(cov, 3), evidence=evidence)


def quote_overlap(point: ScoringPoint, quote: str, topic: str = "") -> float:
    """How much of the point a quote covers (best phrasing or keyword set)."""
    if any(len(compact(p)) >= 2 and compact(p) in compact(quote) for p in point.phrasings):
        return 1.0
    return max((coverage(words, quote) for words in point.word_sets(topic)), default=0.0)


# --- points without a rubric ---

def points_from_reference(reference: str, question_type: str = "summarize") -> list[ScoringPoint]:
    """One point per item of a reference answer (numbered lines, 一是/二是, paragraphs);
    for an essay, one per paragraph after the title."""
    if question_type == "essay":
        lines = paragraphs(reference)
        if len(lines) > 1 and len(compact(lines[0])) <= 30 and not lines[0].endswith("。"):
            lines = lines[1:]
        items = lines
    else:
        items = split_items(reference)
    points: list[ScoringPoint] = []
    labels: set[str] = set()
    for item in items:
        words = tuple(w for w, _ in keywords(item, POINT_KEYWORDS))
        if len(words) < 2:
            continue  # a lead-in such as "F市的做法表明：" carries no point
        label = head_of(item)
        if label in labels:  # essays repeat a lead ("办好民生小事，要…"): add the next clause
            label = head_of(item[item.find(label) + len(label):].lstrip("，,：: "))
        labels.add(label)
        phrasings = (label,) if not label.endswith("…") and len(compact(label)) <= 16 else ()
        points.append(ScoringPoint(id=f"r{len(points) + 1}", label=label, phrasings=phrasings,
                                   keywords=words, source="reference"))
        if len(points) == MAX_REFERENCE_POINTS:
            break
    return points


_REPORTING = ("介绍", "表示", "指出", "认为", "坦言", "说", "记者", "抱怨", "感慨")


def points_from_material(material: str, question: str, question_type: str) -> list[ScoringPoint]:
    """Points picked from the material.

    Its TF-IDF keywords — minus the question's own words and the topic words found in
    most sentences (they name the subject, not a point) — are grouped by the shortest
    runs of clauses that hold two of them; a run with a cue of what the question asks
    for (problems, measures, causes, effects) counts double. The best runs become
    points, each with its (up to) three heaviest keywords."""
    tags = dict(keywords(material, 40))
    sents = sentences(material)
    if not tags or not sents:
        return []
    topic = question_focus(question)
    found_in = {w: sum(1 for s in sents if w in s.text) for w in tags}
    tags = {w: weight for w, weight in tags.items() if w not in topic
            and (found_in[w] < 3 or found_in[w] / len(sents) <= 0.3)}
    kind = cue_kind(question)
    candidates: list[tuple[float, str, list[str]]] = []
    for unit in _clause_runs(sents, tags):
        words = sorted((w for w in tags if w in unit), key=lambda w: -tags[w])
        score = sum(tags[w] for w in words) * (1.0 + cue_bonus(unit, kind))
        candidates.append((score, unit, words))
    candidates.sort(key=lambda c: -c[0])
    wanted = EXTRACTED_POINTS[question_type]
    points: list[ScoringPoint] = []
    used: set[str] = set()
    for _, unit, words in candidates:
        key_words = words[:3]
        if sum(1 for w in key_words if w in used) * 2 >= len(key_words):
            continue  # mostly the same words as a point already taken
        used.update(key_words)
        points.append(ScoringPoint(id=f"m{len(points) + 1}", label=_clause_label(unit, key_words),
                                   keywords=tuple(key_words), source="material"))
        if len(points) == wanted:
            break
    return points


def _clause_runs(sents: list[Span], tags: dict[str, float]) -> list[str]:
    """Within each sentence, the shortest runs of clauses holding two keywords."""
    runs: list[str] = []
    for span in sents:
        if _HEADING.match(span.text):
            continue
        mine: list[str] = []
        current, count = "", 0
        for clause in re.split(r"(?<=[，,；;：:])", span.text):
            current += clause
            count = sum(1 for w in tags if w in current)
            if count >= 2:
                mine.append(current)
                current, count = "", 0
        if current and mine and count:
            mine[-1] += current  # a tail with one keyword joins the run before it
        runs += mine
    return runs


_HEADING = re.compile(r"^(?:给定)?资料\s*[\d一二三四五六七八九十]+[：:]?$")


def _clause_label(sentence: str, words: list[str]) -> str:
    clauses = [c.strip(" “”\"'「」") for c in re.split(r"[，,；;。！？：:]", sentence)]
    clauses = [c for c in clauses if len(c) >= 2] or [sentence]
    best = max(clauses, key=lambda c: (sum(1 for w in words if w in c),
                                       not any(r in c for r in _REPORTING), -len(c)))
    return best if len(best) <= 24 else best[:24] + "…"


def theme_point(question: str, basis: str) -> ScoringPoint:
    """The 立意 of an essay when no rubric gives one: the question's and the
    reference's (or material's) top keywords, looked for in the title and opening."""
    focus = question_focus(question)
    words = [w for w, _ in keywords(focus + "\n" + focus + "\n" + basis, 3)]
    return ScoringPoint(id="theme", label="立意：" + "、".join(words), keywords=tuple(words),
                        dimension="theme", source="question")
