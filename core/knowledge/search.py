"""Queries against the index: parsing, ranking, snippets, retrieval for chat.

Query language (the `q` of /api/knowledge/search):

- words: `乡村振兴 基层治理` finds passages with any of the words (mode "or", the default)
  or all of them (mode "and"). The text is segmented like the documents, so spaces are
  optional: `乡村振兴基层治理` is the same query.
- a quoted phrase (`"乡村 振兴"`, `“枫桥经验”`) must occur as it stands (function words
  and spaces aside) in every result, in either mode.

Ranking is BM25F over passages, a title match counting TITLE_BOOST times a content match.
A document's score is its best passage's times coverage**COORD_POWER, where coverage is
the share of the query's words the document has, each word weighted by its rarity (idf)
and counting fully only where the document has the whole word (its pieces alone count
SUBWORD_WEIGHT). So documents with both words of a two-word query come before those with
one, unless the one-word document is far more about its word. Results name documents,
not passages; `total` counts documents.
"""
from __future__ import annotations

import functools
import heapq
import html
import re
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from itertools import accumulate
from pickle import loads
from typing import Any

from whoosh.codec.whoosh3 import W3LeafMatcher
from whoosh.highlight import DEFAULT_CHARLIMIT, BasicFragmentScorer, Formatter, Fragment, mkfrag
from whoosh.query import And, AndMaybe, Or, Phrase, Query, Term
from whoosh.reading import SegmentReader, TermNotFound
from whoosh.searching import Searcher
from whoosh.system import _INT_SIZE as _UINT_SIZE

from core.chat.prompts import Source
from core.errors import SearchTimeout
from core.knowledge import analyzer
from core.knowledge.codec import block_head

TITLE_BOOST = 2.5       # a title match is worth this many content matches
SUBWORD_WEIGHT = 0.4    # 振兴 found for the query word 乡村振兴: partial credit
COORD_POWER = 2         # how hard missing query words pull a document down
SNIPPET_CHARS = 110     # length of one highlighted fragment
SNIPPET_SURROUND = 30   # context before the first and after the last match
SNIPPET_FRAGMENTS = 2
SNIPPET_MAX_CHARS = 240  # both fragments together

# Retrieval for chat: a passage is used only if it covers enough of the question's
# words, weighted by how rare each word is in the index (a word the index lacks weighs
# the most), and scores at least MIN_RETRIEVE_SCORE. That is what keeps "你好" or a
# question about something the knowledge base does not cover from retrieving noise.
MIN_COVERAGE = 0.5
MIN_RETRIEVE_SCORE = 1.5
MAX_RETRIEVE_WORDS = 12  # longer inputs keep their most informative words
RETRIEVE_CANDIDATES = 60

MAX_QUERY_WORDS = 32     # a pasted paragraph is searched by its first 32 distinct words
MAX_QUERY_PHRASES = 8

_QUOTED = re.compile(r'"([^"]*)"|“([^”]*)”|「([^」]*)」|『([^』]*)』')
MODES = ("or", "and")


# The search thread gives the GIL away at a search's check points once it has run this
# long since it last did. Whoosh and the scoring are pure Python: without it a thread
# that wants the GIL (the event loop woken by a request) waits for the interpreter's
# switch interval (5 ms), at every turn of the loop, behind the search thread; /health
# takes several turns. bench/b7_event_loop.py on a quiet machine, alternating runs:
# no pauses /health p99 20-34 ms at 87-90 searches/s; 1 ms 10 ms at 54-61/s; 2 ms
# 14-15 ms at 70-78/s; 3 ms 17-18 ms at 75-79/s (docs/benchmarks.md, issue 18: /health
# under search load). 2 ms keeps the target with room at half 1 ms's cost in searches.
GIL_SLICE_SECONDS = 0.002
# A real sleep, not sleep(0): the search thread must stay off the GIL long enough for the
# woken thread to take it (sleep(0) takes it straight back).
_HANDOFF_SECONDS = 1e-5


# Per thread, when it last gave the GIL away: searches that follow one another on the
# search thread (each shorter than a slice) share its slice.
_handed = threading.local()


class Pace:
    """One search's time budget and its turns at giving the GIL away: `check()` at every
    point where stopping or pausing is safe."""

    def __init__(self, deadline: float | None = None) -> None:
        self.deadline = deadline  # a time.monotonic() value; None: no budget

    def check(self) -> None:
        """SearchTimeout past the deadline; a pause for any thread waiting for the GIL
        once this thread ran GIL_SLICE_SECONDS since its last one."""
        now = time.monotonic()
        if self.deadline is not None and now > self.deadline:
            raise SearchTimeout()
        if now - getattr(_handed, "at", 0.0) >= GIL_SLICE_SECONDS:
            time.sleep(_HANDOFF_SECONDS)
            _handed.at = time.monotonic()


@dataclass(frozen=True)
class ParsedQuery:
    """The words (deduplicated, in order) and the phrases (as piece chains) of a query."""

    words: tuple[str, ...]
    phrases: tuple[tuple[str, ...], ...]

    @property
    def terms(self) -> frozenset[str]:
        """Every token the query may match, for highlighting."""
        tokens = {t for word in self.words for t in analyzer.expand(word)}
        tokens.update(piece for chain in self.phrases for piece in chain)
        return frozenset(tokens)


@functools.lru_cache(maxsize=4096)
def parse_query(text: str) -> ParsedQuery:
    """Split a query into its quoted phrases and its other words."""
    phrases: list[tuple[str, ...]] = []
    for match in _QUOTED.finditer(text):
        chain = tuple(analyzer.phrase_tokens(next(g for g in match.groups() if g is not None)))
        if chain and chain not in phrases:
            phrases.append(chain)
    rest = _QUOTED.sub(" ", text).replace('"', " ")
    words = tuple(dict.fromkeys(analyzer.words(rest)))[:MAX_QUERY_WORDS]
    return ParsedQuery(words=words, phrases=tuple(phrases[:MAX_QUERY_PHRASES]))


def _word_query(word: str, *, whole_only: bool = False) -> Query:
    subqueries: list[Query] = []
    for token in ([word] if whole_only else analyzer.expand(word)):
        weight = 1.0 if token == word else SUBWORD_WEIGHT
        subqueries.append(Term("title", token, boost=weight * TITLE_BOOST))
        subqueries.append(Term("content", token, boost=weight))
    return Or(subqueries)


def _phrase_query(chain: Sequence[str]) -> Query:
    if len(chain) == 1:
        return _word_query(chain[0], whole_only=True)
    return Or([Phrase("title", list(chain), boost=TITLE_BOOST), Phrase("content", list(chain))])


def build_query(parsed: ParsedQuery, mode: str = "or") -> Query | None:
    """The Whoosh query for a parsed query (None when nothing is left to search for):
    the specification `search` scores by (tests compare the two); `search` itself reads
    the postings directly and never runs it."""
    phrases = [_phrase_query(chain) for chain in parsed.phrases]
    if mode == "and":
        required = [_word_query(word, whole_only=True) for word in parsed.words] + phrases
        return And(required) if required else None
    optional = Or([_word_query(word) for word in parsed.words]) if parsed.words else None
    if not phrases:
        return optional
    required_q = And(phrases) if len(phrases) > 1 else phrases[0]
    return AndMaybe(required_q, optional) if optional is not None else required_q


def _weights(searcher: Searcher, words: Sequence[str]) -> dict[str, float]:
    # Whoosh's idf: log(N / (df + 1)) + 1, so a word the index lacks weighs the most.
    return {w: searcher.idf("content", w) for w in words}




# --- snippets ---

_MARKUP = re.compile(r"(?m)^[ \t]{0,3}#{1,6}[ \t]*|\*\*|__")
_SPACE = re.compile(r"\s+")


def _plain(text: str) -> str:
    # Snippets are for reading: no Markdown heading marks or bold markers, one line.
    return html.escape(_SPACE.sub(" ", _MARKUP.sub("", text)), quote=False)


class _EmFormatter(Formatter):  # type: ignore[misc]  # Whoosh has no type hints: Formatter is Any
    """Matched words in <em>, everything else HTML-escaped, whitespace collapsed, "…"
    where a fragment does not reach the passage's start or end."""

    between = ""

    def _text(self, text: str) -> str:
        return _plain(text)

    def format_token(self, text: str, token: Any, replace: bool = False) -> str:
        return "<em>" + html.escape(text[token.startchar:token.endchar], quote=False) + "</em>"

    def format_fragment(self, fragment: Any, replace: bool = False) -> str:
        out: str = super().format_fragment(fragment, replace).replace("</em><em>", "")
        if fragment.startchar > 0:
            out = "…" + out.lstrip()
        if fragment.endchar < len(fragment.text):
            out = out.rstrip() + "…"
        return out


def _merge(fragments: list[Fragment]) -> list[Fragment]:
    """Fragments that touch become one (instead of "……" between two halves of a
    sentence); the snippet stays within SNIPPET_MAX_CHARS, the first fragment always in."""
    merged: list[Fragment] = []
    for frag in fragments:
        size = sum(f.endchar - f.startchar for f in merged)
        if merged and frag.startchar <= merged[-1].endchar + 1:
            last = merged[-1]
            if size + frag.endchar - last.endchar <= SNIPPET_MAX_CHARS:
                merged[-1] = Fragment(last.text, last.matches + frag.matches, last.startchar,
                                      max(last.endchar, frag.endchar))
        elif not merged or size + frag.endchar - frag.startchar <= SNIPPET_MAX_CHARS:
            merged.append(frag)
    return merged


class _Word:
    """A matched word of a passage as Whoosh's fragment scorer and formatter see it (the
    few attributes they read; a Whoosh Token costs several times more to make)."""

    __slots__ = ("text", "startchar", "endchar", "boost")

    def __init__(self, text: str, startchar: int, endchar: int) -> None:
        self.text, self.startchar, self.endchar, self.boost = text, startchar, endchar, 1.0


_Near = tuple[str, int, int, bool]  # a word of a passage: text, start, end, matched


def _fragments(text: str, words: Sequence[_Near]) -> Iterator[Fragment]:
    """What whoosh.highlight.ContextFragmenter(maxchars=SNIPPET_CHARS,
    surround=SNIPPET_SURROUND).fragment_tokens yields for these words, step for step
    (its empty fragments included), over plain tuples: only matched words become
    objects (making one for each of a passage's ~150 words and walking them through
    Whoosh's generator was a third of a snippet's time)."""
    maxchars, surround = SNIPPET_CHARS, SNIPPET_SURROUND
    first: int | None = None
    firsts: deque[int] = deque()
    countdown = -1
    tks: list[_Word] = []
    endchar = None
    currentlen = 0
    for word, startchar, endchar, matched in words:
        tlength = endchar - startchar
        if endchar > DEFAULT_CHARLIMIT:
            break
        if countdown < 0 and not matched:
            firsts.append(startchar)
            while firsts and endchar - firsts[0] > surround:
                firsts.popleft()
        elif currentlen + tlength > maxchars:
            countdown = 0
        elif matched:
            countdown = surround
            if first is None:
                if firsts:
                    first = firsts[0]
                else:
                    first = startchar
                    countdown += surround
            tks.append(_Word(word, startchar, endchar))
        if countdown >= 0:
            currentlen += tlength
            countdown -= tlength
            if countdown <= 0:
                yield mkfrag(text, tks, startchar=first, endchar=endchar)
                tks = []
                firsts = deque()
                first = None
                currentlen = 0
    if tks:
        yield mkfrag(text, tks, startchar=first, endchar=endchar)


# Words further than this from every match cannot end up in a fragment: a fragment
# starts at most SNIPPET_SURROUND characters before a match and holds at most
# SNIPPET_CHARS after it, plus context after the last match.
_REACH = SNIPPET_CHARS + 2 * SNIPPET_SURROUND


def _words_near(text: str, terms: frozenset[str], ends: bytes | None = None) -> list[_Near]:
    """The words of `text` around the places a term occurs; the opening words when no
    term occurs. From the word boundaries stored with the passage (`ends`) when there
    are, else jieba runs on windows cut where its segmentation cannot change (running
    it over every result passage was most of a search's time)."""
    folded = analyzer.fold_width(text).lower()
    spans: list[tuple[int, int]] = []
    for term in terms:
        at = folded.find(term)
        while at >= 0:
            spans.append((at - _REACH, at + len(term) + _REACH))
            at = folded.find(term, at + 1)
    if not spans:
        spans = [(0, SNIPPET_CHARS + _REACH)]
    spans.sort()
    windows: list[list[int]] = []
    for first, last in spans:
        if not ends:
            first = analyzer.safe_cut(text, first, forward=False)
            last = analyzer.safe_cut(text, last, forward=True)
        first, last = max(first, 0), min(last, len(text))
        if windows and first <= windows[-1][1]:
            windows[-1][1] = max(windows[-1][1], last)
        else:
            windows.append([first, last])
    words: list[_Near] = []
    for first, last in windows:
        found = [(word, start, end, not expansions.isdisjoint(terms))
                 for word, start, end, expansions in analyzer.highlight_words(text, first, last, ends=ends)]
        while words and found and found[0][1] < words[-1][2]:
            del found[0]  # a word across two windows: once
        words += found
    return words


def _top_fragments(fragments: Iterable[Fragment], count: int) -> list[Fragment]:
    # whoosh.highlight.top_fragments breaks ties between equal fragments by their
    # memory addresses, so one passage got different snippets from run to run:
    # here the earlier fragment wins a tie.
    scorer = BasicFragmentScorer()
    best = heapq.nsmallest(count, ((-scorer(f), f.startchar, f) for f in fragments))
    return sorted((f for score, _, f in best if -score >= 1), key=lambda f: f.startchar)


def snippet(text: str, terms: frozenset[str], ends: bytes | None = None) -> str:
    """An HTML snippet of `text` with the words that match `terms` in <em>.

    Whoosh's fragmenting (see _fragments) and formatter over our analyzer's words, so a mark always covers
    a whole word (乡村振兴, never 乡村 of it). Without a match, the passage's opening.
    `ends`: the passage's stored word boundaries (`analyzer.cuts`), if it has them.
    """
    tokens = _words_near(text, terms, ends)
    fragments = _merge(_top_fragments(_fragments(text, tokens), SNIPPET_FRAGMENTS))
    if fragments:
        return str(_EmFormatter()(text, fragments))
    if tokens and tokens[0][1] > 0:
        tokens = _words_near(text, frozenset(), ends)  # matches somewhere, none a whole word
    end = 0
    for _, _, token_end, _ in tokens:
        if token_end > SNIPPET_CHARS:
            break
        end = token_end
    head = _plain(text[:end]).strip()
    return head + ("…" if end < len(text) else "")


# --- search ---

def _blocks(matcher: object, values: bool = False
            ) -> Iterator[tuple[Sequence[int], Sequence[float], Sequence[bytes | None]]]:
    """(document numbers, weights, values) of a fresh Whoosh posting matcher, a block
    at a time; the values (a text field's encoded positions) only when asked for, else
    an empty tuple.

    Whoosh 2.7's W3LeafMatcher decodes a block's ids with a Python generator and hands
    postings out one by one through id()/weight()/next(), ~1 µs each, before any
    scoring. Reading the raw delta-coded block and summing it with
    itertools.accumulate gives the same ids at C speed. Inlined postings (a term in a
    few documents) come as a ListMatcher, read through its public methods.
    """
    if not isinstance(matcher, W3LeafMatcher):
        listed_ids: list[int] = []
        listed_weights: list[float] = []
        listed_values: list[bytes | None] = []
        while matcher.is_active():  # type: ignore[attr-defined]
            listed_ids.append(matcher.id())  # type: ignore[attr-defined]
            listed_weights.append(matcher.weight())  # type: ignore[attr-defined]
            if values:
                listed_values.append(matcher.value())  # type: ignore[attr-defined]
            matcher.next()  # type: ignore[attr-defined]
        yield listed_ids, listed_weights, listed_values
        return
    while matcher.is_active():
        if values:
            matcher._read_data()
            raw, weights = matcher._data[0], matcher._data[1]
        else:
            raw, weights = block_head(matcher)  # unpickling the positions was ~95 % of a block
        ids = raw if matcher._byteids else tuple(accumulate(raw))
        if weights is None or isinstance(weights, float):  # Whoosh's shorthands
            weights = (1.0 if weights is None else weights,) * len(ids)
        if values:
            matcher._read_values()  # Whoosh's own unpacking of the block's values
        yield ids, weights, matcher._values if values else ()
        if matcher._lastblock:
            return
        matcher._next_block()


def _positions(value: bytes | None) -> frozenset[int]:
    """The positions in a Positions-format posting value: what
    whoosh.formats.Positions.decode_positions returns, as a set (its loop over the
    deltas was a third of a phrase's time)."""
    if not value:
        return frozenset()
    return frozenset(accumulate(loads(value[_UINT_SIZE:] if value.endswith(b".") else value[_UINT_SIZE:] + b".")))


def _tree_sum(values: Sequence[float]) -> float:
    """The sum in the order Whoosh's make_binary_tree of matchers adds scores up (float
    addition is not associative: the same order gives the same score, ties included)."""
    if len(values) <= 2:
        return values[0] + values[1] if len(values) == 2 else values[0]
    half = len(values) // 2
    return _tree_sum(values[:half]) + _tree_sum(values[half:])


SCORED_FIELDS = ("title", "content")
_SEGMENT_CACHE: OrderedDict[tuple[str, str, int], _SegmentData] = OrderedDict()
_SEGMENT_LOCK = threading.Lock()
_SEGMENTS_KEPT = 256  # segments whose decoded columns a process keeps


@dataclass(frozen=True)
class _SegmentData:
    doc_ids: tuple[str, ...]                   # the doc_id column
    lengths: dict[str, tuple[float | None, ...]]  # field → Whoosh's (lossy) field lengths


def _segment_data(seg: SegmentReader) -> _SegmentData:
    # A segment's documents never change (deletions aside, handled by the postings), so
    # its decoded columns are kept across searchers: an add reopens the searcher but
    # decodes only the new segment's columns.
    key = (str(getattr(seg.storage(), "folder", id(seg.storage()))), seg.segment().segment_id(),
           seg.doc_count_all())
    with _SEGMENT_LOCK:
        known = _SEGMENT_CACHE.get(key)
        if known is not None:
            _SEGMENT_CACHE.move_to_end(key)
            return known
    count = seg.doc_count_all()
    # Exactly what Whoosh's doc_field_length() returns, for every passage at once.
    lengths = {name: tuple(seg.doc_field_length(n, name) for n in range(count))
               for name in SCORED_FIELDS}
    data = _SegmentData(doc_ids=tuple(seg.column_reader("doc_id")), lengths=lengths)
    with _SEGMENT_LOCK:
        _SEGMENT_CACHE[key] = data
        while len(_SEGMENT_CACHE) > _SEGMENTS_KEPT:
            _SEGMENT_CACHE.popitem(last=False)
    return data


class IndexView:
    """What ranking needs of one searcher beyond Whoosh's own API, computed once per
    searcher (a searcher is replaced, never changed, when the index changes): the
    document id of every passage number, and posting lists as sets of live passages."""

    def __init__(self, searcher: Searcher) -> None:
        self.searcher = searcher
        self.leaves: list[tuple[SegmentReader, int, frozenset[int], _SegmentData]] = []
        doc_of: list[str] = []
        for seg, offset in searcher.reader().leaf_readers():
            deleted = frozenset(seg._perdoc.deleted_docs()) if seg.has_deletions() else frozenset()
            data = _segment_data(seg)
            self.leaves.append((seg, offset, deleted, data))
            doc_of.extend(data.doc_ids)
        self.doc_of = doc_of
        self.avg_length = {name: searcher.avg_field_length(name) or 1 for name in SCORED_FIELDS}
        self._norm_cache: dict[tuple[str, int], tuple[float, ...]] = {}

    @classmethod
    def of(cls, searcher: Searcher) -> IndexView:
        """The view of a searcher (built on first use, then kept with it)."""
        view = getattr(searcher, "_shenlun_view", None)
        if view is None:
            view = cls(searcher)
            searcher._shenlun_view = view
        return view

    def _leaf_blocks(self, seg: SegmentReader, deleted: frozenset[int], field_name: str, token: str,
                     values: bool = False
                     ) -> Iterator[tuple[Sequence[int], Sequence[float], Sequence[bytes | None]]]:
        try:  # the raw postings (Whoosh's postings() wraps them in a slow filter)
            matcher = seg._terms.matcher(field_name, seg._text_to_bytes(field_name, token),
                                         seg.schema[field_name].format)
        except (TermNotFound, KeyError):
            return
        for ids, weights, vals in _blocks(matcher, values):
            if deleted:
                live = [i for i, n in enumerate(ids) if n not in deleted]
                ids, weights = [ids[i] for i in live], [weights[i] for i in live]
                vals = [vals[i] for i in live] if values else ()
            yield ids, weights, vals

    def postings(self, field_name: str, token: str) -> Iterator[tuple[int, Sequence[int], Sequence[float], _SegmentData]]:
        """(offset, segment document numbers, weights, segment data) of the live
        postings of a term, a block at a time."""
        for seg, offset, deleted, data in self.leaves:
            for ids, weights, _ in self._leaf_blocks(seg, deleted, field_name, token):
                yield offset, ids, weights, data

    def ids(self, field_name: str, token: str) -> set[int]:
        """The live passages whose field has the token."""
        out: set[int] = set()
        for offset, ids, _, _ in self.postings(field_name, token):
            out.update([offset + n for n in ids] if offset else ids)
        return out

    def _norms(self, field_name: str, data: _SegmentData) -> tuple[float, ...]:
        # The length part of Whoosh's bm25(), K1 * ((1 - B) + B * fl / avgfl), per
        # passage: it depends on the index's average length, so once per searcher.
        key = (field_name, id(data))
        norms = self._norm_cache.get(key)
        if norms is None:
            weighting = self.searcher.weighting
            avgfl, K1 = self.avg_length[field_name], weighting.K1
            B = weighting._field_B.get(field_name, weighting.B)
            norms = tuple(0.0 if fl is None else K1 * ((1 - B) + B * fl / avgfl)
                          for fl in data.lengths[field_name])
            self._norm_cache[key] = norms
        return norms

    def _view_norms(self, field_name: str) -> tuple[float, ...]:
        # _norms of every segment end to end: indexed by the searcher's passage number
        norms = self._norm_cache.get((field_name, -1))
        if norms is None:
            norms = tuple(norm for _, _, _, data in self.leaves for norm in self._norms(field_name, data))
            self._norm_cache[(field_name, -1)] = norms
        return norms

    def scores(self, field_name: str, token: str, boost: float, into: dict[int, float]) -> set[int]:
        """Add the term's BM25F score (times `boost`) to each passage that has it, the
        way Whoosh's BM25FScorer and a boosted Term compute it; returns the passages."""
        idf = self.searcher.idf(field_name, token)
        k1_plus_1 = self.searcher.weighting.K1 + 1
        found: set[int] = set()
        get = into.get
        norms = self._view_norms(field_name)
        for offset, ids, weights, _ in self.postings(field_name, token):
            if offset:
                ids = [n + offset for n in ids]
            # whoosh.scoring.bm25(), operation for operation, then the Term's boost; a
            # comprehension and one update are ~3x faster than a loop of item stores
            into.update({n: get(n, 0.0) + idf * ((tf * k1_plus_1) / (tf + norms[n])) * boost
                         for n, tf in zip(ids, weights, strict=True)})
            found.update(ids)
        return found

    def phrase_scores(self, field_name: str, chain: Sequence[str]) -> dict[int, float]:
        """The passages whose field has the tokens of `chain` at consecutive positions,
        each with the score Whoosh's Phrase query (boost 1) gives it: the sum of the
        tokens' BM25F scores, added up as its binary tree of IntersectionMatchers does.

        Whoosh matches a phrase through span matchers, a Python call chain per posting
        of every token (42–83 ms for "乡村 振兴" at 10,000 documents, most of the p99):
        here the posting lists are intersected by passage number first and only the
        passages with every token have their positions decoded.
        """
        idfs = [self.searcher.idf(field_name, token) for token in chain]
        k1_plus_1 = self.searcher.weighting.K1 + 1
        unique = list(dict.fromkeys(chain))
        out: dict[int, float] = {}
        for seg, offset, deleted, data in self.leaves:
            lists: dict[str, tuple[dict[int, int], list[float], list[bytes | None]]] = {}
            for token in unique:
                ids: list[int] = []
                weights: list[float] = []
                values: list[bytes | None] = []
                for block_ids, block_weights, block_values in self._leaf_blocks(seg, deleted, field_name, token,
                                                                                values=True):
                    ids.extend(block_ids)
                    weights.extend(block_weights)
                    values.extend(block_values)
                if not ids:
                    break
                lists[token] = ({n: i for i, n in enumerate(ids)}, weights, values)
            else:
                norms = self._norms(field_name, data)
                common = set(lists[unique[0]][0]).intersection(*(lists[token][0] for token in unique[1:]))
                for n in sorted(common):
                    at = {}
                    for token, (index, weights, values) in lists.items():
                        i = index[n]
                        at[token] = (weights[i], _positions(values[i]))
                    first = at[chain[0]][1]
                    if not any(all(p + k in at[token][1] for k, token in enumerate(chain[1:], 1)) for p in first):
                        continue
                    norm = norms[n]
                    # whoosh.scoring.bm25(), operation for operation, per token
                    out[offset + n] = _tree_sum([idf * ((at[token][0] * k1_plus_1) / (at[token][0] + norm))
                                                 for token, idf in zip(chain, idfs, strict=True)])
        return out

    def word_ids(self, word: str, *, whole_only: bool = False) -> set[int]:
        """The passages a word query (`_word_query`) matches, in either field."""
        out: set[int] = set()
        for token in ([word] if whole_only else analyzer.expand(word)):
            out |= self.ids("title", token)
            out |= self.ids("content", token)
        return out

    def filter_ids(self, category: str, tags: Sequence[str]) -> set[int] | None:
        """The passages of the category with all the tags (None: no filter)."""
        allowed: set[int] | None = None
        for field_name, value in [("category", category)] * bool(category) + [("tags", t) for t in tags]:
            ids = self.ids(field_name, value)
            allowed = ids if allowed is None else allowed & ids
        return allowed

    def passages(self, docnum: int) -> range:
        """The passage numbers of the document of passage `docnum`: a document's passages
        are added together, so they are neighbours in every segment and every merge."""
        doc_of, doc_id = self.doc_of, self.doc_of[docnum]
        first = last = docnum
        while first > 0 and doc_of[first - 1] == doc_id:
            first -= 1
        while last + 1 < len(doc_of) and doc_of[last + 1] == doc_id:
            last += 1
        return range(first, last + 1)


class _Credits:
    """Which passages have each query word, whole or only in pieces."""

    def __init__(self, whole: dict[str, set[int]], partial: dict[str, set[int]]) -> None:
        self.whole, self.partial = whole, partial

    @classmethod
    def of_words(cls, view: IndexView, words: Sequence[str]) -> _Credits:
        """From the posting lists alone (no scoring)."""
        whole = {word: view.word_ids(word, whole_only=True) for word in words}
        return cls(whole, {word: view.word_ids(word) for word in words})

    def of(self, docnum: int) -> dict[str, float]:
        return {w: 1.0 if docnum in self.whole[w] else SUBWORD_WEIGHT if docnum in self.partial[w] else 0.0
                for w in self.whole}

    def of_document(self, passages: Iterable[int]) -> dict[str, float]:
        """A document has what any of its passages has."""
        best = dict.fromkeys(self.whole, 0.0)
        for n in passages:
            for word, credit in self.of(n).items():
                if credit > best[word]:
                    best[word] = credit
        return best


def _score_words(view: IndexView, words: Sequence[str], pace: Pace) -> tuple[dict[int, float], _Credits]:
    """The BM25F score of every passage matching the words query of mode "or" (what
    Whoosh computes for `Or([_word_query(w) for w in words])`), and the credits, in one
    pass over the posting lists.

    Whoosh's own collector walks a tree of Python matchers per posting (~100 ms for a
    common word at 10,000 documents), and its block-max pruning is not safe here (its
    length bytes make the block bound too low: it drops true top hits), so the same
    formula runs here over the raw posting blocks instead.
    """
    scores: dict[int, float] = {}
    whole: dict[str, set[int]] = {}
    partial: dict[str, set[int]] = {}
    for word in words:
        whole[word], partial[word] = set(), set()
        for token in analyzer.expand(word):
            pace.check()  # a common token's postings are the long part
            weight = 1.0 if token == word else SUBWORD_WEIGHT
            for field_name, boost in (("title", TITLE_BOOST), ("content", 1.0)):
                found = view.scores(field_name, token, weight * boost, scores)
                partial[word] |= found
                if token == word:
                    whole[word] |= found
    return scores, _Credits(whole, partial)


def _clause_scores(view: IndexView, chain: Sequence[str]) -> dict[int, float]:
    """What Whoosh scores `_phrase_query(chain)` (a one-token chain: the whole-word
    query) with: its title part TITLE_BOOST times, plus its content part."""
    if len(chain) == 1:
        scores: dict[int, float] = {}
        view.scores("title", chain[0], TITLE_BOOST, scores)
        view.scores("content", chain[0], 1.0, scores)
        return scores
    title = view.phrase_scores("title", chain)
    content = view.phrase_scores("content", chain)
    # Or([Phrase(title, boost=TITLE_BOOST), Phrase(content)]): a UnionMatcher's sum
    scores = {n: score * TITLE_BOOST for n, score in title.items()}
    for n, score in content.items():
        scores[n] = scores[n] + score if n in scores else score
    return scores


def _score_required(view: IndexView, parsed: ParsedQuery, mode: str,
                    pace: Pace) -> tuple[dict[int, float], _Credits]:
    """The scores of every passage matching a query with phrases, or of mode "and",
    as Whoosh scores `build_query(parsed, mode)`: every phrase (and in mode "and" every
    word, whole) is required and the scores of the parts add up; in mode "or" the
    words are optional and add their score where they match."""
    chains: list[tuple[str, ...]] = [(word,) for word in parsed.words] if mode == "and" else []
    chains += parsed.phrases
    clauses: list[dict[int, float]] = []
    for chain in chains:
        pace.check()
        clauses.append(_clause_scores(view, chain))
        if not clauses[-1]:
            return {}, _Credits.of_words(view, ())
    smallest = min(clauses, key=len)
    matched = {n for n in smallest if all(n in clause for clause in clauses)}
    scores = {n: _tree_sum([clause[n] for clause in clauses]) for n in matched}
    words = parsed.words if mode == "or" else ()
    if not words:
        return scores, _Credits.of_words(view, ())
    optional, credits = _score_words(view, words, pace)
    # AndMaybe(required, optional): the optional part adds where it matches
    return {n: score + optional[n] if n in optional else score for n, score in scores.items()}, credits


def _coverage(credits: Mapping[str, float], weights: Mapping[str, float]) -> float:
    total = sum(weights.values())
    return sum(wt * credits.get(w, 0.0) for w, wt in weights.items()) / total if total else 1.0


@dataclass
class SearchPage:
    """One page of document results and the true number of matching documents."""

    total: int
    results: list[dict[str, Any]]


def _rank(view: IndexView, scores: Mapping[int, float], credits: _Credits,
          weights: Mapping[str, float], need: int, pace: Pace) -> list[tuple[float, str, int]]:
    """(score, doc id, best passage) of the `need` best documents, best first.

    A document scores its best passage's score (the first passage on ties) times
    coverage**COORD_POWER, at most its best passage's (coverage <= 1). Passages are
    taken best first, on equal scores by document id then passage number, so the first
    taken of a document is its best, and documents come in order of best passage: once
    `need` documents score more than the next one's best passage, no later one can
    overtake them, and coverage is computed for a few documents, not all.
    """
    doc_of = view.doc_of
    # One heap of passages: grouping them by document first was a Python loop over
    # every match (~1.5 ms of a common word's 10,000-document search).
    order = [(-score, doc_of[n], n) for n, score in scores.items()]
    heapq.heapify(order)  # popped best first; sorting them all cost more than the rest
    top: list[tuple[float, str, int]] = []
    seen: set[str] = set()
    while order:
        negative, doc_id, docnum = heapq.heappop(order)
        if doc_id in seen:
            continue
        seen.add(doc_id)
        if len(seen) % 64 == 63:
            pace.check()
        score = -negative
        if len(top) >= need and score < top[need - 1][0]:
            break
        if weights:
            mine = credits.of_document(n for n in view.passages(docnum) if n in scores)
            score *= _coverage(mine, weights) ** COORD_POWER
        top.append((score, doc_id, docnum))
        top.sort(key=lambda item: (-item[0], item[1]))
        del top[need:]
    return top


def search(searcher: Searcher, text: str, *, limit: int = 10, offset: int = 0,
           category: str = "", tags: Sequence[str] = (), mode: str = "or",
           deadline: float | None = None) -> SearchPage:
    """Documents matching a query, best first, `limit` from `offset`. Past `deadline`
    (a time.monotonic() value) it stops and raises SearchTimeout: no partial page."""
    parsed = parse_query(text)
    if not (parsed.words or parsed.phrases) or searcher.doc_count_all() == 0:
        return SearchPage(total=0, results=[])
    built = time.monotonic()
    view = IndexView.of(searcher)
    if deadline is not None:
        # The view is built once per index version (the first search after a change
        # decodes every segment's columns, ~1 s at 10,000 documents on a busy machine):
        # shared work, not this query's, so it does not count against the budget.
        deadline += time.monotonic() - built
    pace = Pace(deadline)
    allowed = view.filter_ids(category, tags)
    words = parsed.words if mode == "or" else ()
    if words and not parsed.phrases:
        scores, credits = _score_words(view, words, pace)
    else:
        # phrases and mode "and": the documents with every required part, far fewer
        scores, credits = _score_required(view, parsed, mode, pace)
    if allowed is not None:
        scores = {n: s for n, s in scores.items() if n in allowed}
    total = len(set(map(view.doc_of.__getitem__, scores)))
    need = min(offset + limit, total)
    ranked = _rank(view, scores, credits, _weights(searcher, words), need, pace) if need > offset else []
    pace.check()
    terms = parsed.terms
    results = []
    for score, doc_id, docnum in ranked[offset:need]:
        pace.check()  # a snippet is ~1 ms: most of a search of a small corpus
        f = searcher.stored_fields(docnum)  # only for the page: stored fields are dear
        results.append({
            "id": doc_id, "title": f["title"], "category": f.get("category", ""),
            "tags": [t for t in f.get("tags", "").split(",") if t],
            "source": f.get("source", ""), "score": round(score, 3),
            "snippet": snippet(f["content"], terms, f.get("cuts")),
        })
    return SearchPage(total=total, results=results)


def retrieve(searcher: Searcher, text: str, limit: int) -> list[Source]:
    """The passages that best answer a question, at most one per document, best first;
    nothing when no passage covers enough of the question (see MIN_COVERAGE)."""
    words = [w for w in dict.fromkeys(analyzer.words(text))
             if not (len(w) == 1 and not w.isascii())]  # 答, 题, 写: too vague alone
    if not words or limit <= 0 or searcher.doc_count_all() == 0:
        return []
    weights = _weights(searcher, words)
    if len(words) > MAX_RETRIEVE_WORDS:
        present = sorted((w for w in words if searcher.doc_frequency("content", w)),
                         key=lambda w: -weights[w])
        words = present[:MAX_RETRIEVE_WORDS]
        if not words:
            return []
        weights = {w: weights[w] for w in words}
    view = IndexView.of(searcher)
    doc_ids = view.doc_of
    pace = Pace()  # no budget: a chat's retrieval is bounded by its words, not by time
    scores, credits = _score_words(view, words, pace)
    candidates = heapq.nsmallest(RETRIEVE_CANDIDATES, scores.items(), key=lambda item: (-item[1], item[0]))
    best: dict[str, tuple[float, int]] = {}
    for docnum, score in candidates:
        if score < MIN_RETRIEVE_SCORE:
            continue
        coverage = _coverage(credits.of(docnum), weights)
        if coverage < MIN_COVERAGE:
            continue
        score *= coverage  # already gated on coverage: no need to square it here
        doc_id = doc_ids[docnum]
        if doc_id not in best or score > best[doc_id][0]:
            best[doc_id] = (score, docnum)
    terms = ParsedQuery(words=tuple(words), phrases=()).terms
    ranked = sorted(best.items(), key=lambda item: (-item[1][0], item[0]))[:limit]
    sources = []
    for doc_id, (score, docnum) in ranked:
        pace.check()
        f = searcher.stored_fields(docnum)
        sources.append(Source(id=doc_id, title=f["title"], text=f["content"], score=round(score, 3),
                              snippet=snippet(f["content"], terms, f.get("cuts")), category=f.get("category", "")))
    return sources
