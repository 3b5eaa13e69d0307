"""The chat use case: validate a request, ground it, answer it whole or streamed.

`ChatService` ties the parts together: retrieval (knowledge base), the prompts, the
response cache and the LLM gateway (slot, meter, usage). It knows nothing of HTTP;
the handler turns its results and `ServiceError`s into responses.

Exam modes (概括, 分析, 对策, 应用文, 文章) answer for the 答题纸: the answer is made
plain (no Markdown, no `[n]`; grounding moves to `citations`), then self-checked
(`core.chat.wordlimit.self_check`). A whole answer that fails gets exactly one revision
call (condense, expand or revise) and the better of the two is kept; a streamed
answer is already on the client's screen, so it gets no second call: its checks
travel in the `done` event.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import os
import re
import time
from collections.abc import AsyncGenerator, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, replace
from functools import cached_property
from typing import Annotated, Any, Protocol

from pydantic import ConfigDict, Field

from core.chat.offline import OFFLINE_NOTICE, retrieval_query
from core.chat.prompts import (
    MAX_MATERIAL_CHARS,
    MAX_QUESTION_CHARS,
    MODE_ALIASES,
    MODES,
    PROMPT_VERSION,
    Prompt,
    PromptBook,
    Source,
    build_prompt,
    default_book,
)
from core.chat.wordlimit import (
    GROUNDS,
    WORD_LIMIT,
    SelfCheck,
    char_count,
    plain_answer,
    revision_messages,
    self_check,
)
from core.errors import InvalidRequest
from core.llm import Completion, LLMGateway, LLMSession
from core.store import StoreUnavailable
from core.validation import (
    NOT_BLANK,
    Choice,
    Flag,
    Integer,
    Number,
    RecentBodies,
    Shape,
    Text,
)

MAX_MESSAGE_CHARS = 8_000
MAX_HISTORY_TURNS = 20
MAX_HISTORY_CHARS = 50_000
RETRIEVE_TOP_K = 4
STREAM_REPLAY_CHARS = 32  # delta size when a cached answer is streamed
INLINE_QUERY_CHARS = 500  # material up to this long has its keywords counted on the loop (< 1 ms)
_CITATION = re.compile(r"\[(\d{1,3})\]")
# json.dumps(x, ensure_ascii=False) builds an encoder per call (~2 µs, most of encoding
# a short string); this one is built once and keeps no state between calls.
_JSON = json.JSONEncoder(ensure_ascii=False)
# The cached value's shape (the JSON text of an answer's own fields), in every key:
# a change of shape makes the old entries unreachable instead of misread.
CACHE_FORMAT = 2


_MODE_REFUSAL = ("{field} 必须是以下之一：" + "、".join(f"{key}（{label}）" for key, label in MODES.items())
                 + "；也可用中文名，如 概括、分析、对策、应用文、文章、批改")
# Checks /v1/chat/completions shares with /api/chat: one declaration of each bound.
TEMPERATURE = Number(0.0, 2.0)
MAX_TOKENS = Integer(1, 8192)


class Turn(Shape):
    """One earlier turn of the conversation."""

    role: Annotated[str, Choice(("user", "assistant"))]
    content: Annotated[str, Text(MAX_MESSAGE_CHARS, required=True)]


class ChatBody(Shape):
    """The `/api/chat` body as sent."""

    model_config = ConfigDict(json_schema_extra={
        "description": "只有 message 必填；也可以省略 message，让 messages 以一条 user 消息结尾。"
                       "可选字段为 null 时按未提供处理。"})
    # Blank (or left out) when `messages` ends with the user's turn.
    documented_required = ("message",)

    message: Annotated[str, Text(MAX_MESSAGE_CHARS, pattern=NOT_BLANK)] = ""
    messages: Annotated[tuple[Turn, ...], Field(max_length=MAX_HISTORY_TURNS)] = ()
    mode: Annotated[str, Choice(MODE_ALIASES, message=_MODE_REFUSAL, description=(
        "题型模式：英文键或中文名（概括、分析、对策、应用文、文章、批改……）"))] = "chat"
    material: Annotated[str, Text(MAX_MATERIAL_CHARS)] = ""
    question: Annotated[str, Text(MAX_QUESTION_CHARS)] = ""
    word_limit: Annotated[int | None, WORD_LIMIT] = None
    use_knowledge: Annotated[bool, Flag()] = True
    stream: Annotated[bool, Flag()] = False
    cache: Annotated[bool, Flag()] = True
    temperature: Annotated[float, TEMPERATURE] = 0.7
    max_tokens: Annotated[int, MAX_TOKENS] = 1024


@dataclass(frozen=True)
class ChatRequest:
    """A validated `/api/chat` body."""

    question: str
    history: tuple[dict[str, str], ...] = ()
    mode: str = "chat"
    material: str = ""
    task: str = ""
    word_limit: int | None = None
    use_knowledge: bool = True
    stream: bool = False
    cache: bool = True
    temperature: float = 0.7
    max_tokens: int = 1024

    @classmethod
    def from_payload(cls, payload: Any) -> ChatRequest:
        """Validate a decoded JSON body; raises InvalidRequest naming the field."""
        body = ChatBody.parse(payload)
        history = [{"role": turn.role, "content": turn.content} for turn in body.messages]
        if sum(len(turn["content"]) for turn in history) > MAX_HISTORY_CHARS:
            raise InvalidRequest(f"字段 messages 总长度过长（最多 {MAX_HISTORY_CHARS} 个字符）")
        question = body.message
        if not question.strip():
            if not (history and history[-1]["role"] == "user"):
                raise InvalidRequest("缺少字段 message（或以用户消息结尾的 messages）")
            question, history = history[-1]["content"], history[:-1]
        return cls(question=question, history=tuple(history), mode=body.mode, material=body.material,
                   task=body.question, word_limit=body.word_limit, use_knowledge=body.use_knowledge,
                   stream=body.stream, cache=body.cache, temperature=body.temperature,
                   max_tokens=body.max_tokens)

    @cached_property
    def key_fields(self) -> str:
        """The JSON of this request's part of its cache key (`ChatService._cache_key`),
        made once per request: a repeated body is one request (`RecentBodies`)."""
        fields = [self.mode, self.question, [(t["role"], t["content"]) for t in self.history],
                  self.material, self.task, self.word_limit, self.temperature, self.max_tokens]
        return json.dumps(fields, ensure_ascii=False)[1:-1]


class Retriever(Protocol):
    async def retrieve(self, query: str, limit: int) -> list[Source]:
        """The passages most relevant to `query`, best first, above the relevance bar."""

    def version(self) -> str | None:
        """Changes whenever what `retrieve` may find changes (an add, a delete, a
        rebuild); None when it cannot be read now. Cheap: called on the loop."""


class AnswerCache(Protocol):
    async def get(self, key: str) -> Any | None: ...
    def put(self, key: str, value: Any) -> None: ...


class ChatResult:
    """A whole answer plus how it was obtained (`cache_status` for `X-Cache`).

    `answer_json` is the JSON text of the answer's own fields, made once when the
    answer was (the response cache keeps exactly it); `meta` the fields of this one
    response (id, cached, server_id, elapsed_ms). `encoded()` splices the two without
    decoding the answer, so a cache hit costs no JSON round trip."""

    def __init__(self, answer_json: str, meta: dict[str, Any], cache_status: str,
                 fields: dict[str, Any] | None = None) -> None:
        self.answer_json = answer_json
        self.meta = meta
        self.cache_status = cache_status
        self._fields = fields  # the decoded answer_json, when the caller has it
        self._body: dict[str, Any] | None = None

    @property
    def body(self) -> dict[str, Any]:
        """The answer as an object: `meta`, then the answer's fields."""
        if self._body is None:
            fields = self._fields if self._fields is not None else json.loads(self.answer_json)
            self._body = {**self.meta, **fields}
        return self._body

    def encoded(self) -> str:
        """`body` as JSON text."""
        head = json.dumps(self.meta, ensure_ascii=False)
        return f"{head[:-1]}, {self.answer_json[1:]}"


class ChatService:
    """Answers chat requests; one per process, built by `server.py`."""

    def __init__(self, *, gateway: LLMGateway, server_id: str,
                 retriever: Retriever | None = None, cache: AnswerCache | None = None,
                 prompts: PromptBook | None = None, executor: Executor | None = None) -> None:
        self.gateway = gateway
        self.llm = gateway.llm
        self.executor = executor
        self.prompts = prompts or default_book()
        self.server_id = server_id
        self.retriever = retriever
        self.cache = cache
        # Concurrent identical misses in this process wait for the first one.
        self._inflight: dict[str, asyncio.Future[tuple[str, dict[str, Any]]]] = {}
        # Chat bodies already validated (ChatRequest is frozen): a hit asks again.
        self.recent_requests: RecentBodies[ChatRequest] = RecentBodies()
        self._key_head_of: tuple[Any, ...] = ()
        self._key_head_json = ""

    async def answer(self, req: ChatRequest) -> ChatResult:
        """The whole answer for one request."""
        started = time.monotonic()
        key, hit = await self._lookup(req)
        if hit is not None:  # no retrieval and no prompt: the key stands for both
            return ChatResult(hit, self._meta(started, cached=True), "HIT")
        sources = await self._retrieve(req)
        prompt = self._prompt(req, sources)
        answer_json, fields = await self._complete_once(key, req, prompt)
        return ChatResult(answer_json, self._meta(started, cached=False),
                          "MISS" if key is not None else "BYPASS", fields)

    async def stream(self, req: ChatRequest) -> AsyncGenerator[tuple[str, dict[str, Any]], None]:
        """The answer as events: ("start", {"cache": HIT|MISS|BYPASS}), then
        ("sources", …) when knowledge was used, ("delta", {"delta": …})…, ("done", meta).

        "start" comes once the answer is committed (a cache hit, or a concurrency slot
        held); errors before it (busy) are raised from the first `__anext__`, so the
        caller can still answer with a plain status.
        """
        started = time.monotonic()
        key, hit = await self._lookup(req)
        if hit is not None:
            fields = json.loads(hit)
            yield "start", {"cache": "HIT"}
            if fields["sources"]:
                yield "sources", {"sources": fields["sources"]}
            text = fields.pop("answer")
            for start in range(0, len(text), STREAM_REPLAY_CHARS):
                yield "delta", {"delta": text[start:start + STREAM_REPLAY_CHARS]}
            yield "done", {**self._meta(started, cached=True), **fields}
            return
        sources = await self._retrieve(req)
        prompt = self._prompt(req, sources)
        async with self.gateway.session() as call:
            yield "start", {"cache": "MISS" if key is not None else "BYPASS"}
            if sources:
                yield "sources", {"sources": self._sources(prompt)}
            parts: list[str] = []
            # Exam answers go out as the sheet will hold them: markers and a grounds
            # line are held back by the cleaner (a few characters at most) and the
            # whole text is made plain once more at the end for `done` and the cache.
            cleaner = StreamCleaner() if prompt.exam else None
            with call.stream(prompt, temperature=req.temperature, max_tokens=req.max_tokens) as deltas:
                async for delta in deltas:
                    parts.append(delta)
                    shown = cleaner.feed(delta) if cleaner else delta
                    if shown:
                        yield "delta", {"delta": shown}
            if cleaner and (tail := cleaner.close()):
                yield "delta", {"delta": tail}
        outcome = self._plain(prompt, Completion("".join(parts), self.llm.model, call.usage))
        # Only a stream that ran to its end reaches this line, so cut-off answers
        # are never cached; one that is not cached is not encoded either.
        if key is not None and self.cache is not None:
            answer_json, fields = self._encoded(req, prompt, outcome)
            self.cache.put(key, answer_json)  # written after `done` goes out (core/traffic/cache.py)
        else:
            fields = self._fields(req, prompt, outcome)
        fields.pop("answer")
        yield "done", {**self._meta(started, cached=False), **fields}

    # --- parts ---

    async def _lookup(self, req: ChatRequest) -> tuple[str | None, str | None]:
        """(cache key, cached answer JSON). The key is None when the answer bypasses the
        cache: asked to, caching off, the knowledge version unreadable, or the shared
        store unreachable (degraded)."""
        if self.cache is None or not req.cache:
            return None, None
        knowledge = None
        if req.use_knowledge and self.retriever is not None:
            knowledge = self.retriever.version()  # IndexUnavailable while rebuilt: 503
            if knowledge is None:
                return None, None
        key = self._cache_key(req, knowledge)
        try:
            value = await self.cache.get(key)
        except StoreUnavailable:
            return None, None
        # Anything but an answer's JSON object (a value of another shape) is a miss.
        return key, value if isinstance(value, str) and value.startswith("{") else None

    async def _retrieve(self, req: ChatRequest) -> list[Source]:
        if not (req.use_knowledge and self.retriever):
            return []
        # A long 题目 is queried on its focus, with the material's keywords: the
        # relevance gate measures how much of the query a passage covers, and the
        # boilerplate of a 题目 (根据给定资料…要求…) is covered by nothing.
        if len(req.material) > INLINE_QUERY_CHARS:  # counting its terms takes ~15 ms at 50 000
            query = await asyncio.get_running_loop().run_in_executor(
                self.executor, retrieval_query, req.question, req.task, req.material)
        else:
            query = retrieval_query(req.question, req.task, req.material)
        return await self.retriever.retrieve(query, RETRIEVE_TOP_K)

    def _prompt(self, req: ChatRequest, sources: Sequence[Source]) -> Prompt:
        return build_prompt(mode=req.mode, question=req.question, history=req.history,
                            material=req.material, task=req.task, word_limit=req.word_limit,
                            sources=sources, book=self.prompts)

    def _cache_key(self, req: ChatRequest, knowledge: str | None) -> str:
        # Everything that decides the answer. With knowledge on, the knowledge base's
        # version stands for the passages: the same version retrieves the same passages
        # for the same request, so a hit needs no retrieval, and any add, delete or
        # rebuild (a new version) makes the next identical request a miss.
        # The JSON of [format, prompt version and digest, provider, model, the request's
        # fields, knowledge], spliced from parts made once each (the list's own
        # separator is ", "): the same bytes, so the same keys, as one json.dumps of it.
        blob = f"{self._key_head()}, {req.key_fields}, {_JSON.encode(knowledge)}]"
        return "chat:" + hashlib.sha256(blob.encode()).hexdigest()

    def _key_head(self) -> str:
        head = (CACHE_FORMAT, PROMPT_VERSION, self.prompts.digest, self.llm.name, self.llm.model)
        if self._key_head_of != head:  # the same five for the life of the process, as a rule
            self._key_head_of, self._key_head_json = head, json.dumps(list(head), ensure_ascii=False)[:-1]
        return self._key_head_json

    async def _complete_once(self, key: str | None, req: ChatRequest,
                             prompt: Prompt) -> tuple[str, dict[str, Any]]:
        """(answer JSON, answer fields) of a miss; cached under `key` unless it is None.
        Concurrent identical misses in this process share one LLM call."""
        if key is None or self.cache is None:
            return self._encoded(req, prompt, await self._complete(req, prompt))
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[tuple[str, dict[str, Any]]] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            answer = self._encoded(req, prompt, await self._complete(req, prompt))
            # Not awaited: the answer goes out first, the write follows WRITE_DELAY
            # later (core/traffic/cache.py says what another process sees meanwhile).
            self.cache.put(key, answer[0])
            future.set_result(answer)
            return answer
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers may not exist
            raise
        finally:
            del self._inflight[key]

    async def _complete(self, req: ChatRequest, prompt: Prompt) -> Completion:
        async with self.gateway.session() as call:
            outcome = self._plain(prompt, await call.complete(
                prompt, temperature=req.temperature, max_tokens=req.max_tokens))
            if prompt.exam and not self.gateway.offline:
                outcome = await self._revise_once(call, req, prompt, outcome)
        return replace(outcome, usage=call.usage)  # what every call of the answer cost

    def _plain(self, prompt: Prompt, outcome: Completion) -> Completion:
        """An exam answer without Markdown and [n]; its grounding as citations."""
        if not prompt.exam:
            return outcome
        text, citations = plain_answer(outcome.text)
        return replace(outcome, text=text or outcome.text, citations=citations)

    def _check(self, prompt: Prompt, text: str) -> SelfCheck | None:
        return self_check(text, prompt.spec) if prompt.exam and prompt.spec else None

    async def _revise_once(self, call: LLMSession, req: ChatRequest, prompt: Prompt,
                           first: Completion) -> Completion:
        """One condense / expand / revise call when the self-check names one; the
        better-ranked of the two answers is kept, and never a second call."""
        check = self._check(prompt, first.text)
        if check is None or check.revision is None:
            return first
        again = await call.follow_up(
            replace(prompt, messages=revision_messages(prompt.messages, first.text, check, self.prompts)),
            temperature=req.temperature, max_tokens=req.max_tokens, purpose=check.revision)
        if again is None:
            return first
        second = self._plain(prompt, again)
        recheck = self._check(prompt, second.text)
        better = recheck is not None and recheck.rank() <= check.rank()
        return replace(second if better else first, revised=check.revision, revision_kept=better)

    def _sources(self, prompt: Prompt) -> list[dict[str, Any]]:
        return [{"id": s.id, "title": s.title, "score": round(s.score, 3), "snippet": s.snippet}
                for s in prompt.sources]

    def _meta(self, started: float, *, cached: bool) -> dict[str, Any]:
        """The fields of one response, cached answer or not."""
        return {"id": os.urandom(16).hex(), "cached": cached, "server_id": self.server_id,
                "elapsed_ms": round((time.monotonic() - started) * 1000, 1)}

    def _encoded(self, req: ChatRequest, prompt: Prompt, outcome: Completion) -> tuple[str, dict[str, Any]]:
        fields = self._fields(req, prompt, outcome)
        return json.dumps(fields, ensure_ascii=False), fields

    def _fields(self, req: ChatRequest, prompt: Prompt, outcome: Completion) -> dict[str, Any]:
        """The answer's own fields: what the cache keeps and every hit repeats."""
        count = char_count(outcome.text)
        cited = {int(n) for n in _CITATION.findall(outcome.text)}
        cited |= {n for c in outcome.citations for n in c["sources"]}
        known = range(1, len(prompt.sources) + 1)
        limit = prompt.word_limit
        body: dict[str, Any] = {
            "answer": outcome.text,
            "mode": req.mode,
            "model": outcome.model,
            "sources": self._sources(prompt),
            "char_count": count,
            "word_limit": limit,
            "over_limit": bool(limit and count > limit),
            "unknown_citations": sorted(n for n in cited if n not in known),
            "usage": outcome.usage.as_dict(),
        }
        check = self._check(prompt, outcome.text)
        if check is not None:
            check.revised, check.revision_kept = outcome.revised, outcome.revision_kept
            body["citations"] = [{"sentence": c["sentence"], "sources": [n for n in c["sources"] if n in known]}
                                 for c in outcome.citations if any(n in known for n in c["sources"])]
            body["checks"] = check.as_dict()
        if outcome.model == "offline":
            body["offline"] = True
            body["notice"] = OFFLINE_NOTICE[_offline_kind(prompt)]
        return body


def _offline_kind(prompt: Prompt) -> str:
    if prompt.exam and prompt.material.strip():
        return "outline" if prompt.mode in ("analyze", "essay") else "extractive"
    return "method"


class StreamCleaner:
    """Takes `[n]` markers and a final `依据：[...]` line out of a streamed exam answer
    as it passes, holding back only what could still turn into one of them (an open
    `[`, or a line that so far reads as the start of 依据：)."""

    _HOLD = ("依", "依据", "依据：", "依据:")

    def __init__(self) -> None:
        self._pending = ""

    def feed(self, delta: str) -> str:
        """The part of `delta` (with what was held) that can be shown now."""
        text = _CITATION.sub("", self._pending + delta)
        cut = len(text)
        bracket = text.rfind("[")
        if bracket >= 0 and "]" not in text[bracket:] and len(text) - bracket <= 4:
            cut = bracket
        line_start = text.rfind("\n", 0, cut) + 1
        line = text[line_start:cut].lstrip()
        if line and (line.startswith("依据") or any(h.startswith(line) for h in self._HOLD)):
            cut = line_start
        self._pending = text[cut:]
        return text[:cut]

    def close(self) -> str:
        """What is left at the end, unless it is the grounds line."""
        rest, self._pending = self._pending, ""
        return "" if GROUNDS.match(rest.strip()) else _CITATION.sub("", rest)
