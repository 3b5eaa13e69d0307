"""The grading model's constants: question types, default full scores, dimensions.

Everything an examiner-like grade depends on and that is not specific to one answer
lives here, versioned by `RUBRIC_VERSION`, so a grade can name the rules that made it.

Default full scores (used when neither the request nor a practice item gives one)
follow the usual weight of each question in the national (国考) and provincial (联考)
papers: 归纳概括 15, 综合分析 20, 提出对策 20, 贯彻执行/应用文 25, 文章写作 40.
Typical word limits are only used to bound the improved answer when the request
gives no `word_limit`; an answer is never reported over a limit it was not given.
"""
from __future__ import annotations

from dataclasses import dataclass

from core.chat.prompts import MODE_ALIASES, MODES

RUBRIC_VERSION = "shenlun-rubric-2026-12.2"

# Canonical question-type keys are the chat modes of the answer-writing questions.
QUESTION_TYPES: dict[str, str] = {
    mode: MODES[mode] for mode in ("summarize", "analyze", "countermeasure", "document", "essay")}

# Names a client may send for a type: the one alias table of the modes
# (core.chat.prompts.MODE_ALIASES), restricted to the answer-writing types.
TYPE_ALIASES: dict[str, str] = {name: mode for name, mode in MODE_ALIASES.items() if mode in QUESTION_TYPES}

DEFAULT_FULL_SCORES: dict[str, int] = {
    "summarize": 15,
    "analyze": 20,
    "countermeasure": 20,
    "document": 25,
    "essay": 40,
}

TYPICAL_WORD_LIMITS: dict[str, int] = {
    "summarize": 250,
    "analyze": 350,
    "countermeasure": 400,
    "document": 600,
    "essay": 1200,
}


@dataclass(frozen=True)
class Dimension:
    """One scored aspect of an answer; `share` is its part of the full score."""

    key: str
    name: str
    share: float
    meaning: str


_MEANINGS = {
    "points": "要点是否覆盖资料或参考答案中的得分点，表述是否准确",
    "content": "内容是否紧扣资料、论据是否充分、分论点是否成立",
    "structure": "是否分条分层、层次清楚、逻辑连贯、首尾呼应",
    "language": "表述是否准确精炼、规范得体，有无照抄资料长句",
    "format": "文种格式是否完整：标题、称谓、正文、落款等要素",
    "theme": "立意是否准确、鲜明，是否紧扣题意与资料主旨",
}


def _dim(key: str, share: float, name: str | None = None) -> Dimension:
    names = {"points": "要点", "content": "内容", "structure": "逻辑结构",
             "language": "语言表达", "format": "格式", "theme": "立意"}
    return Dimension(key=key, name=name or names[key], share=share, meaning=_MEANINGS[key])


# The split of the full score per type. 概括 is marked almost only on points; the
# more open the question, the more weight goes to structure, language and 立意.
# The key "points" always holds the point-coverage dimension (named 内容 for essays).
DIMENSIONS: dict[str, tuple[Dimension, ...]] = {
    "summarize": (_dim("points", 0.80), _dim("structure", 0.10), _dim("language", 0.10)),
    "countermeasure": (_dim("points", 0.70), _dim("structure", 0.15), _dim("language", 0.15)),
    "analyze": (_dim("points", 0.60), _dim("structure", 0.25), _dim("language", 0.15)),
    "document": (_dim("points", 0.60), _dim("format", 0.15), _dim("structure", 0.10),
                 _dim("language", 0.15)),
    "essay": (_dim("theme", 0.30), Dimension("points", "内容", 0.30, _MEANINGS["content"]),
              _dim("structure", 0.20), _dim("language", 0.20)),
}

# Point judgements: the credit each status earns.
CREDIT: dict[str, float] = {"hit": 1.0, "partial": 0.5, "missed": 0.0}

# Keyword sets (a request's `keywords`, the points the service derives itself) are
# judged by the share of their characters one answer sentence states, synonyms
# counted: a rubric's set is hit from HIT_COVERAGE and partial from PARTIAL_COVERAGE;
# a derived set, noisier, from the EXTRACTED_ figures. A partial always needs two
# distinct words. Phrasings are judged by their head concept (core.grading.lexicon).
HIT_COVERAGE = 0.75
PARTIAL_COVERAGE = 0.5
EXTRACTED_HIT_COVERAGE = 0.6
EXTRACTED_PARTIAL_COVERAGE = 0.3
# An LLM judgement upgrades a point only with a verbatim quote; a "hit" whose quote
# shares less than this with the point's words counts as partial.
LLM_HIT_MIN_OVERLAP = 0.25
# Structure, language and 立意 are marked on top of content: below this point coverage
# they are scaled down in proportion (an off-topic answer earns next to nothing).
RELEVANCE_GATE = 0.4
# Scores are given in half points, as examiners do.
SCORE_STEP = 0.5
# How many points are extracted when no rubric is given, per type.
EXTRACTED_POINTS: dict[str, int] = {"summarize": 6, "countermeasure": 6, "analyze": 5,
                                    "document": 6, "essay": 4}


def round_score(value: float) -> float:
    """Round to the nearest half point (an exact int when whole)."""
    steps = round(value / SCORE_STEP)
    result = steps * SCORE_STEP
    return float(result)


def dimension_maxima(question_type: str, full_score: float) -> dict[str, float]:
    """Each dimension's maximum for a full score, in half points, summing to it."""
    dims = DIMENSIONS[question_type]
    maxima: dict[str, float] = {}
    for dim in dims[1:]:
        maxima[dim.key] = round_score(full_score * dim.share)
    maxima[dims[0].key] = full_score - sum(maxima.values())
    return {d.key: maxima[d.key] for d in dims}


def json_number(value: float) -> float | int:
    """A score as JSON shows it best: 9 rather than 9.0, 8.5 as it is."""
    return int(value) if float(value).is_integer() else value
