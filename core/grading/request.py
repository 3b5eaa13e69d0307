"""The grade request: one validated body of `POST /api/grade` (or the chat alias)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from pydantic import ConfigDict, Field

from core.chat.prompts import MAX_MATERIAL_CHARS, MAX_QUESTION_CHARS, resolve_mode
from core.chat.wordlimit import WORD_LIMIT
from core.errors import InvalidRequest
from core.grading.points import ScoringPoint
from core.grading.rubric import TYPE_ALIASES
from core.grading.structure import GENRE_PARTS
from core.validation import NOT_BLANK, Choice, Integer, Number, Phrases, Shape, Text

MAX_ANSWER_CHARS = 10_000
MAX_REFERENCE_CHARS = 10_000
MAX_POINTS = 30
MAX_POINT_LABEL = 60
MAX_PHRASINGS = 20
MAX_PHRASING_CHARS = 40
MAX_PRACTICE_ID_CHARS = 100
DIMENSIONS = ("points", "theme")  # what a scoring point counts towards


class ScoringPointBody(Shape):
    """One point of a teacher's own 评分细则, as sent."""

    label: Annotated[str, Text(MAX_POINT_LABEL, required=True)]
    score: Annotated[float, Number(0, 100, above_lo=True)]
    phrasings: Annotated[tuple[str, ...], Phrases(MAX_PHRASINGS, MAX_PHRASING_CHARS, description=(
        "同义表述：任一表述原样出现或其核心词都写到即命中"))] = ()
    keywords: Annotated[tuple[str, ...], Phrases(MAX_PHRASINGS, MAX_PHRASING_CHARS, description=(
        "关键词组：按覆盖比例判定（两个以上关键词才算部分命中）"))] = ()
    dimension: Annotated[str, Choice(DIMENSIONS)] = "points"


def _alternatives(schema: dict[str, Any]) -> None:
    # What the check after the fields asks for (GradeRequest.from_payload), in the schema:
    # a practice item, or a question with material, a reference or scoring points.
    def given(name: str) -> dict[str, Any]:
        present = dict(schema["properties"][name]["anyOf"][0])
        if present.get("type") == "string":
            present["pattern"] = NOT_BLANK
        return present
    schema["anyOf"] = [{"required": ["practice_id"], "properties": {"practice_id": given("practice_id")}}] + [
        {"required": ["question", name], "properties": {"question": given("question"), name: given(name)}}
        for name in ("material", "reference", "scoring_points")]


class GradeBody(Shape):
    """The `/api/grade` body as sent."""

    model_config = ConfigDict(json_schema_extra=_alternatives)

    answer: Annotated[str, Text(MAX_ANSWER_CHARS, required=True)]
    practice_id: Annotated[str, Text(MAX_PRACTICE_ID_CHARS)] = ""
    question: Annotated[str, Text(MAX_QUESTION_CHARS)] = ""
    material: Annotated[str, Text(MAX_MATERIAL_CHARS)] = ""
    reference: Annotated[str, Text(MAX_REFERENCE_CHARS)] = ""
    question_type: Annotated[str | None, Choice(TYPE_ALIASES)] = None
    genre: Annotated[str | None, Choice(tuple(GENRE_PARTS), blank=None, message=(
        "{field} 必须是支持的文种之一：" + "、".join(GENRE_PARTS)))] = None
    full_score: Annotated[int | None, Integer(1, 100)] = None
    word_limit: Annotated[int | None, WORD_LIMIT] = None
    scoring_points: Annotated[tuple[ScoringPointBody, ...], Field(
        min_length=1, max_length=MAX_POINTS,
        description="教师自己的评分细则，代替程序提取的得分点（points_source 为 request）；"
                    "score 为各点的相对分值，至少一个 dimension 为 points 的得分点。",
        json_schema_extra={"contains": {"anyOf": [{"not": {"required": ["dimension"]}},
                                                  {"properties": {"dimension": {"enum": ["points", None]}}}]}})] = ()


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
        body = GradeBody.parse(payload)
        points = _scoring_points(body.scoring_points)
        practice_id = body.practice_id or None
        if practice_id is None:
            if not body.question.strip():
                raise InvalidRequest("缺少字段 question（或 practice_id）")
            if not (body.material.strip() or body.reference.strip() or points):
                raise InvalidRequest("缺少字段 material（或 reference / scoring_points / practice_id）："
                                     "没有资料就无法确定得分点")
        return cls(
            answer=body.answer, question=body.question, material=body.material, reference=body.reference,
            question_type=body.question_type, full_score=body.full_score, word_limit=body.word_limit,
            practice_id=practice_id, genre=body.genre, scoring_points=points,
        )


def _scoring_points(sent: tuple[ScoringPointBody, ...]) -> tuple[ScoringPoint, ...]:
    """A teacher's points as the grader uses them; a point without phrasings or keywords
    is looked for by its label."""
    if sent and not any(p.dimension == "points" for p in sent):
        raise InvalidRequest("字段 scoring_points 至少要有一个 dimension 为 points 的得分点")
    return tuple(ScoringPoint(id=f"u{n + 1}", label=p.label.strip(), weight=p.score,
                              phrasings=p.phrasings or (() if p.keywords else (p.label.strip(),)),
                              keywords=p.keywords, dimension=p.dimension, source="rubric")
                 for n, p in enumerate(sent))


def is_grade_request(payload: Any) -> bool:
    """Whether a `/api/chat` body asks for grading an answer (`mode: "grade"` with an
    `answer`); without an answer, grade mode stays a chat about grading."""
    return (isinstance(payload, dict) and resolve_mode(payload.get("mode")) == "grade"
            and payload.get("answer") is not None)
