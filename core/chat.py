"""The chat use case: validate a request, ground it, answer it whole or streamed.

`ChatService` ties the parts together: retrieval (knowledge base), the response
cache, the concurrency slots and the LLM provider. It knows nothing of HTTP; the
handler turns its results and `ServiceError`s into responses.
"""
from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import re
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, AsyncIterator, Mapping, Protocol, Sequence

from core.concurrency import ConcurrencySlots
from core.errors import InvalidRequest, UpstreamError, UpstreamTimeout
from core.llm import Completion, LLMMeter, LLMProvider, Usage
from core.prompts import MODES, PROMPT_VERSION, Prompt, Source, build_prompt, char_count
from core.store import StoreUnavailable
from core.validation import (read_bool, read_choice, read_float, read_int, read_str,
                             require_object)
from core.wordlimit import ANSWER_MODES, condense_messages, is_over

log = logging.getLogger("shenlun.chat")

MAX_MESSAGE_CHARS = 8_000
MAX_MATERIAL_CHARS = 50_000
MAX_QUESTION_CHARS = 2_000
MAX_HISTORY_TURNS = 20
MAX_HISTORY_CHARS = 50_000
RETRIEVE_TOP_K = 4
STREAM_REPLAY_CHARS = 32  # delta size when a cached answer is streamed
_CITATION = re.compile(r"\[(\d{1,3})\]")


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
    def from_payload(cls, payload: Any) -> "ChatRequest":
        """Validate a decoded JSON body; raises InvalidRequest naming the field."""
        data = require_object(payload)
        message = read_str(data, "message", max_len=MAX_MESSAGE_CHARS)
        history = _read_history(data)
        if message.strip():
            question = message
        elif history and history[-1]["role"] == "user":
            question, history = history[-1]["content"], history[:-1]
        else:
            raise InvalidRequest("缺少字段 message（或以用户消息结尾的 messages）")
        return cls(
            question=question,
            history=tuple(history),
            mode=read_choice(data, "mode", MODES, default="chat"),
            material=read_str(data, "material", max_len=MAX_MATERIAL_CHARS),
            task=read_str(data, "question", max_len=MAX_QUESTION_CHARS),
            word_limit=read_int(data, "word_limit", lo=10, hi=10_000),
            use_knowledge=read_bool(data, "use_knowledge", default=True),
            stream=read_bool(data, "stream", default=False),
            cache=read_bool(data, "cache", default=True),
            temperature=read_float(data, "temperature", lo=0.0, hi=2.0, default=0.7),
            max_tokens=read_int(data, "max_tokens", lo=1, hi=8192, default=1024),
        )


def _read_history(data: Mapping[str, Any]) -> list[dict[str, str]]:
    raw = data.get("messages")
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidRequest("字段 messages 必须是数组")
    if len(raw) > MAX_HISTORY_TURNS:
        raise InvalidRequest(f"字段 messages 最多 {MAX_HISTORY_TURNS} 条")
    history, total = [], 0
    for n, item in enumerate(raw):
        if not isinstance(item, dict):
            raise InvalidRequest(f"字段 messages[{n}] 必须是对象")
        role = item.get("role")
        if role not in ("user", "assistant"):
            raise InvalidRequest(f"字段 messages[{n}].role 必须是 user 或 assistant")
        content = read_str(item, "content", max_len=MAX_MESSAGE_CHARS, required=True)
        total += len(content)
        history.append({"role": role, "content": content})
    if total > MAX_HISTORY_CHARS:
        raise InvalidRequest(f"字段 messages 总长度过长（最多 {MAX_HISTORY_CHARS} 个字符）")
    return history


class Retriever(Protocol):
    async def retrieve(self, query: str, limit: int) -> list[Source]:
        """The passages most relevant to `query`, best first, above the relevance bar."""


class AnswerCache(Protocol):
    async def get(self, key: str) -> dict[str, Any] | None: ...
    async def set(self, key: str, value: dict[str, Any]) -> None: ...


@dataclass
class ChatResult:
    """A whole answer plus how it was obtained (`cache_status` for `X-Cache`)."""

    body: dict[str, Any]
    cache_status: str


@dataclass
class _Outcome:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)


class ChatService:
    """Answers chat requests; one per process, built by `server.py`."""

    def __init__(self, *, llm: LLMProvider, slots: ConcurrencySlots, meter: LLMMeter, server_id: str,
                 retriever: Retriever | None = None, cache: AnswerCache | None = None) -> None:
        self.llm = llm
        self.meter = meter
        self.slots = slots
        self.server_id = server_id
        self.retriever = retriever
        self.cache = cache
        # Concurrent identical misses in this process wait for the first one.
        self._inflight: dict[str, asyncio.Future[_Outcome]] = {}

    async def answer(self, req: ChatRequest) -> ChatResult:
        """The whole answer for one request."""
        started = time.monotonic()
        sources = await self._retrieve(req)
        prompt = self._prompt(req, sources)
        key, hit = await self._lookup(req, sources)
        if hit is not None:
            return ChatResult(self._body(req, prompt, _outcome_from_dict(hit), started, cached=True), "HIT")
        outcome = await self._complete_once(key, req, prompt)
        return ChatResult(self._body(req, prompt, outcome, started, cached=False),
                          "MISS" if key is not None else "BYPASS")

    async def stream(self, req: ChatRequest) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """The answer as events: ("start", {"cache": HIT|MISS|BYPASS}), then
        ("sources", …) when knowledge was used, ("delta", {"delta": …})…, ("done", meta).

        "start" comes once the answer is committed (a cache hit, or a concurrency slot
        held); errors before it (busy) are raised from the first `__anext__`, so the
        caller can still answer with a plain status.
        """
        started = time.monotonic()
        sources = await self._retrieve(req)
        prompt = self._prompt(req, sources)
        key, hit = await self._lookup(req, sources)
        if hit is not None:
            outcome = _outcome_from_dict(hit)
            yield "start", {"cache": "HIT"}
            if sources:
                yield "sources", {"sources": self._sources(prompt)}
            for start in range(0, len(outcome.text), STREAM_REPLAY_CHARS):
                yield "delta", {"delta": outcome.text[start:start + STREAM_REPLAY_CHARS]}
            meta = self._body(req, prompt, outcome, started, cached=True)
            meta.pop("answer")
            yield "done", meta
            return
        async with self.slots.hold():
            yield "start", {"cache": "MISS" if key is not None else "BYPASS"}
            if sources:
                yield "sources", {"sources": self._sources(prompt)}
            parts: list[str] = []
            usage = Usage()
            with self.meter.timed():
                async for delta in self.llm.stream(prompt, temperature=req.temperature,
                                                   max_tokens=req.max_tokens, usage=usage):
                    parts.append(delta)
                    yield "delta", {"delta": delta}
        outcome = _Outcome("".join(parts), self.llm.model, usage)
        # Only a stream that ran to its end reaches this line, so cut-off answers
        # are never cached.
        if key is not None:
            await self.cache.set(key, _outcome_dict(outcome))
        meta = self._body(req, prompt, outcome, started, cached=False)
        meta.pop("answer")
        yield "done", meta

    # --- parts ---

    def _caching(self, req: ChatRequest) -> bool:
        return self.cache is not None and req.cache

    async def _lookup(self, req: ChatRequest, sources: Sequence[Source]) -> tuple[str | None, dict[str, Any] | None]:
        """(cache key, cached value). The key is None when the answer bypasses the
        cache: asked to, caching off, or the shared store unreachable (degraded)."""
        if not self._caching(req):
            return None, None
        key = self._cache_key(req, sources)
        try:
            return key, await self.cache.get(key)
        except StoreUnavailable:
            return None, None

    async def _retrieve(self, req: ChatRequest) -> list[Source]:
        if not (req.use_knowledge and self.retriever):
            return []
        query = " ".join(part for part in (req.task, req.question) if part)
        return await self.retriever.retrieve(query, RETRIEVE_TOP_K)

    def _prompt(self, req: ChatRequest, sources: Sequence[Source]) -> Prompt:
        return build_prompt(mode=req.mode, question=req.question, history=req.history,
                            material=req.material, task=req.task, word_limit=req.word_limit,
                            sources=sources)

    def _cache_key(self, req: ChatRequest, sources: Sequence[Source]) -> str:
        # Everything that changes the answer, the retrieved passages' text included,
        # so a knowledge change that alters retrieval changes the key.
        material = {
            "v": PROMPT_VERSION, "provider": self.llm.name, "model": self.llm.model,
            "mode": req.mode, "question": req.question, "history": req.history,
            "material": req.material, "task": req.task, "word_limit": req.word_limit,
            "temperature": req.temperature, "max_tokens": req.max_tokens,
            "sources": [(s.id, hashlib.sha256(s.text.encode()).hexdigest()) for s in sources],
        }
        blob = json.dumps(material, ensure_ascii=False, sort_keys=True).encode()
        return "chat:" + hashlib.sha256(blob).hexdigest()

    async def _complete_once(self, key: str | None, req: ChatRequest, prompt: Prompt) -> _Outcome:
        if key is None:
            return await self._complete(req, prompt)
        pending = self._inflight.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[_Outcome] = asyncio.get_running_loop().create_future()
        self._inflight[key] = future
        try:
            outcome = await self._complete(req, prompt)
            await self.cache.set(key, _outcome_dict(outcome))
            future.set_result(outcome)
            return outcome
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # mark retrieved: followers may not exist
            raise
        finally:
            del self._inflight[key]

    async def _complete(self, req: ChatRequest, prompt: Prompt) -> _Outcome:
        async with self.slots.hold():
            with self.meter.timed():
                completion: Completion = await self.llm.complete(
                    prompt, temperature=req.temperature, max_tokens=req.max_tokens)
            completion = await self._within_limit(req, prompt, completion)
        return _Outcome(completion.text, completion.model, completion.usage)

    async def _within_limit(self, req: ChatRequest, prompt: Prompt, completion: Completion) -> Completion:
        """An answer-writing mode's answer over `word_limit` is condensed once; the
        shorter of the two is kept and `over_limit` reports the truth about it."""
        if (req.mode not in ANSWER_MODES or self.llm.name == "offline"
                or not is_over(completion.text, req.word_limit)):
            return completion
        try:
            with self.meter.timed():
                condensed = await self.llm.complete(
                    replace(prompt, messages=condense_messages(prompt.messages, completion.text,
                                                               req.word_limit)),
                    temperature=req.temperature, max_tokens=req.max_tokens)
        except (UpstreamError, UpstreamTimeout):
            log.warning("condensing an over-limit answer failed; the long answer is kept")
            return completion
        usage = Usage(completion.usage.prompt_tokens + condensed.usage.prompt_tokens,
                      completion.usage.completion_tokens + condensed.usage.completion_tokens)
        best = condensed if char_count(condensed.text) < char_count(completion.text) else completion
        return Completion(text=best.text, model=best.model, usage=usage)

    def _sources(self, prompt: Prompt) -> list[dict[str, Any]]:
        return [{"id": s.id, "title": s.title, "score": round(s.score, 3), "snippet": s.snippet}
                for s in prompt.sources]

    def _body(self, req: ChatRequest, prompt: Prompt, outcome: _Outcome, started: float, *,
              cached: bool) -> dict[str, Any]:
        count = char_count(outcome.text)
        cited = {int(n) for n in _CITATION.findall(outcome.text)}
        body: dict[str, Any] = {
            "id": uuid.uuid4().hex,
            "answer": outcome.text,
            "mode": req.mode,
            "model": outcome.model,
            "sources": self._sources(prompt),
            "cached": cached,
            "char_count": count,
            "word_limit": req.word_limit,
            "over_limit": bool(req.word_limit and count > req.word_limit),
            "unknown_citations": sorted(n for n in cited if not 1 <= n <= len(prompt.sources)),
            "usage": outcome.usage.as_dict(),
            "server_id": self.server_id,
            "elapsed_ms": round((time.monotonic() - started) * 1000, 1),
        }
        return body


def _outcome_dict(outcome: _Outcome) -> dict[str, Any]:
    return {"text": outcome.text, "model": outcome.model, "usage": outcome.usage.as_dict()}


def _outcome_from_dict(data: dict[str, Any]) -> _Outcome:
    return _Outcome(data["text"], data["model"], Usage(**data["usage"]))
