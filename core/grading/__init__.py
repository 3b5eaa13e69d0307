"""Structured grading of 申论 answers: a deterministic, explainable layer (scoring
points with verbatim evidence, word count, structure checks) and an LLM layer whose
JSON judgement is validated and merged under the rules' discipline. No HTTP here.
"""
from core.grading.llm_grader import GRADE_PROMPT_VERSION
from core.grading.practice import PRACTICE_DIR, PracticeBank, PracticeItem
from core.grading.request import GradeRequest, is_grade_request
from core.grading.rubric import DEFAULT_FULL_SCORES, QUESTION_TYPES, RUBRIC_VERSION, TYPE_ALIASES
from core.grading.service import GradingService, render_text

__all__ = [
    "GRADE_PROMPT_VERSION", "PRACTICE_DIR", "PracticeBank", "PracticeItem", "GradeRequest",
    "is_grade_request", "DEFAULT_FULL_SCORES", "QUESTION_TYPES", "RUBRIC_VERSION", "TYPE_ALIASES",
    "GradingService", "render_text",
]
