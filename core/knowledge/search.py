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

import html
import re
from dataclasses import dataclass, field
from typing import Mapping, Sequence

from whoosh.highlight import (BasicFragmentScorer, ContextFragmenter, Formatter, Fragment,
                              top_fragments)
from whoosh.query import And, AndMaybe, Or, Phrase, Query, Term
from whoosh.searching import Searcher

from core.knowledge import analyzer
from core.prompts import Source

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
    """The Whoosh query for a parsed query (None when nothing is left to search for)."""
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


class _EmFormatter(Formatter):
    """Matched words in <em>, everything else HTML-escaped, whitespace collapsed, "…"
    where a fragment does not reach the passage's start or end."""

    between = ""

    def _text(self, text: str) -> str:
        return _plain(text)

    def format_token(self, text: str, token: object, replace: bool = False) -> str:
        return "<em>" + html.escape(text[token.startchar:token.endchar], quote=False) + "</em>"

    def format_fragment(self, fragment: object, replace: bool = False) -> str:
        out = super().format_fragment(fragment, replace).replace("</em><em>", "")
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


def snippet(text: str, terms: frozenset[str]) -> str:
    """An HTML snippet of `text` with the words that match `terms` in <em>.

    Whoosh's fragmenter and formatter over our analyzer's words, so a mark always covers
    a whole word (乡村振兴, never 乡村 of it). Without a match, the passage's opening.
    """
    tokens = []
    for token in analyzer.ANALYZER(text, chars=True, mode="highlight"):
        token.matched = bool(token.expansions & terms)
        tokens.append(token)
    fragmenter = ContextFragmenter(maxchars=SNIPPET_CHARS, surround=SNIPPET_SURROUND)
    fragments = _merge(top_fragments(fragmenter.fragment_tokens(text, tokens), SNIPPET_FRAGMENTS,
                                     BasicFragmentScorer(), lambda f: f.startchar))
    if fragments:
        return _EmFormatter()(text, fragments)
    end = 0
    for token in tokens:
        if token.endchar > SNIPPET_CHARS:
            break
        end = token.endchar
    head = _plain(text[:end]).strip()
    return head + ("…" if end < len(text) else "")


# --- search ---

class _Credits:
    """Which passages have each query word, whole or only in pieces: one posting-list
    pass per word instead of recording matched terms for every hit."""

    def __init__(self, searcher: Searcher, words: Sequence[str]) -> None:
        self.whole: dict[str, set[int]] = {}
        self.partial: dict[str, set[int]] = {}
        for word in words:
            self.whole[word] = set(searcher.docs_for_query(_word_query(word, whole_only=True)))
            self.partial[word] = set(searcher.docs_for_query(_word_query(word)))

    def of(self, docnum: int) -> dict[str, float]:
        return {w: 1.0 if docnum in self.whole[w] else SUBWORD_WEIGHT if docnum in self.partial[w] else 0.0
                for w in self.whole}


def _coverage(credits: Mapping[str, float], weights: Mapping[str, float]) -> float:
    total = sum(weights.values())
    return sum(wt * credits.get(w, 0.0) for w, wt in weights.items()) / total if total else 1.0


@dataclass
class _DocHit:
    score: float
    docnum: int
    credits: dict[str, float] = field(default_factory=dict)


@dataclass
class SearchPage:
    """One page of document results and the true number of matching documents."""

    total: int
    results: list[dict]


def search(searcher: Searcher, text: str, *, limit: int = 10, offset: int = 0,
           category: str = "", tags: Sequence[str] = (), mode: str = "or") -> SearchPage:
    """Documents matching a query, best first, `limit` from `offset`."""
    parsed = parse_query(text)
    query = build_query(parsed, mode)
    if query is None or searcher.doc_count_all() == 0:
        return SearchPage(total=0, results=[])
    filters = ([Term("category", category)] if category else []) + [Term("tags", t) for t in tags]
    hits = searcher.search(query, limit=None, filter=And(filters) if filters else None)
    doc_ids = searcher.reader().column_reader("doc_id")
    words = parsed.words if mode == "or" else ()
    credits = _Credits(searcher, words)
    docs: dict[str, _DocHit] = {}
    for docnum, score in hits.items():
        doc_id = doc_ids[docnum]
        passage = credits.of(docnum)
        doc = docs.get(doc_id)
        if doc is None:
            docs[doc_id] = _DocHit(score, docnum, passage)
            continue
        if score > doc.score:
            doc.score, doc.docnum = score, docnum
        for word, credit in passage.items():  # the document has what any passage has
            doc.credits[word] = max(doc.credits[word], credit)
    weights = _weights(searcher, words)
    ranked = sorted(((doc.score * _coverage(doc.credits, weights) ** COORD_POWER, doc_id, doc)
                     for doc_id, doc in docs.items()), key=lambda item: (-item[0], item[1]))
    terms = parsed.terms
    results = []
    for score, doc_id, doc in ranked[offset:offset + limit]:
        f = searcher.stored_fields(doc.docnum)  # only for the page: stored fields are dear
        results.append({
            "id": doc_id, "title": f["title"], "category": f.get("category", ""),
            "tags": [t for t in f.get("tags", "").split(",") if t],
            "source": f.get("source", ""), "score": round(score, 3),
            "snippet": snippet(f["content"], terms),
        })
    return SearchPage(total=len(ranked), results=results)


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
    hits = searcher.search(Or([_word_query(w) for w in words]), limit=RETRIEVE_CANDIDATES)
    doc_ids = searcher.reader().column_reader("doc_id")
    credits = _Credits(searcher, words)
    best: dict[str, tuple[float, int]] = {}
    for docnum, score in hits.items():
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
        f = searcher.stored_fields(docnum)
        sources.append(Source(id=doc_id, title=f["title"], text=f["content"], score=round(score, 3),
                              snippet=snippet(f["content"], terms), category=f.get("category", "")))
    return sources
