"""The document store: the knowledge base's source of truth, one SQLite file.

The search index is derived from it and can always be rebuilt from it
(`scripts/reindex.py`). Several processes use the file at once: WAL mode lets readers
run beside the one writer, and writers wait for each other up to `busy_timeout`.

Every change (upsert or delete) takes the next number of one global sequence. An index
remembers the last number it applied, so "what changed since" is one query: that is how
every process brings the shared index up to date and how a rebuild catches up with
documents added while it ran (see `core/knowledge/index.py`).
"""
from __future__ import annotations

import json
import sqlite3
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from core.errors import ServerBusy

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    content TEXT NOT NULL,
    category TEXT NOT NULL DEFAULT '',
    tags TEXT NOT NULL DEFAULT '[]',
    source TEXT NOT NULL DEFAULT '',
    created_at REAL NOT NULL,
    updated_at REAL NOT NULL,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS documents_seq ON documents (seq);
CREATE TABLE IF NOT EXISTS deleted (
    id TEXT PRIMARY KEY,
    seq INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS deleted_seq ON deleted (seq);
CREATE TABLE IF NOT EXISTS meta (
    key TEXT PRIMARY KEY,
    value INTEGER NOT NULL
);
INSERT OR IGNORE INTO meta (key, value) VALUES ('seq', 0);
"""
_COLUMNS = "id, title, content, category, tags, source, created_at, updated_at"


def _iso(ts: float) -> str:
    return datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Document:
    """A knowledge document. `id` empty means "make one up" when upserted; the
    timestamps are set by the store."""

    id: str
    title: str
    content: str
    category: str = ""
    tags: tuple[str, ...] = ()
    source: str = ""
    created_at: float = 0.0
    updated_at: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        """The API shape: tags as a list, timestamps as ISO 8601 (UTC)."""
        return {"id": self.id, "title": self.title, "content": self.content,
                "category": self.category, "tags": list(self.tags), "source": self.source,
                "created_at": _iso(self.created_at), "updated_at": _iso(self.updated_at)}

    def same_content(self, other: Document) -> bool:
        """Whether two versions differ in nothing but their timestamps."""
        return (self.title, self.content, self.category, self.tags, self.source) == \
            (other.title, other.content, other.category, other.tags, other.source)


@dataclass
class Changes:
    """What changed after some sequence number: documents to (re)index, ids to drop."""

    upserted: list[Document] = field(default_factory=list)
    deleted: list[str] = field(default_factory=list)
    seq: int = 0  # the store's sequence number these changes bring an index up to


def _damaged(exc: sqlite3.OperationalError) -> bool:
    # Most damage is a DatabaseError ("file is not a database", "malformed"); a few
    # forms come as OperationalError.
    return "malformed" in str(exc) or "corrupt" in str(exc)


def new_id() -> str:
    """A fresh document id."""
    return uuid.uuid4().hex


def _row_to_doc(row: Sequence[Any]) -> Document:
    return Document(id=row[0], title=row[1], content=row[2], category=row[3],
                    tags=tuple(json.loads(row[4])), source=row[5],
                    created_at=row[6], updated_at=row[7])


class CorruptStore(RuntimeError):
    """The document store's file is damaged: the service must not start on it (the
    index would be rebuilt from what is left, or from nothing)."""


class DocumentStore:
    """Documents in `path` (SQLite). Thread-safe: one connection per thread."""

    def __init__(self, path: Path, *, busy_timeout: float = 10.0,
                 verify: bool = False) -> None:
        self.path = Path(path)
        self.busy_timeout = busy_timeout
        self._local = threading.local()
        self._connections: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            if verify:
                self.verify()
            with self._busy():
                conn = self._conn()
                conn.execute("PRAGMA journal_mode=WAL")  # persistent: set once per file
                conn.executescript("BEGIN IMMEDIATE;" + _SCHEMA + "COMMIT;")
        except sqlite3.DatabaseError as exc:
            if isinstance(exc, sqlite3.OperationalError) and not _damaged(exc):
                raise
            self.close()
            raise CorruptStore(f"{self.path.name} is damaged ({exc}); restore it from a "
                               f"backup (the search index is derived from it)") from None

    def verify(self) -> None:
        """Raise CorruptStore unless SQLite's own integrity check passes. Reads the whole
        file (about 10 ms per MB): for start-up."""
        if not self.path.exists():
            return
        with self._busy():
            rows = self._conn().execute("PRAGMA integrity_check(3)").fetchall()
        if [r[0] for r in rows] != ["ok"]:
            self.close()
            problems = " ".join("; ".join(str(r[0]) for r in rows).split())  # one line
            raise CorruptStore(f"{self.path.name} failed SQLite's integrity check ({problems}); "
                               f"restore it from a backup (the search index is derived from it)")

    # --- connections ---

    def _conn(self) -> sqlite3.Connection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            # Autocommit mode; transactions are explicit (BEGIN IMMEDIATE for writes, so
            # two writers queue for the lock instead of failing on upgrade).
            conn = sqlite3.connect(self.path, timeout=self.busy_timeout, isolation_level=None,
                                   check_same_thread=False)
            conn.execute("PRAGMA synchronous=FULL")  # an acknowledged add survives a power cut
            self._local.conn = conn
            with self._lock:
                self._connections.append(conn)
        return conn

    @contextmanager
    def _busy(self) -> Iterator[None]:
        """Turn "database is locked" after `busy_timeout` into ServerBusy."""
        try:
            yield
        except sqlite3.OperationalError as exc:
            if "locked" in str(exc) or "busy" in str(exc):
                raise ServerBusy("知识库正忙，请稍后再试", retry_after=1) from None
            raise

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        conn = self._conn()
        with self._busy():
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            try:
                conn.execute("COMMIT")
            except sqlite3.Error:
                # A commit the disk refused is rolled back by SQLite; make sure this
                # thread's connection is not left inside the transaction.
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise

    @contextmanager
    def _read(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees one consistent snapshot."""
        conn = self._conn()
        with self._busy():
            conn.execute("BEGIN")
            try:
                yield conn
            finally:
                conn.execute("COMMIT")

    def close(self) -> None:
        """Close every thread's connection."""
        with self._lock:
            for conn in self._connections:
                conn.close()
            self._connections.clear()
        self._local = threading.local()

    # --- writes ---

    def upsert(self, docs: Iterable[Document]) -> tuple[list[str], int]:
        """Insert or replace documents by id (an empty id gets a new one), in one
        transaction. A document identical to the stored one is left as it is.

        Returns the ids (in order) and the sequence number of the last change (the
        current one when nothing changed).
        """
        now = time.time()
        ids: list[str] = []
        with self._write() as conn:
            seq = conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
            for doc in docs:
                if not doc.id:
                    doc = replace(doc, id=new_id())
                ids.append(doc.id)
                row = conn.execute(f"SELECT {_COLUMNS} FROM documents WHERE id = ?", (doc.id,)).fetchone()
                old = _row_to_doc(row) if row else None
                if old is not None and old.same_content(doc):
                    continue
                seq += 1
                conn.execute(
                    f"INSERT OR REPLACE INTO documents ({_COLUMNS}, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    (doc.id, doc.title, doc.content, doc.category,
                     json.dumps(list(doc.tags), ensure_ascii=False), doc.source,
                     old.created_at if old else now, now, seq))
                conn.execute("DELETE FROM deleted WHERE id = ?", (doc.id,))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (seq,))
        return ids, seq

    def delete(self, doc_id: str) -> int | None:
        """Delete a document; returns the change's sequence number, None if unknown."""
        with self._write() as conn:
            if conn.execute("DELETE FROM documents WHERE id = ?", (doc_id,)).rowcount == 0:
                return None
            seq = int(conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]) + 1
            conn.execute("INSERT OR REPLACE INTO deleted (id, seq) VALUES (?, ?)", (doc_id, seq))
            conn.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (seq,))
        return seq

    def prune_deleted(self, upto: int) -> None:
        """Forget deletions up to `upto`: no index needs to replay them any more."""
        with self._write() as conn:
            conn.execute("DELETE FROM deleted WHERE seq <= ?", (upto,))

    # --- reads ---

    def get(self, doc_id: str) -> Document | None:
        """The document with this id, or None."""
        with self._busy():
            row = self._conn().execute(f"SELECT {_COLUMNS} FROM documents WHERE id = ?",
                                       (doc_id,)).fetchone()
        return _row_to_doc(row) if row else None

    def count(self) -> int:
        """How many documents there are."""
        with self._busy():
            return int(self._conn().execute("SELECT count(*) FROM documents").fetchone()[0])

    def seq(self) -> int:
        """The sequence number of the latest change."""
        with self._busy():
            return int(self._conn().execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])

    def __iter__(self) -> Iterator[Document]:
        """Every document, by id."""
        with self.snapshot() as (_, _, docs):
            yield from docs

    @contextmanager
    def snapshot(self) -> Iterator[tuple[int, int, Iterator[Document]]]:
        """(seq, count, documents) of one consistent moment: the documents are exactly
        the store after change `seq`, however long the caller takes to read them."""
        with self._read() as conn:
            seq = conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
            total = conn.execute("SELECT count(*) FROM documents").fetchone()[0]
            cursor = conn.execute(f"SELECT {_COLUMNS} FROM documents ORDER BY id")
            yield seq, total, (_row_to_doc(row) for row in cursor)

    def list_page(self, *, limit: int, offset: int, category: str = "") -> tuple[int, list[dict[str, Any]]]:
        """(total, one page of summaries), the latest updated first: id, title, category,
        tags and updated_at, in one snapshot. The content is never read, so a page costs
        the same however long the documents are."""
        where, args = ("WHERE category = ?", (category,)) if category else ("", ())
        with self._read() as conn:
            total = conn.execute(f"SELECT count(*) FROM documents {where}", args).fetchone()[0]
            rows = conn.execute(
                f"SELECT id, title, category, tags, updated_at FROM documents {where} "
                "ORDER BY updated_at DESC, id LIMIT ? OFFSET ?", (*args, limit, offset)).fetchall()
        return total, [{"id": row[0], "title": row[1], "category": row[2], "tags": json.loads(row[3]),
                        "updated_at": _iso(row[4])} for row in rows]

    def changes_since(self, seq: int) -> Changes:
        """Everything that changed after `seq`, as of now, in one snapshot."""
        with self._read() as conn:
            now = conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
            if now <= seq:
                return Changes(seq=now)
            upserted = [_row_to_doc(row) for row in conn.execute(
                f"SELECT {_COLUMNS} FROM documents WHERE seq > ? ORDER BY seq", (seq,))]
            deleted = [row[0] for row in conn.execute(
                "SELECT id FROM deleted WHERE seq > ? ORDER BY seq", (seq,))]
        return Changes(upserted=upserted, deleted=deleted, seq=now)
