"""The shared index: writers that wait their turn, and rebuilds that lose nothing.

Two `SharedIndex` objects on one directory stand for two processes (each has its own
searchers, pointer cache and locks, exactly as separate processes would)."""
from __future__ import annotations

import time

import pytest

from core.errors import ServerBusy
from core.knowledge import analyzer
from core.knowledge import index as index_module
from core.knowledge.index import APPLY_LOCK, SharedIndex, file_lock, rebuild
from core.knowledge.search import search
from core.knowledge.store import Document, DocumentStore


@pytest.fixture
def root(tmp_path):
    analyzer.initialize()
    return tmp_path / "knowledge"


def open_process(root):
    store = DocumentStore(root / "documents.sqlite3")
    index = SharedIndex(root, store, write_timeout=0.5)
    index.ensure()
    return store, index


def add(store, index, *docs):
    _, seq = store.upsert(list(docs))
    index.sync(seq)


def found(index, word):
    return sorted(r["id"] for r in search(index.searcher(), word, limit=50).results)


def doc(doc_id, word):
    return Document(doc_id, f"标题{doc_id}", f"正文提到{word}。")


def test_an_add_in_one_process_is_searchable_in_another(root):
    store_a, index_a = open_process(root)
    store_b, index_b = open_process(root)
    assert found(index_b, "qzxshared") == []  # b's searcher is open on the old commit
    add(store_a, index_a, doc("one", "qzxshared"))
    assert found(index_b, "qzxshared") == ["one"]
    store_b.delete("one") and index_b.sync(store_b.seq())
    assert found(index_a, "qzxshared") == []


def test_the_version_follows_every_change_and_rebuild_made_by_any_process(root):
    store_a, index_a = open_process(root)
    store_b, index_b = open_process(root)
    seen = [index_b.version()]
    add(store_a, index_a, doc("one", "qzxversion"))
    seen.append(index_b.version())  # b reads the change a applied
    assert seen[-1] == f"{index_a.current_name()}:{store_a.seq()}" == index_a.version()
    assert index_b.version() == seen[-1]  # unchanged: the same answer from the stat
    store_b.delete("one") and index_b.sync(store_b.seq())
    seen.append(index_a.version())
    rebuild(root, store_a)
    seen.append(index_b.version())  # a rebuild is a new index, whatever it holds
    assert len(set(seen)) == len(seen) == 4


def test_a_busy_index_gives_server_busy_but_keeps_the_document(root):
    store, index = open_process(root)
    live = index.path(index.current_name())
    with file_lock(live / APPLY_LOCK, timeout=0) as held:  # another process is writing
        assert held
        _, seq = store.upsert([doc("waiting", "qzxbusy")])
        assert index.try_sync(seq) is False
        started = time.monotonic()
        with pytest.raises(ServerBusy):
            index.sync(seq)
        assert 0.4 < time.monotonic() - started < 5  # the bound, not much more
    assert store.get("waiting") is not None  # stored, never dropped
    other_store, other = open_process(root)
    add(other_store, other, doc("next", "qzxbusy"))  # the next writer applies it too
    assert found(index, "qzxbusy") == ["next", "waiting"]


def test_rebuild_keeps_what_was_added_and_deleted_while_it_ran(root):
    store, index = open_process(root)
    add(store, index, *[doc(f"old-{n}", "qzxold") for n in range(5)], doc("doomed", "qzxold"))
    writer_store, writer = open_process(root)  # another process, writing during the rebuild
    during = []

    def write_meanwhile(done, total):
        if done == 1:
            add(writer_store, writer, doc("during", "qzxduring"))
            writer_store.delete("doomed")
            writer.sync(writer_store.seq())
            during.append(found(index, "qzxduring"))  # live at once, in the old index

    before = index.current_name()
    stats = rebuild(root, store, progress=write_meanwhile)
    assert during == [["during"]]
    assert index.current_name() == stats.name != before
    assert found(index, "qzxduring") == ["during"]  # no further write needed to see it
    assert found(index, "qzxold") == [f"old-{n}" for n in range(5)]
    assert stats.documents == 6 and stats.passages == 6


def test_one_rebuild_at_a_time_and_old_directories_go(root):
    store, index = open_process(root)
    add(store, index, doc("a", "qzxa"))
    names = [index.current_name()]
    for _ in range(3):
        names.append(rebuild(root, store).name)
    left = sorted(p.name for p in (root / "indexes").iterdir())
    assert left == sorted(names[-2:])  # the live one and its predecessor
    assert found(index, "qzxa") == ["a"]
    with file_lock(root / ".reindex.lock", timeout=0):
        with pytest.raises(RuntimeError, match="another reindex"):
            rebuild(root, store)


def segment_sizes(index):
    return sorted(seg.doc_count_all() for seg in index._index(index.current_name())._segments())


def test_one_document_adds_leave_small_segments_that_a_pause_merges(root, monkeypatch):
    monkeypatch.setattr(index_module, "MAX_SEGMENTS", 12)
    store, index = open_process(root)
    _, other = open_process(root)  # a second process: its searcher keeps readers
    for n in range(20):
        add(store, index, doc(f"d{n}", f"qzxtier{n % 3}"))
        assert f"d{n}" in found(other, f"qzxtier{n % 3}")  # read-your-write after every add
    sizes = segment_sizes(index)
    assert len(sizes) < 12 + index_module.MERGE_FACTOR  # a crowded commit merged
    add(store, index, doc("d3", "qzxtier2"))  # an update deletes through kept readers
    before = {w: found(other, w) for w in ("qzxtier0", "qzxtier1", "qzxtier2")}
    assert "d3" not in before["qzxtier0"] and "d3" in before["qzxtier2"]
    assert index.compact() >= 1
    assert len(segment_sizes(index)) < index_module.MERGE_FACTOR
    assert {w: found(other, w) for w in before} == before  # merging changes no result
    assert index.compact() == 0  # nothing left to merge


def test_batches_merge_when_they_fill_a_tier_and_single_adds_do_not(root):
    store, index = open_process(root)
    _, other = open_process(root)
    batch = index_module.MERGE_FACTOR  # one-passage documents: each batch is a tier-1 segment
    for n in range(index_module.MERGE_FACTOR - 1):
        add(store, index, *(doc(f"b{n}-{k}", f"qzxbatch{k}") for k in range(batch)))
    assert len(segment_sizes(index)) == index_module.MERGE_FACTOR - 1  # no merge yet
    add(store, index, *(doc(f"b7-{k}", f"qzxbatch{k}") for k in range(batch)))  # fills tier 1
    assert segment_sizes(index) == [index_module.MERGE_FACTOR ** 2]  # merged by that commit
    for n in range(index_module.MERGE_FACTOR + 1):  # single adds leave their segments
        add(store, index, doc(f"s{n}", "qzxsingle"))
    assert len(segment_sizes(index)) == index_module.MERGE_FACTOR + 2
    assert len(found(other, "qzxbatch3")) == index_module.MERGE_FACTOR
    assert len(found(other, "qzxsingle")) == index_module.MERGE_FACTOR + 1


def test_a_rebuild_in_two_processes_finds_what_one_process_finds(root):
    store, _ = open_process(root)
    docs = [Document(f"p{n}", f"标题{n}", "\n\n".join(f"第{k}段提到qzxpar{(n + k) % 5}和乡村振兴。" * 20
                                                  for k in range(3))) for n in range(40)]
    store.upsert(docs)
    serial = rebuild(root, store, procs=1)
    one = {w: [r["id"] for r in search(open_process(root)[1].searcher(), w, limit=50).results]
           for w in ("qzxpar1", "乡村振兴", "qzxpar4")}
    parallel = rebuild(root, store, procs=2)
    assert parallel.passages == serial.passages and parallel.documents == 40
    assert len(segment_sizes(open_process(root)[1])) == 2  # one segment per process
    index = open_process(root)[1]
    assert {w: [r["id"] for r in search(index.searcher(), w, limit=50).results] for w in one} == one


def test_an_update_replaces_the_passages_wherever_they_were_written(root):
    # Each process records which documents its own new segments hold; the other one
    # reads a segment's ids itself. Either way the old passages go, and only they.
    store, index = open_process(root)
    other_store, other = open_process(root)
    for n in range(4):
        add(store, index, doc(f"u{n}", f"qzxold{n}"))
    add(store, index, doc("u1", "qzxnew1"))  # this process wrote u1's segment
    add(other_store, other, doc("u2", "qzxnew2"))  # another process did not
    other_store.delete("u3") and other.sync(other_store.seq())
    for searching in (index, other):
        assert [found(searching, f"qzxold{n}") for n in range(4)] == [["u0"], [], [], []]
        assert found(searching, "qzxnew1") == ["u1"] and found(searching, "qzxnew2") == ["u2"]
        assert searching.searcher().doc_count() == 3  # one passage each, no stale copies
