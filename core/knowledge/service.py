"""The knowledge base use cases: validate, then store / index / search off the event loop.

`KnowledgeBase` is what handlers and the chat service use. Every jieba, Whoosh and
SQLite call runs on the executor it is given; only waiting happens on the loop.

Limits (documented in the README): a batch has at most MAX_BATCH documents; title ≤
MAX_TITLE_CHARS, content ≤ MAX_CONTENT_CHARS, category ≤ MAX_CATEGORY_CHARS, at most
MAX_TAGS tags of ≤ MAX_TAG_CHARS each, source ≤ MAX_SOURCE_CHARS; an id is 1–128 of
A–Z a–z 0–9 . _ : - starting with a letter or digit; a search query ≤ MAX_QUERY_CHARS,
limit 1–MAX_LIMIT, offset 0–MAX_OFFSET; a listing page limit 1–MAX_LIST_LIMIT, offset
0–MAX_LIST_OFFSET.
"""
from __future__ import annotations

import asyncio
import logging
import os
import random
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import Executor, Future, ThreadPoolExecutor
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, TypeVar

from pydantic import Field

from core.chat.prompts import Source
from core.errors import IndexUnavailable, InsufficientStorage, InvalidRequest, NotFound
from core.knowledge import analyzer
from core.knowledge import search as searching
from core.knowledge.healing import IndexHealer
from core.knowledge.index import POINTER, SharedIndex, busy
from core.knowledge.store import CorruptStore, Document, DocumentStore
from core.ops.disk import DataDisk, refusal
from core.validation import NOT_STRING, Check, Choice, Query, QueryInt, QueryText, Shape, Text, Words, refuse

MAX_BATCH = 100
MAX_TITLE_CHARS = 200
MAX_CONTENT_CHARS = 50_000
MAX_CATEGORY_CHARS = 50
MAX_TAGS = 20
MAX_TAG_CHARS = 30
MAX_SOURCE_CHARS = 500
MAX_QUERY_CHARS = 200
MAX_LIMIT = 50
MAX_OFFSET = 10_000
DEFAULT_LIMIT = 10
MAX_LIST_LIMIT = 100
MAX_LIST_OFFSET = 1_000_000
DEFAULT_LIST_LIMIT = 20
RESERVED_IDS = frozenset({"search", "add"})  # would collide with /api/knowledge/search|add
ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:\-]{0,127}$")
WRITE_TIMEOUT = 10.0  # seconds an add may wait for the shared index before 503
RETRIEVAL_MEMO_SIZE = 512  # questions whose retrieved passages a process remembers
STORE_FILE = "documents.sqlite3"
# Searches and retrievals are pure CPU under the GIL: every extra thread running one is
# one more contender the event loop waits behind for the GIL (bench/b7_event_loop.py:
# /health p99 79 ms with four CPU threads searching). One thread runs them in turn; on
# two cores more threads bring no more searches per second, only a slower loop.
SEARCH_THREADS = 1
# A search still running this long after it was submitted (waiting for the search
# thread included) stops and answers 503 search_timeout: one runaway query must not
# hold the search thread, and the queue behind it, for long. At 10,000 documents a
# search takes ~10 ms (p99 ~50 ms) on a quiet machine and p99 ~1 s on one with a load
# of 8 on 2 cores (bench/b5_knowledge.py), so only a pathological query or a long queue
# reaches it.
SEARCH_BUDGET_SECONDS = 3.0
# The search thread runs this many nice steps below the event loop (Linux: a thread's
# own priority). On a machine with no idle core the loop waited for a CPU half the time
# while 4 clients searched, then for the GIL the search thread held: /health p99 27-52 ms
# before, 11-27 ms at nice 5 (four alternating runs of bench/b7_event_loop.py at a load
# of 5-7 on 2 cores, docs/benchmarks.md). Searches then get the CPU the loop leaves:
# 26% fewer searches/s on average in those runs (at nice 10, a fifth of them); with an
# idle core nothing changes.
SEARCH_NICE = 5
# Small segments the adds leave are merged this long after the last add or delete of
# this process (SharedIndex.compact), so a run of adds does not pay for merges.
COMPACT_AFTER_SECONDS = 1.0

log = logging.getLogger("shenlun.knowledge")

T = TypeVar("T")


# --- validation ---

def _document_id(value: Any) -> str:
    if not isinstance(value, str):
        raise refuse(NOT_STRING)
    if value and (not ID_PATTERN.match(value) or value in RESERVED_IDS):
        raise refuse("{field} 只能由字母、数字和 . _ : - 组成（1～128 个字符，"
                     "以字母或数字开头），且不能是 search 或 add")
    return value


class DocumentBody(Shape):
    """One document of an add request, as sent."""

    id: Annotated[str, Check(_document_id, {
        "type": "string", "pattern": f"^({ID_PATTERN.pattern[1:-1]})?$", "not": {"enum": sorted(RESERVED_IDS)},
        "description": "省略或为空时自动生成；已存在则替换"})] = ""
    title: Annotated[str, Text(MAX_TITLE_CHARS, required=True)]
    content: Annotated[str, Text(MAX_CONTENT_CHARS, required=True)]
    category: Annotated[str, Text(MAX_CATEGORY_CHARS)] = ""
    tags: Annotated[tuple[str, ...], Words(MAX_TAGS, MAX_TAG_CHARS)] = ()
    source: Annotated[str, Text(MAX_SOURCE_CHARS)] = ""

    def document(self) -> Document:
        return Document(id=self.id, title=self.title.strip(), content=self.content,
                        category=self.category.strip(), tags=self.tags, source=self.source.strip())


class DocumentBatch(Shape):
    """Several documents in one add request."""

    documents: Annotated[tuple[DocumentBody, ...], Field(min_length=1, max_length=MAX_BATCH)]


def parse_document(item: Any, where: str = "") -> Document:
    """One document of an add payload; raises InvalidRequest naming the field."""
    return DocumentBody.parse(item, where).document()


def parse_documents(payload: Any) -> list[Document]:
    """The documents of an add payload: one document, or {"documents": [...]} (1 to
    MAX_BATCH). Raises InvalidRequest naming the field; nothing is stored then."""
    if not isinstance(payload, dict) or "documents" not in payload:
        return [parse_document(payload)]
    docs = [body.document() for body in DocumentBatch.parse(payload).documents]
    seen: set[str] = set()
    for n, doc in enumerate(docs):
        if doc.id and doc.id in seen:
            raise InvalidRequest(f"字段 documents[{n}].id 与前面的文档重复：{doc.id}")
        seen.add(doc.id)
    return docs


_CATEGORY = QueryText(MAX_CATEGORY_CHARS, description="只列出（或只搜索）该分类的文档")


class SearchQuery(Query):
    """The parameters of /api/knowledge/search."""

    repeated = ("tag",)

    q: Annotated[str, QueryText(MAX_QUERY_CHARS, required=True, description=(
        "关键词，空格分隔（默认任一词命中，都命中的排前）；加英文双引号为短语"))]
    limit: Annotated[int, QueryInt(1, MAX_LIMIT)] = DEFAULT_LIMIT
    offset: Annotated[int, QueryInt(0, MAX_OFFSET)] = 0
    category: Annotated[str, _CATEGORY] = ""
    tag: Annotated[tuple[Annotated[str, QueryText(MAX_TAG_CHARS)], ...], Field(max_length=MAX_TAGS)] = ()
    mode: Annotated[str, Choice(searching.MODES, key=lambda v: v.strip().lower())] = "or"


class ListQuery(Query):
    """The parameters of GET /api/knowledge."""

    limit: Annotated[int, QueryInt(1, MAX_LIST_LIMIT)] = DEFAULT_LIST_LIMIT
    offset: Annotated[int, QueryInt(0, MAX_LIST_OFFSET)] = 0
    category: Annotated[str, _CATEGORY] = ""


@dataclass(frozen=True)
class SearchRequest:
    """A validated /api/knowledge/search query."""

    q: str
    limit: int = DEFAULT_LIMIT
    offset: int = 0
    category: str = ""
    tags: tuple[str, ...] = ()
    mode: str = "or"

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> SearchRequest:
        """Validate query-string parameters (name → values); raises InvalidRequest."""
        query = SearchQuery.from_params(params)
        return cls(q=query.q.strip(), limit=query.limit, offset=query.offset, category=query.category.strip(),
                   tags=tuple(t.strip() for t in query.tag if t.strip()), mode=query.mode)


@dataclass(frozen=True)
class ListRequest:
    """A validated GET /api/knowledge query: one page of the document list."""

    limit: int = DEFAULT_LIST_LIMIT
    offset: int = 0
    category: str = ""

    @classmethod
    def from_params(cls, params: Mapping[str, Sequence[str]]) -> ListRequest:
        """Validate query-string parameters (name → values); raises InvalidRequest."""
        query = ListQuery.from_params(params)
        return cls(limit=query.limit, offset=query.offset, category=query.category.strip())


def _no_such_document(doc_id: str) -> NotFound:
    return NotFound(f"知识库中没有 id 为 {doc_id} 的文档")


# --- the service ---

def _lower_priority() -> None:
    # On the search thread, at its start: SEARCH_NICE below the thread that started it.
    try:
        tid = threading.get_native_id()
        os.setpriority(os.PRIO_PROCESS, tid, min(19, os.getpriority(os.PRIO_PROCESS, tid) + SEARCH_NICE))
    except (AttributeError, OSError):  # no per-thread priorities here: the default one
        pass


class KnowledgeBase:
    """The knowledge base of one data directory, for one process."""

    def __init__(self, store: DocumentStore, index: SharedIndex, executor: Executor, *,
                 write_timeout: float = WRITE_TIMEOUT, disk: DataDisk | None = None) -> None:
        self.store = store
        self.index = index
        self.healer = IndexHealer(index)  # every read and index write goes through it
        self.disk = disk
        self.executor = executor
        # Per process: this knowledge base's own search thread(s), see SEARCH_THREADS.
        self._search_executor = ThreadPoolExecutor(SEARCH_THREADS, thread_name_prefix="shenlun-search",
                                                   initializer=_lower_priority)
        self.write_timeout = write_timeout
        # (question, limit) → (index version, passages). Every chat request retrieves
        # before it looks in the response cache (the cache key covers the passages), so
        # without this a cache hit costs a jieba + Whoosh search + snippets (~10 ms of
        # CPU); with it, a repeated question costs a stat and a small read until the
        # index changes. Per process, bounded, least recently used dropped first.
        self._retrieved: OrderedDict[tuple[str, int], tuple[str, list[Source]]] = OrderedDict()
        self._compaction: asyncio.TimerHandle | None = None

    @classmethod
    def open(cls, data_dir: Path, executor: Executor, *, write_timeout: float = WRITE_TIMEOUT,
             disk: DataDisk | None = None) -> KnowledgeBase:
        """Open (creating if needed) the store and the index under `data_dir/knowledge`.

        Blocking (SQLite's integrity check of the store): call at start-up, not on the
        loop of a running server. jieba's dictionaries are loaded by the first
        segmentation, or before it by `warm_up()`. Raises
        CorruptStore for a damaged store; an unreadable index is rebuilt in the
        background (see core/knowledge/healing.py).
        """
        root = Path(data_dir) / "knowledge"
        if (root / POINTER).exists() and not (root / STORE_FILE).exists():
            # An index without its store: starting would serve documents nobody can read,
            # and the first heal would rebuild the index from nothing.
            raise CorruptStore(f"{STORE_FILE} is missing beside an existing index; restore it "
                               f"from a backup, or remove {root.name}/ to start empty")
        store = DocumentStore(root / STORE_FILE, verify=True)  # refuse a damaged one first
        index = SharedIndex(root, store, write_timeout=write_timeout)
        base = cls(store, index, executor, write_timeout=write_timeout,
                   disk=disk or DataDisk(data_dir))
        base.healer.start()
        return base

    def warm_up(self) -> Future[None]:
        """Load jieba's dictionaries (~0.1 s: the user dictionary's shards; the rest is
        built on use) in the executor, so the start-up does not wait for them (a search
        that comes first waits for them on its own thread, never on the loop)."""
        return self.executor.submit(analyzer.initialize)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    async def _run_search(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._search_executor, fn, *args)

    async def search(self, req: SearchRequest) -> dict[str, Any]:
        """The contract's search answer: query, total, took_ms, results. SearchTimeout
        past SEARCH_BUDGET_SECONDS."""
        started = time.perf_counter()
        deadline = time.monotonic() + SEARCH_BUDGET_SECONDS
        page = await self._run_search(self._search, req, deadline)
        return {"query": req.q, "total": page.total,
                "took_ms": round((time.perf_counter() - started) * 1000, 1),
                "results": page.results}

    def _search(self, req: SearchRequest, deadline: float | None = None) -> searching.SearchPage:
        return self.healer.read(lambda searcher: searching.search(
            searcher, req.q, limit=req.limit, offset=req.offset,
            category=req.category, tags=req.tags, mode=req.mode, deadline=deadline))

    async def list_documents(self, req: ListRequest) -> dict[str, Any]:
        """One page of the documents, latest updated first: total, limit, offset, documents."""
        total, page = await self._run(lambda: self.store.list_page(
            limit=req.limit, offset=req.offset, category=req.category))
        return {"total": total, "limit": req.limit, "offset": req.offset, "documents": page}

    async def add(self, docs: Sequence[Document]) -> list[str]:
        """Store documents (upsert by id) and return their ids once every process's
        searches can find them. ServerBusy if the shared index stays busy for
        `write_timeout` seconds; the documents are stored even then."""
        with self._writing():
            ids, seq = await self._run(self.store.upsert, docs)
        await self._sync(seq)
        self._compact_later()
        return ids

    async def get(self, doc_id: str) -> dict[str, Any]:
        """A document as stored; NotFound for an unknown id."""
        doc = await self._run(self.store.get, doc_id)
        if doc is None:
            raise _no_such_document(doc_id)
        return doc.as_dict()

    async def delete(self, doc_id: str) -> None:
        """Delete a document everywhere; NotFound for an unknown id."""
        with self._writing():
            seq = await self._run(self.store.delete, doc_id)
        if seq is None:
            raise _no_such_document(doc_id)
        await self._sync(seq)
        self._compact_later()

    def version(self) -> str | None:
        """The live index's version (`IndexHealer.version`): the chat cache keys on it."""
        return self.healer.version()

    async def retrieve(self, query: str, limit: int) -> list[Source]:
        """The passages most relevant to `query`, best first, above the relevance bar
        (the `Retriever` of core/chat/service.py)."""
        if not query.strip():
            return []
        key = (query, limit)
        version = self.healer.version()
        known = self._retrieved.get(key)
        if known is not None and version is not None and known[0] == version:
            self._retrieved.move_to_end(key)
            return list(known[1])
        sources: list[Source] = await self._run_search(self.healer.read,
                                         lambda searcher: searching.retrieve(searcher, query, limit))
        if version is None:
            return sources
        # Stored under the version read before the search: if the index changed
        # meanwhile, the next call sees a newer version and searches again.
        self._retrieved[key] = (version, sources)
        self._retrieved.move_to_end(key)
        while len(self._retrieved) > RETRIEVAL_MEMO_SIZE:
            self._retrieved.popitem(last=False)
        return list(sources)

    async def count(self) -> int:
        """How many documents the store holds."""
        return await self._run(self.store.count)

    def status(self) -> tuple[str, int]:
        """(index state, document count) for /health: the state is "ok", "empty" (no
        documents), or "rebuilding" (IndexUnavailable). Raises when the store does not
        answer. Blocking: a health probe runs it on its own executor."""
        documents = self.store.count()
        try:
            self.healer.read(lambda searcher: searcher.doc_count())
        except IndexUnavailable:
            return "rebuilding", documents
        return ("ok" if documents else "empty"), documents

    def _writing(self) -> AbstractContextManager[None]:
        # 507 up front while the data directory's disk cannot take writes; the disk
        # refusing one half-way (SQLite rolled it back) is a 507 too.
        return self.disk.writing() if self.disk is not None else nullcontext()

    async def _sync(self, seq: int) -> None:
        # Poll from the loop, one short executor call per try, so waiting for another
        # process's commit never ties up an executor thread.
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.write_timeout
        delay = 0.002
        while not await self._try_sync(seq):
            if loop.time() >= deadline:
                raise busy()
            await asyncio.sleep(delay * (0.5 + random.random()))
            delay = min(delay * 1.5, 0.05)

    def _compact_later(self) -> None:
        # One timer per process, pushed back by every write: merging waits for a pause.
        loop = asyncio.get_running_loop()
        if self._compaction is not None:
            self._compaction.cancel()
        self._compaction = loop.call_later(COMPACT_AFTER_SECONDS, self._start_compaction, loop)

    def _start_compaction(self, loop: asyncio.AbstractEventLoop) -> None:
        try:
            loop.run_in_executor(self.executor, self._compact)
        except RuntimeError:  # the executor was shut down: the process is stopping
            pass

    def _compact(self) -> None:
        try:
            self.healer.compact()
        except Exception:  # the next pause tries again; searches work without it
            log.warning("merging the knowledge index's small segments failed", exc_info=True)

    async def _try_sync(self, seq: int) -> bool:
        try:
            return await self._run(self.healer.try_sync, seq)
        except Exception as exc:
            state = self.disk.failed(exc) if self.disk is not None else None
            if state is None:
                raise
            # The store has the document; the index could not take it. Any later write
            # (or a restart) applies it, once there is room.
            raise InsufficientStorage(refusal(state).message + "（文档已保存，磁盘恢复后即可检索）") from exc

    def close(self) -> None:
        """Close searchers and database connections."""
        if self._compaction is not None:
            self._compaction.cancel()
        self.healer.close()
        self._search_executor.shutdown(wait=True, cancel_futures=True)
        self.index.close()
        self.store.close()
