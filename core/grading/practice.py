"""The bundled practice items (`data/practice/*.json`): load, validate, list, find.

Each file is one item written for this project: an invented 给定资料, a question, a
reference answer and its scoring points (label, score, synonym phrasings). Items are
read once at start-up; a malformed file is skipped with a warning (and fails the
test that loads the bank strictly).

A whole paper (套卷, `data/practice/papers/*.json`) holds one material shared by 4–5
items and the exam's timing (总时限, 建议阅读时间). Its items are ordinary item files
with a `paper` object (`id`, `order`, `suggested_minutes`) and no `material` of their
own: the paper's material is written once and lent to each of them at load time.
"""
from __future__ import annotations

import builtins
import json
import logging
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Annotated, Any

from core.config import PROJECT_ROOT
from core.grading.points import ScoringPoint
from core.grading.rubric import QUESTION_TYPES, TYPE_ALIASES
from core.grading.structure import GENRE_PARTS
from core.validation import Check, Choice, Query, QueryText

log = logging.getLogger("shenlun.grading")

PRACTICE_DIR = PROJECT_ROOT / "data" / "practice"
PAPERS_SUBDIR = "papers"
ID_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")  # practice item and paper ids
# A paper has the 4–5 questions of a real 申论 paper and fits the exam's 120–210 minutes.
PAPER_QUESTIONS = (4, 5)
PAPER_MINUTES = (120, 210)
# A theme filter is a word or two of a tag or title (养老, 人工智能), not a sentence.
MAX_THEME_CHARS = 20


class PracticeError(ValueError):
    """A practice file that does not describe a valid item."""


@dataclass(frozen=True)
class PaperSlot:
    """Where an item sits in its paper: the paper, the question number, the minutes."""

    paper_id: str
    order: int
    suggested_minutes: int

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.paper_id, "order": self.order, "suggested_minutes": self.suggested_minutes}


@dataclass(frozen=True)
class PracticePaper:
    """A whole paper: one material, its timing, and (once loaded) its items in order."""

    id: str
    title: str
    exam: str
    total_minutes: int
    reading_minutes: int
    material: str
    tags: tuple[str, ...] = ()
    note: str = ""
    item_ids: tuple[str, ...] = ()

    def summary(self, items: Iterable[PracticeItem] = ()) -> dict[str, Any]:
        """The paper's metadata and the outline of its questions (`items`, in order)."""
        questions = [{"id": i.id, "order": i.paper.order, "question_type": i.question_type,
                      "genre": i.genre, "full_score": i.full_score, "word_limit": i.word_limit,
                      "suggested_minutes": i.paper.suggested_minutes}
                     for i in items if i.paper]
        return {"id": self.id, "title": self.title, "exam": self.exam,
                "total_minutes": self.total_minutes, "reading_minutes": self.reading_minutes,
                "full_score": sum(q["full_score"] for q in questions),
                "material_chars": len(self.material), "tags": list(self.tags),
                "question_count": len(questions), "questions": questions}


@dataclass(frozen=True)
class PracticeItem:
    """One exercise: material, question, reference answer and scoring points."""

    id: str
    question_type: str
    title: str
    material: str
    question: str
    word_limit: int
    full_score: int
    reference_answer: str
    points: tuple[ScoringPoint, ...]
    genre: str | None = None
    tags: tuple[str, ...] = ()
    note: str = ""
    paper: PaperSlot | None = None

    @property
    def rubric_id(self) -> str:
        return f"practice:{self.id}"

    def matches(self, theme: str) -> bool:
        """True when `theme` is part of one of the item's tags or of its title."""
        return any(theme in text for text in (*self.tags, self.title))

    def summary(self) -> dict[str, Any]:
        """The list view: everything but the material, reference and points."""
        return {"id": self.id, "title": self.title, "question_type": self.question_type,
                "question_type_label": QUESTION_TYPES[self.question_type], "genre": self.genre,
                "question": self.question, "word_limit": self.word_limit,
                "full_score": self.full_score, "material_chars": len(self.material),
                "scoring_point_count": len(self.points), "tags": list(self.tags),
                "paper": self.paper.as_dict() if self.paper else None}

    def detail(self) -> dict[str, Any]:
        """The full item, reference answer and scoring points included."""
        return {**self.summary(), "material": self.material,
                "reference_answer": self.reference_answer, "note": self.note,
                "scoring_points": [{"id": p.id, "label": p.label, "score": p.weight,
                                    "phrasings": list(p.phrasings), "dimension": p.dimension}
                                   for p in self.points]}


def _need(data: dict[str, Any], key: str, kind: type | tuple[type, ...]) -> Any:
    value = data.get(key)
    if not isinstance(value, kind) or isinstance(value, bool):
        raise PracticeError(f"field {key!r} missing or not {kind}")
    if isinstance(value, str) and not value.strip():
        raise PracticeError(f"field {key!r} is empty")
    return value


def parse_paper(data: Any) -> PracticePaper:
    """Validate one decoded paper file (its items are attached by the bank)."""
    if not isinstance(data, dict):
        raise PracticeError("not a JSON object")
    paper_id = _need(data, "id", str)
    if not ID_PATTERN.match(paper_id):
        raise PracticeError(f"bad id {paper_id!r}")
    total, reading = _need(data, "total_minutes", int), _need(data, "reading_minutes", int)
    if not (PAPER_MINUTES[0] <= total <= PAPER_MINUTES[1] and 0 < reading < total):
        raise PracticeError("total_minutes or reading_minutes out of range")
    tags = data.get("tags", [])
    return PracticePaper(id=paper_id, title=_need(data, "title", str), exam=_need(data, "exam", str),
                         total_minutes=total, reading_minutes=reading,
                         material=_need(data, "material", str),
                         tags=tuple(t for t in tags if isinstance(t, str)), note=str(data.get("note", "")))


def _paper_slot(data: dict[str, Any], papers: Mapping[str, PracticePaper]) -> tuple[PaperSlot, str]:
    """An item's place in its paper, and the paper's material it takes."""
    raw = _need(data, "paper", dict)
    paper = papers.get(_need(raw, "id", str))
    if paper is None:
        raise PracticeError(f"paper {raw['id']!r} not found")
    if "material" in data:
        raise PracticeError("an item of a paper takes the paper's material, not its own")
    order, minutes = _need(raw, "order", int), _need(raw, "suggested_minutes", int)
    if not (1 <= order <= PAPER_QUESTIONS[1] and 1 <= minutes <= paper.total_minutes):
        raise PracticeError("paper.order or paper.suggested_minutes out of range")
    return PaperSlot(paper.id, order, minutes), paper.material


def parse_item(data: Any, papers: Mapping[str, PracticePaper] | None = None) -> PracticeItem:
    """Validate one decoded practice file (`papers`: the papers an item may belong to)."""
    if not isinstance(data, dict):
        raise PracticeError("not a JSON object")
    item_id = _need(data, "id", str)
    if not ID_PATTERN.match(item_id):
        raise PracticeError(f"bad id {item_id!r}")
    qtype = _need(data, "question_type", str)
    if qtype not in QUESTION_TYPES:
        raise PracticeError(f"unknown question_type {qtype!r}")
    genre = data.get("genre")
    if qtype == "document" and genre not in GENRE_PARTS:
        raise PracticeError(f"document items need a known genre, got {genre!r}")
    slot: PaperSlot | None = None
    if data.get("paper") is not None:
        slot, material = _paper_slot(data, papers or {})
    else:
        material = _need(data, "material", str)
    raw_points = _need(data, "scoring_points", list)
    points: list[ScoringPoint] = []
    for n, raw in enumerate(raw_points):
        if not isinstance(raw, dict):
            raise PracticeError(f"scoring_points[{n}] is not an object")
        phrasings = raw.get("phrasings")
        if not isinstance(phrasings, list) or not phrasings or not all(isinstance(p, str) and p.strip() for p in phrasings):
            raise PracticeError(f"scoring_points[{n}].phrasings must be a non-empty list of strings")
        score = _need(raw, "score", (int, float))
        if score <= 0:
            raise PracticeError(f"scoring_points[{n}].score must be positive")
        dimension = raw.get("dimension", "points")
        if dimension not in ("points", "theme"):
            raise PracticeError(f"scoring_points[{n}].dimension must be points or theme")
        points.append(ScoringPoint(
            id=_need(raw, "id", str), label=_need(raw, "label", str), weight=float(score),
            phrasings=tuple(p.strip() for p in phrasings),
            keywords=tuple(k for k in raw.get("keywords", ()) if isinstance(k, str) and k.strip()),
            dimension=dimension, source="rubric"))
    if len({p.id for p in points}) != len(points):
        raise PracticeError("scoring point ids are not unique")
    if not any(p.dimension == "points" for p in points):
        raise PracticeError("no content scoring point")
    word_limit = _need(data, "word_limit", int)
    full_score = _need(data, "full_score", int)
    if not (10 <= word_limit <= 10_000 and 1 <= full_score <= 100):
        raise PracticeError("word_limit or full_score out of range")
    tags = data.get("tags", [])
    return PracticeItem(
        id=item_id, question_type=qtype, title=_need(data, "title", str), material=material,
        question=_need(data, "question", str), word_limit=word_limit, full_score=full_score,
        reference_answer=_need(data, "reference_answer", str), points=tuple(points),
        genre=genre if qtype == "document" else None,
        tags=tuple(t for t in tags if isinstance(t, str)), note=str(data.get("note", "")), paper=slot)


def _check_paper(paper: PracticePaper, items: list[PracticeItem]) -> None:
    """A paper's items are numbered 1..n (n = 4 or 5) and fit in its time."""
    orders = sorted(i.paper.order for i in items if i.paper)
    if not (PAPER_QUESTIONS[0] <= len(orders) <= PAPER_QUESTIONS[1]) or orders != list(range(1, len(orders) + 1)):
        raise PracticeError(f"paper {paper.id!r} needs questions numbered 1..4 or 1..5, got {orders}")
    minutes = paper.reading_minutes + sum(i.paper.suggested_minutes for i in items if i.paper)
    if minutes > paper.total_minutes:
        raise PracticeError(f"paper {paper.id!r}: reading and answering take {minutes} > "
                            f"{paper.total_minutes} minutes")


def _read(path: Path, parse: Callable[[Any], Any], strict: bool) -> Any:
    """One parsed file whose id is its name, or None (logged) when it is bad and not strict."""
    try:
        parsed = parse(json.loads(path.read_text(encoding="utf-8")))
        if parsed.id != path.stem:
            raise PracticeError(f"id {parsed.id!r} differs from the file name")
        return parsed
    except (OSError, ValueError) as exc:
        if strict:
            raise PracticeError(f"{path.name}: {exc}") from exc
        log.warning("practice file %s skipped: %s", path.name, exc)
        return None


class PracticeBank:
    """The practice items of a folder, in id order, and the papers they belong to."""

    def __init__(self, items: Iterable[PracticeItem] = (), papers: Iterable[PracticePaper] = ()) -> None:
        self._items = {item.id: item for item in sorted(items, key=lambda i: i.id)}
        self._papers: dict[str, PracticePaper] = {}
        for paper in sorted(papers, key=lambda p: p.id):
            mine = sorted((i for i in self._items.values() if i.paper and i.paper.paper_id == paper.id),
                          key=lambda i: i.paper.order if i.paper else 0)
            self._papers[paper.id] = replace(paper, item_ids=tuple(i.id for i in mine))

    @classmethod
    def load(cls, directory: Path = PRACTICE_DIR, *, strict: bool = False) -> PracticeBank:
        """Read every `*.json` of `directory` and of its `papers/`; a bad file is skipped
        (raised if strict), and so is a paper whose questions do not make a paper."""
        papers = {p.id: p for path in sorted((Path(directory) / PAPERS_SUBDIR).glob("*.json"))
                  if (p := _read(path, parse_paper, strict)) is not None}
        items = [i for path in sorted(Path(directory).glob("*.json"))
                 if (i := _read(path, lambda data: parse_item(data, papers), strict)) is not None]
        for paper in list(papers.values()):
            try:
                _check_paper(paper, [i for i in items if i.paper and i.paper.paper_id == paper.id])
            except PracticeError as exc:
                if strict:
                    raise
                log.warning("practice paper %s skipped with its items: %s", paper.id, exc)
                del papers[paper.id]
                items = [i for i in items if not (i.paper and i.paper.paper_id == paper.id)]
        return cls(items, papers.values())

    def get(self, item_id: str) -> PracticeItem | None:
        return self._items.get(item_id)

    def list(self, question_type: str | None = None, *, genre: str | None = None,
             theme: str | None = None, paper: str | None = None) -> list[PracticeItem]:
        """The items matching every filter given, in id order (in question order for a paper)."""
        if paper is not None:
            found = self._papers.get(paper)
            pool = [self._items[i] for i in found.item_ids] if found else []
        else:
            pool = list(self._items.values())
        return [i for i in pool if question_type in (None, i.question_type)
                and genre in (None, i.genre) and (theme is None or i.matches(theme))]

    def paper(self, paper_id: str) -> PracticePaper | None:
        return self._papers.get(paper_id)

    def papers(self) -> builtins.list[PracticePaper]:  # `list` here is the method above
        return list(self._papers.values())

    def paper_summary(self, paper: PracticePaper) -> dict[str, Any]:
        """A paper's metadata with the outline of its questions."""
        return paper.summary(self._items[i] for i in paper.item_ids)

    def __len__(self) -> int:
        return len(self._items)


class PracticeQuery(Query):
    """The filters of GET /api/practice; `paper` is checked against the bank by its user."""

    exact = ("genre", "paper")

    type: Annotated[str | None, Choice(TYPE_ALIASES, description="题型（英文键或 概括/分析/对策/应用文/文章）")] = None
    genre: Annotated[str | None, Choice(tuple(GENRE_PARTS), message=(
        "{field} 必须是已知文种之一：" + "、".join(GENRE_PARTS)), description="应用文文种（倡议书、公开信、讲话稿……）")] = None
    theme: Annotated[str, QueryText(MAX_THEME_CHARS, description=(
        "主题：标签或标题中含有的词（如 养老、人工智能）；空白为不筛选"))] = ""
    # A query value is a string; which ones name a paper only the bank knows.
    paper: Annotated[str | None, Check(str, {"type": "string", "pattern": ID_PATTERN.pattern},
                                       description="套卷编号：按题号列出该套卷的题目")] = None
