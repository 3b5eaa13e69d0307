"""Question-type and genre detection, and the structure checks of each type.

The checks are literal and therefore explainable (and fallible): numbered points for
概括/对策, layers and a conclusion for 分析, a title and paragraphs for 文章, and the
genre's required parts (标题, 称谓, 落款, 结束语, 分部分) for 应用文.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from core.grading.text import compact, content_words, coverage, numbered_markers, paragraphs, split_items

# Genres of 贯彻执行 questions and their required parts, longest names first so that
# "调研报告" wins over "报告".
GENRE_PARTS: dict[str, tuple[str, ...]] = {
    "倡议书": ("title", "salutation", "signature"),
    "公开信": ("title", "salutation", "signature"),
    "建议书": ("title", "salutation", "signature"),
    "感谢信": ("title", "salutation", "signature"),
    "慰问信": ("title", "salutation", "signature"),
    "通知": ("title", "salutation", "signature"),
    "讲话稿": ("title", "salutation", "closing"),
    "发言稿": ("title", "salutation", "closing"),
    "致辞": ("title", "salutation", "closing"),
    "演讲稿": ("title", "salutation", "closing"),
    "工作方案": ("title", "sections"),
    "实施方案": ("title", "sections"),
    "调研报告": ("title", "sections"),
    "调查报告": ("title", "sections"),
    "汇报提纲": ("title", "sections"),
    "工作总结": ("title", "sections"),
    "情况说明": ("title",),
    "情况反映": ("title",),
    "宣传稿": ("title",),
    "新闻稿": ("title",),
    "简报": ("title",),
    "短评": ("title",),
    "编者按": ("title",),
    "推介词": ("title",),
    "解说词": ("title",),
    "导言": ("title",),
    "提纲": ("title", "sections"),
    "方案": ("title", "sections"),
    "报告": ("title", "sections"),
}
_GENRES_BY_LENGTH = sorted(GENRE_PARTS, key=len, reverse=True)

PART_NAMES = {"title": "标题", "salutation": "称谓", "signature": "落款",
              "closing": "结束语", "sections": "分部分"}

_ESSAY_STRONG = ("议论文", "自拟题目", "自拟标题", "自选角度", "自定立意")
_TYPE_CUES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("countermeasure", ("对策", "建议", "措施", "解决", "怎么办", "改进", "办法", "思路")),
    ("analyze", ("分析", "谈谈", "理解", "评价", "看法", "启示", "认识", "含义", "评析", "阐述", "解释")),
    ("summarize", ("概括", "归纳", "总结", "梳理", "提炼", "概述", "简述", "列举")),
)

_DATE = re.compile(r"(?:\d{4}|[○〇零一二三四五六七八九十]{2,4}|[×xX某]{1,4})\s*年\s*"
                   r"(?:\d{1,2}|[×xX某一二三四五六七八九十]{1,3})\s*月")
_ORG_SUFFIX = re.compile(
    r"(?:办|局|厅|委|委员会|政府|中心|街道|办事处|社区|村委会|居委会|学校|协会|报社|部|处|会|组|站|所|院|"
    r"馆|队|室|公司|集团|联合会|工作组|办公室|领导小组|编辑部|服务中心|人民政府|党委|支部)$")
_SENTENCE_END = tuple("。！？!?；;，,")


def detect_genre(question: str) -> str | None:
    """The 应用文 genre a question names (倡议书, 讲话稿, …), else None."""
    for genre in _GENRES_BY_LENGTH:
        if genre in question:
            return genre
    return None


def detect_question_type(question: str) -> str | None:
    """The question type from the question's wording, else None.

    Order matters: an essay's strong markers, then a genre name (应用文), then the word
    文章, then 对策 > 分析 > 概括 (a question that asks to summarise problems *and*
    propose measures is marked as a 对策 question)."""
    if any(m in question for m in _ESSAY_STRONG):
        return "essay"
    if detect_genre(question):
        return "document"
    if "文章" in question:
        return "essay"
    for qtype, cues in _TYPE_CUES:
        if any(c in question for c in cues):
            return qtype
    return None


@dataclass(frozen=True)
class Check:
    """One structure or format check; `dimension` says what it is marked under."""

    key: str
    name: str
    passed: bool
    detail: str
    dimension: str = "structure"

    def as_dict(self) -> dict[str, object]:
        return {"key": self.key, "name": self.name, "passed": self.passed,
                "detail": self.detail, "dimension": self.dimension}


# --- parts of a text ---

def has_title(lines: list[str]) -> bool:
    """A first line that reads as a title: short, not a sentence, not a salutation."""
    if not lines:
        return False
    first = lines[0]
    return (len(compact(first)) <= 30 and not first.endswith(_SENTENCE_END)
            and not first.endswith(("：", ":")) and len(lines) > 1)


def has_salutation(lines: list[str]) -> bool:
    """A 称谓 within the first lines: a short line ending with a colon ("各位代表，
    同志们："), or a short addressee before a colon that opens the text ("各位居民：近年来…")."""
    for line in lines[:4]:
        text = line.strip()
        if re.match(r"^[（(]?[\d一二三四五六七八九十]", text) or "如下" in text:
            continue
        if text.endswith(("：", ":")) and 2 <= len(compact(text)) <= 30 and "。" not in text:
            return True
        head = re.split(r"[：:]", text, maxsplit=1)[0]
        if head != text and 2 <= len(head) <= 12 and not any(c in head for c in "，,。"):
            return True
    return False


def has_signature(lines: list[str]) -> bool:
    """A 落款 in the last lines (never the title): a short, unpunctuated line naming
    an issuer (…办 / …委员会 / …社区) or a date (2025年5月20日, ×年×月×日)."""
    for line in lines[1:][-3:]:
        short = compact(line)
        if not short or len(short) > 40 or short.endswith(_SENTENCE_END):
            continue
        if _DATE.search(short) or _ORG_SUFFIX.search(short):
            return True
    return False


def has_closing(lines: list[str]) -> bool:
    """A speech's 结束语 (谢谢大家 / 谢谢各位) in the last lines."""
    return any("谢谢" in line for line in lines[-2:])


def has_sections(text: str) -> bool:
    return numbered_markers(text) >= 2


_PART_TESTS = {
    "title": lambda text, lines: has_title(lines),
    "salutation": lambda text, lines: has_salutation(lines),
    "signature": lambda text, lines: has_signature(lines),
    "closing": lambda text, lines: has_closing(lines),
    "sections": lambda text, lines: has_sections(text),
}

_CONCLUSION_CUES = ("总之", "综上", "因此", "可见", "所以", "总的来说", "由此", "因而", "启示", "总而言之")


def structure_checks(answer: str, question_type: str, genre: str | None = None) -> list[Check]:
    """The checks for an answer of a type (and genre, for 应用文)."""
    lines = paragraphs(answer)
    markers = numbered_markers(answer)
    checks: list[Check] = []
    if question_type in ("summarize", "countermeasure"):
        checks.append(Check("numbered", "分条作答", markers >= 2,
                            f"识别到 {markers} 个序号（1. /（1）/ 一是 / ① 等）" if markers
                            else "未识别到序号，要点应分条列出"))
        dup = _duplicate_items(answer)
        checks.append(Check("no_duplicates", "要点不重复", dup is None,
                            "未发现重复的要点" if dup is None else f"第 {dup[0]} 条与第 {dup[1]} 条内容高度重复"))
    elif question_type == "analyze":
        sentence_count = sum(1 for ch in answer if ch in "。！？")
        layered = markers >= 2 or sentence_count >= 3
        checks.append(Check("layered", "分层分析", layered,
                            "观点与分析分层展开" if layered else "分析层次不清：应先亮观点，再分层论证"))
        tail = "".join(lines[-2:]) if lines else ""
        concluded = any(c in tail for c in _CONCLUSION_CUES)
        checks.append(Check("conclusion", "总结落脚", concluded,
                            "结尾有总结或落脚点" if concluded else "结尾缺少总结提升（如“因此……”“综上……”）"))
    elif question_type == "essay":
        titled = has_title(lines)
        checks.append(Check("title", "标题", titled,
                            f"标题：{lines[0]}" if titled else "缺少标题（首行应为简短的标题）"))
        body = len(lines) - (1 if titled else 0)
        checks.append(Check("paragraphs", "段落结构", body >= 4,
                            f"正文 {body} 段" + ("" if body >= 4 else "，应有开头、两个以上分论点段和结尾")))
    elif question_type == "document":
        parts = GENRE_PARTS.get(genre or "", ("title",))
        for part in parts:
            ok = _PART_TESTS[part](answer, lines)
            name = PART_NAMES[part]
            checks.append(Check(part, name, ok, f"{name}完整" if ok else f"缺少{name}"
                                + (f"（{genre}需要{name}）" if genre else ""), dimension="format"))
        body_lines = len(lines)
        organised = markers >= 2 or body_lines >= 3
        checks.append(Check("body", "正文层次", organised,
                            "正文分段或分条" if organised else "正文应分段或分条，层次清楚"))
    return checks


def _duplicate_items(answer: str) -> tuple[int, int] | None:
    """The first pair of list items that say nearly the same thing, if any."""
    items = split_items(answer)
    if len(items) < 2:
        return None
    words = [content_words(item) for item in items]
    for i in range(len(items)):
        for j in range(i + 1, len(items)):
            if len(words[i]) >= 2 and len(words[j]) >= 2 and \
                    coverage(words[i], items[j]) >= 0.8 and coverage(words[j], items[i]) >= 0.8:
                return i + 1, j + 1
    return None
