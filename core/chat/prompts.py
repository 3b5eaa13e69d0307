"""The 申论 task modes, their prompts (data in `data/prompts/`), and the prompt builder.

The prompt texts are data a teacher can read and edit: one Markdown file per question
type plus `_common.md`, cut into `## ` sections (see `data/prompts/README.md`). They
are read once, when the service starts (`PromptBook.load()` in `build_context`), never
at import time. `read_task()` reads what a 题目 asks (word budget, score, role, 文种,
compound parts, 综合分析 subtype); `build_prompt()` turns a validated chat request, that
reading and the retrieved passages into a `Prompt`: the OpenAI-shaped messages plus the
structured parts the offline provider and the self-check work from.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.chat.terms import read_full_score, read_length
from core.config import PROJECT_ROOT

# Bump when the prompts or their assembly change; the cache key also carries a digest
# of the prompt files, so an edit without a bump still never serves stale answers.
PROMPT_VERSION = "2026-12-01.2"
PROMPTS_DIR = PROJECT_ROOT / "data" / "prompts"
# What a candidate may send of a task, in chat and grading alike (characters).
MAX_MATERIAL_CHARS = 50_000
MAX_QUESTION_CHARS = 2_000

MODES: dict[str, str] = {
    "chat": "答疑",
    "summarize": "归纳概括",
    "analyze": "综合分析",
    "countermeasure": "提出对策",
    "document": "贯彻执行（应用文）",
    "essay": "文章写作",
    "grade": "批改",
}

# The one table of names a client may send for a mode / question type (chat `mode`,
# grading `question_type`, the practice filter): canonical keys, the full Chinese
# names and the short ones candidates use.
MODE_ALIASES: dict[str, str] = {
    **{key: key for key in MODES},
    "答疑": "chat", "问答": "chat",
    "概括": "summarize", "归纳概括": "summarize", "归纳": "summarize",
    "分析": "analyze", "综合分析": "analyze",
    "对策": "countermeasure", "提出对策": "countermeasure", "解决问题": "countermeasure",
    "应用文": "document", "贯彻执行": "document", "公文": "document", "贯彻执行（应用文）": "document",
    "文章": "essay", "文章写作": "essay", "大作文": "essay", "议论文": "essay",
    "批改": "grade",
}

# The modes whose answer goes onto the 答题纸 (plain text, word budget, self-check).
EXAM_MODES = frozenset({"summarize", "analyze", "countermeasure", "document", "essay"})

BAND_LOW = 0.85   # examiners expect an answer to fill 85–100 % of its limit


def resolve_mode(name: object) -> str | None:
    """The canonical mode for a name of the alias table, else None."""
    return MODE_ALIASES.get(name.strip()) if isinstance(name, str) else None


# --- the prompt files ---

_PLACEHOLDER = re.compile(r"\{(limit|low|high|points|score|role|genre|parts|exempt|labels|first|count|missing)\}")


def fill(template: str, **values: object) -> str:
    """`template` with its known `{name}` placeholders filled (other braces, such as a
    JSON example, are left alone)."""
    return _PLACEHOLDER.sub(lambda m: str(values.get(m.group(1), m.group(0))), template)


@dataclass(frozen=True)
class GenreFormat:
    """One row of the 文种 table: the parts an answer of that genre must have."""

    name: str
    parts: tuple[str, ...]
    notes: str


@dataclass(frozen=True)
class PromptBook:
    """The prompt files of one directory, cut into sections; immutable once loaded."""

    sections: Mapping[str, Mapping[str, str]]
    digest: str
    genres: Mapping[str, GenreFormat]

    @classmethod
    def load(cls, directory: Path = PROMPTS_DIR) -> PromptBook:
        """Read every prompt file of `directory` (README.md aside)."""
        sections: dict[str, dict[str, str]] = {}
        digest = hashlib.sha256()
        for path in sorted(Path(directory).glob("*.md")):
            if path.name == "README.md":
                continue
            text = path.read_text(encoding="utf-8")
            digest.update(path.name.encode() + b"\0" + text.encode())
            sections[path.stem] = _sections(text)
        missing = [m for m in MODES if "提示词" not in sections.get(m, {})]
        if missing or "_common" not in sections:
            raise ValueError(f"prompt files incomplete in {directory}: {missing or ['_common']}")
        return cls(sections=sections, digest=digest.hexdigest()[:12],
                   genres=_genre_table(sections["document"].get("文种格式", "")))

    def section(self, name: str, part: str) -> str:
        return self.sections.get(name, {}).get(part, "")

    def common(self, part: str) -> str:
        return self.section("_common", part)

    def system(self, mode: str) -> str:
        """The identity plus the mode's own prompt (no task-specific parts)."""
        return self.common("身份") + "\n" + self.section(mode, "提示词")

    def guide(self, mode: str) -> list[str]:
        """The mode's answering method (答题思路), one step a line."""
        return [line.strip() for line in self.section(mode, "答题思路").splitlines() if line.strip()]

    def genre(self, question: str) -> GenreFormat | None:
        """The 文种 a question names (longest name first: 调研报告 before 报告)."""
        for name in sorted(self.genres, key=len, reverse=True):
            if name in question:
                return self.genres[name]
        return None


def _sections(text: str) -> dict[str, str]:
    found: dict[str, list[str]] = {}
    current: list[str] | None = None
    for line in text.splitlines():
        if line.startswith("## "):
            current = found.setdefault(line[3:].strip(), [])
        elif current is not None:
            current.append(line)
    return {name: "\n".join(lines).strip() for name, lines in found.items()}


def _genre_table(text: str) -> dict[str, GenreFormat]:
    genres: dict[str, GenreFormat] = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or cells[0] in ("文种", "") or set(cells[0]) <= set("-: "):
            continue
        genres[cells[0]] = GenreFormat(cells[0], tuple(p for p in re.split(r"[、，,]", cells[1]) if p),
                                       cells[2])
    return genres


@functools.cache
def default_book() -> PromptBook:
    """The bundled prompt files, read on first use (the service reads them at start)."""
    return PromptBook.load()


class _SystemPrompts(Mapping[str, str]):
    """`SYSTEM_PROMPTS[mode]`: the mode's system prompt from the bundled files, read
    when first asked for (kept for callers that need only the generic prompt)."""

    def __getitem__(self, mode: str) -> str:
        if mode not in MODES:
            raise KeyError(mode)
        return default_book().system(mode)

    def __iter__(self) -> Iterator[str]:
        return iter(MODES)

    def __len__(self) -> int:
        return len(MODES)


SYSTEM_PROMPTS: Mapping[str, str] = _SystemPrompts()


# --- reading a 题目 ---

_ROLE = re.compile(r"(?:假如你是|假设你是|如果你是|你是|作为)([^，,。；;：:]{2,30}?)(?=[，,。；;]|将|要|请|$)")
_STAFF = re.compile(r"的?(?:一名|一位)?(?:工作人员|干部|职员)$")
_NAMED = re.compile(r"以([^，,。；;]{2,20}?)(?:的)?名义")
_ASKS = ("问题", "原因", "做法", "经验", "成效", "影响", "危害", "意义", "变化", "特点", "启示",
         "对策", "建议", "措施", "困难", "不足", "表现")
_COMPOUND = re.compile("(" + "|".join(_ASKS) + r")(?:及其|及|和|与|以及|、|并)(" + "|".join(_ASKS) + ")")
_EXEMPT = re.compile(r"(?:无需|无须|不需要|不需|不必|不用|不要求|可不)(?:写|拟)?(标题|称谓|落款|日期|结束语)")
_SUBTYPES = (("比较", ("比较", "异同", "区别", "不同")), ("启示", ("启示", "借鉴", "启发")),
             ("评价", ("评价", "看法", "观点", "评析", "是否赞同", "怎么看")),
             ("解释", ("理解", "含义", "解释", "内涵", "意思", "谈谈")))


@dataclass(frozen=True)
class TaskSpec:
    """What a 题目 asks, as far as its wording tells."""

    mode: str
    limit: int | None = None       # the word limit (the upper end of a range)
    low: int | None = None         # the lower end of the word budget (alone: 不少于N字)
    score: int | None = None
    points: tuple[int, int] | None = None   # how many points an answer should have
    role: str = ""                 # 作答身份 (…的工作人员, 镇党委书记)
    signer: str = ""               # whose name a document is issued in
    genre: GenreFormat | None = None
    exempt: tuple[str, ...] = ()   # parts the question waives (无需标题)
    labels: tuple[str, ...] = ()   # the parts of a compound question (问题, 原因)
    subtype: str = ""              # 综合分析: 解释/评价/启示/比较
    sections: tuple[int, ...] = ()  # the 给定资料 the answer is drawn from (根据给定资料3); () = all

    @property
    def required_parts(self) -> tuple[str, ...]:
        return tuple(p for p in (self.genre.parts if self.genre else ()) if p not in self.exempt)


def band(limit: int, low: int | None = None) -> tuple[int, int]:
    """The word budget of a limit: 85–100 % unless the 题目 gives a floor under it
    (a range; a 不少于N字 above a default limit does not fit and is not taken)."""
    return (low if low and low <= limit else math.ceil(limit * BAND_LOW)), limit


def read_task(mode: str, task: str, word_limit: int | None = None, book: PromptBook | None = None) -> TaskSpec:
    """Read the budget, score, role, 文种 and parts of a 题目 (`task`); a `word_limit`
    given with the request wins over the one written in the 题目 (whose floor stays
    when it lies under that limit)."""
    book = book or default_book()
    text = task or ""
    # The grader's reading of the 题目 (core/chat/terms.py), so that the answer is held
    # to the bounds it is graded by: N～M字 gives M and N; N字左右 gives N ± 10 % (the
    # grader's limit, not N: an answer of 320 for 300字左右 is on target, not over).
    stated = read_length(text)
    limit = word_limit or stated.upper
    low = band(limit, stated.lower)[0] if limit else stated.lower
    score = read_full_score(text)
    points = None
    if mode in ("summarize", "countermeasure"):
        if score:
            least = max(3, score // 3)
            points = (least, least + 2)
        elif limit:
            least = min(8, max(3, limit // 60))
            points = (least, least + 3)
    role_match = _ROLE.search(text)
    named = _NAMED.search(text)
    role = role_match.group(1).strip() if role_match else ""
    signer = named.group(1).strip() if named else _STAFF.sub("", role)
    compound = _COMPOUND.search(_ask_clause(text))
    labels = tuple(dict.fromkeys(compound.groups())) if compound and mode in ("summarize", "analyze") else ()
    subtype = ""
    if mode == "analyze":
        asked = _ask_clause(text)
        subtype = next((name for name, cues in _SUBTYPES if any(c in asked for c in cues)), "")
    genre = book.genre(text) if mode == "document" else None
    return TaskSpec(mode=mode, limit=limit, low=low, score=score, points=points, role=role,
                    signer=signer, genre=genre, exempt=tuple(dict.fromkeys(_EXEMPT.findall(text))),
                    labels=labels, subtype=subtype, sections=asked_sections(text))


_NUMERALS = "一二三四五六七八九十"
_SECTION_NO = rf"[0-9０-９{_NUMERALS}]{{1,3}}"
# 根据“给定资料3～4” / 结合给定资料2、3 / 阅读资料1和资料3: a scope verb, then 资料 and
# numbers joined by 、，和与及 (a list) or 至到～- (a range). A quote's source alone
# (“给定资料5”中写道) names no scope: the answer may draw on every section.
_SCOPE = re.compile(rf"(?:根据|依据|结合|阅读|参考|围绕|针对)\s*[“\"「『]?\s*((?:给定)?(?:资料|材料)\s*{_SECTION_NO}"
                    rf"(?:\s*[”\"」』]?\s*(?:[、，,和与及]|至|到|[～~\-—－]+)\s*[“\"「『]?\s*(?:(?:给定)?(?:资料|材料))?\s*"
                    rf"{_SECTION_NO})*)")


def section_number(token: str) -> int:
    """The number of a 资料 heading or reference: 3, ３ or 三 (up to 十九)."""
    token = token.translate(str.maketrans("０１２３４５６７８９", "0123456789"))
    if token.isdigit():
        return int(token)
    tens, _, ones = token.rpartition("十")
    if "十" not in token:
        return _NUMERALS.index(token) + 1 if len(token) == 1 else 0
    return (_NUMERALS.index(tens) + 1 if tens else 1) * 10 + (_NUMERALS.index(ones) + 1 if ones else 0)


def asked_sections(task: str) -> tuple[int, ...]:
    """The 给定资料 sections a 题目 confines the answer to (根据“给定资料3～4” → 3, 4),
    in order; () when it names none (根据给定资料, 参考给定资料)."""
    found: list[int] = []
    for scope in _SCOPE.finditer(_ask_clause(task)):
        numbers = re.findall(rf"({_SECTION_NO})|(至|到|[～~\-—－]+)", scope.group(1))
        ranged = False
        for number, dash in numbers:
            if dash:
                ranged = True
                continue
            n = section_number(number)
            if ranged and found and 0 < found[-1] < n <= found[-1] + 20:
                found += range(found[-1] + 1, n + 1)
            elif n:
                found.append(n)
            ranged = False
    return tuple(dict.fromkeys(found))


_ASK_TAIL = re.compile(r"要求[：:]")


def _ask_clause(task: str) -> str:
    """The 题目 without its 要求 tail (要求：全面准确 would read as parts)."""
    # Compiled once: re.split(str, …) looks the pattern up in re's cache on every
    # call, and this runs two or three times for every chat request.
    return _ASK_TAIL.split(task, maxsplit=1)[0]


# --- the prompt ---

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
    task: str = ""
    spec: TaskSpec | None = None
    exam: bool = False      # the answer goes onto the answer sheet (plain, no [n], checked)


def exam_system_prompt(book: PromptBook, spec: TaskSpec) -> str:
    """The system prompt of an exam mode for one 题目."""
    mode = spec.mode
    parts = [book.common("身份"), book.common("答题纸规则"), book.section(mode, "提示词")]
    if mode == "analyze":
        names = [spec.subtype] if spec.subtype else ["解释", "评价", "启示", "比较"]
        parts += [book.section("analyze", name) for name in names]
    if mode == "document":
        parts.append("各文种的格式：\n" + book.section("document", "文种格式"))
        if spec.genre:
            exempt = ("题目要求" + "、".join(f"无需{p}" for p in spec.exempt) + "，这些部分不写。") if spec.exempt else ""
            parts.append(fill(book.section("document", "本题文种"), genre=spec.genre.name,
                              parts="、".join(spec.required_parts), exempt=exempt))
    if spec.limit:
        parts.append(fill(book.common("字数"), limit=spec.limit, low=spec.low, high=spec.limit))
    elif spec.low:
        parts.append(fill(book.common("字数下限"), low=spec.low))
    if spec.points:
        parts.append(fill(book.common("要点数"), score=spec.score or "—",
                          points=f"{spec.points[0]}～{spec.points[1]}"))
    if spec.labels:
        parts.append(fill(book.common("复合题"), labels="、".join(spec.labels), first=spec.labels[0]))
    if spec.role:
        parts.append(fill(book.common("作答身份"), role=spec.role))
    return "\n\n".join(p for p in parts if p)


def _sources_block(book: PromptBook, sources: Sequence[Source], exam: bool) -> str:
    lines = [book.common("依据（答题模式）" if exam else "依据（答疑模式）")]
    for n, src in enumerate(sources, 1):
        lines.append(f"[{n}] 《{src.title}》\n{src.text}")
    return "\n\n".join(lines)


def build_prompt(*, mode: str, question: str, history: Sequence[dict[str, str]] = (),
                 material: str = "", task: str = "", word_limit: int | None = None,
                 sources: Sequence[Source] = (), book: PromptBook | None = None) -> Prompt:
    """Build the prompt for one chat turn.

    `question` is the user's latest message; `history` the earlier turns (OpenAI shape);
    `material` the 给定资料 and `task` the 题目, both optional. In the exam modes the
    system prompt is the answer-sheet one, fitted to what the 题目 asks, as soon as
    there is a 题目 or material.
    """
    book = book or default_book()
    # An exam mode answers for the answer sheet once there is a 题目 or material to
    # answer; "如何答好概括题？" in summarize mode stays a question about the method.
    exam = mode in EXAM_MODES and bool(material.strip() or task.strip())
    # The 题目's reading serves the exam modes (their sheet, self-check and offline
    # skeletons); a plain chat has no use for it, and it is most of this function's cost.
    spec = read_task(mode, task or question, word_limit, book) if mode in EXAM_MODES else None
    sheet = spec if exam else None  # the reading the answer sheet is held to
    if sheet:
        system = exam_system_prompt(book, sheet)
    else:
        system = book.system(mode)
        if word_limit:
            system += f"\n作答字数不超过{word_limit}字（标点计入字数）。"
    messages: list[dict[str, str]] = [{"role": "system", "content": system}]
    if sources:
        messages.append({"role": "system", "content": _sources_block(book, sources, exam)})
    messages.extend({"role": m["role"], "content": m["content"]} for m in history)
    parts = []
    if material:
        parts.append(f"【给定资料】\n{material}")
    if task:
        parts.append(f"【题目】\n{task}")
    parts.append(f"【考生的问题】\n{question}" if parts else question)
    messages.append({"role": "user", "content": "\n\n".join(parts)})
    return Prompt(mode=mode, question=question, messages=messages, material=material,
                  word_limit=sheet.limit if sheet else word_limit, sources=tuple(sources), task=task,
                  spec=spec, exam=exam)
