"""The LLM layer: the grading prompt, a tolerant JSON reader and the validator.

The model is asked for one JSON object (schema in `SCHEMA_TEXT`). Its answer is
validated against the grade being built: dimension scores are clamped to their
ranges, a missing score, comment, point judgement or suggestion is repaired from the
deterministic layer (and the repair named), and an answer without the object, the
dimensions or an improved answer is a defect the caller retries once.
"""
from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from core.grading.exam import ESSAY_CLASSES
from core.grading.rubric import DIMENSIONS, QUESTION_TYPES
from core.grading.rules import RuleGrade

GRADE_PROMPT_VERSION = "grade-prompt-2026-12.2"

_STATUS_ALIASES = {
    "hit": "hit", "partial": "partial", "missed": "missed", "miss": "missed",
    "命中": "hit", "得分": "hit", "部分命中": "partial", "部分": "partial",
    "未命中": "missed", "遗漏": "missed", "缺失": "missed",
}
_MAX_BRACES_TRIED = 50
_NUMBER = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*分?\s*$")
MAX_SUGGESTIONS = 8


def schema_text(grade: RuleGrade) -> str:
    """The JSON structure the model must answer with, for this grade's dimensions."""
    maxima = grade.maxima
    dims = []
    for dim in DIMENSIONS[grade.inp.question_type]:
        if dim.key == "points" and grade.has_content_points:
            dims.append(f'    "points": {{"comment": "对{dim.name}的评语（分数由程序按要点计算，无需给分）"}}')
        else:
            dims.append(f'    "{dim.key}": {{"score": 0到{maxima[dim.key]:g}之间的数字, '
                        f'"comment": "对{dim.name}的评语"}}')
    return (
        "{\n"
        '  "dimensions": {\n' + ",\n".join(dims) + "\n  },\n"
        '  "points": [{"id": "得分点编号", "status": "hit 或 partial 或 missed", '
        '"quote": "从考生答案中逐字摘录的证据原文（未命中则为空字符串）"}],\n'
        '  "overall_comment": "总评，100字以内",\n'
        '  "suggestions": ["具体的修改建议", "……"],\n'
        f'  "improved_answer": "按题目要求重写的示范答案，不超过{grade.inp.improved_limit}字"\n'
        "}"
    )


def scale_text(grade: RuleGrade) -> str:
    """The marking scale of the question, as examiners use it."""
    inp = grade.inp
    if inp.question_type == "essay":
        classes = "、".join(f"{name} {lo * inp.full_score / 40:g}–{hi * inp.full_score / 40:g} 分"
                           for name, lo, hi in ESSAY_CLASSES)
        return ("文章按四类卷评分：先定类（立意、结构、字数决定类别，不足400字只能是四类卷），"
                f"再在类内以基准分上下浮动。{classes}。")
    return ("小题按踩点给分：每个得分点按评分要点的分值给分，写出要点的核心意思即得分，只有标题、"
            "没有具体做法的至多给一半；另有条理、语言分。审题错误（问做法答成问题等）、"
            "文种错误、字数过少、照抄资料都要封顶，超出字数限制的部分不得分。")


def build_messages(grade: RuleGrade) -> list[dict[str, str]]:
    """The grading conversation for one answer: the real scale of the question, the
    caps the rules already found (the code applies them whatever the model says)."""
    inp = grade.inp
    dims = "；".join(f"{d.name}（{d.key}）满分{grade.maxima[d.key]:g}：{d.meaning}"
                    for d in DIMENSIONS[inp.question_type])
    system = (
        "你是一名熟悉国家公务员考试和各省联考申论阅卷规则的阅卷老师，现在进行模拟评分。"
        "严格依据给定资料、题目和评分要点批改考生答案，不编造资料中没有的内容。"
        + scale_text(grade) +
        "判断每个得分点时，status 只能是 hit（完整命中）、partial（部分命中）、missed（遗漏）；"
        "quote 必须是从考生答案中一字不差复制的连续原文（不超过80字），必须是写出该要点核心意思的那一句，"
        "不得改写、不得拼接，找不到原文证据就判 missed 并留空。"
        f"各维度：{dims}。"
        "只输出一个 JSON 对象，不要输出任何其他文字。JSON 结构如下：\n" + schema_text(grade)
    )
    limit_note = (f"字数限制：{inp.word_limit}字（标点计入字数）；考生答案共{grade.char_count}字"
                  + ("，已超出限制，超出部分不计分。" if grade.over_limit else "。")
                  if inp.word_limit else f"题目未给字数限制；考生答案共{grade.char_count}字。")
    points = "\n".join(
        f"- {p.id}（{'立意' if p.dimension == 'theme' else '要点'}）：{p.label}"
        + (f"；同义表述：{'／'.join(p.phrasings)}" if p.phrasings else "")
        + (f"；关键词：{'、'.join(p.keywords)}" if p.keywords and not p.phrasings else "")
        for p in grade.points) or "（无预设得分点，请依据资料自行判断要点覆盖情况）"
    parts = [f"【题型】{QUESTION_TYPES[inp.question_type]}" + (f"（文种：{inp.genre}）" if inp.genre else ""),
             f"【题目】\n{inp.question}"]
    if inp.material.strip():
        parts.append(f"【给定资料】\n{inp.material}")
    if inp.reference.strip():
        parts.append(f"【参考答案】\n{inp.reference}")
    parts += [f"【满分】{inp.full_score:g}分", f"【评分要点】\n{points}", f"【字数】{limit_note}"]
    if grade.caps:
        parts.append("【规则层已认定】\n" + "\n".join(f"- {c.reason}" for c in grade.caps)
                     + "\n（程序将按以上规则封顶或扣分，请在总评中首先指出。）")
    parts += [f"【考生答案】\n{inp.answer}", "请按要求输出 JSON。"]
    return [{"role": "system", "content": system}, {"role": "user", "content": "\n\n".join(parts)}]


def retry_messages(messages: list[dict[str, str]], bad_output: str, problems: list[str]) -> list[dict[str, str]]:
    """The conversation that asks once more after a defective answer."""
    return [*messages, {"role": "assistant", "content": bad_output[:4000]},
            {"role": "user", "content": "你上次的输出不符合要求：" + "；".join(problems)
             + "。请重新输出一个完整的 JSON 对象，严格符合前面给出的结构，不要输出其他文字。"}]


def first_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in a model's text: bare, in a ```json fence, or after
    some prose. None when there is none."""
    if not isinstance(text, str):
        return None
    decoder = json.JSONDecoder()
    fenced = re.findall(r"```(?:json|JSON)?\s*(\{.*?\})\s*```", text, flags=re.S)
    for candidate in fenced:
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    for n, match in enumerate(re.finditer(r"\{", text)):
        if n >= _MAX_BRACES_TRIED:
            break
        try:
            value, _ = decoder.raw_decode(text, match.start())
        except (ValueError, RecursionError):
            continue
        if isinstance(value, dict):
            return value
    return None


def _number(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        number = float(value)
    elif isinstance(value, str) and _NUMBER.match(value):
        number = float(_NUMBER.match(value).group(1))  # type: ignore[union-attr]
    else:
        return None
    return number if math.isfinite(number) else None


@dataclass
class LLMVerdict:
    """The model's validated judgement (scores clamped, gaps named in `repairs`)."""

    scores: dict[str, float]                 # dimension key -> clamped score
    comments: dict[str, str]                 # dimension key -> comment
    points: dict[str, tuple[str, str]]       # point id -> (status, quote as given)
    suggestions: list[str]
    improved_answer: str
    overall_comment: str = ""
    repairs: list[str] = field(default_factory=list)


def _dimension_entries(raw: Any) -> dict[str, Any] | None:
    """Dimensions keyed by our keys, accepting Chinese names and a list shape."""
    names: dict[str, str] = {}
    for dims in DIMENSIONS.values():
        for d in dims:
            names[d.name] = d.key
    names.update({"要点/内容": "points", "内容": "points", "要点": "points"})
    if isinstance(raw, list):
        raw = {str(e.get("key") or e.get("name")): e for e in raw if isinstance(e, dict)}
    if not isinstance(raw, dict):
        return None
    entries: dict[str, Any] = raw  # keys are strings: JSON object keys, or str() above
    return {names.get(k, k): v for k, v in entries.items()}


def validate(obj: Any, grade: RuleGrade) -> tuple[LLMVerdict | None, list[str]]:
    """Check a decoded answer against the grade. Returns the verdict, or None and the
    defects that call for a retry."""
    if not isinstance(obj, dict):
        return None, ["输出不是 JSON 对象"]
    problems: list[str] = []
    dims = _dimension_entries(obj.get("dimensions"))
    if dims is None:
        problems.append("缺少 dimensions 对象")
    improved = obj.get("improved_answer")
    if not isinstance(improved, str) or not improved.strip():
        problems.append("缺少 improved_answer（示范答案）")
    if problems:
        return None, problems
    assert dims is not None and isinstance(improved, str)
    repairs: list[str] = []
    scores: dict[str, float] = {}
    comments: dict[str, str] = {}
    for key, rule_dim in grade.dimensions.items():
        entry = dims.get(key)
        if not isinstance(entry, dict):
            entry = {"score": entry} if _number(entry) is not None else {}
        comment = entry.get("comment")
        if isinstance(comment, str) and comment.strip():
            comments[key] = comment.strip()
        else:
            comments[key] = rule_dim.comment
            repairs.append(f"{rule_dim.name}缺少评语，已用规则层评语补齐")
        if key == "points" and grade.has_content_points:
            continue  # computed from the point judgements, never taken from the model
        score = _number(entry.get("score"))
        if score is None:
            scores[key] = rule_dim.score
            repairs.append(f"{rule_dim.name}缺少分数，已用规则层分数 {rule_dim.score:g} 补齐")
        elif not 0 <= score <= rule_dim.max:
            clamped = min(max(score, 0.0), rule_dim.max)
            scores[key] = clamped
            repairs.append(f"{rule_dim.name}分数 {score:g} 超出 0–{rule_dim.max:g}，已截断为 {clamped:g}")
        else:
            scores[key] = score
    known = {p.id for p in grade.points}
    judged: dict[str, tuple[str, str]] = {}
    raw_points = obj.get("points")
    for entry in raw_points if isinstance(raw_points, list) else []:
        if not isinstance(entry, dict) or str(entry.get("id")) not in known:
            continue
        status = _STATUS_ALIASES.get(str(entry.get("status", "")).strip().lower())
        quote = entry.get("quote")
        if status is None:
            continue
        judged[str(entry["id"])] = (status, quote if isinstance(quote, str) else "")
    unjudged = [p.id for p in grade.points if p.id not in judged]
    if unjudged:
        repairs.append("以下得分点大模型未给出判断，按规则层判断：" + "、".join(unjudged))
    raw_suggestions = obj.get("suggestions")
    if isinstance(raw_suggestions, str) and raw_suggestions.strip():
        raw_suggestions = [raw_suggestions]
    suggestions = [s.strip() for s in raw_suggestions if isinstance(s, str) and s.strip()] \
        if isinstance(raw_suggestions, list) else []
    if not suggestions:
        suggestions = list(grade.suggestions)
        repairs.append("缺少修改建议，已用规则层建议补齐")
    overall = obj.get("overall_comment")
    return LLMVerdict(scores=scores, comments=comments, points=judged,
                      suggestions=suggestions[:MAX_SUGGESTIONS], improved_answer=improved.strip(),
                      overall_comment=overall.strip() if isinstance(overall, str) else "",
                      repairs=repairs), []
