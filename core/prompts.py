"""The 申论 task modes: a system prompt per question type, and the prompt builder.

`build_prompt()` turns a validated chat request and the retrieved knowledge passages
into a `Prompt`: the OpenAI-shaped message list plus the structured parts the
offline provider answers from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

PROMPT_VERSION = "2026-11-28.1"

MODES: dict[str, str] = {
    "chat": "答疑",
    "summarize": "归纳概括",
    "analyze": "综合分析",
    "countermeasure": "提出对策",
    "document": "贯彻执行（应用文）",
    "essay": "文章写作",
    "grade": "批改",
}

_BASE = (
    "你是“申论助手”，一名熟悉国家公务员考试和各省联考申论阅卷规则的辅导老师。"
    "回答使用简体中文，观点紧扣给定资料，语言规范、简洁、条理清楚，不编造政策文件和数据。"
)

SYSTEM_PROMPTS: dict[str, str] = {
    "chat": _BASE + "回答考生关于申论备考、题型方法和政策理论的问题，给出可操作的建议。",
    "summarize": _BASE + (
        "当前题型是归纳概括题。要求：全面、准确地从给定资料中提炼要点，忠于资料原意，"
        "不展开分析、不提对策；按“总括句＋分条要点”作答，要点用序号标出，每条以关键词开头，"
        "同类合并、避免重复。"
    ),
    "analyze": _BASE + (
        "当前题型是综合分析题。要求：先表明观点或解释含义（亮明态度），再结合资料分析原因、"
        "影响或意义（分层论证），最后落脚到结论或启示（总结提升）；观点明确，分析有据。"
    ),
    "countermeasure": _BASE + (
        "当前题型是提出对策题。要求：对策针对资料中的问题或借鉴资料中的经验，"
        "做到“问题—对策”一一对应，写明主体＋措施＋目的，具体可行，分条作答。"
    ),
    "document": _BASE + (
        "当前题型是贯彻执行题（应用文写作）。要求：先判断文种（如倡议书、讲话稿、调研报告、"
        "宣传稿、情况说明、工作方案），严格遵循其格式（标题、称谓、正文、落款等），"
        "明确身份与对象，内容来源于资料，语言符合文种与场合。"
    ),
    "essay": _BASE + (
        "当前题型是文章写作（大作文）。要求：立意准确、紧扣题旨与资料主旨；拟一个鲜明的标题；"
        "结构完整（开头引题亮旨、主体分论点论证、结尾总结升华），论证结合资料事例与理论，"
        "语言有文采且规范。"
    ),
    "grade": _BASE + (
        "当前任务是批改考生答案。请像阅卷老师一样，对照题目要求和给定资料，"
        "指出得分要点、遗漏要点、逻辑与语言问题，给出模拟分数（说明这是模拟评分）和修改建议。"
    ),
}

# The answering method (答题思路) of each mode, used by the offline provider and as
# the skeleton of its answers.
MODE_GUIDES: dict[str, list[str]] = {
    "chat": [
        "明确题型：先判断是归纳概括、综合分析、提出对策、贯彻执行还是文章写作。",
        "回到资料：申论的答案要点几乎都来自给定资料，先找准作答范围。",
        "规范作答：要点分条、关键词前置、字数不超限。",
    ],
    "summarize": [
        "审题：明确作答对象（问题、原因、做法、变化、特点等）、作答范围和字数要求。",
        "找点：逐段阅读资料，勾画与作答对象相关的词句，注意总结句、转折句和数据。",
        "加工：同类合并、提炼关键词，避免照抄长句，也不要加入资料没有的内容。",
        "成文：总括句开头，要点用序号分条，每条关键词前置，控制在字数限制内。",
    ],
    "analyze": [
        "审题：判断是解释型、评价型、启示型还是比较型分析。",
        "亮观点：开头用一句话解释含义或表明态度。",
        "分层分析：从原因、表现、影响、意义等角度结合资料论证，每层有据。",
        "总结提升：回扣题目，给出结论、启示或落实方向。",
    ],
    "countermeasure": [
        "找问题：从资料中提炼问题及其原因，对策要与问题一一对应。",
        "找经验：资料中的好做法、专家建议可直接转化为对策。",
        "写对策：主体＋措施＋目的，具体可操作，避免空话套话。",
        "排顺序：按重要性或逻辑（思想—制度—资金—人才—监督）分条作答。",
    ],
    "document": [
        "定文种：根据题目判断文种及其格式要求（标题、称谓、正文、落款等）。",
        "明身份：弄清写作者身份、读者对象和使用场合，确定语气。",
        "选内容：从资料中选取与文种目的相符的内容，结构符合文种惯例。",
        "查格式：标题、称谓、落款、日期等要素齐全，字数符合要求。",
    ],
    "essay": [
        "立意：从资料主旨和题目要求中提炼总论点，紧扣题意，不偏题。",
        "拟题：标题鲜明、简洁，体现总论点。",
        "结构：开头引题亮旨；主体2～3个分论点，每段“分论点＋论证＋小结”；结尾总结升华。",
        "论证：结合资料事例、理论论述与现实意义，语言规范有文采。",
    ],
    "grade": [
        "对照要点：把考生答案与资料要点逐条比对，标出命中和遗漏。",
        "看逻辑：要点是否分条清楚、层次合理，有无重复或矛盾。",
        "看语言：表述是否准确精炼，是否照抄资料长句。",
        "看格式与字数：应用文格式是否完整，是否超出字数限制。",
    ],
}


def char_count(text: str) -> int:
    """Length of an answer as an examiner counts it: every character, punctuation
    included, except whitespace (spaces, tabs, line breaks)."""
    return sum(1 for ch in text if not ch.isspace())


@dataclass(frozen=True)
class Source:
    """A knowledge passage given to the model as a numbered source."""

    id: str
    title: str
    text: str
    score: float
    snippet: str = ""
    category: str = ""


@dataclass(frozen=True)
class Prompt:
    """Everything a provider needs to answer: the OpenAI-shaped messages and the
    structured request they were built from."""

    mode: str
    question: str
    messages: list[dict[str, str]]
    material: str = ""
    word_limit: int | None = None
    sources: tuple[Source, ...] = field(default_factory=tuple)


def _sources_block(sources: Sequence[Source]) -> str:
    lines = ["以下是从知识库检索到的参考资料，回答时如引用请用 [编号] 标注出处；"
             "如果参考资料与问题无关或不足以回答，请直接说明，不要编造出处。"]
    for n, src in enumerate(sources, 1):
        lines.append(f"[{n}] 《{src.title}》\n{src.text}")
    return "\n\n".join(lines)


def build_prompt(*, mode: str, question: str, history: Sequence[dict[str, str]] = (),
                 material: str = "", task: str = "", word_limit: int | None = None,
                 sources: Sequence[Source] = ()) -> Prompt:
    """Build the prompt for one chat turn.

    `question` is the user's latest message; `history` the earlier turns (OpenAI shape);
    `material` the 给定资料 and `task` the 题目, both optional.
    """
    system = SYSTEM_PROMPTS[mode]
    if word_limit:
        system += f"作答字数不超过{word_limit}字（标点计入字数）。"
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    if sources:
        messages.append({"role": "system", "content": _sources_block(sources)})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    parts = []
    if material:
        parts.append(f"【给定资料】\n{material}")
    if task:
        parts.append(f"【题目】\n{task}")
    parts.append(f"【考生的问题】\n{question}" if parts else question)
    messages.append({"role": "user", "content": "\n\n".join(parts)})
    return Prompt(mode=mode, question=question, messages=messages, material=material,
                  word_limit=word_limit, sources=tuple(sources))
