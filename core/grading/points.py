"""Scoring points: where they come from and how an answer is judged against them.

A point comes from the request's own rubric (`scoring_points`), a practice item's
rubric (label, weight, synonym phrasings), else from the reference answer (one point
per item), else from the material (sentences that carry what the question asks for).
Judging is by meaning and explainable (see `core.grading.lexicon`): a phrasing found
verbatim is a hit; otherwise the answer sentence that states the phrasing's head
concept — every head word, itself or a near-synonym — is a hit, most of a longer
concept a partial. Evidence is that sentence, a verbatim slice of the answer. Where
the question asks what to *do* (对策, 做法, 经验), a bare heading without its 怎么做
earns at most a partial and is never quoted as evidence.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import lru_cache

from core.grading.exam import MEASURE_CUES, PROBLEM_CUES, has_cue, item_kind, question_asks
from core.grading.lexicon import head_match, head_words, present
from core.grading.rubric import (
    CREDIT,
    EXTRACTED_HIT_COVERAGE,
    EXTRACTED_PARTIAL_COVERAGE,
    EXTRACTED_POINTS,
    HIT_COVERAGE,
    PARTIAL_COVERAGE,
)
from core.grading.text import (
    Span,
    compact,
    ensure_jieba,
    head_of,
    item_spans,
    keywords,
    paragraphs,
    posseg,
    question_focus,
    sentences,
    split_items,
    strip_marker,
    without_topic,
)
from core.knowledge.analyzer import jieba  # imported there without pkg_resources

MAX_REFERENCE_POINTS = 12
POINT_KEYWORDS = 5
# An item of at most this many characters (marker and punctuation aside) is a heading.
BARE_HEADING_CHARS = 12


@dataclass(frozen=True)
class ScoringPoint:
    """One thing an examiner gives marks for."""

    id: str
    label: str
    weight: float = 1.0
    phrasings: tuple[str, ...] = ()   # any of these, verbatim or by its head concept, is a hit
    keywords: tuple[str, ...] = ()    # a word set, matched by coverage when no phrasing is stated
    dimension: str = "points"         # "points", or "theme" (立意 of an essay)
    source: str = "rubric"            # rubric | reference | material | question
    material_quote: str = ""          # the material sentence a derived point came from

    def heads(self, topic: str = "") -> tuple[tuple[str, ...], ...]:
        """The head concept of each phrasing, without the question's topic words."""
        return _heads(self.phrasings, topic)

    def keyword_set(self, topic: str = "") -> tuple[str, ...]:
        return without_topic(tuple(k for k in self.keywords if len(k) >= 2), topic)


@lru_cache(maxsize=4096)
def _heads(phrasings: tuple[str, ...], topic: str) -> tuple[tuple[str, ...], ...]:
    return tuple(h for h in (without_topic(head_words(p), topic) for p in phrasings) if h)


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


_RANK = {"missed": 0, "partial": 1, "hit": 2}


def concept_status(heads: tuple[str, ...], text: str) -> tuple[str, float]:
    """hit / partial / missed of one head concept in a text, and the share stated.
    All head words make a hit (one may be missing from four or more); two or more
    of a concept of three or more words, at least half of it, a partial."""
    if not heads:
        return "missed", 0.0
    found, _ = head_match(heads, text)
    n = len(heads)
    share = found / n
    if found == n or (n >= 4 and found >= n - 1):
        return "hit", share
    if n >= 3 and found >= 2 and share >= 0.5:
        return "partial", share
    return "missed", share


def keyword_status(words: tuple[str, ...], text: str, source: str) -> tuple[str, float]:
    """hit / partial / missed of a keyword set, by the share of its characters stated
    (synonyms count); a partial needs two distinct words, never one."""
    if not words:
        return "missed", 0.0
    flat = compact(text)
    forms = [present(w, flat) for w in words]
    total = sum(len(w) for w in words)
    share = sum(len(w) for w, f in zip(words, forms, strict=True) if f) / total
    found = sum(1 for f in forms if f)
    hit, partial = (HIT_COVERAGE, PARTIAL_COVERAGE) if source == "rubric" else \
        (EXTRACTED_HIT_COVERAGE, EXTRACTED_PARTIAL_COVERAGE)
    if share >= hit and (found >= 2 or len(words) == 1):
        return "hit", share
    if share >= partial and found >= 2:
        return "partial", share
    return "missed", share


def sentence_status(point: ScoringPoint, text: str, topic: str = "") -> tuple[str, float]:
    """The best status any phrasing or the keyword set of `point` reaches in `text`."""
    flat = compact(text)
    if any(len(compact(p)) >= 2 and compact(p) in flat for p in point.phrasings):
        return "hit", 1.0
    best = ("missed", 0.0)
    for heads in point.heads(topic):
        best = max(best, concept_status(heads, text), key=lambda r: (_RANK[r[0]], r[1]))
    kw = point.keyword_set(topic)
    if kw:
        best = max(best, keyword_status(kw, text, point.source), key=lambda r: (_RANK[r[0]], r[1]))
    return best


def is_heading(text: str) -> bool:
    """Whether a piece of an answer is only a heading (≤ BARE_HEADING_CHARS characters
    of content once its number and punctuation are gone)."""
    return len(re.sub(r"[\W_]", "", strip_marker(text))) <= BARE_HEADING_CHARS


def judge(point: ScoringPoint, text: str, topic: str = "", *, needs_how: bool = False) -> Judgement:
    """Judge one point against (the counted part of) an answer; words of `topic` (the
    question's focus) are no evidence. With `needs_how`, an item that is only a
    heading earns at most a partial and is not quoted."""
    items = item_spans(text)
    best: tuple[str, float, Span | None] = ("missed", 0.0, None)
    bare_heading = None
    for span in sentences(text):
        status, share = sentence_status(point, span.text, topic)
        if status == "missed":
            continue
        item = next((i for i in items if i.start <= span.start < i.end), span)
        evidence: Span | None = span
        if is_heading(span.text):
            # A heading is quoted with the sentence that says how (in the same item).
            rest = [s for s in sentences(text[item.start:item.end]) if s.start + item.start > span.start]
            if rest:
                nxt = rest[0]
                evidence = Span(text[span.start:item.start + nxt.end], span.start, item.start + nxt.end)
            elif needs_how:
                bare_heading = bare_heading or span.text
                status, evidence = "partial", None
        if (_RANK[status], share, evidence is not None) > (_RANK[best[0]], best[1], best[2] is not None):
            best = (status, share, evidence)
    status, share, quoted = best
    j = Judgement(point=point, status=status, coverage=round(share, 3),
                  evidence=[quoted.text] if quoted is not None and status != "missed" else [])
    if status == "partial" and quoted is None and bare_heading:
        j.note = f"「{bare_heading}」只是标题，没有写清怎么做（主体、措施、目的），至多按部分命中计"
    return j


def quote_overlap(point: ScoringPoint, quote: str, topic: str = "") -> float:
    """How much of the point a quote states (1.0 for a verbatim phrasing)."""
    return sentence_status(point, quote, topic)[1]


# --- points without a rubric ---

def points_from_reference(reference: str, question_type: str = "summarize") -> list[ScoringPoint]:
    """One point per item of a reference answer (numbered lines, 一是/二是, paragraphs);
    for an essay, one per paragraph after the title. The label is the item's lead
    (before its colon, else its first clause) cut to LABEL_CHARS at a word boundary;
    the item itself is kept as the point's source quote."""
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
        # Judged sentence by sentence, a point's words must sit in one sentence: an item
        # of several sentences is stated by its lead sentence when that one carries words.
        lead_sentence = sentences(item)[0].text if item else item
        words = tuple(w for w, _ in keywords(lead_sentence, POINT_KEYWORDS))
        if len(words) < 2:
            words = tuple(w for w, _ in keywords(item, POINT_KEYWORDS))
        if len(words) < 2:
            continue  # a lead-in such as "F市的做法表明：" carries no point
        lead = head_of(item, max_chars=40)
        if lead in labels:  # essays repeat a lead ("办好民生小事，要…"): take the next clause
            lead = head_of(item[item.find(lead) + len(lead):].lstrip("，,：: "), max_chars=40)
        labels.add(lead)
        label = _head(lead.rstrip("…"))
        phrasings = (label,) if len(compact(lead)) <= 16 else ()
        points.append(ScoringPoint(id=f"r{len(points) + 1}", label=label, phrasings=phrasings,
                                   keywords=words, source="reference",
                                   material_quote=item if item in reference else ""))
        if len(points) == MAX_REFERENCE_POINTS:
            break
    return points


_REPORTING = ("介绍", "表示", "指出", "认为", "坦言", "说", "记者", "抱怨", "感慨", "反映", "留言", "写道")
_QUOTE_MARKS = "“”\"'「」『』"
# The longest label an examiner writes for a point: a short 动宾 (or 主谓) phrase.
LABEL_CHARS = 12
# How much more a clause weighs when it carries a cue of what the question asks for.
CUE_BONUS = {"measure": 2.0, "problem": 2.0, "cause": 1.0, "effect": 1.0}
# TF-IDF keywords of the material a derived point may be judged by.
MATERIAL_KEYWORDS = 40


def points_from_material(material: str, question: str, question_type: str) -> list[ScoringPoint]:
    """Points derived from the material, as an examiner would list them.

    Each clause of the material is a candidate. Its weight is the TF-IDF weight of
    the material's keywords it holds — minus the question's own words and the topic
    words found in most sentences (they name the subject, not a point) — doubled when
    it carries a cue of what the question asks for (做法 and 对策: 建立、引入、推行…;
    问题: 不足、缺乏、单一…), and a clause of the wrong kind (a problem offered as a
    做法) is left out. The best clauses become points: an examiner-style label (a
    动宾 phrase of at most 12 characters, looked for by its head concept), the
    clause's heaviest keywords, and the material sentence it came from, verbatim."""
    tags = dict(keywords(material, MATERIAL_KEYWORDS))
    sents = [s for s in sentences(material) if not _HEADING.match(s.text)]
    if not tags or not sents:
        return []
    topic = question_focus(question)
    found_in = {w: sum(1 for s in sents if w in s.text) for w in tags}
    tags = {w: weight for w, weight in tags.items() if w not in topic
            and (found_in[w] < 3 or found_in[w] / len(sents) <= 0.3)}
    kind = question_asks(question)
    candidates: list[tuple[float, int, str, Span, list[str]]] = []
    for n, span in enumerate(sents):
        for clause in _clauses(span.text):
            words = sorted((w for w in tags if w in clause), key=lambda w: -tags[w])
            if _names_a_person(clause):
                continue  # an anecdote (赵先生的路灯…) illustrates a point, it is not one
            if len(words) < 2 and len(head_words(examiner_label(clause, kind, question_type))) < 2:
                continue  # one keyword and a one-word label: nothing an answer could be judged by
            clause_kind = item_kind(clause)
            if question_type == "summarize" and kind in ("measure", "problem") \
                    and clause_kind not in (kind, None):
                continue  # a result offered as a 做法, a problem offered as a 问题
            bonus = CUE_BONUS.get(kind or "", 0.0) if has_cue(clause, kind) else 0.0
            candidates.append((sum(tags[w] for w in words) * (1.0 + bonus), n, clause, span, words))
    candidates.sort(key=lambda c: (-c[0], c[1]))
    wanted = EXTRACTED_POINTS[question_type]
    chosen: list[tuple[int, str, Span, list[str]]] = []
    used: set[str] = set()
    for _, n, clause, span, words in candidates:
        key_words = words[:3]
        if sum(1 for w in key_words if w in used) * 2 >= len(key_words):
            continue  # mostly the same words as a point already taken
        used.update(key_words)
        chosen.append((n, clause, span, key_words))
        if len(chosen) == wanted:
            break
    chosen.sort(key=lambda c: c[0])  # in the material's order, as an examiner reads it
    points: list[ScoringPoint] = []
    for _, clause, span, key_words in chosen:
        label = examiner_label(clause, kind, question_type)
        points.append(ScoringPoint(id=f"m{len(points) + 1}", label=label, phrasings=(label,),
                                   keywords=tuple(key_words), source="material",
                                   material_quote=span.text))
    return points


def _names_a_person(clause: str) -> bool:
    ensure_jieba()
    return any(t.flag == "nr" for t in posseg().lcut(clause))


def _clauses(sentence: str) -> list[str]:
    """The clauses of a sentence, without reporting lead-ins and quotation marks."""
    result = []
    for clause in re.split(r"[，,；;：:。！？!?]", sentence):
        clause = clause.strip(_QUOTE_MARKS + " ")
        if len(clause) >= 4 and not (len(clause) <= 8 and any(r in clause for r in _REPORTING)):
            result.append(clause)
    return result


def examiner_label(clause: str, kind: str | None, question_type: str) -> str:
    """A clause as an examiner labels a point: from its first content verb for a
    做法 or 对策 (引入社会资本), ending at its problem word for a 问题 (收运车辆配备不足),
    at most LABEL_CHARS characters and cut at a word boundary."""
    ensure_jieba()
    clause = re.sub(f"[{_QUOTE_MARKS}]", "", strip_marker(clause)).lstrip("把将对")
    if kind == "problem" or (kind == "measure" and question_type in ("countermeasure", "document")
                             and item_kind(clause) == "problem"):
        end = max((clause.find(c) + len(c) for c in PROBLEM_CUES if c in clause), default=len(clause))
        if len(clause) - end <= 3:
            end = len(clause)  # 不够明确: the problem word's own tail
        if kind == "measure":
            return "解决" + _tail(clause[:end], LABEL_CHARS - 4) + "问题"
        return _tail(clause[:end])
    if kind == "measure":
        cues = [clause.find(c) for c in MEASURE_CUES if c in clause]
        verbs = [clause.find(t.word) for t in posseg().lcut(clause) if t.flag.startswith("v")
                 and len(t.word) >= 2 and t.word not in _REPORTING + ("要求", "需要", "可以")]
        start = min(cues) if cues else (verbs[0] if verbs else 0)
        label = _head(clause[start:])
        return label if len(label) >= 4 else _head(clause)
    return _head(clause)


def _head(text: str, limit: int = LABEL_CHARS) -> str:
    """`text` up to `limit` characters, cut after a whole word."""
    out = ""
    for word in jieba.lcut(text):
        if len(out) + len(word) > limit:
            break
        out += word
    return out or text[:limit]


def _tail(text: str, limit: int = LABEL_CHARS) -> str:
    """The last `limit` characters of `text`, starting at a whole word."""
    out = ""
    for word in reversed(jieba.lcut(text)):
        if len(out) + len(word) > limit:
            break
        out = word + out
    return out or text[-limit:]


_HEADING = re.compile(r"^(?:给定)?资料\s*[\d一二三四五六七八九十]+[：:]?$")


def theme_point(question: str, basis: str) -> ScoringPoint:
    """The 立意 of an essay when no rubric gives one: the question's and the
    reference's (or material's) top keywords, looked for in the title and opening."""
    focus = question_focus(question)
    words = [w for w, _ in keywords(focus + "\n" + focus + "\n" + basis, 3)]
    return ScoringPoint(id="theme", label="立意：" + "、".join(words), keywords=tuple(words),
                        dimension="theme", source="question")
