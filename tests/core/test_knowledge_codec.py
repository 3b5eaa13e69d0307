"""The index's codec (core/knowledge/codec.py) against stock Whoosh on the bundled corpus:
the same files when nothing is inlined, the same postings when rare terms are, and
inlined segments that Whoosh merges and searches like any other."""
from __future__ import annotations

import zlib

import pytest
from whoosh import index as whoosh_index
from whoosh.codec.whoosh3 import W3Codec, W3LeafMatcher
from whoosh.fields import TEXT
from whoosh.query import Phrase, Term
from whoosh.reading import SegmentReader

from core.config import PROJECT_ROOT
from core.knowledge import analyzer, codec
from core.knowledge.analyzer import ANALYZER
from core.knowledge.codec import INLINE_LIMIT, KnowledgeCodec, block_head, segment_postings
from core.knowledge.index import SCHEMA, add_passages
from core.knowledge.search import search
from scripts.reindex import read_folder


@pytest.fixture(scope="module")
def corpus():
    analyzer.initialize()
    docs, problems = read_folder(PROJECT_ROOT / "data" / "knowledge")
    assert docs and not problems
    return docs[:50]


# The schema with Whoosh's own Positions format for the text fields (the index's
# IndexPositions gathers the same postings faster).
STOCK_SCHEMA = SCHEMA.copy()
for _name in ("title", "content"):
    STOCK_SCHEMA.remove(_name)
    STOCK_SCHEMA.add(_name, TEXT(analyzer=ANALYZER, stored=True, phrase=True))


def build(path, docs, codec, *, compound=True, batches=1, schema=SCHEMA):
    path.mkdir()
    ix = whoosh_index.create_in(str(path), schema)
    for n in range(batches):  # one segment per batch
        writer = ix.writer(codec=codec, compound=compound)
        for doc in docs[n::batches]:
            add_passages(writer, doc)
        writer.commit(merge=False)
    return whoosh_index.open_dir(str(path), schema=SCHEMA)


def segment_files(path):
    # The posting and term files by extension (their names carry a random segment id).
    return {f.suffix: f.read_bytes() for f in path.iterdir() if f.suffix in (".trm", ".pst")}


def postings(ix):
    """Every term of every field with its (document, weight, value) postings; a field
    without values reads as None from a block and b"" inlined: both are "none"."""
    with ix.reader() as reader:
        out = {}
        for fieldname, text in reader.all_terms():
            out[fieldname, text] = [(m.id(), m.weight(), m.value() or b"")
                                    for m in _walk(reader.postings(fieldname, text))]
        return out


def _walk(matcher):
    while matcher.is_active():
        yield matcher
        matcher.next()


def test_without_inlining_the_batched_writer_writes_whooshs_own_bytes(tmp_path, corpus):
    stock = build(tmp_path / "stock", corpus, W3Codec(), compound=False, schema=STOCK_SCHEMA)
    ours = build(tmp_path / "ours", corpus, KnowledgeCodec(inlinelimit=1), compound=False)
    files = segment_files(tmp_path / "stock")
    assert set(files) == {".trm", ".pst"} and files == segment_files(tmp_path / "ours")
    assert stock.doc_count_all() == ours.doc_count_all() > len(corpus)


def test_rare_terms_are_inlined_with_the_same_postings_and_scores(tmp_path, corpus):
    stock = build(tmp_path / "stock", corpus, W3Codec(), schema=STOCK_SCHEMA)
    ours = build(tmp_path / "ours", corpus, KnowledgeCodec())
    with ours.reader() as reader:
        infos = [reader.term_info(f, t) for f, t in reader.all_terms()]
    inlined = [info for info in infos if info.is_inlined()]
    assert inlined and all(info.doc_frequency() < INLINE_LIMIT for info in inlined)
    assert len(inlined) == sum(info.doc_frequency() < INLINE_LIMIT for info in infos)
    assert postings(ours) == postings(stock)
    for word in ("乡村振兴", "枫桥经验", "归纳概括", "放管服"):
        assert search(ours.searcher(), word, limit=10).results == search(stock.searcher(), word, limit=10).results


def test_inlined_segments_merge_and_answer_phrases_like_stock_ones(tmp_path, corpus):
    stock = build(tmp_path / "stock", corpus, W3Codec(), batches=4, schema=STOCK_SCHEMA)
    ours = build(tmp_path / "ours", corpus, KnowledgeCodec(), batches=4)
    assert len(ours._segments()) == 4
    writer = ours.writer(codec=KnowledgeCodec())
    writer.commit(optimize=True)  # Whoosh's own merge reads the inlined postings
    merged = whoosh_index.open_dir(str(tmp_path / "ours"), schema=SCHEMA)
    assert len(merged._segments()) == 1
    with stock.reader() as reader:
        rare = [Term(f, t.decode()) for f, t in reader.all_terms()
                if f in ("content", "tags") and reader.doc_frequency(f, t) < INLINE_LIMIT][::25]
    assert len(rare) > 10
    # A merge renumbers the postings: compare the passages they belong to.
    for query in (*rare, Term("content", "振兴"), Phrase("content", ["乡村", "振兴"])):
        with stock.searcher() as a, merged.searcher() as b:
            found_a = sorted(hit["pid"] for hit in a.search(query, limit=None))
            found_b = sorted(hit["pid"] for hit in b.search(query, limit=None))
        assert found_a == found_b and found_a, query


def test_a_merge_reads_the_same_live_postings_as_whoosh(tmp_path, corpus):
    ix = build(tmp_path / "ours", corpus, KnowledgeCodec())
    writer = ix.writer(codec=KnowledgeCodec())
    for doc in corpus[::7]:  # deletions, which a merge must skip
        writer.delete_by_term("doc_id", doc.id)
    writer.commit(merge=False)
    ix = whoosh_index.open_dir(str(tmp_path / "ours"), schema=SCHEMA)
    (segment,) = ix._segments()
    assert segment.deleted_count() > 0
    reader = SegmentReader(ix.storage, SCHEMA, segment)
    try:
        ours = list(segment_postings(reader))
        assert ours == list(reader.iter_postings())
        assert {docnum for _, _, docnum, _, _ in ours}.isdisjoint(segment.deleted_docs())
    finally:
        reader.close()


@pytest.mark.parametrize("compression", [3, 0])
def test_block_head_reads_the_ids_and_weights_whoosh_reads(tmp_path, corpus, compression):
    # Small blocks: full ones (a MARK before the values), short last ones (none), every
    # kind of weights (None, one float, a tuple), compressed and not.
    ix = build(tmp_path / "ix", corpus, KnowledgeCodec(blocklimit=5, compression=compression))
    sizes, weight_kinds, cut = set(), set(), 0
    with ix.reader() as reader:
        for fieldname, btext in reader.all_terms():
            matcher = reader._terms.matcher(fieldname, btext, reader.schema[fieldname].format)
            while isinstance(matcher, W3LeafMatcher) and matcher.is_active():
                head = block_head(matcher)
                matcher._read_data()
                assert head == (matcher._data[0], matcher._data[1]), (fieldname, btext)
                if matcher._data[2] is not None:  # and through the fast path: cut before the values
                    raw = matcher._postfile.get(matcher._dataoffset, matcher._nextoffset - matcher._dataoffset)
                    raw = zlib.decompress(raw) if compression else raw
                    assert codec._cut_before_values(raw, raw.find(codec._VALUES_START)) == head
                    cut += 1
                sizes.add(len(head[0]))
                weight_kinds.add(type(head[1]))
                if matcher._lastblock:
                    break
                matcher._next_block()
    assert {1, 5} <= sizes and {type(None), float, tuple} <= weight_kinds and cut > 100
