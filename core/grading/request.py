"""The grade request: one validated body of `POST /api/grade` (or the chat alias)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.chat.prompts import resolve_mode
from core.errors import InvalidRequest
from core.grading.points import ScoringPoint
from core.grading.rubric import QUESTION_TYPES, TYPE_ALIASES
from core.grading.structure import GENRE_PARTS
from core.validation import read_int, read_str, require_object

MAX_ANSWER_CHARS = 10_000
MAX_MATERIAL_CHARS = 50_000
MAX_QUESTION_CHARS = 2_000
MAX_REFERENCE_CHARS = 10_000
MAX_POINTS = 30
MAX_POINT_LABEL = 60
MAX_PHRASINGS = 20
MAX_PHRASING_CHARS = 40


@dataclass(frozen=True)
class GradeRequest:
    """What a candidate sends to be graded."""

    answer: str
    question: str = ""
    material: str = ""
    reference: str = ""
    question_type: str | None = None
    full_score: int | None = None
    word_limit: int | None = None
    practice_id: str | None = None
    genre: str | None = None
    scoring_points: tuple[ScoringPoint, ...] = ()   # a teacher's own 评分细则 (empty: derived)

    @classmethod
    def from_payload(cls, payload: Any) -> GradeRequest:
        """Validate a decoded JSON body; raises InvalidRequest naming the field."""
        data = require_object(payload)
        answer = read_str(data, "answer", max_len=MAX_ANSWER_CHARS, required=True)
        practice_id = read_str(data, "practice_id", max_len=100) or None
        question = read_str(data, "question", max_len=MAX_QUESTION_CHARS)
        material = read_str(data, "material", max_len=MAX_MATERIAL_CHARS)
        reference = read_str(data, "reference", max_len=MAX_REFERENCE_CHARS)
        points = read_scoring_points(data)
        if practice_id is None:
            if not question.strip():
                raise InvalidRequest("缺少字段 question（或 practice_id）")
            if not (material.strip() or reference.strip() or points):
                raise InvalidRequest("缺少字段 material（或 reference / scoring_points / practice_id）："
                                     "没有资料就无法确定得分点")
        raw_type = data.get("question_type")
        question_type = None
        if raw_type is not None:
            if not isinstance(raw_type, str) or raw_type.strip() not in TYPE_ALIASES:
                raise InvalidRequest("字段 question_type 必须是以下之一：" + "、".join(
                    [*QUESTION_TYPES, "概括", "分析", "对策", "应用文", "文章"]))
            question_type = TYPE_ALIASES[raw_type.strip()]
        genre = read_str(data, "genre", max_len=20).strip() or None
        if genre is not None and genre not in GENRE_PARTS:
            raise InvalidRequest("字段 genre 必须是支持的文种之一：" + "、".join(GENRE_PARTS))
        return cls(
            answer=answer, question=question, material=material, reference=reference,
            question_type=question_type,
            full_score=read_int(data, "full_score", lo=1, hi=100),
            word_limit=read_int(data, "word_limit", lo=10, hi=10_000),
            practice_id=practice_id,
            genre=genre,
            scoring_points=points,
        )


def read_scoring_points(data: Any) -> tuple[ScoringPoint, ...]:
    """`scoring_points`: `[{"label", "score", "phrasings"?, "keywords"?, "dimension"?}]`,
    validated and bounded; a point without phrasings or keywords is looked for by its
    label. Raises InvalidRequest naming the item and the field."""
    raw = data.get("scoring_points")
    if raw is None:
        return ()
    if not isinstance(raw, list) or not raw:
        raise InvalidRequest("字段 scoring_points 必须是非空数组")
    if len(raw) > MAX_POINTS:
        raise InvalidRequest(f"字段 scoring_points 最多 {MAX_POINTS} 个得分点")
    points: list[ScoringPoint] = []
    for n, entry in enumerate(raw):
        name = f"scoring_points[{n}]"
        if not isinstance(entry, dict):
            raise InvalidRequest(f"字段 {name} 必须是对象（label、score、phrasings）")
        label = entry.get("label")
        if not isinstance(label, str) or not label.strip() or "\x00" in label or len(label) > MAX_POINT_LABEL:
            raise InvalidRequest(f"字段 {name}.label 必须是 1～{MAX_POINT_LABEL} 个字符的非空字符串")
        label = label.strip()
        score = entry.get("score")
        if isinstance(score, bool) or not isinstance(score, (int, float)) or not 0 < score <= 100:
            raise InvalidRequest(f"字段 {name}.score 必须是大于 0、不超过 100 的数字")
        phrasings = _phrases(entry, "phrasings", name)
        words = _phrases(entry, "keywords", name)
        dimension = entry.get("dimension")
        dimension = "points" if dimension is None else dimension
        if dimension not in ("points", "theme"):
            raise InvalidRequest(f"字段 {name}.dimension 必须是 points 或 theme")
        points.append(ScoringPoint(id=f"u{n + 1}", label=label, weight=float(score),
                                   phrasings=phrasings or (() if words else (label,)), keywords=words,
                                   dimension=dimension, source="rubric"))
    if not any(p.dimension == "points" for p in points):
        raise InvalidRequest("字段 scoring_points 至少要有一个 dimension 为 points 的得分点")
    return tuple(points)


def _phrases(entry: dict[str, Any], key: str, name: str) -> tuple[str, ...]:
    value = entry.get(key)
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InvalidRequest(f"字段 {name}.{key} 必须是字符串数组")
    if len(value) > MAX_PHRASINGS:
        raise InvalidRequest(f"字段 {name}.{key} 最多 {MAX_PHRASINGS} 项")
    if any(len(v.strip()) < 2 or len(v) > MAX_PHRASING_CHARS or "\x00" in v for v in value):
        raise InvalidRequest(f"字段 {name}.{key} 的每一项须为 2～{MAX_PHRASING_CHARS} 个字符")
    return tuple(dict.fromkeys(v.strip() for v in value))


def is_grade_request(payload: Any) -> bool:
    """Whether a `/api/chat` body asks for grading an answer (`mode: "grade"` with an
    `answer`); without an answer, grade mode stays a chat about grading."""
    return (isinstance(payload, dict) and resolve_mode(payload.get("mode")) == "grade"
            and payload.get("answer") is not None)
