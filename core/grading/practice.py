"""The bundled practice items (`data/practice/*.json`): load, validate, list, find.

Each file is one item written for this project: an invented 给定资料, a question, a
reference answer and its scoring points (label, score, synonym phrasings). Items are
read once at start-up; a malformed file is skipped with a warning (and fails the
test that loads the bank strictly).
"""
from __future__ import annotations

import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterable

from core.config import PROJECT_ROOT
from core.grading.points import ScoringPoint
from core.grading.rubric import QUESTION_TYPES
from core.grading.structure import GENRE_PARTS

log = logging.getLogger("shenlun.grading")

PRACTICE_DIR = PROJECT_ROOT / "data" / "practice"
_ID = re.compile(r"^[a-z0-9][a-z0-9-]{1,63}$")


class PracticeError(ValueError):
    """A practice file that does not describe a valid item."""


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

    @property
    def rubric_id(self) -> str:
        return f"practice:{self.id}"

    def summary(self) -> dict[str, Any]:
        """The list view: everything but the material, reference and points."""
        return {"id": self.id, "title": self.title, "question_type": self.question_type,
                "question_type_label": QUESTION_TYPES[self.question_type], "genre": self.genre,
                "question": self.question, "word_limit": self.word_limit,
                "full_score": self.full_score, "material_chars": len(self.material),
                "scoring_point_count": len(self.points), "tags": list(self.tags)}

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


def parse_item(data: Any) -> PracticeItem:
    """Validate one decoded practice file."""
    if not isinstance(data, dict):
        raise PracticeError("not a JSON object")
    item_id = _need(data, "id", str)
    if not _ID.match(item_id):
        raise PracticeError(f"bad id {item_id!r}")
    qtype = _need(data, "question_type", str)
    if qtype not in QUESTION_TYPES:
        raise PracticeError(f"unknown question_type {qtype!r}")
    genre = data.get("genre")
    if qtype == "document" and genre not in GENRE_PARTS:
        raise PracticeError(f"document items need a known genre, got {genre!r}")
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
        tags=tuple(t for t in tags if isinstance(t, str)), note=str(data.get("note", "")))


class PracticeBank:
    """The practice items of a folder, in id order."""

    def __init__(self, items: Iterable[PracticeItem] = ()) -> None:
        self._items = {item.id: item for item in sorted(items, key=lambda i: i.id)}

    @classmethod
    def load(cls, directory: Path = PRACTICE_DIR, *, strict: bool = False) -> "PracticeBank":
        """Read every `*.json` of `directory`; a bad file is skipped (raised if strict)."""
        items: list[PracticeItem] = []
        for path in sorted(Path(directory).glob("*.json")):
            try:
                item = parse_item(json.loads(path.read_text(encoding="utf-8")))
                if item.id != path.stem:
                    raise PracticeError(f"id {item.id!r} differs from the file name")
            except (OSError, ValueError) as exc:
                if strict:
                    raise PracticeError(f"{path.name}: {exc}") from exc
                log.warning("practice item %s skipped: %s", path.name, exc)
                continue
            items.append(item)
        return cls(items)

    def get(self, item_id: str) -> PracticeItem | None:
        return self._items.get(item_id)

    def list(self, question_type: str | None = None) -> list[PracticeItem]:
        return [i for i in self._items.values() if question_type in (None, i.question_type)]

    def __len__(self) -> int:
        return len(self._items)
