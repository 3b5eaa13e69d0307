"""The deterministic layer: a complete grade computed by the service itself.

Given a resolved `GradeInput`, `grade_by_rules()` finds the scoring points, judges
each against the counted part of the answer (what fits in the word limit, as on a
grid answer sheet), runs the structure checks and turns all of it into dimension
scores by fixed formulas (see `core.grading.rubric`). Then the exam's own rules
(`core.grading.exam`) cap it — 审题, 文种, 字数 — and an essay is marked by its
四类卷 class; the dimensions are refitted to sum to the final score. It is
synchronous and uses jieba: call it from the executor.
"""
from __future__ import annotations

from dataclasses import dataclass, field, replace

from core.chat.wordlimit import char_count, counted_prefix, trim_to_limit
from core.grading.exam import (
    GENRE_CAP_SHARE,
    TASK_CAP_SHARE,
    Cap,
    EssayClass,
    TaskCheck,
    answer_genre,
    apply_caps,
    check_task,
    copy_cap,
    essay_class,
    ordered,
    over_limit_cap,
    question_asks,
    round_score_down,
    same_genre,
    short_answer_cap,
)
from core.grading.points import Judgement, ScoringPoint, judge, points_from_material, points_from_reference, theme_point
from core.grading.rubric import (
    DIMENSIONS,
    QUESTION_TYPES,
    RELEVANCE_GATE,
    TYPICAL_WORD_LIMITS,
    dimension_maxima,
    json_number,
    round_score,
)
from core.grading.structure import Check, structure_checks
from core.grading.text import compact, paragraphs, question_focus, sentences

COPY_RUN = 15              # characters copied verbatim in a row that count as 照抄
LONG_SENTENCE = 80         # average sentence length (characters) that reads as 冗长
MAX_SUGGESTIONS = 8


@dataclass(frozen=True)
class GradeInput:
    """A grade request with everything resolved: type, scores, limit, rubric."""

    answer: str
    question: str
    question_type: str
    full_score: float
    material: str = ""
    reference: str = ""
    word_limit: int | None = None
    genre: str | None = None
    type_source: str = "given"               # given | practice | question | default
    points: tuple[ScoringPoint, ...] = ()    # empty: extracted from reference/material
    rubric_id: str = ""
    practice_id: str | None = None
    points_source: str = "practice"          # where `points` came from: request | practice
    word_floor: int | None = None            # the lower bound of the length asked (文章)
    limit_source: str | None = None          # request | practice | question (None: no limit)
    score_source: str = "default"            # request | practice | question | default

    @property
    def improved_limit(self) -> int:
        """The limit an improved answer must respect (the type's usual one if none given)."""
        return self.word_limit or TYPICAL_WORD_LIMITS[self.question_type]


@dataclass
class DimensionScore:
    key: str
    name: str
    score: float
    max: float
    comment: str
    source: str = "rules"

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "name": self.name, "score": json_number(self.score),
                "max": json_number(self.max), "comment": self.comment, "source": self.source}


@dataclass
class RuleGrade:
    """The deterministic grade and everything it was computed from."""

    inp: GradeInput
    points: tuple[ScoringPoint, ...]
    rubric_source: str                      # practice | reference | material | none
    judgements: list[Judgement]
    checks: list[Check]
    dimensions: dict[str, DimensionScore]
    char_count: int
    over_limit: bool
    counted: str                            # the part of the answer that is marked
    copy_ratio: float
    relevance: float                        # the factor applied to structure/language
    suggestions: list[str] = field(default_factory=list)
    improved_answer: str = ""
    improved_source: str = "outline"        # reference | outline
    caps: list[Cap] = field(default_factory=list)
    task: TaskCheck | None = None
    answer_genre: str | None = None
    essay: EssayClass | None = None

    @property
    def score(self) -> float:
        return min(self.inp.full_score, round_score(sum(d.score for d in self.dimensions.values())))

    @property
    def has_content_points(self) -> bool:
        """Whether the 要点/内容 dimension can be scored from points (else the model,
        when there is one, scores it like the other dimensions)."""
        return any(p.dimension == "points" for p in self.points)

    @property
    def maxima(self) -> dict[str, float]:
        return {k: d.max for k, d in self.dimensions.items()}


def resolve_points(inp: GradeInput) -> tuple[tuple[ScoringPoint, ...], str]:
    """The scoring points of a grade and where they came from."""
    points: list[ScoringPoint]
    if inp.points:
        points, source = list(inp.points), inp.points_source
    elif inp.reference.strip():
        points, source = points_from_reference(inp.reference, inp.question_type), "reference"
        if not points and inp.material.strip():
            points, source = points_from_material(inp.material, inp.question, inp.question_type), "material"
    elif inp.material.strip():
        points, source = points_from_material(inp.material, inp.question, inp.question_type), "material"
    else:
        points, source = [], "none"
    if inp.question_type == "essay" and not any(p.dimension == "theme" for p in points):
        points.append(theme_point(inp.question, inp.reference or inp.material))
    return tuple(points), source


def credit_ratio(judgements: list[Judgement], dimension: str) -> float | None:
    """Weighted credit of the judgements of one dimension (None when it has none)."""
    mine = [j for j in judgements if j.point.dimension == dimension]
    total = sum(j.point.weight for j in mine)
    if not total:
        return None
    return sum(j.point.weight * j.credit for j in mine) / total


def relevance_factor(judgements: list[Judgement]) -> float:
    """1 when content coverage reaches RELEVANCE_GATE, proportionally less below it."""
    ratios = [r for r in (credit_ratio(judgements, "points"), credit_ratio(judgements, "theme"))
              if r is not None]
    if not ratios:
        return 1.0  # nothing to judge relevance by
    return min(1.0, (sum(ratios) / len(ratios)) / RELEVANCE_GATE)


def copy_ratio(answer: str, material: str, run: int = COPY_RUN) -> float:
    """Share of the answer's characters inside runs of `run`+ characters copied
    verbatim from the material (whitespace ignored)."""
    text, source = compact(answer), compact(material)
    if len(text) < run or len(source) < run:
        return 0.0
    grams = {source[i:i + run] for i in range(len(source) - run + 1)}
    covered = [False] * len(text)
    for i in range(len(text) - run + 1):
        if text[i:i + run] in grams:
            for k in range(i, i + run):
                covered[k] = True
    return sum(covered) / len(text)


def needs_how_for(question: str, question_type: str) -> bool:
    """Where a 小题 asks what to do (对策, 做法, 经验), a heading must say how
    (主体、措施、目的), or it earns at most a partial."""
    return question_type in ("summarize", "countermeasure") and question_asks(question) == "measure"


def _judge_all(inp: GradeInput, points: tuple[ScoringPoint, ...], counted: str) -> list[Judgement]:
    topic = question_focus(inp.question)
    needs_how = needs_how_for(inp.question, inp.question_type)
    lines = paragraphs(counted)
    opening = "\n".join(lines[:2])
    result: list[Judgement] = []
    for point in points:
        if point.dimension == "theme":
            j = judge(point, opening, topic)
            if j.status == "missed":
                anywhere = judge(point, counted, topic)
                if anywhere.status != "missed":
                    j = replace(anywhere, status="partial", note="立意未在标题或开头亮明")
        else:
            j = judge(point, counted, topic, needs_how=needs_how)
        if j.status == "missed" and counted != inp.answer and judge(point, inp.answer, topic).status != "missed":
            j.note = "该要点写在了超出字数限制的部分，不计分"
        result.append(j)
    return result


def _language(counted: str, material: str, gate: float, maximum: float) -> tuple[DimensionScore, float]:
    ratio = copy_ratio(counted, material)
    sents = [len(compact(s.text)) for s in sentences(counted)]
    average = sum(sents) / len(sents) if sents else 0.0
    quality, notes = 1.0, []
    if ratio > 0.5:
        quality -= 0.5
        notes.append(f"大段照抄资料原句（约占 {ratio:.0%}），应提炼概括")
    elif ratio > 0.3:
        quality -= 0.25
        notes.append(f"照抄资料原句较多（约占 {ratio:.0%}）")
    if average > LONG_SENTENCE:
        quality -= 0.25
        notes.append(f"句子偏长（平均 {average:.0f} 字），表述不够精炼")
    if not compact(counted):
        quality, notes = 0.0, ["答案为空"]
    comment = "；".join(notes) if notes else "未发现照抄长句或冗长句（规则层只检查照抄和句长，措辞质量以大模型或人工判断为准）"
    return DimensionScore("language", "语言表达", round_score(maximum * max(quality, 0.0) * gate),
                          maximum, comment), ratio


def _checks_score(key: str, name: str, checks: list[Check], gate: float, maximum: float) -> DimensionScore:
    mine = [c for c in checks if c.dimension == key]
    passed = sum(1 for c in mine if c.passed)
    share = passed / len(mine) if mine else 1.0
    failed = [c.detail for c in mine if not c.passed]
    comment = "；".join(failed) if failed else ("、".join(c.name for c in mine) + "符合要求" if mine else "—")
    return DimensionScore(key, name, round_score(maximum * share * gate), maximum, comment)


def _points_comment(judgements: list[Judgement], dimension: str) -> str:
    mine = [j for j in judgements if j.point.dimension == dimension]
    if not mine:
        return "没有可用的得分点（资料过短或未提供），无法按要点评分"
    hit = [j for j in mine if j.status == "hit"]
    partial = [j for j in mine if j.status == "partial"]
    missed = [j for j in mine if j.status == "missed"]
    text = f"共 {len(mine)} 个得分点：命中 {len(hit)} 个，部分命中 {len(partial)} 个，遗漏 {len(missed)} 个"
    if missed:
        text += "；遗漏：" + "；".join(j.point.label for j in missed[:5])
    return text


def grade_by_rules(inp: GradeInput) -> RuleGrade:
    """The deterministic grade of one answer (synchronous; uses jieba)."""
    points, source = resolve_points(inp)
    essay = inp.question_type == "essay"
    # An essay is read to its end (its length is judged by class); a 小题 to its limit.
    counted = counted_prefix(inp.answer, inp.word_limit) if inp.word_limit and not essay else inp.answer
    count = char_count(inp.answer)
    judgements = _judge_all(inp, points, counted)
    checks = structure_checks(inp.answer, inp.question_type, inp.genre)
    given_genre = answer_genre(inp.answer) if inp.question_type == "document" else None
    wrong_genre = bool(inp.genre and given_genre and not same_genre(inp.genre, given_genre))
    if inp.question_type == "document" and inp.genre:
        checks.insert(0, Check("genre", "文种", not wrong_genre,
                               f"文种错误：题目要求写{inp.genre}，答案写成了{given_genre}" if wrong_genre else
                               f"文种：{given_genre or inp.genre}" + ("" if given_genre else "（未从答案中识别出文种名称）"),
                               dimension="format"))
    gate = relevance_factor(judgements) if compact(counted) else 0.0
    maxima = dimension_maxima(inp.question_type, inp.full_score)
    dims: dict[str, DimensionScore] = {}
    ratio = 0.0
    for dim in DIMENSIONS[inp.question_type]:
        maximum = maxima[dim.key]
        if dim.key in ("points", "theme"):
            credit = credit_ratio(judgements, dim.key)
            dims[dim.key] = DimensionScore(dim.key, dim.name, round_score(maximum * (credit or 0.0)),
                                           maximum, _points_comment(judgements, dim.key))
        elif dim.key == "language":
            dims[dim.key], ratio = _language(counted, inp.material, gate, maximum)
        else:
            dims[dim.key] = _checks_score(dim.key, dim.name, checks, gate, maximum)
        if gate < 1.0 and dim.key not in ("points", "theme"):
            dims[dim.key].comment += f"（内容覆盖不足，本项按 {gate:.0%} 折算）"
    if wrong_genre:
        dims["format"].score = 0.0
        dims["format"].comment = f"文种错误（要求{inp.genre}，写成了{given_genre}），格式分不得分"
    grade = RuleGrade(inp=inp, points=points, rubric_source=source, judgements=judgements,
                      checks=checks, dimensions=dims, char_count=count,
                      over_limit=bool(inp.word_limit and count > inp.word_limit),
                      counted=counted, copy_ratio=round(ratio, 3), relevance=round(gate, 3),
                      answer_genre=given_genre)
    grade.caps = exam_caps(grade, wrong_genre)
    target = apply_caps(grade.score, grade.caps)
    if essay:
        grade.essay = _essay_class(grade)
        target = apply_caps(grade.essay.score, grade.caps)
    fit_dimensions(list(grade.dimensions.values()), target)
    grade.suggestions = suggestions(grade)
    grade.improved_answer, grade.improved_source = offline_improved_answer(grade)
    return grade


def exam_caps(grade: RuleGrade, wrong_genre: bool) -> list[Cap]:
    """The caps the exam's rules put on this answer, 审题 first."""
    inp = grade.inp
    caps: list[Cap] = []
    if inp.question_type not in ("essay", "document"):
        grade.task = check_task(inp.question, inp.question_type, grade.counted)
        if grade.task.mismatch:
            caps.append(Cap("审题", round_score_down(inp.full_score * TASK_CAP_SHARE),
                            grade.task.detail + f"，最高 {TASK_CAP_SHARE:.0%} 的分数"))
    if wrong_genre:
        caps.append(Cap("文种", round_score_down(inp.full_score * GENRE_CAP_SHARE),
                        f"文种错误：题目要求写{inp.genre}，答案写成了{grade.answer_genre}，"
                        f"格式分不得分，最高 {GENRE_CAP_SHARE:.0%} 的分数"))
    if inp.question_type != "essay":
        caps += [c for c in (short_answer_cap(grade.char_count, inp.word_limit, inp.full_score),
                             over_limit_cap(grade.char_count, inp.word_limit, inp.full_score),
                             copy_cap(grade.copy_ratio, inp.full_score)) if c]
    return ordered(caps)


ESSAY_OVER_LIMIT_DEDUCTION = 2.0


def _essay_class(grade: RuleGrade) -> EssayClass:
    inp = grade.inp
    mine = [c for c in grade.checks if c.dimension == "structure"]
    structure = sum(1 for c in mine if c.passed) / len(mine) if mine else 1.0
    lower = inp.word_floor or (round(inp.word_limit * 0.8) if inp.word_limit else 800)
    cls = essay_class(full=inp.full_score, count=grade.char_count, lower=lower,
                      theme=credit_ratio(grade.judgements, "theme") or 0.0,
                      content=credit_ratio(grade.judgements, "points") or 0.0,
                      structure=structure, copy=grade.copy_ratio)
    reasons = list(cls.reasons)
    score = cls.score
    if grade.over_limit:
        score = max(0.0, score - ESSAY_OVER_LIMIT_DEDUCTION)
        reasons.append(f"超出字数上限 {grade.char_count - (inp.word_limit or 0)} 字，扣 "
                       f"{ESSAY_OVER_LIMIT_DEDUCTION:g} 分")
    grade.caps.append(Cap("类卷", cls.upper, f"{cls.name}（本卷最高 {cls.upper:g} 分）"
                          + ("：" + "；".join(reasons) if reasons else "")))
    return EssayClass(cls.name, score, cls.upper, tuple(reasons))


def fit_dimensions(dims: list[DimensionScore], total: float) -> None:
    """Make the dimension scores sum to `total` (half points, each within 0…max):
    scaled down in proportion when the caps took marks away, raised toward their
    maxima in proportion to the headroom when an essay's class places it higher."""
    current = sum(d.score for d in dims)
    if abs(current - total) < 1e-9:
        return
    if total < current:
        ideal = [d.score * total / current if current else 0.0 for d in dims]
    else:
        room = sum(d.max - d.score for d in dims)
        ideal = [d.score + (d.max - d.score) * (total - current) / room if room else d.score for d in dims]
    halves = [int(v * 2 + 1e-9) for v in ideal]
    left = int(round(total * 2)) - sum(halves)
    for i in sorted(range(len(dims)), key=lambda i: -(ideal[i] * 2 - halves[i])):
        if left <= 0:
            break
        if halves[i] < dims[i].max * 2:
            halves[i] += 1
            left -= 1
    for d, h in zip(dims, halves, strict=True):
        d.score = h / 2


def suggestions(grade: RuleGrade) -> list[str]:
    """Concrete advice from the judgements and checks, most valuable first."""
    advice: list[str] = [c.reason for c in grade.caps if c.rule != "类卷"]
    if grade.essay and grade.essay.reasons:
        advice += list(grade.essay.reasons)
    if grade.over_limit:
        advice.append(f"答案共 {grade.char_count} 字，超过 {grade.inp.word_limit} 字的限制；"
                      "超出部分在答题纸上写不下、也不计分，应合并同类要点、删去铺垫")
    for j in grade.judgements:
        if j.status == "missed":
            advice.append(f"补充要点：{j.point.label}" + (f"（{j.note}）" if j.note else ""))
        elif j.status == "partial":
            advice.append(f"完善要点：{j.point.label}（{j.note or '核心意思没有写全'}）")
    advice += [f"{c.name}：{c.detail}" for c in grade.checks if not c.passed]
    if grade.copy_ratio > 0.3:
        advice.append("少照抄资料原句，用关键词提炼概括，做到“源于资料、高于资料”")
    if not advice:
        advice.append("要点覆盖完整、结构规范；可进一步锤炼语言，使关键词更醒目")
    return advice[:MAX_SUGGESTIONS]


def offline_improved_answer(grade: RuleGrade) -> tuple[str, str]:
    """An improved answer without a model: the reference answer when there is one,
    else an outline of the scoring points — both within the limit."""
    limit = grade.inp.improved_limit
    if grade.inp.reference.strip():
        return trim_to_limit(grade.inp.reference.strip(), limit), "reference"
    content = [p for p in grade.points if p.dimension == "points"]
    theme = [p for p in grade.points if p.dimension == "theme"]
    lines = [f"【作答提纲：{QUESTION_TYPES[grade.inp.question_type]}】"]
    if theme:
        lines.append("立意：" + "、".join(theme[0].keywords or theme[0].phrasings))
    lines += [f"{n}. {p.phrasings[0] if p.phrasings else p.label}" for n, p in enumerate(content, 1)]
    if not content:
        lines.append("（未能从资料中确定得分点，无法生成提纲；提供参考答案 reference 或练习题 practice_id 可得到示范答案）")
    return trim_to_limit("\n".join(lines), limit), "outline"
