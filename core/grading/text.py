"""Text helpers of the deterministic layer: sentences, content words, quotes.

Everything here is plain, synchronous Python. The functions that touch jieba can
take a few hundred milliseconds the first time (dictionary load), so callers on the
event loop run them in the executor.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from functools import lru_cache
from itertools import pairwise
from typing import Any

from core.knowledge import analyzer
from core.knowledge.analyzer import jieba  # imported there without pkg_resources

# Function words that carry no point content. Single characters that do carry it in
# 申论 (难, 低, 少, 弱, 乱, 慢 …) are deliberately kept.
STOPWORDS = frozenset(
    "的 了 和 与 及 以及 等 是 在 对 把 被 将 为 也 都 而 并 或 其 之 这 那 着 就 又 于 由 "
    "从 向 让 使 要 会 能 可 可以 一些 一个 我们 他们 它们 我 你 他 她 它 各 该 此 "
    "进行 相关 方面 问题 有关 通过 存在 一是 二是 三是 四是 五是 六是 部分 一些 不少 很多 "
    "目前 过去 现在 如今 工作人员 负责人 做法 表明 说明 可见 因此 首先 其次 最后 同时 此外 "
    # generic words that name no point (they survive TF-IDF in long materials)
    "资料 需要 没有 具体 剩下 提供 推出 突出 现象 发现 觉得 知道 成为 出现 情况 时候 地方 东西 "
    "工作 已经 开始 一起 常常 经常 主要 基本 正在 这些 那些 大多 越来越 不少 记者 表示".split())
_BOILERPLATE = ("给定资料", "根据", "参考", "结合", "请你", "请", "自选角度", "自拟题目", "自拟标题",
                "写一篇文章", "写一篇", "谈谈你", "你对", "的理解", "资料中提到", "资料")
_NEGATIONS = frozenset("不 没 未 无 非".split())
_CONNECTIVES = frozenset("因此 可见 总之 综上 综上所述 所以 同时 此外 另外 首先 其次 最后 对此 为此 "
                         "当前 目前 总而言之 由此可见".split())
_SENTENCE_END = "。！？!?；;\n"
_NUMBER_MARKER = re.compile(
    r"^\s*(?:[（(]?\s*(?:\d{1,2}|[一二三四五六七八九十]{1,3})\s*[）)]|\d{1,2}\s*[.．、]|"
    r"[一二三四五六七八九十]{1,3}\s*[、.．]|[①②③④⑤⑥⑦⑧⑨⑩]|第[一二三四五六七八九十]+[，,、]|"
    r"[一二三四五六七八九十]是)")
# Markers inside a line: 一是/二是, ①, （1）, 1. (not a decimal: 2.5), 首先/其次/再次/最后,
# 第一，/第二、 — numbering on one line is 分条作答 as much as numbering by lines.
_INLINE_MARKER = re.compile(
    r"(?:[一二三四五六七八九十]是|[①②③④⑤⑥⑦⑧⑨⑩]|[（(](?:\d{1,2}|[一二三四五六七八九十])[）)]|"
    r"(?<![\d.．])\d{1,2}[.．、](?!\d)|(?:首先|其次|再次|最后)[，,、]?|第[一二三四五六七八九十][，,、])")
_SEQUENCE_WORDS = ("首先", "其次", "再次", "最后")
_ALLOW_POS = ("n", "nz", "vn", "v", "a", "an", "ad", "l", "i", "j", "nt", "ns", "nl", "ng")

def ensure_jieba() -> None:
    """Load jieba's process-wide tokenizer (the one `jieba.analyse` uses) with the
    project's 申论 dictionary, once per process: the knowledge analyzer's
    initialization does exactly that, so it is reused here."""
    analyzer.initialize()


@dataclass(frozen=True)
class Span:
    """A piece of a text and where it sits in it: `text == source[start:end]`."""

    text: str
    start: int
    end: int


def sentences(text: str) -> list[Span]:
    """Sentences of `text` (split after 。！？； and line breaks), stripped, as spans
    of the original text so that quoting one is quoting the text verbatim."""
    spans: list[Span] = []
    start = 0
    for i, ch in enumerate(text):
        if ch in _SENTENCE_END:
            _add_span(spans, text, start, i + 1)
            start = i + 1
    _add_span(spans, text, start, len(text))
    return spans


def _add_span(spans: list[Span], text: str, start: int, end: int) -> None:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    if end > start and any(not ch.isspace() and ch not in _SENTENCE_END for ch in text[start:end]):
        spans.append(Span(text[start:end], start, end))


def paragraphs(text: str) -> list[str]:
    """Non-empty lines (a paragraph per line, as answers are typed)."""
    return [line.strip() for line in text.splitlines() if line.strip()]


def compact(text: str) -> str:
    """`text` without whitespace (how an examiner reads a grid answer sheet)."""
    return "".join(text.split())


@lru_cache(maxsize=4096)
def content_words(phrase: str) -> tuple[str, ...]:
    """The content words of a short phrase: jieba tokens minus function words and
    punctuation, in order, deduplicated."""
    ensure_jieba()
    tokens = jieba.lcut(compact(phrase))
    words: list[str] = []
    n = 0
    while n < len(tokens):
        token = tokens[n]
        # A negation belongs to what it negates: 不+强 is one content word, 不强.
        if token in _NEGATIONS and n + 1 < len(tokens) and _is_word_char(tokens[n + 1][:1]):
            token += tokens[n + 1]
            n += 1
        n += 1
        if token in STOPWORDS or token in _NEGATIONS or not any(_is_word_char(ch) for ch in token):
            continue
        if token not in words:
            words.append(token)
    return tuple(words)


def without_topic(words: tuple[str, ...], topic: str) -> tuple[str, ...]:
    """`words` minus those the question itself contains (垃圾分类 in a question about
    垃圾分类 proves nothing about a point); all of them if every word is topical."""
    if not topic:
        return words
    kept = tuple(w for w in words if w not in topic)
    return kept or words


def _is_word_char(ch: str) -> bool:
    return ch.isalnum()


def coverage(words: tuple[str, ...], text: str) -> float:
    """Share of `words` (weighted by length) found in `text` as substrings."""
    if not words:
        return 0.0
    haystack = compact(text)
    total = sum(len(w) for w in words)
    found = sum(len(w) for w in words if w in haystack)
    return found / total


def posseg() -> Any:
    """jieba's POS tagger, imported on first use: its tables cost ~0.4 s and tens of MB
    at import, which a process that never grades should not pay at start-up."""
    ensure_jieba()
    import jieba.posseg
    return jieba.posseg


def keywords(text: str, top_k: int) -> list[tuple[str, float]]:
    """TF-IDF keywords of `text` (jieba.analyse), nouns, verbs and adjectives only."""
    ensure_jieba()
    # Imported on first use, not at start-up: jieba.analyse loads its idf table and
    # jieba.posseg's word-tag table (~95 MB, ~0.8 s) when imported; a process that
    # never grades never pays for them (bench/b8_memory_startup.py).
    import jieba.analyse
    tags = jieba.analyse.extract_tags(text, topK=top_k * 3, withWeight=True, allowPOS=_ALLOW_POS)
    # Words jieba guessed by its HMM (not in any dictionary) are mostly cuts across
    # word boundaries (市是, 上卖): left out.
    known = jieba.dt.FREQ
    picked = [(w, float(s)) for w, s in tags
              if len(w) >= 2 and w not in STOPWORDS and known.get(w, 0) > 0]
    return picked[:top_k]


_SENTENCE_ENDS = ("。", "！", "？", "；", ".", "!", "?", ";")


def split_items(text: str) -> list[str]:
    """The items of a list-shaped text (a reference answer).

    Numbered lines (1. / （1） / 一、) are the items when there are two or more — a
    总括句 before them is not an item. Otherwise each paragraph is an item, and a
    paragraph with inline markers (一是…二是…, ①②, （1）) gives its lead-in and each
    marked part; a single unmarked paragraph is split into sentences."""
    lines = paragraphs(text)
    numbered = [n for n, line in enumerate(lines) if _NUMBER_MARKER.match(line)]
    if len(numbered) >= 2:
        items: list[str] = []
        for n in range(len(numbered)):
            start = numbered[n]
            end = numbered[n + 1] if n + 1 < len(numbered) else len(lines)
            head, body = strip_marker(lines[start]), lines[start + 1:end]
            # A section heading of a document ("一、基本情况") labels its body; it is no
            # part of the point the body makes.
            if body and len(head) <= 12 and not head.endswith(_SENTENCE_ENDS):
                items.append("".join(body))
            else:
                items.append(strip_marker("".join(lines[start:end])))
        return [i for i in items if i]
    if len(lines) == 1 and len(_INLINE_MARKER.findall(lines[0])) < 2:
        return [s.text for s in sentences(text)]
    items = []
    for line in lines:
        marks = list(_INLINE_MARKER.finditer(line))
        if len(marks) < 2:
            items.append(line)
            continue
        lead = line[:marks[0].start()].strip()
        if len(lead) >= 8:
            items.append(lead)
        cuts = [m.start() for m in marks] + [len(line)]
        items += [strip_marker(line[a:b]).rstrip("；;，,") for a, b in pairwise(cuts)]
    return [i for i in items if i.strip()]


def question_focus(question: str) -> str:
    """The part of a question that names its topic: without the score in brackets,
    the 要求 that follows, and the boilerplate every question shares."""
    text = re.split(r"要求[:：]", question, maxsplit=1)[0]
    text = re.sub(r"[（(]\s*\d+\s*分\s*[）)]", "", text)
    for phrase in _BOILERPLATE:
        text = text.replace(phrase, "")
    return text


def strip_marker(item: str) -> str:
    """An item without its leading number (1. / （一） / ① / 一是 …)."""
    return _NUMBER_MARKER.sub("", item, count=1).strip()


def numbered_markers(text: str) -> int:
    """How many list markers an answer uses: at line starts, or inline (1.…2.…,
    一是/二是, ①, （1）, 首先/其次…), whichever is more."""
    line_marks = sum(1 for line in paragraphs(text) if _NUMBER_MARKER.match(line))
    # 其次/最后 are markers only in a sequence that 首先 opens (最后 is also plain prose).
    sequence = "首先" in text
    inline = sum(1 for m in _INLINE_MARKER.finditer(text)
                 if sequence or not m.group().startswith(_SEQUENCE_WORDS))
    return max(line_marks, inline)


def item_spans(text: str) -> list[Span]:
    """The list items of an answer as spans of it: each line, cut before each inline
    marker when a line holds two or more (1.…2.…, 一是…二是…)."""
    spans: list[Span] = []
    offset = 0
    for raw in text.splitlines(keepends=True):
        line_start, line_end = offset, offset + len(raw.rstrip("\r\n"))
        offset += len(raw)
        cuts = [m.start() for m in _INLINE_MARKER.finditer(text, line_start, line_end)]
        if len(cuts) < 2:
            cuts = []
        bounds = [line_start] + [c for c in cuts if c > line_start] + [line_end]
        for a, b in pairwise(bounds):
            _add_span(spans, text, a, b)
    return spans


def head_of(item: str, max_chars: int = 20) -> str:
    """A short label for an item: its head before a colon, else its first clause."""
    for sep in ("：", ":"):
        if sep in item:
            head = item.split(sep, 1)[0].strip()
            if 2 <= len(head) <= max_chars:
                return head
    clauses = [c.strip() for c in re.split(r"[，,；;。！？]", item) if c.strip()] or [item.strip()]
    clause = clauses[0]
    if clause in _CONNECTIVES and len(clauses) > 1:
        clause = clauses[1]
    return clause if len(clause) <= max_chars else clause[:max_chars] + "…"


def locate_quote(answer: str, quote: str, *, max_chars: int = 150) -> str | None:
    """The exact substring of `answer` that `quote` reproduces, or None.

    Whitespace differences are forgiven (a model may re-wrap lines), nothing else:
    the returned text is always a verbatim slice of the answer. Quotes shorter than
    two characters or longer than `max_chars` prove nothing and are refused."""
    if not isinstance(quote, str):
        return None
    target = compact(quote).strip("“”\"'「」『』")
    if len(target) < 2 or len(target) > max_chars:
        return None
    stripped = quote.strip()
    if stripped and stripped in answer:
        return stripped
    # Map the answer's non-whitespace characters back to their positions.
    positions = [i for i, ch in enumerate(answer) if not ch.isspace()]
    flat = "".join(answer[i] for i in positions)
    at = flat.find(target)
    if at < 0:
        return None
    return answer[positions[at]:positions[at + len(target) - 1] + 1]
