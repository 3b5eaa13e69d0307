"""Our jieba analyzer: 申论 terms stay whole, stop words go, positions let phrases work."""
from __future__ import annotations

import jieba

from core.config import PROJECT_ROOT
from core.knowledge import analyzer, prefix_dict


def index_tokens(text: str) -> list[tuple[str, int]]:
    return [(t.text, t.pos) for t in analyzer.ANALYZER(text, positions=True, mode="index")]


def test_user_dictionary_keeps_shenlun_terms_whole():
    words = analyzer.words("深化放管服，推进乡村振兴，坚持枫桥经验，做到接诉即办")
    for term in ("放管服", "乡村振兴", "枫桥经验", "接诉即办"):
        assert term in words
    # Without our dictionary jieba cuts these into pieces; make sure no piece stands alone.
    assert "放管" not in words and "即办" not in words


def test_search_mode_also_indexes_the_words_inside_a_compound():
    tokens = {text for text, _ in index_tokens("实施乡村振兴战略")}
    assert {"乡村振兴战略", "乡村振兴", "乡村", "振兴", "战略"} <= tokens


def test_positions_are_sequential_over_the_finest_pieces():
    tokens = index_tokens("推进乡村振兴工作")
    chain = [(text, pos) for text, pos in tokens if text in ("推进", "乡村", "振兴", "工作")]
    assert chain == [("推进", 0), ("乡村", 1), ("振兴", 2), ("工作", 3)]
    # The compound shares the position of its first piece, like a synonym.
    assert ("乡村振兴", 1) in tokens
    assert analyzer.phrase_tokens("乡村 振兴") == analyzer.phrase_tokens("乡村振兴") == ["乡村", "振兴"]


def test_stop_words_and_punctuation_are_dropped():
    assert analyzer.words("你好，请问如何答好归纳概括题？") == ["答", "归纳概括", "题"]
    assert analyzer.words("谢谢！") == [] and analyzer.words("……") == []
    # Punctuation leaves a position gap, so no phrase spans a comma.
    positions = dict(index_tokens("乡村，振兴"))
    assert positions["振兴"] - positions["乡村"] == 2


def test_latin_is_lowercased_and_never_stemmed():
    assert analyzer.words("Running GDP Policies") == ["running", "gdp", "policies"]
    assert analyzer.words("ＧＤＰ增长") == ["gdp", "增长"]  # full-width folded


def test_highlight_mode_gives_whole_words_with_offsets():
    tokens = list(analyzer.ANALYZER("推进乡村振兴", chars=True, mode="highlight"))
    assert [(t.text, t.startchar, t.endchar) for t in tokens] == [("推进", 0, 2), ("乡村振兴", 2, 6)]
    assert {"乡村", "振兴", "乡村振兴"} <= tokens[1].expansions


def test_initialize_is_idempotent():
    analyzer.initialize()
    total, freq = analyzer._jieba.total, analyzer._jieba.FREQ["乡村振兴"]
    analyzer.initialize()
    assert (analyzer._jieba.total, analyzer._jieba.FREQ["乡村振兴"]) == (total, freq)
    assert analyzer.is_stopword("的") and not analyzer.is_stopword("基层")


def test_stop_word_list_is_real():
    words = analyzer.load_stopwords(analyzer.STOPWORDS_FILE)
    assert len(words) > 300
    assert {"的", "了", "和", "什么", "如何", "你好", "the"} <= words
    # Words that carry meaning in 申论 must not be on it.
    assert not {"问题", "发展", "建设", "工作", "基层", "治理"} & words


def test_compact_dictionary_segments_the_bundled_corpus_exactly_like_stock_jieba():
    # Our jieba keeps its prefix dictionary in prefix_dict.CompactFreq; a stock
    # Tokenizer with the same user dictionary is the reference.
    analyzer.initialize()
    assert isinstance(analyzer._jieba.FREQ, prefix_dict.CompactFreq)
    stock = jieba.Tokenizer()
    stock.initialize()
    stock.load_userdict(str(analyzer.USER_DICT))
    assert (len(stock.FREQ), stock.total) == (len(analyzer._jieba.FREQ), analyzer._jieba.total)
    texts = [p.read_text(encoding="utf-8") for p in sorted((PROJECT_ROOT / "data" / "knowledge").rglob("*.md"))]
    assert len(texts) >= 80
    for text in texts:
        for hmm in (True, False):
            assert list(analyzer._jieba.tokenize(text, HMM=hmm)) == list(stock.tokenize(text, HMM=hmm))
        assert analyzer._jieba.lcut_for_search(text) == stock.lcut_for_search(text)
    for word in ("乡村振兴", "放管服", "的", "乡村振", "没有这个词吧"):
        assert analyzer._jieba.FREQ.get(word) == stock.FREQ.get(word)


def test_compact_dictionary_cache_round_trips(tmp_path):
    words = {"乡": 0, "乡村": 0, "乡村振兴": 3000, "放管服": 5, "a": 7, "十四五规划纲要全文": 2,
             "中华人民共和国国民经济": 1}
    codes = {prefix_dict.code(w): f for w, f in words.items()}
    assert len(codes) == len(words) and {prefix_dict.decode(c) for c in codes} == set(words)
    path = tmp_path / "dict.cache"
    prefix_dict._save(path, codes, 123)
    assert prefix_dict._load(path) == (codes, 123)
    path.write_bytes(b"not a cache")
    assert prefix_dict._load(path) is None  # a broken cache is rebuilt, never trusted


def test_index_positions_are_the_index_mode_tokens_of_the_bundled_corpus():
    # IndexPositions indexes through index_positions(), not the tokenizer: the two must
    # never differ (texts with stop words, punctuation, Latin, digits and long words).
    texts = [p.read_text(encoding="utf-8") for p in sorted((PROJECT_ROOT / "data" / "knowledge").rglob("*.md"))]
    texts += ["ＧＤＰ增长５％，我们的 https://example.com/" + "a" * 60 + " 乡村振兴战略！", "", "的了。，"]
    for text in texts:
        expected: dict[str, list[int]] = {}
        for token, pos in index_tokens(text):
            expected.setdefault(token, []).append(pos)
        assert analyzer.index_positions(text) == expected
