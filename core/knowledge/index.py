"""The shared Whoosh index: its schema, where it lives, how every process keeps it
current, and how `scripts/reindex.py` replaces it without anyone noticing.

Layout under `DATA_DIR/knowledge/`:

    documents.sqlite3   the document store (the source of truth)
    CURRENT             the name of the live index directory (replaced atomically)
    indexes/<name>/     Whoosh files, plus APPLIED (the last store change it holds)
                        and APPLY.lock (who may write it)

Writing (any process). An add first commits to the store, which gives it a change number
`seq`, then waits until the live index has APPLIED >= seq. Whoever gets APPLY.lock applies
*every* store change after APPLIED (its own and anybody else's), commits, and writes
APPLIED before releasing the lock. So concurrent adds from several processes share
commits, nothing is ever dropped (the store has it; the next holder applies it), and an
add that waited too long gets ServerBusy with its document safe in the store.

Reading. A searcher per thread; before each search it checks (one stat of CURRENT, one
listdir of the index) whether CURRENT names another directory or the index has a newer
commit, and if so opens a fresh one. An add therefore shows in every process's next
search: its answer is sent only after the commit that holds it.

Rebuilding. `rebuild()` writes a whole new directory from one snapshot of the store,
applies the changes made meanwhile, then takes the *old* index's APPLY.lock, applies the
last few changes and replaces CURRENT. A writer that was waiting for the old lock re-reads
CURRENT once it gets it and moves on to the new index, so no add lands in the old index
after the switch, and every add before it is in the store the rebuild catches up from.
(Belt and braces: a writer returns only when the index that is live *now* has its
change, so even a write that raced the switch is applied to the new index.)

Healing. The index is derived data: when it cannot be read (a damaged segment, a deleted
directory, a CURRENT naming nothing) `core/knowledge/healing.py` rebuilds it from the
store in the background under the same .reindex.lock, so one process of the fleet
rebuilds and the others wait for its switch.
"""
from __future__ import annotations

import errno
import fcntl
import itertools
import logging
import math
import multiprocessing
import os
import random
import re
import shutil
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from whoosh import index as whoosh_index
from whoosh.codec.base import Segment
from whoosh.fields import ID, KEYWORD, STORED, TEXT, Schema
from whoosh.index import FileIndex
from whoosh.reading import IndexReader, MultiReader, SegmentReader, TermNotFound
from whoosh.scoring import BM25F
from whoosh.searching import Searcher
from whoosh.writing import NO_MERGE, SegmentWriter

from core.errors import ServerBusy
from core.knowledge.analyzer import ANALYZER, IndexPositions, cuts
from core.knowledge.codec import KnowledgeCodec, add_segment
from core.knowledge.passages import split_passages
from core.knowledge.store import Changes, Document, DocumentStore

log = logging.getLogger("shenlun.knowledge")

POINTER = "CURRENT"
APPLIED = "APPLIED"
APPLY_LOCK = "APPLY.lock"
REINDEX_LOCK = ".reindex.lock"  # held by whoever rebuilds: one rebuild per data directory
_NAME = re.compile(r"^index-[0-9A-Za-z.\-]{1,80}$")

def _text(**kwargs: object) -> TEXT:
    # A phrase-searchable text field whose postings are gathered by IndexPositions.
    field = TEXT(analyzer=ANALYZER, phrase=True, **kwargs)
    field.format = IndexPositions(field_boost=field.format.field_boost)
    return field


SCHEMA = Schema(
    pid=ID(stored=True, unique=True),          # passage id: "<doc id>#<n>"
    doc_id=ID(stored=True, sortable=True),  # a column: hits map to documents without stored fields
    title=_text(stored=True),
    content=_text(stored=True),  # the passage's text
    cuts=STORED(),  # jieba's word boundaries in content (analyzer.cuts): snippets without jieba
    category=ID(stored=True),
    tags=KEYWORD(stored=True, commas=True, scorable=False),
    source=STORED(),
    created_at=STORED(),
    updated_at=STORED(),
)
WEIGHTING = BM25F(B=0.75, K1=1.2)
# Every writer here writes through it (core/knowledge/codec.py): the same W3 files,
# rare terms inlined, posting lists written a term at a time.
CODEC = KnowledgeCodec()
# Size-tiered merging: a segment's tier is log_MERGE_FACTOR of its passages, and the
# segments of a tier are merged together (with all smaller ones) only once
# MERGE_FACTOR of them have piled up. So a merge takes only segments of similar, small
# sizes; a passage is rewritten about log_MERGE_FACTOR(N) times in its life, and the
# big segment a rebuild wrote is not rewritten by the adds after it.
MERGE_FACTOR = 8
# A one-document add's commit does not merge: merging is compact()'s, run when the adds
# pause (KnowledgeBase schedules it). Only past MAX_SEGMENTS segments (adds that never
# pause) does a commit merge itself, so searches never face more than that many. A
# commit whose own segment is of tier 1 or more (a batch) does merge when it fills its
# tier: left to a pause that never came, the segments of a run of batches were all
# merged at once by the first crowded single add (a 3 s answer; b5 measured 8 single
# adds/s right after 1,000 documents in batches of 50).
MAX_SEGMENTS = 32
REBUILD_LIMIT_MB = 128  # Whoosh's posting pool per writer process before it spills to disk


# --- small file helpers ---

def _write_atomic(path: Path, text: str, *, durable: bool = True) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        if durable:
            os.fsync(fh.fileno())
    os.replace(tmp, path)
    if not durable:
        return
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)  # the rename itself survives a crash
    finally:
        os.close(dir_fd)


def read_applied(path: Path) -> int:
    """The last store change an index directory holds (0 when none)."""
    try:
        return int((path / APPLIED).read_text().strip() or 0)
    except FileNotFoundError:
        return 0


@contextmanager
def file_lock(path: Path, *, timeout: float | None, poll: float = 0.005) -> Iterator[bool]:
    """Hold an exclusive flock on `path` for the body; yields False (and holds nothing)
    when `timeout` passed first. timeout=None waits for ever, 0 tries once."""
    deadline = None if timeout is None else time.monotonic() + timeout
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except OSError as exc:
                if exc.errno not in (errno.EAGAIN, errno.EACCES):
                    raise
            if deadline is not None and time.monotonic() >= deadline:
                yield False
                return
            # Jitter: several processes polling in step would keep colliding.
            time.sleep(poll * (0.5 + random.random()))
            poll = min(poll * 1.5, 0.05)
        try:
            yield True
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _passages(doc: Document) -> Iterator[dict[str, object]]:
    for n, text in enumerate(split_passages(doc.content)):
        yield {"pid": f"{doc.id}#{n}", "doc_id": doc.id, "title": doc.title, "content": text,
               "cuts": cuts(text),
               "category": doc.category, "tags": ",".join(doc.tags), "source": doc.source,
               "created_at": doc.created_at, "updated_at": doc.updated_at}


def add_passages(writer: SegmentWriter, doc: Document) -> int:
    """Add a document's passages (none of it may be in the index yet); returns how many."""
    written = 0
    for fields in _passages(doc):
        writer.add_document(**fields)
        written += 1
    return written


def apply_changes(writer: SegmentWriter, changes: Changes,
                  readers: PostingReaders | None = None) -> int:
    """Bring an index (through its writer) in line with a batch of store changes.
    Idempotent: applying the same changes twice leaves the same index. Returns the
    number of passages written. `readers`: kept segment readers to find the passages
    to delete with (else Whoosh opens a reader of every segment)."""
    gone = [*changes.deleted, *(doc.id for doc in changes.upserted)]
    if readers is not None:
        readers.delete(writer, gone)
    else:
        for doc_id in gone:
            writer.delete_by_term("doc_id", doc_id)
    written = 0
    for doc in changes.upserted:
        written += add_passages(writer, doc)
    return written


class PostingReaders:
    """Segment readers kept across commits, for finding a document's passages.

    A segment's postings never change once written (only its deletion set does, and
    that lives in the writer's Segment objects), so a reader opened for one commit
    serves every later one. Whoosh's delete_by_term opens a reader of every segment
    per call: at 40 segments that was 60 ms of a one-document add. For the same reason
    a segment's set of document ids is read once: a new document (most adds) is then
    looked for in no segment's term table (~50 µs a segment, 1.5 ms of an add).
    """

    def __init__(self) -> None:
        self._readers: dict[str, SegmentReader] = {}
        self._doc_ids: dict[str, frozenset[bytes]] = {}
        self._lock = threading.Lock()

    def delete(self, writer: SegmentWriter, doc_ids: list[str]) -> int:
        """Mark deleted, in `writer`, every live passage of the documents; returns how many."""
        if not doc_ids:
            return 0
        with self._lock:
            live = {seg.segment_id() for seg in writer.segments}
            for sid in [sid for sid in self._readers if sid not in live]:  # merged away meanwhile
                self._readers.pop(sid).close()
            self._doc_ids = {sid: ids for sid, ids in self._doc_ids.items() if sid in live}
            wanted = [doc_id.encode("utf-8") for doc_id in doc_ids]
            deleted, offset = 0, 0
            for seg in writer.segments:
                sid = seg.segment_id()
                present = self._doc_ids.get(sid)
                if present is None:
                    present = self._doc_ids[sid] = frozenset(self._reader(writer, seg).lexicon("doc_id"))
                for doc_id in (d for d, raw in zip(doc_ids, wanted, strict=True) if raw in present):
                    for n in _term_docs(self._reader(writer, seg), "doc_id", doc_id):
                        if not seg.is_deleted(n):
                            writer.delete_document(offset + n)
                            deleted += 1
                offset += seg.doc_count_all()
            return deleted

    def written(self, segment_id: str, doc_ids: Iterable[str]) -> None:
        """Record the documents a new segment holds (all its passages came from them),
        so the next deletes need not open it to know."""
        with self._lock:
            self._doc_ids[segment_id] = frozenset(doc_id.encode("utf-8") for doc_id in doc_ids)

    def _reader(self, writer: SegmentWriter, seg: Segment) -> SegmentReader:
        reader = self._readers.get(seg.segment_id())
        if reader is None:
            reader = self._readers[seg.segment_id()] = SegmentReader(writer.storage, writer.schema, seg)
        return reader

    def close(self) -> None:
        with self._lock:
            for reader in self._readers.values():
                reader.close()
            self._readers = {}
            self._doc_ids = {}


def _term_docs(reader: SegmentReader, field_name: str, text: str) -> list[int]:
    # The raw postings (Whoosh's postings() filters by the reader's own, possibly older,
    # deletion set; the caller checks the current one).
    try:
        matcher = reader._terms.matcher(field_name, reader._text_to_bytes(field_name, text),
                                        reader.schema[field_name].format)
    except (TermNotFound, KeyError):
        return []
    return list(matcher.all_ids())


def _tier(passages: int) -> int:
    return 0 if passages < MERGE_FACTOR else int(math.log(passages, MERGE_FACTOR))


def to_merge(segments: list[Segment], adding: int = 0) -> list[Segment]:
    """The segments merge_tiered would merge (none: nothing to do): those of the lowest
    tier that holds MERGE_FACTOR of them, and all smaller ones. `adding`: the passages of
    the committing writer's own new segment, which counts in its tier."""
    tiers: dict[int, int] = {_tier(adding): 1} if adding else {}
    for seg in segments:
        tier = _tier(seg.doc_count_all())
        tiers[tier] = tiers.get(tier, 0) + 1
    full = [tier for tier, count in tiers.items() if count >= MERGE_FACTOR]
    if not full:
        return []
    return [seg for seg in segments if _tier(seg.doc_count_all()) <= min(full)]


def merge_tiered(writer: SegmentWriter, segments: list[Segment]) -> list[Segment]:
    """Whoosh merge policy (see MERGE_FACTOR): merges `to_merge(segments)` into the
    writer's new segment; returns the segments left as they are."""
    merged = to_merge(segments, writer.docnum - writer.docbase)
    for seg in merged:
        reader = SegmentReader(writer.storage, writer.schema, seg)
        try:
            add_segment(writer, reader)
        finally:
            reader.close()
    ids = {seg.segment_id() for seg in merged}
    return [seg for seg in segments if seg.segment_id() not in ids]


def busy() -> ServerBusy:
    """The error of a write that waited too long for the index (its document is stored)."""
    return ServerBusy("知识库写入繁忙，请稍后重试（文档已保存，稍后即可检索）", retry_after=1)


class RebuildRunning(RuntimeError):
    """Another process (or scripts/reindex.py) is rebuilding this index now."""


@dataclass
class RebuildStats:
    documents: int
    passages: int
    name: str


class SharedIndex:
    """The live index of one data directory, as seen by this process."""

    def __init__(self, root: Path, store: DocumentStore, *, write_timeout: float = 10.0) -> None:
        self.root = Path(root)
        self.store = store
        self.write_timeout = write_timeout
        self.indexes = self.root / "indexes"
        self.indexes.mkdir(parents=True, exist_ok=True)
        self._pointer: tuple[tuple[int, int, int], str] | None = None
        # Paths as strings, joined once: a Path join costs about what the stat does,
        # and version() stats two files for every cached chat answer with knowledge.
        self._pointer_file = os.fspath(self.root / POINTER)
        self._applied_file = ("", "")  # (index name, its APPLIED file)
        self._applied: tuple[tuple[str, int, int, int], str] | None = None  # (stat of APPLIED, version)
        self._open_indexes: dict[str, FileIndex] = {}
        self._local = threading.local()
        self._searchers: dict[int, Searcher] = {}
        self._lock = threading.Lock()
        self._posting_readers = PostingReaders()

    # --- where the live index is ---

    def current_name(self) -> str | None:
        """The name of the live index directory (None before there is one). One stat
        per call; the file is read only when it was replaced."""
        try:
            st = os.stat(self._pointer_file)
        except FileNotFoundError:
            return None
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        cached = self._pointer
        if cached is not None and cached[0] == key:
            return cached[1]
        name = (self.root / POINTER).read_text(encoding="utf-8").strip()
        if not _NAME.match(name):
            raise RuntimeError(f"{self.root / POINTER} names no index: {name!r}")
        self._pointer = (key, name)
        return name

    def path(self, name: str) -> Path:
        return self.indexes / name

    def _index(self, name: str) -> FileIndex:
        with self._lock:
            ix = self._open_indexes.get(name)
            if ix is None:
                ix = whoosh_index.open_dir(str(self.path(name)), schema=SCHEMA)
                # Forget indexes no longer live (a rebuild replaced them).
                self._open_indexes = {k: v for k, v in self._open_indexes.items()
                                      if k == self._pointer_name()}
                self._open_indexes[name] = ix
            return ix

    def _pointer_name(self) -> str | None:
        return self._pointer[1] if self._pointer else None

    def ensure(self) -> None:
        """Create an empty live index if there is none (safe when several processes
        start at once), then apply store changes it lacks."""
        if self.current_name() is None:
            with file_lock(self.root / ".init.lock", timeout=None):
                if self.current_name() is None:
                    name = create_index_dir(self.indexes)
                    _write_atomic(self.root / POINTER, name + "\n")
                    log.info("created an empty knowledge index %s", name)
        try:
            self.sync(self.store.seq())
        except ServerBusy:
            log.warning("knowledge index busy at start-up; it will catch up on the next write")

    # --- writing ---

    def try_sync(self, seq: int) -> bool:
        """One attempt, never waiting for the lock: True once the live index holds store
        change `seq` (and all before it), applying the pending changes itself if the
        write lock is free; False when somebody else is writing (try again shortly)."""
        name = self._live()
        if read_applied(self.path(name)) >= seq:
            return True
        with file_lock(self.path(name) / APPLY_LOCK, timeout=0) as held:
            # Re-read CURRENT under the lock: a rebuild switches while holding it.
            if held and self.current_name() == name:
                self._catch_up(name)
        return read_applied(self.path(self._live())) >= seq

    def sync(self, seq: int, timeout: float | None = None) -> None:
        """`try_sync` until it succeeds; ServerBusy after `timeout` (default
        `write_timeout`) seconds. Blocks the calling thread: for scripts and start-up."""
        deadline = time.monotonic() + (self.write_timeout if timeout is None else timeout)
        delay = 0.002
        while not self.try_sync(seq):
            if time.monotonic() >= deadline:
                raise busy()
            time.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)

    def version(self) -> str:
        """Changes whenever what a search can find may have changed: the live index's
        name (a rebuild) and the last store change it holds (an add or delete). Two
        stats; APPLIED is read only when it was replaced (~5 µs, not ~40: every cached
        chat answer with knowledge asks, on the event loop)."""
        name = self._live()
        named = self._applied_file
        if named[0] != name:
            self._applied_file = named = (name, os.fspath(self.path(name) / APPLIED))
        try:
            st = os.stat(named[1])
        except FileNotFoundError:
            return f"{name}:0"
        # APPLIED is only ever replaced (os.replace of a new file): a new inode or mtime.
        stamp = (name, st.st_ino, st.st_mtime_ns, st.st_size)
        known = self._applied
        if known is not None and known[0] == stamp:
            return known[1]
        version = f"{name}:{read_applied(self.path(name))}"
        self._applied = (stamp, version)
        return version

    def _live(self) -> str:
        name = self.current_name()
        if name is None:
            raise RuntimeError("no knowledge index: call ensure() first")
        return name

    def _catch_up(self, name: str) -> None:
        """Apply every store change after APPLIED to index `name`. Hold its APPLY.lock."""
        path = self.path(name)
        applied = read_applied(path)
        changes = self.store.changes_since(applied)
        if changes.seq <= applied:
            return
        if changes.upserted or changes.deleted:
            # ours is the only writer: Whoosh's own lock is free
            writer = self._index(name).writer(timeout=5.0, codec=CODEC)
            try:
                written = apply_changes(writer, changes, self._posting_readers)
            except BaseException:
                writer.cancel()
                raise
            merging = len(writer.segments) + 1 >= MAX_SEGMENTS or \
                (_tier(written) >= 1 and bool(to_merge(writer.segments, written)))
            new_segment = writer.newsegment.segment_id()
            try:
                writer.commit(mergetype=merge_tiered if merging else NO_MERGE)
            except BaseException:
                _release_failed_commit(writer)
                raise
            if not merging:  # the new segment holds these documents' passages and no others
                self._posting_readers.written(new_segment, (doc.id for doc in changes.upserted))
        # Not fsynced: the store is what makes an add durable. APPLIED only says how far
        # this index got, and applying changes again is harmless, so a lost update of it
        # (a power cut) costs a re-apply, never a document.
        _write_atomic(path / APPLIED, f"{changes.seq}\n", durable=False)

    def compact(self, rounds: int = 4) -> int:
        """Merge the small segments the adds left (merge_tiered), unless somebody is
        writing (then they stay for the next pause). Returns the merges made. Blocking:
        for an executor thread when the adds pause."""
        merges = 0
        for _ in range(rounds):
            name = self._live()
            if not to_merge(self._index(name)._segments()):
                break
            with file_lock(self.path(name) / APPLY_LOCK, timeout=0) as held:
                if not held or self.current_name() != name:
                    break
                self._catch_up(name)
                writer = self._index(name).writer(timeout=5.0, codec=CODEC)
                try:
                    writer.commit(mergetype=merge_tiered)
                except BaseException:
                    _release_failed_commit(writer)
                    raise
            merges += 1
        return merges

    # --- reading ---

    def searcher(self) -> Searcher:
        """This thread's searcher on the latest commit of the live index."""
        name = self._live()
        searcher: Searcher | None = getattr(self._local, "searcher", None)
        if searcher is None or self._local.name != name or not searcher.up_to_date():
            same = searcher if searcher is not None and self._local.name == name else None
            if searcher is not None and same is None:
                searcher.close()
            searcher = self._open_searcher(name, same)
        self._local.searcher, self._local.name = searcher, name
        with self._lock:
            self._searchers[threading.get_ident()] = searcher
        return searcher

    def _open_searcher(self, name: str, old: Searcher | None) -> Searcher:
        # Readers of the segments that did not change since `old` (same id, same
        # deletions) are kept: after an add only its new segment is opened, not all of
        # them (~1.5 ms each). Not Searcher.refresh(): that one, when another process's
        # merge deletes a file under it, retries with readers it already closed.
        ix = self._index(name)
        toc = ix._read_toc()
        kept: dict[tuple[str, int], IndexReader] = {}
        if old is not None:
            kept = {(r.segment().segment_id(), r.segment().deleted_count()): r
                    for r, _ in old.reader().leaf_readers()}
        readers: list[IndexReader] = []
        opened: list[IndexReader] = []
        try:
            for seg in toc.segments:
                reader = kept.pop((seg.segment_id(), seg.deleted_count()), None)
                if reader is None:
                    reader = SegmentReader(ix.storage, toc.schema, seg, generation=toc.generation)
                    opened.append(reader)
                readers.append(reader)
        except BaseException:
            for reader in opened:
                reader.close()
            raise
        for reader in kept.values():  # merged away or changed
            reader.close()
        # Always a MultiReader: it carries the generation up_to_date() compares, which
        # a kept SegmentReader would have from its first commit.
        return Searcher(MultiReader(readers, generation=toc.generation), weighting=WEIGHTING, fromindex=ix)

    def forget(self) -> None:
        """Drop this thread's searcher and the open indexes, so the next search opens
        the live index afresh (after a read failed on it)."""
        searcher = getattr(self._local, "searcher", None)
        self._local.searcher = None
        with self._lock:
            self._searchers.pop(threading.get_ident(), None)
            self._open_indexes = {}
        if searcher is not None:
            try:
                searcher.close()
            except Exception:
                log.debug("closing a failed searcher")

    def close(self) -> None:
        """Close every thread's searcher and the kept segment readers."""
        self._posting_readers.close()
        with self._lock:
            for searcher in self._searchers.values():
                searcher.close()
            self._searchers.clear()
        self._local = threading.local()


def _release_failed_commit(writer: SegmentWriter) -> None:
    # A commit that failed half-way (the disk refused a segment file) keeps Whoosh's own
    # write lock, and the next writer of this process would wait for it for ever. The TOC
    # was not replaced, so the index is as before; the next commit cleans the leftovers.
    try:
        writer.cancel()
    except Exception:
        if writer.writelock is not None:
            writer.writelock.release()
        writer.is_closed = True


def create_index_dir(indexes: Path) -> str:
    """A new, empty index directory under `indexes`; returns its name."""
    stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
    name = f"index-{stamp}-{os.getpid()}-{random.randrange(16**6):06x}"
    path = indexes / name
    path.mkdir(parents=True)
    whoosh_index.create_in(str(path), SCHEMA)
    return name


def rebuild(root: Path, store: DocumentStore, *, lock_timeout: float = 60.0,
            progress: Callable[[int, int], None] | None = None,
            unless: Callable[[], bool] | None = None, procs: int = 1,
            limitmb: int = REBUILD_LIMIT_MB) -> RebuildStats | None:
    """Build a new index from the whole store and make it the live one.

    Live processes keep searching the old index until the switch and the new one after;
    documents added or deleted while this runs are applied before the switch (see the
    module docstring). `progress(done, total)` is called as documents are indexed.
    Raises RebuildRunning if another rebuild is running. With `unless`, asked once the
    lock is held: when it answers True nothing is built and None is returned (the healer's
    "somebody fixed it meanwhile"). With `procs` > 1, see _index_in_processes: for
    scripts, not for a server (fork copies only the calling thread).
    """
    root = Path(root)
    indexes = root / "indexes"
    indexes.mkdir(parents=True, exist_ok=True)
    with file_lock(root / REINDEX_LOCK, timeout=0) as held:
        if not held:
            raise RebuildRunning("another reindex is running on this data directory")
        if unless is not None and unless():
            return None
        name = create_index_dir(indexes)
        path = indexes / name
        ix = whoosh_index.open_dir(str(path), schema=SCHEMA)
        with store.snapshot() as (seq, total, docs):
            if procs > 1:
                written = _index_in_processes(ix, list(docs), procs, limitmb, progress)
            else:
                writer = ix.writer(limitmb=limitmb, codec=CODEC)
                try:
                    written = 0
                    for done, doc in enumerate(docs, 1):
                        written += add_passages(writer, doc)
                        if progress:
                            progress(done, total)
                except BaseException:
                    writer.cancel()
                    raise
                writer.commit(merge=False)
        if whoosh_index.open_dir(str(path), schema=SCHEMA).doc_count_all() != written:
            raise RuntimeError(f"the new index holds fewer passages than the {written} written; "
                               f"nothing was switched")
        _write_atomic(path / APPLIED, f"{seq}\n")

        shared = SharedIndex(root, store)
        # Catch up without blocking anyone while there may be a lot to apply...
        shared._catch_up(name)
        try:
            old = shared.current_name()
        except RuntimeError:
            old = None  # CURRENT names no index: nobody can be writing to it
        if old is None or not shared.path(old).is_dir():
            _write_atomic(root / POINTER, name + "\n")
        else:
            # ...then hold the old index's write lock for the last few changes and the switch.
            with file_lock(shared.path(old) / APPLY_LOCK, timeout=lock_timeout) as held_old:
                if not held_old:
                    raise RuntimeError("the live index stayed busy; nothing was switched")
                shared._catch_up(name)
                _write_atomic(root / POINTER, name + "\n")
        store.prune_deleted(read_applied(path))
        _remove_stale(indexes, keep={name, old})
        passages = whoosh_index.open_dir(str(path), schema=SCHEMA).doc_count()
        documents = store.count()
    return RebuildStats(documents=documents, passages=passages, name=name)


def _index_in_processes(ix: FileIndex, docs: list[Document], procs: int, limitmb: int,
                        progress: Callable[[int, int], None] | None) -> int:
    """Index `docs` into the empty index `ix` in `procs` forked processes, each segmenting
    and writing one segment of a contiguous run of documents (so a document's passages
    stay neighbours), then commit them all in one TOC. Returns the passages written.

    Not Whoosh's MpWriter: it hands the sub-processes documents whose fields are
    computed, so the word boundaries (`cuts`, jieba's work) would be made serially in
    the parent.
    """
    bounds = [len(docs) * k // procs for k in range(procs + 1)]
    chunks = [docs[lo:hi] for lo, hi in itertools.pairwise(bounds) if hi > lo]
    writer = ix.writer(codec=CODEC)  # holds the index's lock; its own segment stays empty
    try:
        segments, written, done = [], 0, 0
        with multiprocessing.get_context("fork").Pool(len(chunks)) as pool:
            jobs = [(str(ix.storage.folder), chunk, limitmb) for chunk in chunks]
            for (segment, count), chunk in zip(pool.starmap(_write_segment, jobs), chunks, strict=True):
                segments.append(segment)
                written += count
                done += len(chunk)
                if progress:
                    progress(done, len(docs))
        writer._commit_toc(segments)
        writer._finish()
    except BaseException:
        writer.cancel()
        raise
    return written


def _write_segment(folder: str, docs: list[Document], limitmb: int) -> tuple[Segment, int]:
    # In a sub-process: a segment of `docs`, written but not yet in the TOC (the
    # parent, which holds the lock, commits it), the way MpWriter's sub-writers do.
    # Never _finish()/cancel() here: they remove the temporary folder all the writers
    # of the index share; the parent's writer does that at the end.
    writer = SegmentWriter(whoosh_index.open_dir(folder, schema=SCHEMA), _lk=False, limitmb=limitmb,
                           codec=CODEC)
    try:
        written = sum(add_passages(writer, doc) for doc in docs)
        return writer._finalize_segment(), written
    except BaseException:
        writer._close_segment()
        raise


def _remove_stale(indexes: Path, keep: set[str | None]) -> None:
    # The previous index stays: a process may still be answering from it until its next
    # search. Anything older (or a crashed rebuild's leftovers) goes.
    for entry in indexes.iterdir():
        if entry.is_dir() and _NAME.match(entry.name) and entry.name not in keep:
            shutil.rmtree(entry, ignore_errors=True)
