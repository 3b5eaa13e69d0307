"""jieba's prefix dictionary in a compact form, loaded lazily, one shard per first character.

jieba keeps every dictionary word and every prefix of one (~500,000 strings) in a dict
of str → frequency: ~62 MB per process, and ~0.5 s to unmarshal from its cache at each
start. Here the same dictionary is keyed by an integer code of the word (21 bits a
character, each character's code point + 1, so the code is unique to the string): an
int of 1–4 characters costs 28–40 bytes against 76–82 for the str.

Even so, building one dict of half a million int keys cost ~0.25 s at each start, most
of it cache misses in a table of a million slots. So the dictionary is split by the
first character of the word (11,772 shards, 42 entries on average, 1 for the median
character, 5,022 for 一, the biggest) and a shard is built the first time a word
starting with its character is looked up or set: a few µs for most, 1–5 ms for the
biggest. The cache file (in the system's temporary directory, layout at `_HEADER`)
holds flat arrays of machine words grouped by first character and an index of where
each character's entries are. `install()` maps it and reads only its header and the
few thousand longest keys (~1 ms, against ~0.4 s for one dict); a shard is built from
slices of the mapped arrays, whose pages are the page cache's, shared by every
instance on the machine. Fully loaded, the shards take ~1 MiB more than the one dict.

Threads: searches, indexing and grading segment from several threads at once. A
shard is published with `shards.setdefault(first, built)` and the winner is what every
caller uses (atomic under the GIL): two threads that build the same shard at once
agree on one, so a word one of them sets (jieba's add_word, our load_userdict) is
never lost in a discarded copy. A character with no entries gets its own empty shard,
built once.

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
import mmap
import os
import tempfile
import types
from array import array
from bisect import bisect_left
from collections.abc import Iterator
from itertools import chain
from pathlib import Path

import jieba

log = logging.getLogger("shenlun.knowledge")

CACHE_VERSION = 3
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


class _Cache:
    """The cache file's arrays, grouped by first character: what a shard is built from.

    `firsts` are the first characters (code point + 1), ascending. Keys come in three
    widths: up to 3 characters (one machine word), 4–6 (two words, `lo` and `hi`) and
    7+ (a few thousand Python ints). The j-th first character's keys of each width are
    `short[short_at[j]:short_at[j + 1]]` and so on, and their frequencies, in that order
    (short, middle, long), the `counts` from `short_at[j] + middle_at[j] + long_at[j]`
    on. Read-only: views of the mapped file, shared by every thread."""

    __slots__ = ("firsts", "short_at", "middle_at", "long_at", "short", "lo", "hi", "long", "counts",
                 "shared")

    def __init__(self, firsts: memoryview[int], short_at: memoryview[int], middle_at: memoryview[int],
                 long_at: memoryview[int], short: memoryview[int], lo: memoryview[int], hi: memoryview[int],
                 long: list[int], counts: memoryview[int]) -> None:
        bounds = (short_at, middle_at, long_at)
        if (len(lo) != len(hi) or any(len(at) != len(firsts) + 1 or at[0] != 0 for at in bounds)
                or (short_at[-1], middle_at[-1], long_at[-1]) != (len(short), len(lo), len(long))
                or len(short) + len(lo) + len(long) != len(counts)):
            raise ValueError("the cache's arrays do not add up")
        self.firsts, self.short_at, self.middle_at, self.long_at = firsts, short_at, middle_at, long_at
        self.short, self.lo, self.hi, self.long, self.counts = short, lo, hi, long, counts
        self.shared: dict[int, int] = {}  # equal frequencies share one int (~5,000 distinct)

    def shard(self, first: int) -> dict[int, int]:
        """A new dict of the entries whose first character (code point + 1) is `first`."""
        j = bisect_left(self.firsts, first)
        if j == len(self.firsts) or self.firsts[j] != first:
            return {}
        s0, s1 = self.short_at[j], self.short_at[j + 1]
        m0, m1 = self.middle_at[j], self.middle_at[j + 1]
        l0, l1 = self.long_at[j], self.long_at[j + 1]
        at = s0 + m0 + l0
        counts = self.counts[at:at + (s1 - s0) + (m1 - m0) + (l1 - l0)]
        middle = ((hi << 64) | lo for hi, lo in zip(self.hi[m0:m1], self.lo[m0:m1], strict=True))
        keys = chain(self.short[s0:s1], middle, self.long[l0:l1])
        shared = self.shared
        return dict(zip(keys, map(shared.setdefault, counts, counts), strict=True))


class CompactFreq:
    """jieba's FREQ mapping (word → frequency, 0 for a prefix that is no word), as
    `shards[first character's code point + 1][code(word)]`, each shard built from the
    cache on first use. Supports what jieba and this project do with FREQ; `len`,
    iteration and `items` load every shard first (only tests and tools use them)."""

    __slots__ = ("shards", "_cache")

    def __init__(self, cache: _Cache | None) -> None:
        self.shards: dict[int, dict[int, int]] = {}
        self._cache = cache

    def shard(self, first: int) -> dict[int, int]:
        """The shard of words whose first character is `first` (code point + 1), built
        from the cache if it is not yet; the one every thread uses."""
        shard = self.shards.get(first)
        if shard is None:
            built = self._cache.shard(first) if self._cache is not None else {}
            shard = self.shards.setdefault(first, built)  # another thread's, if it won
        return shard

    def _shard_of(self, word: str) -> dict[int, int]:
        return self.shard(ord(word[0]) + 1 if word else 0)

    def get(self, word: str, default: int | None = None) -> int | None:
        return self._shard_of(word).get(code(word), default)

    def __getitem__(self, word: str) -> int:
        return self._shard_of(word)[code(word)]

    def __contains__(self, word: object) -> bool:
        return isinstance(word, str) and code(word) in self._shard_of(word)

    def __setitem__(self, word: str, freq: int) -> None:
        self._shard_of(word)[code(word)] = freq

    def _all(self) -> list[dict[int, int]]:
        if self._cache is not None:
            for first in self._cache.firsts:
                self.shard(first)
        return list(self.shards.values())  # a copy: another thread may add a shard

    def __len__(self) -> int:
        return sum(map(len, self._all()))

    def __iter__(self) -> Iterator[str]:
        return (decode(key) for shard in self._all() for key in list(shard))

    def items(self) -> Iterator[tuple[str, int]]:
        return ((decode(key), freq) for shard in self._all() for key, freq in list(shard.items()))


def _get_dag(self: jieba.Tokenizer, sentence: str) -> dict[int, list[int]]:
    # jieba.Tokenizer.get_DAG, with the substring sentence[k:i + 1] carried as its code
    # and looked up in the shard of its first character.
    self.check_initialized()
    shards, shard_of = self.FREQ.shards, self.FREQ.shard
    points = [ord(ch) + 1 for ch in sentence]
    dag: dict[int, list[int]] = {}
    n = len(sentence)
    for k in range(n):
        ends = []
        i = k
        key = points[k]
        freq = shards.get(key)
        if freq is None:
            freq = shard_of(key)
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
    # sentence[idx:x + 1] looked up by its code, built up along the ascending ends, in
    # the shard of sentence[idx].
    n = len(sentence)
    route[n] = (0, 0)
    logtotal = math.log(self.total)
    shards, shard_of = self.FREQ.shards, self.FREQ.shard
    points = [ord(ch) + 1 for ch in sentence]
    for idx in range(n - 1, -1, -1):
        best = None
        key, upto = 0, idx
        freq = shards.get(points[idx])
        if freq is None:
            freq = shard_of(points[idx])
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
# The file: a header of 8 machine words (version, total, how many first characters,
# short, middle and long keys, bytes of the marshalled long keys, 0), then the arrays
# of `_Cache` in the order of its constructor, machine words ("Q") but the 4-byte
# frequencies ("I"), the long keys last as a marshalled list. Native byte order: the
# file is this machine's (the temporary directory).
_HEADER = 8


def _first(key: int) -> int:
    """The first character's code point + 1 of a code (its top 21-bit group)."""
    return key >> (_BITS * ((key.bit_length() - 1) // _BITS))


def _record(codes: dict[int, int], total: int) -> bytes:
    """The cache file's content for a dictionary of codes."""
    groups: dict[int, tuple[list[int], list[int], list[int]]] = {}
    for key in codes:
        width = 0 if key <= _MASK64 else 1 if key >> 64 <= _MASK64 else 2
        groups.setdefault(_first(key), ([], [], []))[width].append(key)
    firsts = sorted(groups)
    short: list[int] = []
    middle: list[int] = []
    long: list[int] = []
    bounds: tuple[list[int], list[int], list[int]] = ([0], [0], [0])
    counts = array("I")
    for first in firsts:
        for keys, flat, at in zip(groups[first], (short, middle, long), bounds, strict=True):
            flat.extend(keys)
            at.append(len(flat))
            counts.extend(codes[k] for k in keys)
    tail = marshal.dumps(long)
    header = array("Q", [CACHE_VERSION, total, len(firsts), len(short), len(middle), len(long), len(tail), 0])
    words = array("Q", firsts)
    for flat in (*bounds, short, [k & _MASK64 for k in middle], [k >> 64 for k in middle]):
        words.extend(flat)
    return b"".join((header.tobytes(), words.tobytes(), counts.tobytes(), tail))


def _parse(data: memoryview[int]) -> tuple[_Cache, int] | None:
    """The `_Cache` and total of a cache file's content (views of it, no copy), or None
    if it is not one of this version or does not add up."""
    try:
        header = data[:_HEADER * 8].cast("Q")
        version, total, firsts, short, middle, long, tail, _ = header
        if version != CACHE_VERSION:
            return None
        sizes = (firsts, *(firsts + 1,) * 3, short, middle, middle)
        at = _HEADER * 8
        views: list[memoryview[int]] = []
        for size in sizes:
            views.append(data[at:at + 8 * size].cast("Q"))
            at += 8 * size
        counts = data[at:at + 4 * (short + middle + long)].cast("I")
        at += 4 * (short + middle + long)
        if at + tail != len(data):
            return None
        keys = marshal.loads(data[at:])
        if not isinstance(keys, list):
            return None
        first_chars, short_at, middle_at, long_at, short_keys, lo, hi = views
        return _Cache(first_chars, short_at, middle_at, long_at, short_keys, lo, hi, keys, counts), total
    except (TypeError, ValueError, EOFError):
        return None


def _load(path: Path) -> tuple[_Cache, int] | None:
    # Mapped, not read: a start reads only the header and the long keys, a shard the
    # pages of its slices, and the pages are the page cache's, shared by every
    # instance on the machine. The map outlives the file if a rebuild replaces it.
    try:
        with open(path, "rb") as fh:
            mapped = mmap.mmap(fh.fileno(), 0, access=mmap.ACCESS_READ)
    except (OSError, ValueError):
        return None
    return _parse(memoryview(mapped))


def _save(path: Path, record: bytes) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=path.name + ".")
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(record)
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
        record = _record({code(word): freq for word, freq in tokenizer.FREQ.items()}, tokenizer.total)
        if path is not None:
            _save(path, record)
        loaded = _parse(memoryview(record))  # lazily, like a start from the cache
        assert loaded is not None
    cache, total = loaded
    tokenizer.FREQ, tokenizer.total = CompactFreq(cache), total
    tokenizer.get_DAG = types.MethodType(_get_dag, tokenizer)
    tokenizer.calc = types.MethodType(_calc, tokenizer)
    tokenizer.initialized = True
