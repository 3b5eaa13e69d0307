"""Head concepts and the 申论 near-synonym lexicon: how a point is judged by meaning.

A scoring point's phrasing ("加强消防安全宣传", "下沉医生到乡镇") is reduced to its
*head concept*: the content words jieba tags as verbs, nouns, adjectives or idioms,
two characters or more, minus the light verbs every 对策 starts with (加强, 推进,
做好…), which say nothing on their own. An answer sentence states the concept when
it contains every head word, itself or a near-synonym from `data/grading/synonyms.txt`
(下沉 = 派驻 = 选派…); sharing one peripheral word is not a partial. Single
characters never count: 到 in 传到 proves nothing.
"""
from __future__ import annotations

from functools import lru_cache
from pathlib import Path

from core.config import PROJECT_ROOT
from core.grading.text import STOPWORDS, compact, ensure_jieba, posseg

SYNONYMS_FILE = PROJECT_ROOT / "data" / "grading" / "synonyms.txt"

# Verbs that only say "do more of": peripheral, never a head on their own.
LIGHT_WORDS = frozenset(
    "加强 推进 推动 做好 开展 实施 落实 强化 注重 重视 坚持 积极 大力 进一步 切实 不断 深入 全面 "
    "努力 着力 持续 继续 认真 有效 主动 及时 加快 加大 力度 工作 相关 各类 各项 多种 有关".split())
# jieba POS tags that can carry a concept (verbs, nouns, adjectives, idioms, names).
_CONTENT_POS = ("v", "vn", "vd", "n", "nr", "ns", "nt", "nz", "nl", "ng", "a", "an", "ad", "i", "l", "j", "eng")
_NEGATIONS = ("不", "没", "未", "无")


@lru_cache(maxsize=1)
def synonym_groups(path: Path = SYNONYMS_FILE) -> dict[str, frozenset[str]]:
    """Each lexicon word → every word it shares a group with (itself included)."""
    groups: dict[str, set[str]] = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        words = [w for w in line.split("#", 1)[0].split() if len(w) >= 2]
        for word in words:
            groups.setdefault(word, set()).update(words)
    return {w: frozenset(g) for w, g in groups.items()}


def variants(word: str) -> frozenset[str]:
    """`word` and its near-synonyms."""
    return synonym_groups().get(word, frozenset((word,)))


@lru_cache(maxsize=8192)
def head_words(phrase: str) -> tuple[str, ...]:
    """The head concept of a short phrase: its content words (≥ 2 characters,
    jieba POS verbs/nouns/adjectives/idioms, adjacent tokens that form a lexicon
    word joined, a negation joined to what it negates), without light verbs — unless
    nothing else is left. Empty when those words leave most of the phrase unsaid
    (从根上解决 is not 解决): such a phrasing counts only verbatim."""
    ensure_jieba()
    flat = compact(phrase)
    pairs = _join_lexicon_words([(p.word, p.flag) for p in posseg().lcut(flat)])
    words: list[str] = []
    n = 0
    while n < len(pairs):
        word, flag = pairs[n]
        if word in _NEGATIONS and n + 1 < len(pairs):
            word, flag = word + pairs[n + 1][0], "a"
            n += 1
        n += 1
        if len(word) < 2 or word in STOPWORDS or not flag.startswith(_CONTENT_POS) \
                and word not in synonym_groups():
            continue
        if word not in words:
            words.append(word)
    heavy = [w for w in words if w not in LIGHT_WORDS]
    said = sum(len(w) for w in words)
    if not flat or said / len(flat) < MIN_SAID:
        return ()
    return tuple(heavy or words)


# Share of a phrase's characters its content words must hold for a concept match.
MIN_SAID = 0.6


def _join_lexicon_words(pairs: list[tuple[str, str]]) -> list[tuple[str, str]]:
    """Adjacent tokens whose concatenation is a lexicon word become one (社会+资本)."""
    lexicon = synonym_groups()
    result: list[tuple[str, str]] = []
    n = 0
    while n < len(pairs):
        for size in (3, 2):
            joined = "".join(w for w, _ in pairs[n:n + size])
            if n + size <= len(pairs) and joined in lexicon:
                result.append((joined, "n"))
                n += size
                break
        else:
            result.append(pairs[n])
            n += 1
    return result


def present(word: str, flat: str) -> str | None:
    """The form of `word` (itself or a near-synonym) found in `flat` (a text without
    whitespace, see `compact`), or None."""
    for form in _forms(word):
        if form in flat:
            return form
    return None


@lru_cache(maxsize=8192)
def _forms(word: str) -> tuple[str, ...]:
    return tuple(sorted(variants(word), key=len, reverse=True))


def head_match(words: tuple[str, ...], text: str) -> tuple[int, list[str]]:
    """How many head words `text` states (directly or by a synonym), and the forms found."""
    flat = compact(text)
    found = [f for f in (present(w, flat) for w in words) if f]
    return len(found), found
