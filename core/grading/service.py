"""The grading use case: resolve a request, grade it by rules, ask the model, merge.

`GradingService.grade()` returns the grade as a JSON-ready dict. The deterministic
layer always runs (off the event loop, it uses jieba); with a model configured, the
model's validated judgement is merged in under these rules:

* a point earns credit only with evidence quoted verbatim from the answer — the
  rules' own match, or the model's quote once found in the answer (a quote that is
  not there is dropped); the better-evidenced status wins, and a model "hit" whose
  quote shares almost nothing with the point counts as partial;
* the 要点/内容 score is computed from those judgements, 格式 from the literal format
  checks; 逻辑结构, 语言表达 and 立意 are the model's scores, clamped to their ranges
  and scaled down like the rules' when content coverage is low;
* the total is the sum of the dimensions, in half points.

Without a model (offline provider) the rules' grade is the grade, and says so.
"""
from __future__ import annotations

import asyncio
import logging
import time
import uuid
from concurrent.futures import Executor
from dataclasses import replace
from typing import Any

from core.chat.prompts import SYSTEM_PROMPTS, Prompt
from core.chat.terms import read_full_score, read_length
from core.chat.wordlimit import char_count, condense_messages, trim_to_limit
from core.errors import InvalidRequest, UpstreamError
from core.grading.exam import apply_caps
from core.grading.llm_grader import (
    GRADE_PROMPT_VERSION,
    LLMVerdict,
    build_messages,
    first_json_object,
    retry_messages,
    validate,
)
from core.grading.points import Judgement, is_heading, quote_overlap
from core.grading.practice import PracticeBank
from core.grading.request import GradeRequest
from core.grading.rubric import (
    DEFAULT_FULL_SCORES,
    DIMENSIONS,
    LLM_HIT_MIN_OVERLAP,
    QUESTION_TYPES,
    RUBRIC_VERSION,
    json_number,
    round_score,
)
from core.grading.rules import (
    MAX_SUGGESTIONS,
    DimensionScore,
    GradeInput,
    RuleGrade,
    credit_ratio,
    fit_dimensions,
    grade_by_rules,
    needs_how_for,
    relevance_factor,
)
from core.grading.structure import detect_genre, detect_question_type
from core.grading.text import locate_quote, question_focus
from core.llm import LLMGateway, LLMSession, Usage

log = logging.getLogger("shenlun.grading")

GRADE_TEMPERATURE = 0.2
_STATUS_RANK = {"missed": 0, "partial": 1, "hit": 2}
NOTICE = ("模拟评分：由申论助手依据{rubric}自动给出，仅供练习参考，"
          "不代表任何考试的真实阅卷结果。")
OFFLINE_NOTICE = ("离线模式：未配置大模型，本次评分完全由规则层给出（要点核心词与近义词匹配、审题、文种、"
                  "字数与格式检查），无法判断论证深度与文采；示范答案为{kind}。")


class GradingService:
    """Grades candidates' answers; one per process, built in `build_context`."""

    def __init__(self, *, gateway: LLMGateway, executor: Executor, practice: PracticeBank,
                 server_id: str) -> None:
        self.gateway = gateway
        self.llm = gateway.llm
        self.executor = executor
        self.practice = practice
        self.server_id = server_id

    @property
    def offline(self) -> bool:
        return self.gateway.offline

    # --- the use case ---

    def resolve(self, req: GradeRequest) -> GradeInput:
        """The request with its practice item, type, full score, limit and points
        settled; each says where it came from (request, practice item or question)."""
        item = None
        if req.practice_id is not None:
            item = self.practice.get(req.practice_id)
            if item is None:
                raise InvalidRequest(f"字段 practice_id 指向的练习题不存在：{req.practice_id}")
        if item is not None:
            qtype, source = item.question_type, "practice"
            question, material, reference = item.question, item.material, item.reference_answer
        else:
            question, material, reference = req.question, req.material, req.reference
            detected = detect_question_type(question)
            if req.question_type:
                qtype, source = req.question_type, "given"
            elif detected:
                qtype, source = detected, "question"
            else:
                qtype, source = "summarize", "default"
        genre = None
        if qtype == "document":
            genre = req.genre or (item.genre if item else None) or detect_genre(question)
        asked = read_length(question)
        full, score_source = _first((req.full_score, "request"), (item.full_score if item else None, "practice"),
                                    (read_full_score(question), "question"),
                                    (DEFAULT_FULL_SCORES[qtype], "default"))
        limit, limit_source = _first((req.word_limit, "request"), (item.word_limit if item else None, "practice"),
                                     (asked.upper, "question"), (None, None))
        if req.scoring_points:
            points, points_source = req.scoring_points, "request"
        else:
            points, points_source = (item.points if item else ()), "practice"
        return GradeInput(answer=req.answer, question=question, question_type=qtype,
                          full_score=float(full), material=material, reference=reference,
                          word_limit=limit, genre=genre, type_source=source, points=points,
                          rubric_id=(item.rubric_id if item and points_source == "practice" else ""),
                          practice_id=item.id if item else None, points_source=points_source,
                          word_floor=asked.lower, limit_source=limit_source, score_source=score_source)

    async def grade(self, req: GradeRequest) -> dict[str, Any]:
        """The grade of one answer (raises InvalidRequest, UpstreamError, …)."""
        started = time.monotonic()
        inp = self.resolve(req)
        loop = asyncio.get_running_loop()
        rules: RuleGrade = await loop.run_in_executor(self.executor, grade_by_rules, inp)
        if self.offline:
            return self._body(rules, None, None, Usage(), self.llm.model, started)
        async with self.gateway.session() as call:
            verdict, model = await self._ask(call, rules)
            note = await self._fit_improved(call, rules, verdict)
        return self._body(rules, verdict, note, call.usage, model, started)

    async def grade_in_chat(self, payload: dict[str, Any]) -> dict[str, Any]:
        """`/api/chat` with `mode: "grade"` and an `answer`: the grade (as `POST /api/grade`)
        plus `answer` as readable text, so a chat client can show it. Never streamed."""
        if payload.get("stream") is True:
            raise InvalidRequest("字段 stream：批改结果不支持流式输出，请去掉 stream 或改用 POST /api/grade")
        grade = await self.grade(GradeRequest.from_payload(payload))
        return {**grade, "mode": "grade", "answer": render_text(grade), "sources": [], "cached": False}

    # --- the model ---

    async def _ask(self, call: LLMSession, rules: RuleGrade) -> tuple[LLMVerdict, str]:
        """The model's judgement and model name: one call, and one retry when it is malformed."""
        messages = build_messages(rules)
        max_tokens = min(8192, 1500 + 2 * rules.inp.improved_limit)
        answer = await call.complete_json(messages, temperature=GRADE_TEMPERATURE, max_tokens=max_tokens)
        text = answer.text
        verdict, problems = validate(first_json_object(text), rules)
        if verdict is None:
            log.info("grade: malformed model answer (%s), retrying once", "；".join(problems))
            answer = await call.complete_json(retry_messages(messages, text, problems),
                                              temperature=GRADE_TEMPERATURE, max_tokens=max_tokens)
            text = answer.text
            verdict, still = validate(first_json_object(text), rules)
            if verdict is None:
                raise UpstreamError("大模型返回的批改结果不是符合要求的 JSON（已重试一次）："
                                    + "；".join(still))
            verdict.repairs.insert(0, "首次输出不合要求（" + "；".join(problems) + "），已重试一次")
        return verdict, answer.model

    async def _fit_improved(self, call: LLMSession, rules: RuleGrade, verdict: LLMVerdict) -> str | None:
        """Keep the improved answer within the limit: condense once, then trim."""
        limit = rules.inp.improved_limit
        if char_count(verdict.improved_answer) <= limit:
            return None
        original = char_count(verdict.improved_answer)
        asked = [{"role": "system", "content": SYSTEM_PROMPTS[rules.inp.question_type]},
                 {"role": "user", "content": f"【题目】\n{rules.inp.question}\n\n请写出示范答案。"}]
        prompt = Prompt(mode=rules.inp.question_type, question=rules.inp.question,
                        messages=condense_messages(asked, verdict.improved_answer, limit))
        condensed = await call.follow_up(prompt, temperature=GRADE_TEMPERATURE,
                                         max_tokens=min(8192, 500 + 2 * limit), purpose="condense")
        if condensed is not None and char_count(condensed.text) < original:
            verdict.improved_answer = condensed.text.strip()
        if char_count(verdict.improved_answer) <= limit:
            return f"示范答案原有 {original} 字，超出 {limit} 字，已请大模型压缩一次"
        verdict.improved_answer = trim_to_limit(verdict.improved_answer, limit)
        return f"示范答案原有 {original} 字，压缩后仍超出 {limit} 字，已在句末截断"

    # --- merging and the answer ---

    def _merge_points(self, rules: RuleGrade, verdict: LLMVerdict | None) -> list[Judgement]:
        if verdict is None:
            return rules.judgements
        merged: list[Judgement] = []
        topic = question_focus(rules.inp.question)
        needs_how = needs_how_for(rules.inp.question, rules.inp.question_type)
        for rule_j in rules.judgements:
            status, quote = verdict.points.get(rule_j.point.id, ("missed", ""))
            found = locate_quote(rules.counted, quote) if quote and status != "missed" else None
            j = replace(rule_j, evidence=list(rule_j.evidence))
            if found is None:
                if status != "missed" and quote:
                    j.note = _join(j.note, "大模型给出的引文不在答案的计分范围内，已舍弃")
                merged.append(j)
                continue
            if status == "hit" and quote_overlap(rule_j.point, found, topic) < LLM_HIT_MIN_OVERLAP:
                status = "partial"
                j.note = _join(j.note, "引文与要点字面关联弱，按部分命中计")
            if needs_how and is_heading(found):
                # A bare heading is never evidence; what it names earns at most a partial.
                if status == "hit":
                    status = "partial"
                j.note = _join(j.note, f"大模型引用的「{found}」只是标题，没有写怎么做，至多按部分命中计")
                if _STATUS_RANK[status] > _STATUS_RANK[j.status]:
                    j.status, j.judged_by = status, "llm"
                merged.append(j)
                continue
            if _STATUS_RANK[status] > _STATUS_RANK[j.status]:
                j.status, j.judged_by = status, "llm"
                j.note = j.note.replace("该要点写在了超出字数限制的部分，不计分", "").strip("；")
            elif j.status != "missed":
                j.judged_by = "rules+llm"
            if found not in j.evidence:
                j.evidence.append(found)
            merged.append(j)
        return merged

    def _dimensions(self, rules: RuleGrade, verdict: LLMVerdict | None,
                    judgements: list[Judgement]) -> list[DimensionScore]:
        if verdict is None:
            return list(rules.dimensions.values())
        gate = relevance_factor(judgements)
        result = []
        for dim in DIMENSIONS[rules.inp.question_type]:
            base = rules.dimensions[dim.key]
            comment = verdict.comments.get(dim.key, base.comment)
            if dim.key == "points" and rules.has_content_points:
                score = round_score(base.max * (credit_ratio(judgements, "points") or 0.0))
                result.append(DimensionScore(dim.key, dim.name, score, base.max, comment, "rules"))
            elif dim.key == "format":
                result.append(DimensionScore(dim.key, dim.name, base.score, base.max,
                                             _join(comment, base.comment if base.score < base.max else ""),
                                             "rules"))
            else:
                score = round_score(verdict.scores.get(dim.key, base.score) * gate)
                if gate < 1.0:
                    comment = _join(comment, f"内容覆盖不足，本项按 {gate:.0%} 折算")
                result.append(DimensionScore(dim.key, dim.name, score, base.max, comment, "llm"))
        return result

    def _body(self, rules: RuleGrade, verdict: LLMVerdict | None, improved_note: str | None,
              usage: Usage, model: str, started: float) -> dict[str, Any]:
        inp = rules.inp
        judgements = self._merge_points(rules, verdict)
        dims = self._dimensions(rules, verdict, judgements)
        if verdict is not None:
            # The model's scores never lift a grade over the rules' caps (审题, 文种, 字数, 类卷).
            fit_dimensions(dims, apply_caps(min(inp.full_score, round_score(sum(d.score for d in dims))),
                                            rules.caps))
        score = min(inp.full_score, round_score(sum(d.score for d in dims)))
        maxima = {d.key: d.max for d in dims}
        weights: dict[str, float] = {}
        for j in judgements:
            weights[j.point.dimension] = weights.get(j.point.dimension, 0.0) + j.point.weight
        rubric_name = {"practice": f"练习题《{inp.practice_id}》的评分要点", "request": "请求给出的评分细则",
                       "reference": "参考答案提取的要点",
                       "material": "从给定资料自动提取的要点", "none": "通用评分规则"}[rules.rubric_source]
        notice = NOTICE.format(rubric=rubric_name + f"（评分规则 {RUBRIC_VERSION}"
                               + (f"，提示词 {GRADE_PROMPT_VERSION}）" if verdict else "）"))
        if verdict is None:
            kind = {"reference": "参考答案", "outline": "按得分点生成的作答提纲"}[rules.improved_source]
            notice += OFFLINE_NOTICE.format(kind=kind)
        if rules.rubric_source == "material":
            notice += "得分点由程序从资料中自动提取，可能不全或不准。"
        improved = verdict.improved_answer if verdict else rules.improved_answer
        grader = "llm+rules" if verdict else "rules"

        def point(j: Judgement) -> dict[str, Any]:
            dim_max = maxima.get(j.point.dimension, 0.0)
            share = j.point.weight / weights[j.point.dimension] if weights.get(j.point.dimension) else 0.0
            body = {"id": j.point.id, "label": j.point.label, "dimension": j.point.dimension,
                    "status": j.status, "score": json_number(round(dim_max * share * j.credit, 2)),
                    "max": json_number(round(dim_max * share, 2)), "evidence": j.evidence,
                    "judged_by": j.judged_by if j.status != "missed" else grader, "note": j.note}
            if j.point.material_quote:
                body["material_quote"] = j.point.material_quote
            return body

        return {
            "id": uuid.uuid4().hex,
            "simulated": True,
            "notice": notice,
            "grader": grader,
            "model": model,
            "rubric": {"id": inp.rubric_id or rules.rubric_source, "source": rules.rubric_source,
                       "version": RUBRIC_VERSION, "point_count": len(rules.points)},
            "points_source": rules.rubric_source,
            "prompt_version": GRADE_PROMPT_VERSION if verdict else None,
            "practice_id": inp.practice_id,
            "question_type": inp.question_type,
            "question_type_label": QUESTION_TYPES[inp.question_type],
            "question_type_source": inp.type_source,
            "genre": inp.genre,
            "score": json_number(score),
            "full_score": json_number(inp.full_score),
            "full_score_source": inp.score_source,
            "caps": [c.as_dict() for c in rules.caps],
            "essay_class": rules.essay.name if rules.essay else None,
            "task": ({"asked": rules.task.asked, "given": rules.task.given, "mismatch": rules.task.mismatch}
                     if rules.task else None),
            "answer_genre": rules.answer_genre,
            "dimensions": [d.as_dict() for d in dims],
            "points_hit": [point(j) for j in judgements if j.status != "missed"],
            "points_missed": [point(j) for j in judgements if j.status == "missed"],
            "char_count": rules.char_count,
            "word_limit": inp.word_limit,
            "word_limit_source": inp.limit_source,
            "word_floor": inp.word_floor,
            "over_limit": rules.over_limit,
            "structure_checks": [c.as_dict() for c in rules.checks],
            "overall_comment": _lead(rules, verdict.overall_comment if verdict else _overall(rules, score)),
            "suggestions": _caps_first(rules, verdict.suggestions) if verdict else rules.suggestions,
            "improved_answer": improved,
            "improved_answer_char_count": char_count(improved),
            "improved_answer_limit": inp.improved_limit,
            "improved_answer_source": "llm" if verdict else rules.improved_source,
            "improved_answer_note": improved_note,
            "deterministic": {
                "score": json_number(rules.score),
                "dimensions": [d.as_dict() for d in rules.dimensions.values()],
                "points": [{"id": j.point.id, "status": j.status, "coverage": j.coverage,
                            "evidence": j.evidence} for j in rules.judgements],
                "copy_ratio": rules.copy_ratio,
                "relevance_factor": rules.relevance,
            },
            "repairs": verdict.repairs if verdict else [],
            "usage": usage.as_dict(),
            "server_id": self.server_id,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }


def _first(*options: tuple[Any, Any]) -> tuple[Any, Any]:
    """The first option whose value is set, with its source."""
    return next((o for o in options if o[0] is not None), options[-1])


def _join(*parts: str) -> str:
    return "；".join(p for p in parts if p)


def _lead(rules: RuleGrade, comment: str) -> str:
    """A comment that names the caps first (审题, then 文种, 字数, 类卷)."""
    lead = "；".join(c.reason for c in rules.caps)
    return f"{lead}。{comment}" if lead else comment


def _caps_first(rules: RuleGrade, advice: list[str]) -> list[str]:
    named = [c.reason for c in rules.caps if c.rule != "类卷"]
    return (named + [a for a in advice if a not in named])[:MAX_SUGGESTIONS]


def _overall(rules: RuleGrade, score: float) -> str:
    hit = sum(1 for j in rules.judgements if j.status == "hit")
    partial = sum(1 for j in rules.judgements if j.status == "partial")
    text = (f"规则层评分 {score:g}/{rules.inp.full_score:g}" + (f"（{rules.essay.name}）" if rules.essay else "")
            + f"：{len(rules.judgements)} 个得分点中命中 {hit} 个、部分命中 {partial} 个")
    failed = [c.name for c in rules.checks if not c.passed]
    if failed:
        text += "；未通过的结构检查：" + "、".join(failed)
    if rules.over_limit:
        text += f"；超出字数限制 {rules.char_count - (rules.inp.word_limit or 0)} 字"
    return text + "。"


def render_text(grade: dict[str, Any]) -> str:
    """A grade as readable text (the `answer` of the `/api/chat` grade alias)."""
    lines = [f"【{grade['question_type_label']}·模拟评分】{grade['score']:g} / {grade['full_score']:g} 分"
             + (f"（{grade['essay_class']}）" if grade.get("essay_class") else "")]
    lines += [f"※ {c['reason']}" for c in grade.get("caps", []) if c["rule"] != "类卷"]
    lines += [f"- {d['name']}：{d['score']:g}/{d['max']:g}，{d['comment']}" for d in grade["dimensions"]]
    if grade["points_hit"]:
        lines.append("命中要点：" + "；".join(
            p["label"] + ("（部分）" if p["status"] == "partial" else "") for p in grade["points_hit"]))
    if grade["points_missed"]:
        lines.append("遗漏要点：" + "；".join(p["label"] for p in grade["points_missed"]))
    limit = grade["word_limit"]
    lines.append(f"字数：{grade['char_count']} 字" + (f"（限 {limit} 字，{'超出' if grade['over_limit'] else '未超出'}）"
                                                   if limit else ""))
    lines += ["修改建议："] + [f"{n}. {s}" for n, s in enumerate(grade["suggestions"], 1)]
    lines += ["示范答案：", grade["improved_answer"], "", grade["notice"]]
    return "\n".join(lines)
