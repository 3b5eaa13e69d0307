"""jieba's prefix dictionary in a compact form, loaded from a cache in a tenth of the time.

jieba keeps every dictionary word and every prefix of one (~500,000 strings) in a dict
of str → frequency: ~62 MB per process, and ~0.5 s to unmarshal from its cache at each
start. Here the same dictionary is keyed by an integer code of the word (21 bits a
character, each character's code point + 1, so the code is unique to the string): an
int of 1–4 characters costs 28–40 bytes against 76–82 for the str, and the cache is two
flat lists of ints that marshal reads without building a single string.

`install(tokenizer)` puts it behind jieba's own `Tokenizer` interface: `FREQ` becomes a
`CompactFreq` (get / [] / in / assignment by word, as jieba's add_word, suggest_freq,
posseg and our analyzer use it), and `get_DAG` / `calc`, the two methods that look up
every substring, use the codes directly. They are jieba's algorithms line for line, so
segmentation is unchanged (tests/core/test_knowledge_analyzer.py compares the bundled
corpus, token for token, with stock jieba and the project dictionary).
"""
from __future__ import annotations

import hashlib
import logging
import marshal
import math
import os
import tempfile
import types
from array import array
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import jieba

log = logging.getLogger("shenlun.knowledge")

CACHE_VERSION = 2
_BITS = 21  # code points are below 0x110000 < 2**21


def code(word: str) -> int:
    """The integer key of a word (unique: every character contributes code point + 1)."""
    key = 0
    for ch in word:
        key = (key << _BITS) | (ord(ch) + 1)
    return key


def decode(key: int) -> str:
    """The word of a key."""
    chars = []
    while key:
        chars.append(chr((key & ((1 << _BITS) - 1)) - 1))
        key >>= _BITS
    return "".join(reversed(chars))


class CompactFreq:
    """jieba's FREQ mapping (word → frequency, 0 for a prefix that is no word) keyed by
    `code(word)`. Supports what jieba and this project do with FREQ."""

    __slots__ = ("codes",)

    def __init__(self, codes: dict[int, int]) -> None:
        self.codes = codes

    def get(self, word: str, default: int | None = None) -> int | None:
        return self.codes.get(code(word), default)

    def __getitem__(self, word: str) -> int:
        return self.codes[code(word)]

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and code(word) in self.codes

    def __setitem__(self, word: str, freq: int) -> None:
        self.codes[code(word)] = freq

    def __len__(self) -> int:
        return len(self.codes)

    def __iter__(self) -> Iterator[str]:
        return (decode(key) for key in self.codes)

    def items(self) -> Iterator[tuple[str, int]]:
        return ((decode(key), freq) for key, freq in self.codes.items())


def _get_dag(self: jieba.Tokenizer, sentence: str) -> dict[int, list[int]]:
    # jieba.Tokenizer.get_DAG, with the substring sentence[k:i + 1] carried as its code.
    self.check_initialized()
    freq = self.FREQ.codes
    points = [ord(ch) + 1 for ch in sentence]
    dag: dict[int, list[int]] = {}
    n = len(sentence)
    for k in range(n):
        ends = []
        i = k
        key = points[k]
        while i < n:
            found = freq.get(key)
            if found is None:
                break
            if found:
                ends.append(i)
            i += 1
            if i < n:
                key = (key << _BITS) | points[i]
        if not ends:
            ends.append(k)
        dag[k] = ends
    return dag


def _calc(self: jieba.Tokenizer, sentence: str, dag: dict[int, list[int]],
          route: dict[int, tuple[float, int]]) -> None:
    # jieba.Tokenizer.calc, the same expression in the same order; the frequency of
    # sentence[idx:x + 1] looked up by its code, built up along the ascending ends.
    n = len(sentence)
    route[n] = (0, 0)
    logtotal = math.log(self.total)
    freq = self.FREQ.codes
    points = [ord(ch) + 1 for ch in sentence]
    for idx in range(n - 1, -1, -1):
        best = None
        key, upto = 0, idx
        for x in dag[idx]:
            while upto <= x:
                key = (key << _BITS) | points[upto]
                upto += 1
            candidate = (math.log(freq.get(key) or 1) - logtotal + route[x + 1][0], x)
            if best is None or candidate > best:
                best = candidate
        route[idx] = best  # type: ignore[assignment]


def _cache_path(dict_file: str) -> Path:
    st = os.stat(dict_file)
    tag = hashlib.md5(f"{CACHE_VERSION}:{os.path.abspath(dict_file)}:{st.st_size}:{st.st_mtime_ns}"
                      .encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"shenlun-jieba-{tag}.cache"


_MASK64 = (1 << 64) - 1


def _load(path: Path) -> tuple[dict[int, int], int] | None:
    try:
        with open(path, "rb") as fh:
            version, total, short, lo, hi, rest, freqs = marshal.load(fh)
    except (OSError, EOFError, ValueError, TypeError):
        return None
    if version != CACHE_VERSION:
        return None
    # Flat arrays of machine words: marshal reads them as bytes, array turns them into
    # ints in C. Only words of 7+ characters (a few thousand) are Python ints on disk.
    # Iterators all the way, no list of half a million ints beside the dict.
    short_keys, lo_keys, hi_keys, counts = array("Q", short), array("Q", lo), array("Q", hi), array("I", freqs)
    if len(short_keys) + len(lo_keys) + len(rest) != len(counts) or len(lo_keys) != len(hi_keys):
        return None
    del short, lo, hi, freqs
    keys = chain(short_keys, ((h << 64) | lo for h, lo in zip(hi_keys, lo_keys, strict=True)), rest)
    shared: dict[int, int] = {}  # equal frequencies share one int (~5,000 distinct)
    return dict(zip(keys, map(shared.setdefault, counts, counts), strict=True)), total


def _save(path: Path, codes: dict[int, int], total: int) -> None:
    short = [k for k in codes if k <= _MASK64]
    middle = [k for k in codes if _MASK64 < k and k >> 64 <= _MASK64]
    rest = [k for k in codes if k >> 64 > _MASK64]
    freqs = array("I", [codes[k] for k in (*short, *middle, *rest)])
    record = (CACHE_VERSION, total, array("Q", short).tobytes(),
              array("Q", [k & _MASK64 for k in middle]).tobytes(),
              array("Q", [k >> 64 for k in middle]).tobytes(), rest, freqs.tobytes())
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            marshal.dump(record, fh)
        os.replace(tmp, path)  # another process building it at once writes the same
    except OSError:
        log.warning("could not write jieba's compact dictionary cache %s", path, exc_info=True)
        try:
            os.unlink(tmp)
        except OSError:
            pass


def install(tokenizer: jieba.Tokenizer) -> None:
    """Give `tokenizer` (not yet given a user dictionary) the compact main dictionary:
    from the cache when there is one for its dictionary file, else from jieba's own
    loading, then cached for the next start."""
    dict_file = tokenizer.dictionary or os.path.join(os.path.dirname(jieba.__file__), jieba.DEFAULT_DICT_NAME)
    try:
        path: Path | None = _cache_path(dict_file)
    except (OSError, TypeError):
        path = None
    loaded = _load(path) if path is not None and path.exists() else None
    if loaded is None:
        tokenizer.initialize()  # jieba's own str-keyed dictionary, once
        shared: dict[int, int] = {}
        codes = {code(word): shared.setdefault(freq, freq) for word, freq in tokenizer.FREQ.items()}
        total = tokenizer.total
        if path is not None:
            _save(path, codes, total)
    else:
        codes, total = loaded
    tokenizer.FREQ, tokenizer.total = CompactFreq(codes), total
    tokenizer.get_DAG = types.MethodType(_get_dag, tokenizer)
    tokenizer.calc = types.MethodType(_calc, tokenizer)
    tokenizer.initialized = True
