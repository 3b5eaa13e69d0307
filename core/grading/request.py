"""The grade request: one validated body of `POST /api/grade` (or the chat alias)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from core.errors import InvalidRequest
from core.grading.rubric import QUESTION_TYPES, TYPE_ALIASES
from core.grading.structure import GENRE_PARTS
from core.prompts import resolve_mode
from core.validation import read_int, read_str, require_object

MAX_ANSWER_CHARS = 10_000
MAX_MATERIAL_CHARS = 50_000
MAX_QUESTION_CHARS = 2_000
MAX_REFERENCE_CHARS = 10_000


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

    @classmethod
    def from_payload(cls, payload: Any) -> "GradeRequest":
        """Validate a decoded JSON body; raises InvalidRequest naming the field."""
        data = require_object(payload)
        answer = read_str(data, "answer", max_len=MAX_ANSWER_CHARS, required=True)
        practice_id = read_str(data, "practice_id", max_len=100) or None
        question = read_str(data, "question", max_len=MAX_QUESTION_CHARS)
        material = read_str(data, "material", max_len=MAX_MATERIAL_CHARS)
        reference = read_str(data, "reference", max_len=MAX_REFERENCE_CHARS)
        if practice_id is None:
            if not question.strip():
                raise InvalidRequest("缺少字段 question（或 practice_id）")
            if not (material.strip() or reference.strip()):
                raise InvalidRequest("缺少字段 material（或 reference / practice_id）：没有资料就无法确定得分点")
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
        )


def is_grade_request(payload: Any) -> bool:
    """Whether a `/api/chat` body asks for grading an answer (`mode: "grade"` with an
    `answer`); without an answer, grade mode stays a chat about grading."""
    return (isinstance(payload, dict) and resolve_mode(payload.get("mode")) == "grade"
            and payload.get("answer") is not None)
