"""Our jieba analyzer: 申论 terms stay whole, stop words go, positions let phrases work."""
from __future__ import annotations

import sys
import threading
from array import array

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


def _fresh_tokenizer() -> jieba.Tokenizer:
    tokenizer = jieba.Tokenizer()
    prefix_dict.install(tokenizer)  # from the cache analyzer's own install leaves (or builds)
    return tokenizer


def _dict_file_freq(tokenizer: jieba.Tokenizer, word: str) -> int:
    """A word's frequency in jieba's dictionary file itself: the reference."""
    with tokenizer.get_dict_file() as lines:
        return next(int(line.split()[1]) for line in map(bytes.decode, lines) if line.startswith(word + " "))


def test_compact_dictionary_cache_round_trips_shard_by_shard(tmp_path):
    words = {"乡": 0, "乡村": 0, "乡村振兴": 3000, "乡村振兴战略规划": 9, "放管服": 5, "a": 7, "ab": 0,
             "十四五规划纲要全文": 2, "中华人民共和国国民经济": 1, "中": 4}
    codes = {prefix_dict.code(w): f for w, f in words.items()}
    assert len(codes) == len(words) and {prefix_dict.decode(c) for c in codes} == set(words)
    path = tmp_path / "dict.cache"
    prefix_dict._save(path, prefix_dict._record(codes, 123))
    loaded = prefix_dict._load(path)
    assert loaded is not None and loaded[1] == 123
    cache = loaded[0]
    # Each first character's slice holds its words and only those (all three key widths).
    for first in {w[0] for w in words}:
        shard = cache.shard(ord(first) + 1)
        assert {prefix_dict.decode(k): f for k, f in shard.items()} == {w: f for w, f in words.items()
                                                                        if w[0] == first}
    assert cache.shard(ord("的") + 1) == {}
    freq = prefix_dict.CompactFreq(cache)
    assert dict(freq.items()) == words and len(freq) == len(words) and set(freq) == set(words)
    path.write_bytes(b"not a cache")
    assert prefix_dict._load(path) is None  # a broken cache is rebuilt, never trusted
    record = prefix_dict._record(codes, 123)
    path.write_bytes(array("Q", [prefix_dict.CACHE_VERSION - 1]).tobytes() + record[8:])
    assert prefix_dict._load(path) is None  # an older version's
    path.write_bytes(record[:-1])
    assert prefix_dict._load(path) is None  # cut short
    path.write_bytes(b"")
    assert prefix_dict._load(path) is None


def test_a_fresh_install_loads_no_shard_until_a_word_is_looked_up():
    analyzer.initialize()
    tokenizer = _fresh_tokenizer()
    assert tokenizer.FREQ.shards == {}
    assert tokenizer.FREQ.get("中华人民共和国") == _dict_file_freq(tokenizer, "中华人民共和国")
    assert list(tokenizer.FREQ.shards) == [ord("中") + 1]
    # Segmenting loads the shards of the text's characters, and no others.
    assert "振兴" in tokenizer.lcut("中华人民共和国振兴乡村")
    assert set(tokenizer.FREQ.shards) == {ord(ch) + 1 for ch in "中华人民共和国振兴乡村"}
    # A character with no words gets one empty shard, kept, not rebuilt at each lookup.
    assert tokenizer.FREQ.get("☃") is None
    empty = tokenizer.FREQ.shards[ord("☃") + 1]
    assert "☃" not in tokenizer.FREQ and tokenizer.FREQ.shards[ord("☃") + 1] is empty
    assert empty == {}
    tokenizer.FREQ["☃☃"] = 3
    assert tokenizer.FREQ["☃☃"] == 3


def test_without_a_cache_install_builds_it_from_jiebas_own_loading(tmp_path, monkeypatch):
    path = tmp_path / "dict.cache"
    monkeypatch.setattr(prefix_dict, "_cache_path", lambda dict_file: path)
    built = jieba.Tokenizer()
    prefix_dict.install(built)  # no cache: jieba loads its dictionary, ours is written
    assert path.exists() and built.FREQ.shards == {}
    reloaded = _fresh_tokenizer()  # from that file
    for word in ("中华人民共和国", "一帆风顺", "的"):
        assert built.FREQ[word] == reloaded.FREQ[word] == _dict_file_freq(built, word)
    assert built.FREQ.get("中华人民共") == reloaded.FREQ.get("中华人民共") == 0  # a prefix, no word
    assert "没有这个词吧" not in built.FREQ and "没有这个词吧" not in reloaded.FREQ
    assert built.total == reloaded.total > 0


def test_threads_building_the_same_shard_keep_the_words_they_set():
    # 一 has the biggest shard (thousands of words): slow enough to build that, with
    # the GIL switching every microsecond, threads interleave while building it.
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        for _ in range(5):
            tokenizer = _fresh_tokenizer()
            barrier = threading.Barrier(8)
            found: list[int | None] = []

            def work(n: int, tokenizer: jieba.Tokenizer = tokenizer, barrier: threading.Barrier = barrier,
                     found: list[int | None] = found) -> None:
                barrier.wait()
                if n % 2:
                    tokenizer.FREQ[f"一{n}号词"] = 10 + n
                else:
                    found.append(tokenizer.FREQ.get("一帆风顺"))

            threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            assert {n: tokenizer.FREQ.get(f"一{n}号词") for n in range(1, 8, 2)} == {n: 10 + n for n in range(1, 8, 2)}
            assert len(found) == 4 and all(found) and tokenizer.FREQ.get("一帆风顺") == found[0]
    finally:
        sys.setswitchinterval(interval)


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
