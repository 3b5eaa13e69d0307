"""The exam's own rules, applied by code: what the question asks for, what the answer
gives (its 审题 and its 文种), and the caps an examiner applies whatever the points
(审题错误, 文种错误, 字数过少) and the 四类卷 an essay is marked by. The limit and score a
question states are read by core/chat/terms.py, for chat and grading alike.

Each cap is a `Cap` with the rule's name, the highest score it allows and the reason
in Chinese; the grade keeps the lowest, and the feedback names the caps first, in the
order 审题, 文种, 字数, 类卷. Everything here is literal and explainable: cue words and
counts, no model.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from core.grading.rubric import json_number, round_score
from core.grading.structure import detect_genre
from core.grading.text import compact, item_spans, paragraphs, strip_marker

# --- 审题: what the question asks for and what the answer gives ---

ASKED_NAMES = {"problem": "问题", "cause": "原因", "measure": "做法/对策", "effect": "影响/意义",
               "explain": "含义理解"}
# In the order they are tried: a question about problems *and* measures asks for measures.
_ASK_CUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("measure", ("对策", "建议", "措施", "做法", "经验", "举措", "怎么办", "如何解决", "怎样解决", "启示",
                 "思路", "打算")),
    ("cause", ("原因", "成因", "为什么")),
    ("effect", ("意义", "作用", "影响", "成效", "变化", "好处", "效果")),
    ("problem", ("问题", "困难", "困境", "不足", "挑战", "短板")),
    ("explain", ("理解", "含义", "看法", "评价", "评析", "认识", "观点")),
)
# Cue words an answer's items (and the material's clauses) give themselves away by.
# Problem cues are removed before measure cues are counted, so 不完善 is a problem and
# never the measure 完善.
PROBLEM_CUES = ("不足", "缺乏", "缺少", "不够", "不高", "滞后", "薄弱", "单一", "不畅", "不全", "不完善",
                "脱节", "流失", "短缺", "老化", "闲置", "困难", "难以", "没有", "无人", "不明确", "不清",
                "不到位", "不力", "依赖", "复杂", "推诿", "不便", "不及时", "未建成", "较差", "效果差",
                "留不住", "招不来", "意见大", "担心", "不会", "混投", "乱")
MEASURE_CUES = ("建立", "推行", "开展", "设立", "引入", "实施", "推出", "完善", "加强", "搭建", "探索",
                "组建", "推动", "创新", "整合", "打造", "培育", "健全", "落实", "强化", "提高", "增设",
                "配齐", "加大", "加快", "制定", "出台", "优化", "拓宽", "丰富", "壮大", "推进", "简化",
                "保留", "召开", "引导", "挖掘", "规范", "明确", "成立", "支持", "鼓励", "统筹", "公示",
                "选聘", "问需", "化解", "筹措", "增加", "提供", "建设", "杜绝", "严格", "实行", "畅通",
                "开设", "举办", "拓展", "联合", "指导")
CAUSE_CUES = ("由于", "因为", "导致", "造成", "缘于", "原因", "以致")
EFFECT_CUES = ("促进", "带动", "提升", "有利于", "使得", "改善", "变化", "成效", "增加", "提高", "减少",
               "意义", "作用")
CUES = {"problem": PROBLEM_CUES, "measure": MEASURE_CUES, "cause": CAUSE_CUES, "effect": EFFECT_CUES,
        "explain": ()}
EXPLAIN_CUES = ("是指", "指的是", "意思是", "意味着", "强调", "说明", "表明", "比喻", "体现", "这句话", "含义",
                "观点", "片面", "认为", "之所以", "可见", "因此")
EXPLAIN_LIST_CHARS = 30   # items longer than this on average argue; shorter ones are a list


def question_asks(question: str) -> str | None:
    """What a question's wording asks for (problem, cause, measure, effect, explain),
    read before its 要求; None when it does not say."""
    text = re.split(r"要求[:：]", question, maxsplit=1)[0]
    for kind, cues in _ASK_CUES:
        if any(c in text for c in cues):
            return kind
    return None


def asked_kind(question: str, question_type: str) -> str | None:
    """What a 小题 asks for; None for essays and documents (their 立意 and 文种 are
    judged instead) and for questions that do not say."""
    return None if question_type in ("essay", "document") else question_asks(question)


def has_cue(text: str, kind: str | None) -> bool:
    """Whether a text carries a cue of the kind asked for."""
    return kind is not None and any(c in text for c in CUES[kind])


def item_kind(item: str) -> str | None:
    """problem or measure by the cue words an item carries (None when balanced or none)."""
    rest = item
    problems = 0
    for cue in PROBLEM_CUES:
        problems += rest.count(cue)
        rest = rest.replace(cue, "　")
    measures = sum(rest.count(cue) for cue in MEASURE_CUES)
    if problems > measures:
        return "problem"
    if measures > problems:
        return "measure"
    return None


@dataclass(frozen=True)
class TaskCheck:
    """The answer's 审题: what it mainly gives, against what the question asks."""

    asked: str | None
    given: str | None
    mismatch: bool
    detail: str


def check_task(question: str, question_type: str, answer: str) -> TaskCheck:
    """Whether the answer gives what the question asks. A mismatch needs a clear
    majority: at least three items with a kind, three quarters of them of one kind,
    and at most one of the kind asked for."""
    asked = asked_kind(question, question_type)
    items = [strip_marker(s.text) for s in item_spans(answer)]
    kinds = [k for k in (item_kind(i) for i in items) if k]
    given = None
    if len(kinds) >= 3:
        for kind in ("problem", "measure"):
            if kinds.count(kind) * 4 >= len(kinds) * 3:
                given = kind
    if asked is None or given is None or given == asked:
        return TaskCheck(asked, given, False, "")
    wrong = {"problem": ("measure",), "measure": ("problem",), "cause": ("measure",),
             "effect": ("problem",), "explain": ("measure",)}[asked]
    if given not in wrong:
        return TaskCheck(asked, given, False, "")
    if asked == "explain" and (any(c in answer for c in EXPLAIN_CUES)
                               or sum(len(i) for i in items) / len(items) > EXPLAIN_LIST_CHARS):
        # An analysis argues with measures too; only a bare list of 对策 misses the question.
        return TaskCheck(asked, given, False, "")
    detail = (f"审题错误：题目要求写{ASKED_NAMES[asked]}，答案主要写的是{ASKED_NAMES[given]}"
              f"（{kinds.count(given)}/{len(kinds)} 条）")
    return TaskCheck(asked, given, True, detail)


# --- 文种 ---

GENRE_FAMILIES = (("讲话稿", "发言稿", "致辞", "演讲稿"), ("调研报告", "调查报告", "报告"),
                  ("工作方案", "实施方案", "方案"), ("宣传稿", "新闻稿"), ("情况说明", "情况反映"),
                  ("汇报提纲", "提纲"))


def answer_genre(answer: str) -> str | None:
    """The 文种 an answer is written as: a genre named in its title, else the
    genre's unmistakable phrases (发出如下倡议; 一封信; 同志们…谢谢大家)."""
    lines = paragraphs(answer)
    if not lines:
        return None
    title = lines[0] if len(compact(lines[0])) <= 30 else ""
    if "一封信" in title or "公开信" in title:
        return "公开信"
    named = detect_genre(title) if title else None
    if named:
        return named
    head = "".join(lines[:4])
    if "倡议" in head and ("如下倡议" in answer or "我们倡议" in answer):
        return "倡议书"
    if "一封信" in head:
        return "公开信"
    if "讲话" in title or ("同志们" in head and "谢谢" in "".join(lines[-2:])):
        return "讲话稿"
    return None


def same_genre(a: str, b: str) -> bool:
    if a == b:
        return True
    return any(a in family and b in family for family in GENRE_FAMILIES)


# --- caps ---

@dataclass(frozen=True)
class Cap:
    """A rule that limits the score whatever the points: its name, the highest score
    it allows (`limit`), or points it takes off (`deduct`), and why."""

    rule: str
    limit: float | None
    reason: str
    deduct: float = 0.0

    def as_dict(self) -> dict[str, object]:
        return {"rule": self.rule, "limit": None if self.limit is None else json_number(self.limit),
                "deduct": json_number(self.deduct), "reason": self.reason}


CAP_ORDER = ("审题", "文种", "字数", "照抄", "类卷")
TASK_CAP_SHARE = 0.30       # a wrong 审题 keeps at most 30 % of the full score
GENRE_CAP_SHARE = 0.60      # a wrong 文种 keeps at most 60 %
SHORT_SHARE = 0.50          # a 小题 under half its limit is "far under"
COPY_CAP_SHARE = 0.50       # an answer mostly copied from the material keeps at most half
COPY_CAP_RATIO = 0.50
OVER_LIMIT_DEDUCT_SHARE = 0.10  # over the limit: 超出部分不得分, and 10 % off for the overrun


def short_answer_cap(count: int, upper: int | None, full: float) -> Cap | None:
    """A 小题 far under its limit: at most 25 % + the share written, and never more
    than 2.5 × that share (ten characters of a 300-character answer keep ~1.5 of 20)."""
    if not upper or count >= upper * SHORT_SHARE:
        return None
    ratio = count / upper
    limit = round_score_down(full * min(0.25 + ratio, 2.5 * ratio))
    return Cap("字数", limit, f"答案仅 {count} 字，不到字数要求（{upper} 字）的一半，要点展开不足，最高 {limit:g} 分")


def over_limit_cap(count: int, upper: int | None, full: float) -> Cap | None:
    """A 小题 over its limit: what is written past it is not marked (the counted
    prefix), and the overrun itself costs 10 % of the full score."""
    if not upper or count <= upper:
        return None
    deduct = round_score_down(full * OVER_LIMIT_DEDUCT_SHARE)
    return Cap("字数", None, f"答案 {count} 字，超出字数限制（{upper} 字）{count - upper} 字：超出部分不得分，"
               f"另扣 {deduct:g} 分", deduct=deduct)


def copy_cap(ratio: float, full: float) -> Cap | None:
    """An answer mostly copied from the material: at most half the marks (照抄原文不是概括)."""
    if ratio <= COPY_CAP_RATIO:
        return None
    limit = round_score_down(full * COPY_CAP_SHARE)
    return Cap("照抄", limit, f"约 {ratio:.0%} 的内容照抄资料原句，未加提炼，最高 {limit:g} 分")


def round_score_down(value: float) -> float:
    """Down to the half point (a cap never rounds up)."""
    return int(value * 2) / 2


def apply_caps(score: float, caps: list[Cap]) -> float:
    """The score under the caps: deductions first, then the lowest limit (never below 0)."""
    score -= sum(c.deduct for c in caps)
    return max(0.0, min([score] + [c.limit for c in caps if c.limit is not None]))


def ordered(caps: list[Cap]) -> list[Cap]:
    return sorted(caps, key=lambda c: CAP_ORDER.index(c.rule))


# --- 四类卷 ---

# Class ranges on a 40-point paper, as examiners mark 文章 (scaled to other full scores).
ESSAY_CLASSES: tuple[tuple[str, float, float], ...] = (
    ("一类卷", 33.0, 40.0), ("二类卷", 25.0, 32.5), ("三类卷", 18.0, 24.5), ("四类卷", 0.0, 17.5))
MIN_ESSAY_CHARS = 400
ESSAY_SWING = 0.5   # how far inside its class an essay floats from the 基准分 (share of half the class)


@dataclass(frozen=True)
class EssayClass:
    name: str
    score: float
    upper: float
    reasons: tuple[str, ...]


def essay_class(*, full: float, count: int, lower: int, theme: float, content: float,
                structure: float, copy: float) -> EssayClass:
    """The class of an essay, then its place inside the class.

    The class is decided first by 立意 (`theme`, 0–1), 结构 (`structure`, share of the
    checks passed), length against the lower bound and copying: under 400 characters,
    without a 立意 or mostly copied, it is 四类卷; under 60 % of the lower bound at
    best 三类卷; 一类卷 needs the 立意 in title or opening, nearly all content points,
    a sound structure and the full length. The place inside the class follows content,
    structure, language and length together (and, in 四类卷, how much was written)."""
    scale = full / 40.0
    length = count / lower if lower else 1.0
    reasons: list[str] = []
    if count < MIN_ESSAY_CHARS:
        cls = 3
        reasons.append(f"全文仅 {count} 字，不足 {MIN_ESSAY_CHARS} 字，只能是四类卷")
    elif theme <= 0:
        cls = 3
        reasons.append("立意偏离题目要求（未写出题目的主旨），为四类卷")
    elif copy > 0.5:
        cls = 3
        reasons.append(f"大段照抄资料（约占 {copy:.0%}），没有自己的论证，为四类卷")
    elif length < 0.6:
        cls = 2
        reasons.append(f"全文 {count} 字，不到字数下限（{lower} 字）的 60%，最高三类卷")
    elif theme >= 1 and content >= 0.85 and structure >= 1 and length >= 0.9 and copy <= 0.3:
        cls = 0
    elif theme >= 0.5 and content >= 0.4 and structure >= 0.5 and length >= 0.8:
        cls = 1
    else:
        cls = 2
    name, lo, hi = ESSAY_CLASSES[cls]
    language = 1.0 if copy <= 0.3 else 0.5 if copy <= 0.5 else 0.0
    place = (theme + content + structure + language + min(1.0, length)) / 5
    if cls == 3:
        # 四类卷 spans 0–17.5: how much was written at all weighs as much as the rest.
        score = round_score(scale * (lo + (hi - lo) * place * min(1.0, count / MIN_ESSAY_CHARS)))
    else:
        # 基准分 at the middle of the class, floating up or down with the answer's quality.
        base, half = (lo + hi) / 2, (hi - lo) / 2
        score = round_score(scale * (base + (2 * place - 1) * half * ESSAY_SWING))
    # The class caps what a model may give; a 四类卷 that is barely written caps lower still.
    upper = hi * (min(1.0, count / MIN_ESSAY_CHARS) if cls == 3 else 1.0)
    return EssayClass(name, score, max(score, round_score_down(scale * upper)), tuple(reasons))
