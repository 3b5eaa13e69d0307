"""Chinese relevance on a small corpus, through the real index (jieba + Whoosh, BM25F)."""
from __future__ import annotations

import re
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.knowledge import KnowledgeBase, SearchRequest, analyzer
from core.knowledge import search as searching
from core.knowledge.store import Document

CORPUS = [
    Document("rural", "乡村振兴的五个方面",
             "产业振兴、人才振兴、文化振兴、生态振兴和组织振兴，共同构成乡村振兴的总体要求。", "主题"),
    Document("grassroots", "基层治理的创新做法",
             "网格化管理让基层治理更加精细，新时代枫桥经验推动矛盾纠纷就地化解。", "主题", ("基层治理",)),
    Document("both", "县域发展观察",
             "某县把乡村振兴和基层治理结合起来，以党建引领村级事务，群众满意度明显提升。", "案例"),
    Document("apart", "农村发展报告",
             "这几年乡村面貌焕然一新，产业全面振兴，农民收入持续增长。", "案例"),
    Document("reform", "深化放管服改革",
             "简政放权、放管结合、优化服务，持续优化营商环境，激发市场主体活力。", "主题", ("营商环境",)),
    Document("hotline-title", "接诉即办的北京实践",
             "一条热线把群众的每一个电话当作治理的哨声，推动部门快速响应、主动服务。", "案例"),
    Document("hotline-body", "城市热线观察",
             "不少城市推行接诉即办，把群众的每一个电话当作治理的哨声，推动部门快速响应。", "案例"),
    Document("method", "归纳概括题的答题步骤",
             "审题、找点、加工、成文。要点分条，关键词前置，不照抄资料原句。", "方法", ("归纳概括", "方法")),
]


@pytest.fixture
def kb(tmp_path, io_loop):
    executor = ThreadPoolExecutor(2)
    base = KnowledgeBase.open(tmp_path, executor)
    io_loop.run_sync(lambda: base.add(CORPUS))
    yield base
    base.close()
    executor.shutdown()


async def search(kb, q, **params):
    args = {"q": [q], **{k: [str(v)] for k, v in params.items()}}
    return await kb.search(SearchRequest.from_params(args))


def ids(answer):
    return [r["id"] for r in answer["results"]]


@pytest.mark.parametrize("query, expected", [
    ("枫桥经验怎样化解矛盾纠纷", "grassroots"),  # words in another order and form
    ("营商环境的优化", "reform"),               # the text says 优化营商环境
    ("归纳概括题怎么找点", "method"),
])
async def test_expected_document_ranks_first_on_shared_words(kb, query, expected):
    answer = await search(kb, query)
    assert ids(answer)[0] == expected
    assert query not in CORPUS_TEXT  # they share segmented words, not the string


CORPUS_TEXT = "\n".join(d.title + d.content for d in CORPUS)


async def test_two_words_find_either_and_both_come_first(kb):
    answer = await search(kb, "乡村振兴 基层治理")
    found = ids(answer)
    assert found[0] == "both"
    assert {"rural", "grassroots"} <= set(found)
    assert answer["total"] == len(found)
    # Spaces are optional in Chinese: the same query written as one string.
    assert ids(await search(kb, "乡村振兴基层治理"))[0] == "both"


async def test_and_mode_needs_every_word(kb):
    assert ids(await search(kb, "乡村振兴 基层治理", mode="and")) == ["both"]


async def test_quoted_phrase_matches_only_the_phrase(kb):
    loose = set(ids(await search(kb, "乡村 振兴")))
    assert "apart" in loose  # 乡村 … 振兴, far apart: found by the words
    for phrase in ('"乡村 振兴"', '"乡村振兴"', "“乡村振兴”"):
        assert set(ids(await search(kb, phrase))) == {"rural", "both"}, phrase
    assert ids(await search(kb, '"振兴乡村"')) == []


async def test_title_match_outranks_body_match(kb):
    assert ids(await search(kb, "接诉即办"))[:2] == ["hotline-title", "hotline-body"]


async def test_highlights_mark_whole_matched_words(kb):
    answer = await search(kb, "振兴")
    rural = next(r for r in answer["results"] if r["id"] == "rural")
    assert "<em>乡村振兴</em>" in rural["snippet"]  # the whole word, not 乡村<em>振兴</em>
    for result in answer["results"]:
        assert_marks_are_whole_words(result["snippet"], result["id"])
    both = (await search(kb, "乡村振兴 基层治理"))["results"][0]
    assert "<em>乡村振兴</em>" in both["snippet"] and "<em>基层治理</em>" in both["snippet"]
    assert_marks_are_whole_words(both["snippet"], "both")


def assert_marks_are_whole_words(snippet: str, doc_id: str) -> None:
    content = next(d.content for d in CORPUS if d.id == doc_id)
    plain = snippet.replace("<em>", "").replace("</em>", "").strip("…")
    start = content.index(plain)
    # Every mark starts and ends on a boundary of jieba's segmentation of the text.
    boundaries = {0}
    for token in analyzer.ANALYZER(content, chars=True, mode="highlight"):
        boundaries |= {token.startchar, token.endchar}
    offset = start
    for part in re.split(r"(</?em>)", snippet.strip("…")):
        if part in ("<em>", "</em>"):
            assert offset in boundaries, (snippet, part, offset)
        else:
            offset += len(part)


async def test_pagination_reports_the_true_total(kb):
    everything = await search(kb, "治理 振兴 服务", limit=50)
    total = everything["total"]
    assert total == len(everything["results"]) >= 5
    pages = [ids(await search(kb, "治理 振兴 服务", limit=2, offset=n)) for n in range(0, total, 2)]
    assert [i for page in pages for i in page] == ids(everything)
    assert all(page for page in pages)
    assert (await search(kb, "治理 振兴 服务", limit=2, offset=total))["results"] == []
    scores = [r["score"] for r in everything["results"]]
    assert scores == sorted(scores, reverse=True)


async def test_category_and_tag_filters(kb):
    assert set(ids(await search(kb, "治理 振兴", category="案例"))) == {
        "both", "apart", "hotline-title", "hotline-body"}
    assert ids(await search(kb, "治理", tag="基层治理")) == ["grassroots"]
    assert ids(await search(kb, "治理", category="没有这类")) == []


async def test_result_shape(kb):
    result = (await search(kb, "放管服"))["results"][0]
    assert set(result) >= {"id", "title", "category", "tags", "score", "snippet"}
    assert result["title"] == "深化放管服改革" and result["tags"] == ["营商环境"]
    assert isinstance(result["score"], float) and result["score"] > 0


async def test_snippets_are_html_escaped(kb, tmp_path):
    await kb.add([Document("xss", "标签测试", "放管服<script>alert(1)</script>&改革")])
    snippet = next(r for r in (await search(kb, "放管服"))["results"] if r["id"] == "xss")["snippet"]
    assert "<script>" not in snippet and "&lt;script&gt;" in snippet


@pytest.mark.parametrize("question", ["你好", "您好！", "谢谢", "今天天气怎么样", "红烧肉怎么做", "hello"])
async def test_greetings_and_unrelated_questions_retrieve_nothing(kb, question):
    assert await kb.retrieve(question, 4) == []


async def test_retrieve_returns_passages_of_relevant_documents(kb):
    sources = await kb.retrieve("枫桥经验怎样化解矛盾纠纷？", 4)
    assert sources and sources[0].id == "grassroots"
    assert sources[0].title == "基层治理的创新做法"
    assert "就地化解" in sources[0].text
    assert "<em>新时代枫桥经验</em>" in sources[0].snippet  # the text's word, whole
    assert len({s.id for s in sources}) == len(sources)  # one passage per document


async def test_question_phrasing_does_not_outweigh_the_topic(kb, tmp_path):
    # "是什么意思" asks for a meaning: a document that happens to contain 意思 must not
    # push out the one about the topic asked about.
    wording = Document("wording", "解释型分析题", "解释型题目要先说明词语的意思，再分析原因。", "方法")
    await kb.add([wording])
    sources = await kb.retrieve("接诉即办是什么意思", 4)
    assert sources and {s.id for s in sources} <= {"hotline-title", "hotline-body"}


@pytest.mark.parametrize("query", ["乡村振兴 基层治理", "治理 振兴 服务", "接诉即办", "枫桥经验怎样化解矛盾纠纷"])
async def test_passage_scores_are_whoosh_bm25f_scores(kb, query):
    # search() scores "or" queries over Whoosh's raw posting blocks instead of through
    # its matcher tree: the scores must be the ones Whoosh's own collector gives.
    searcher = kb.index.searcher()
    parsed = searching.parse_query(query)
    ours, _ = searching._score_words(searching.IndexView.of(searcher), parsed.words, searching.Pace())
    whoosh = dict(searcher.search(searching.build_query(parsed, "or"), limit=None).items())
    assert ours.keys() == whoosh.keys() and whoosh
    assert all(ours[n] == pytest.approx(whoosh[n], rel=1e-12) for n in whoosh)


@pytest.mark.parametrize("query, mode", [
    ('"乡村 振兴"', "or"), ('"乡村振兴" 治理', "or"), ('"乡村 振兴" "基层 治理"', "or"), ('"振兴" 产业', "or"),
    ('"基层 治理" 网格化', "or"), ("乡村振兴 基层治理", "and"), ('"乡村 振兴" 治理', "and"), ('"振兴 乡村"', "or"),
])
async def test_phrase_and_all_word_scores_are_whoosh_phrase_query_scores(kb, query, mode):
    # Phrases and mode "and" are scored over the raw postings and their positions
    # instead of Whoosh's span matchers: the same passages and scores, here with a
    # second segment (a title phrase) and a deleted document in the index.
    await kb.add([Document("title-phrase", "乡村振兴与基层治理", "村里的事大家商量着办。", "主题")])
    await kb.delete("apart")
    searcher = kb.index.searcher()
    assert len(searcher.reader().leaf_readers()) > 1 and searcher.reader().has_deletions()
    parsed = searching.parse_query(query)
    ours, _ = searching._score_required(searching.IndexView.of(searcher), parsed, mode, searching.Pace())
    whoosh = dict(searcher.search(searching.build_query(parsed, mode), limit=None).items())
    assert ours.keys() == whoosh.keys()
    assert all(ours[n] == pytest.approx(whoosh[n], rel=1e-12) for n in whoosh)
    assert bool(whoosh) == (query != '"振兴 乡村"')  # pieces in the wrong order: no match
    if mode == "and":  # no coverage factor: the page is Whoosh's ranking, by document
        doc_of = searching.IndexView.of(searcher).doc_of
        ranked = sorted(whoosh.items(), key=lambda item: (-item[1], item[0]))
        assert ids(await search(kb, query, mode=mode)) == list(dict.fromkeys(doc_of[n] for n, _ in ranked))


async def test_snippets_from_stored_word_boundaries_match_segmenting_again(kb):
    terms = searching.parse_query("乡村振兴 治理 服务 放管服").terms
    for doc in CORPUS:
        text = doc.content * 3  # long enough for windows around separate matches
        assert searching.snippet(text, terms, analyzer.cuts(text)) == searching.snippet(text, terms)


def test_fragments_are_whooshs_context_fragments(kb):
    # _fragments walks plain tuples instead of Whoosh's tokens: the same fragments (and
    # matches) as ContextFragmenter over the same words, passages long and short.
    from whoosh.analysis import Token
    from whoosh.highlight import ContextFragmenter

    fragmenter = ContextFragmenter(maxchars=searching.SNIPPET_CHARS, surround=searching.SNIPPET_SURROUND)
    compared = 0
    for query in ("乡村振兴 治理 服务", "振兴", "群众 电话", "放管服", "县域", "接诉即办", "归纳概括"):
        terms = searching.parse_query(query).terms
        for doc in CORPUS:
            for text in (doc.content, doc.title + "。" + doc.content, "，".join([doc.content] * 6)):
                words = searching._words_near(text, terms)
                tokens = []
                for word, start, end, matched in words:
                    token = Token(text=word, startchar=start, endchar=end, boost=1.0)
                    token.matched = matched
                    tokens.append(token)
                ours = [(f.startchar, f.endchar, [(t.text, t.startchar, t.endchar) for t in f.matches])
                        for f in searching._fragments(text, words)]
                whoosh = [(f.startchar, f.endchar, [(t.text, t.startchar, t.endchar) for t in f.matches])
                          for f in fragmenter.fragment_tokens(text, tokens)]
                assert ours == whoosh
                compared += bool(whoosh)
    assert compared > 20



def test_a_search_pace_gives_the_gil_to_a_thread_that_waits_for_it():
    # Pure-Python work with Pace.check() between its steps, as a search's scoring and
    # snippets are. The interpreter forces a switch only every 0.5 s here, so a thread
    # that wants the GIL meanwhile gets it from the pauses, every GIL_SLICE_SECONDS.
    def busy(seconds: float) -> None:
        pace, until, n = searching.Pace(), time.monotonic() + seconds, 0
        while time.monotonic() < until:
            for _ in range(500):  # no I/O: the GIL stays held
                n += 1
            pace.check()

    interval = sys.getswitchinterval()
    sys.setswitchinterval(0.5)
    try:
        worker = threading.Thread(target=busy, args=(0.4,))
        worker.start()
        turns = 0
        while worker.is_alive():
            time.sleep(0.001)  # each wake needs the GIL
            turns += 1
        worker.join()
    finally:
        sys.setswitchinterval(interval)
    assert turns >= 40, turns  # one pause a millisecond: ~100-300; without them 1 or 2

