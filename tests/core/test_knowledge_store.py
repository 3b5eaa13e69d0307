"""The document store: durable upserts, deletes and the change sequence indexes follow."""
from __future__ import annotations

import time

import pytest

from core.knowledge.store import Document, DocumentStore


@pytest.fixture
def store(tmp_path):
    s = DocumentStore(tmp_path / "documents.sqlite3")
    yield s
    s.close()


def doc(doc_id: str = "", title: str = "标题", content: str = "内容", **kw) -> Document:
    return Document(id=doc_id, title=title, content=content, **kw)


def test_upsert_get_count_iterate(store):
    ids, seq = store.upsert([doc("b", tags=("甲", "乙"), category="方法", source="来源"), doc("a")])
    assert ids == ["b", "a"] and seq == 2
    got = store.get("b")
    assert (got.title, got.tags, got.category, got.source) == ("标题", ("甲", "乙"), "方法", "来源")
    assert got.created_at == got.updated_at > 0
    assert store.count() == 2
    assert [d.id for d in store] == ["a", "b"]
    assert store.get("nope") is None


def test_missing_id_is_generated(store):
    (new_id,), _ = store.upsert([doc()])
    assert len(new_id) == 32 and store.get(new_id).title == "标题"


def test_update_keeps_created_at_and_unchanged_documents_are_not_rewritten(store):
    store.upsert([doc("a", content="旧")])
    created = store.get("a").created_at
    time.sleep(0.01)
    _, seq = store.upsert([doc("a", content="新")])
    updated = store.get("a")
    assert updated.content == "新" and updated.created_at == created and updated.updated_at > created
    assert store.upsert([doc("a", content="新")]) == (["a"], seq)  # no change, no new number


def test_delete_and_changes_since(store):
    store.upsert([doc("a"), doc("b")])
    base = store.seq()
    store.upsert([doc("c")])
    assert store.delete("a") == base + 2
    assert store.delete("a") is None
    changes = store.changes_since(base)
    assert [d.id for d in changes.upserted] == ["c"] and changes.deleted == ["a"]
    assert changes.seq == store.seq()
    # Re-adding a deleted document clears its deletion.
    store.upsert([doc("a")])
    assert store.changes_since(base).deleted == []
    assert store.changes_since(store.seq()).upserted == []


def test_documents_survive_reopening(tmp_path):
    first = DocumentStore(tmp_path / "d.sqlite3")
    first.upsert([doc("keep", title="保留")])
    first.close()
    second = DocumentStore(tmp_path / "d.sqlite3")
    assert second.get("keep").title == "保留"
    with second.snapshot() as (seq, total, docs):
        assert (seq, total, [d.id for d in docs]) == (1, 1, ["keep"])
    second.close()
