"""Chinese text analysis for the knowledge index: jieba segmentation as a Whoosh analyzer.

What it does to a text, in order:

1. jieba segments it in accurate mode with our user dictionary of 申论 terms
   (`data/dict/shenlun_terms.txt`), so 放管服, 乡村振兴, 枫桥经验, 接诉即办 stay whole.
2. Each word is normalized (NFKC, Latin lowercased; never stemmed) and dropped when it
   is a stop word (`data/dict/stopwords.txt`), whitespace or punctuation.
3. Search mode: a word longer than two characters is also indexed as every shorter
   dictionary word inside it (乡村振兴 → 乡村, 振兴, 乡村振兴), so a query for 振兴 finds
   乡村振兴 and a query for 乡村振兴 finds 乡村振兴战略.
4. Positions are sequential over the finest pieces of the words (乡村振兴战略 → 乡村 0,
   振兴 1, 战略 2); a longer word shares the position of its first piece, as a synonym
   would. Stop words take no position, punctuation leaves a gap. A quoted phrase is cut
   into the same pieces and must find them at consecutive positions, so "乡村 振兴" and
   "乡村振兴" both match the text 乡村振兴战略 but not 乡村全面振兴, and no phrase spans
   a comma.

The jieba tokenizer is this module's own (not jieba's global one), initialized once per
process by `initialize()`. Changing either dictionary file changes what is indexed, so it
needs `scripts/reindex.py`.
"""
from __future__ import annotations

import bisect
import functools
import importlib
import logging
import re
import sys
import threading
import types
import unicodedata
from array import array
from collections.abc import Iterator
from pathlib import Path

from whoosh.analysis import CompositeAnalyzer, Token, Tokenizer
from whoosh.formats import Positions

from core.config import PROJECT_ROOT


def _import_jieba() -> types.ModuleType:
    """jieba, imported without pkg_resources: jieba 0.42 imports it (setuptools' scan of
    every installed distribution, ~0.15 s of start-up) only to open its bundled files, and
    opens the same files by path when that import fails. Nothing else here uses it."""
    if "jieba" in sys.modules or "pkg_resources" in sys.modules:
        return importlib.import_module("jieba")
    sys.modules["pkg_resources"] = None  # type: ignore[assignment]  # makes the import fail
    try:
        return importlib.import_module("jieba")
    finally:
        del sys.modules["pkg_resources"]


# Grading's modules take jieba from here, so it is imported this way whoever comes first.
jieba = _import_jieba()

from core.knowledge import prefix_dict  # noqa: E402 - it imports jieba too: after the line above

DICT_DIR = PROJECT_ROOT / "data" / "dict"
USER_DICT = DICT_DIR / "shenlun_terms.txt"
STOPWORDS_FILE = DICT_DIR / "stopwords.txt"

MAX_TOKEN_CHARS = 40  # longer "words" are URLs, hashes or base64: not worth indexing

# jieba's process-wide tokenizer, shared with grading's keyword extraction
# (jieba.analyse only uses this one): a second Tokenizer would hold a second copy of
# the dictionary. Its dictionary is the compact one of prefix_dict.py (~35 MB less
# than jieba's, installed in ~1 ms and built shard by shard as words are looked up).
_jieba = jieba.dt
_init_lock = threading.Lock()
_ready = False
_stopwords: frozenset[str] = frozenset()


def initialize() -> None:
    """Load jieba's dictionary, our user dictionary and the stop words.

    Call once at start-up (~0.1 s: the main dictionary is mapped, and built by shard
    on use); later calls return at once.
    Thread-safe, and idempotent: the user dictionary is never loaded twice.
    """
    global _ready, _stopwords
    if _ready:
        return
    with _init_lock:
        if _ready:
            return
        jieba.setLogLevel(logging.WARNING)  # jieba logs its dictionary loading at DEBUG to stderr
        prefix_dict.install(_jieba)  # jieba's dictionary, compact and from a cache
        _jieba.load_userdict(str(USER_DICT))
        _stopwords = load_stopwords(STOPWORDS_FILE)
        _expand.cache_clear()
        _expansions.cache_clear()
        _highlight_word.cache_clear()
        _kind.cache_clear()
        _advance.cache_clear()
        _ready = True


def load_stopwords(path: Path) -> frozenset[str]:
    """The stop words of a file: one per line, blank lines and '# ' comments skipped."""
    words = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        word = line.strip()
        if word and not word.startswith("# "):
            words.add(normalize(word))
    return frozenset(words)


def normalize(word: str) -> str:
    """The form a word is indexed and searched under: NFKC (full-width → ASCII), lowercase."""
    return unicodedata.normalize("NFKC", word).lower()


# Full-width ASCII (ＧＤＰ，５Ｇ) folded to half-width before segmentation, one character
# for one so offsets into the original text stay valid for highlighting.
_WIDTH = {code: code - 0xFEE0 for code in range(0xFF01, 0xFF5F)} | {0x3000: 0x20}


_HAS_WIDE = re.compile("[\uff01-\uff5e\u3000]")


def fold_width(text: str) -> str:
    """Full-width ASCII letters, digits and signs → their half-width forms (same length)."""
    # translate() with a dict costs ~0.3 µs a character; most texts have nothing to fold.
    return text.translate(_WIDTH) if _HAS_WIDE.search(text) else text


@functools.lru_cache(maxsize=16)
def segment(text: str) -> tuple[tuple[str, int, int], ...]:
    """jieba's (word, start, end) of a text, after width folding: the one segmentation
    every mode below starts from. The last few are remembered, so indexing a passage
    and recording its word boundaries (`cuts`) segment it once."""
    initialize()
    return tuple(_jieba.tokenize(fold_width(text), mode="default", HMM=True))


def cuts(text: str) -> bytes:
    """The end offsets of jieba's words in `text`, compactly (2 bytes a word): stored
    with each passage so its snippet needs no segmentation at search time."""
    return array("H", [min(end, 0xFFFF) for _, _, end in segment(text)]).tobytes()


def is_stopword(word: str) -> bool:
    """Whether a normalized word is on the stop list."""
    initialize()
    return word in _stopwords


def _is_han(text: str) -> bool:
    return all("\u3400" <= ch <= "\u9fff" or "\uf900" <= ch <= "\ufaff" for ch in text)


def _is_word(text: str) -> bool:
    return any(ch.isalnum() for ch in text)


@functools.lru_cache(maxsize=200_000)
def _pieces(word: str) -> tuple[tuple[str, int, int], ...]:
    """The finest segmentation of a word into dictionary words, as (piece, start, end).

    The word is cut the way jieba would cut it if the word itself were not in the
    dictionary, and each piece again, down to two-character words. A word that only
    falls apart into single characters (放管服) stays whole.
    """
    size = len(word)
    if size <= 2 or not _is_han(word):
        return ((word, 0, size),)
    dag = _jieba.get_DAG(word)
    dag[0] = [end for end in dag[0] if end != size - 1] or [0]
    route: dict[int, tuple[float, int]] = {}
    _jieba.calc(word, dag, route)
    cut, i = [], 0
    while i < size:
        end = route[i][1] + 1
        cut.append((i, end))
        i = end
    if all(end - start == 1 for start, end in cut):
        return ((word, 0, size),)
    out: list[tuple[str, int, int]] = []
    for start, end in cut:
        out.extend((piece, start + s, start + e) for piece, s, e in _pieces(word[start:end]))
    return tuple(out)


@functools.lru_cache(maxsize=200_000)
def _expand(word: str) -> tuple[tuple[str, int, int], ...]:
    """(token, start, end) of every dictionary word of two or more characters inside a
    word, the word itself included (last)."""
    size = len(word)
    if size <= 2 or not _is_han(word):
        return ((word, 0, size),)
    freq = _jieba.FREQ
    parts = [(word[i:i + n], i, i + n) for n in range(2, size) for i in range(size - n + 1)
             if freq.get(word[i:i + n])]
    return (*parts, (word, 0, size))


@functools.lru_cache(maxsize=200_000)
def _layout(word: str) -> tuple[tuple[str, int, int, int], ...]:
    """(token, relative position, start, end) of everything a word is indexed as.

    The finest pieces take one position each, in order; longer words inside it (and
    the word itself) share the position of the piece they start in, the way a synonym
    shares its original's. So the pieces form one unbroken chain through the text, which
    phrase queries follow, while the compounds are still there to be found.
    """
    pieces = _pieces(word)
    chain = {(start, end) for _, start, end in pieces}
    starts = [start for _, start, _ in pieces]
    out = [(piece, n, start, end) for n, (piece, start, end) in enumerate(pieces)]
    for token, start, end in _expand(word):
        if (start, end) not in chain:
            pos = max(n for n, s in enumerate(starts) if s <= start)
            out.append((token, pos, start, end))
    return tuple(out)


@functools.lru_cache(maxsize=200_000)
def _expansions(word: str) -> frozenset[str]:
    return frozenset(token for token, _, _ in _expand(word))


# jieba segments each run of these characters on its own (jieba.re_han_default), and
# every other character alone: a cut next to one of the others changes no word.
_JIEBA_BLOCK = re.compile("[\u4E00-\u9FD5a-zA-Z0-9+#&\\._%\\-]")


def safe_cut(text: str, at: int, *, forward: bool) -> int:
    """The nearest position at or beyond `at` (searching forward or backward) where
    `text` can be cut without changing jieba's segmentation of either side."""
    at = max(0, min(at, len(text)))
    step = 1 if forward else -1
    while 0 < at < len(text) and _JIEBA_BLOCK.match(text, at - 1) and _JIEBA_BLOCK.match(text, at):
        at += step
    return at


@functools.lru_cache(maxsize=200_000)
def _highlight_word(raw: str) -> tuple[str, frozenset[str]] | None:
    # What highlighting needs of a raw jieba word: its normalized form and what it is
    # indexed as (nothing for stop words and punctuation); None for whitespace.
    word = normalize(raw)
    if word.isspace():
        return None
    stopped = word in _stopwords or not _is_word(word)
    return word, frozenset() if stopped else _expansions(word)


def highlight_words(text: str, start: int = 0, end: int | None = None, *,
                    ends: bytes | None = None) -> list[tuple[str, int, int, frozenset[str]]]:
    """(word, start, end, expansions) of the words of text[start:end], stop words and
    punctuation included with no expansions: what a highlighter marks. Offsets are
    into `text`. With `ends` (`cuts(text)`) jieba is not run again and the words are
    those starting in the range; without, the range must be cut at `safe_cut` positions.
    """
    initialize()
    end = len(text) if end is None else end
    if ends is not None and len(text) < 0xFFFF:
        bounds = array("H", ends)
        first = bisect.bisect_right(bounds, start)  # the first word ending after start
        last = bisect.bisect_left(bounds, end)
        starts = [0, *bounds]
        pieces = [(text[starts[n]:bounds[n]], starts[n], bounds[n])
                  for n in range(first, min(last + 1, len(bounds)))]
    elif start == 0 and end == len(text):
        pieces = list(segment(text))
    else:
        pieces = [(raw, start + a, start + b) for raw, a, b in segment(text[start:end])]
    out = []
    for raw, first_char, last_char in pieces:
        info = _highlight_word(raw)
        if info is not None:
            out.append((info[0], first_char, last_char, info[1]))
    return out


_SPACE, _PUNCT, _LONG, _STOP, _CONTENT = range(5)


@functools.lru_cache(maxsize=200_000)
def _kind(raw: str) -> tuple[str, int]:
    # A raw jieba word's normalized form and what the tokenizer does with it, once per
    # distinct word (the same few thousand words make up most texts).
    word = normalize(raw)
    if word.isspace():
        return word, _SPACE
    if not _is_word(word):
        return word, _PUNCT
    if len(word) > MAX_TOKEN_CHARS:
        return word, _LONG
    return word, _STOP if word in _stopwords else _CONTENT


@functools.lru_cache(maxsize=200_000)
def _advance(word: str) -> int:
    """How many positions a content word takes (its finest pieces)."""
    return 1 + max(offset for _, offset, _, _ in _layout(word))


def expand(word: str) -> list[str]:
    """The tokens of two or more characters a (normalized) word is indexed as, the word
    itself last: what a search for the word looks for."""
    initialize()
    return [token for token, _, _ in _expand(word)]


def words(text: str) -> list[str]:
    """The content words of a text in order: segmented, normalized, no stop words,
    no punctuation, not expanded. Repeats are kept."""
    initialize()
    out = []
    for raw, _, _ in segment(text):
        word = normalize(raw)
        if _is_word(word) and len(word) <= MAX_TOKEN_CHARS and word not in _stopwords:
            out.append(word)
    return out


def phrase_tokens(text: str) -> list[str]:
    """The chain of finest pieces of a text: what a quoted phrase must find at
    consecutive positions."""
    return [piece for word in words(text) for piece, _, _ in _pieces(word)]


class JiebaTokenizer(Tokenizer):  # type: ignore[misc]  # Whoosh has no type hints: Tokenizer is Any
    """A Whoosh tokenizer doing steps 1–4 of the module docstring.

    Modes: "index" and "query" emit every token; "highlight" emits the words only (no
    pieces), every word including stop words and punctuation, each with `expansions`
    (the tokens it is indexed as) so a highlighter can mark whole words.

    Holds no state, so the copy Whoosh pickles into the index's table of contents
    always uses the dictionaries of the running code.
    """

    def __call__(self, value: str, positions: bool = False, chars: bool = False,
                 keeporiginal: bool = False, removestops: bool = True, start_pos: int = 0,
                 start_char: int = 0, tokenize: bool = True, mode: str = "",
                 **kwargs: object) -> Iterator[Token]:
        initialize()
        if not tokenize:
            token = Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
            token.text = normalize(value)
            token.boost = 1.0
            if keeporiginal:
                token.original = value
            if positions:
                token.pos = start_pos
            if chars:
                token.startchar, token.endchar = start_char, start_char + len(value)
            yield token
            return
        highlight = mode == "highlight"
        # Whoosh's own tokenizers yield one Token, changed in place: its indexer and
        # query parser read each before asking for the next. Highlighting callers may
        # keep them, so they get fresh ones.
        reused = None if highlight else Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
        pos = start_pos
        gap = False  # punctuation since the last token: the next one skips a position
        for raw, start, end in segment(value):
            word, kind = _kind(raw)
            if kind == _SPACE or kind == _LONG:
                continue
            if kind == _PUNCT:
                gap = True
                if not highlight:
                    continue
            stopped = kind != _CONTENT
            if highlight or (stopped and not removestops):
                layout: tuple[tuple[str, int, int, int], ...] = ((word, 0, 0, end - start),)
                advance = 1
            elif stopped:
                continue
            else:
                layout, advance = _layout(word), _advance(word)
            if gap and not highlight:
                pos += 1
                gap = False
            for text, offset, first, last in layout:
                token = reused or Token(positions, chars, removestops=removestops, mode=mode, **kwargs)
                token.text = text
                token.boost = 1.0
                token.stopped = stopped
                if highlight:
                    token.expansions = frozenset() if stopped else _expansions(word)
                if keeporiginal:
                    token.original = raw[first:last]
                if positions:
                    token.pos = pos + offset
                if chars:
                    token.startchar = start_char + start + first
                    token.endchar = start_char + start + last
                yield token
            pos += advance


def index_positions(value: str) -> dict[str, list[int]]:
    """Each token the "index" mode of JiebaTokenizer emits for `value` (stop words
    removed, positions from 0), with its positions in order: what Whoosh's Positions
    format gathers from the tokens, without making one. Indexing spent more time in
    the Token round trip than in building the postings (bench/b5_knowledge.py)."""
    poses: dict[str, list[int]] = {}
    pos = 0
    gap = False
    for raw, _, _ in segment(value):
        word, kind = _kind(raw)
        if kind == _PUNCT:
            gap = True
            continue
        if kind != _CONTENT:  # whitespace, over-long "words", stop words
            continue
        if gap:
            pos += 1
            gap = False
        for text, offset, _, _ in _layout(word):
            found = poses.get(text)
            if found is None:
                poses[text] = [pos + offset]
            else:
                found.append(pos + offset)
        pos += _advance(word)
    return poses


class IndexPositions(Positions):  # type: ignore[misc]  # Whoosh has no type hints
    """Whoosh's Positions format (the same postings, byte for byte) for the text
    fields, gathering an indexed value's positions through `index_positions`."""

    def word_values(self, value: str, analyzer: object, **kwargs: object) -> Iterator[tuple[str, int, float, bytes]]:
        if analyzer is not ANALYZER or kwargs.get("mode") != "index":
            yield from super().word_values(value, analyzer, **kwargs)
            return
        boost = self.field_boost
        for text, poslist in index_positions(value).items():
            yield text, len(poslist), len(poslist) * 1.0 * boost, self.encode(poslist)


def chinese_analyzer() -> CompositeAnalyzer:
    """The analyzer of the index's text fields."""
    return CompositeAnalyzer(JiebaTokenizer())


ANALYZER = chinese_analyzer()
