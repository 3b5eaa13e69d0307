"""LLM providers: one interface, an OpenAI-compatible one and an offline one.

Retry policy: the `openai` client is built with `max_retries=0`, and every call is
bounded by one deadline of `REQUEST_TIMEOUT` seconds (for a stream: until the first
delta, then between two deltas). A user request therefore never waits more than
one timeout on the model; retrying is left to the client, which sees 502/504.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import math
import time
from concurrent.futures import Executor
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, AsyncIterator, Iterator, Protocol, Sequence

import httpx
import openai
from openai import AsyncOpenAI

from core.errors import UpstreamError, UpstreamTimeout
from core.health import UpstreamState
from core.offline import offline_answer
from core.prompts import Prompt


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


@dataclass
class LLMMeter:
    """Calls this process made to the LLM, the time spent waiting on them and how the
    last one went, for the metrics and /health; shared by every service that calls
    the model."""

    calls: int = 0
    seconds: float = 0.0
    upstream: UpstreamState = field(default_factory=UpstreamState)

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count one call, add the time its body takes, and record whether the
        upstream answered (a caller that gives up early records nothing)."""
        self.calls += 1
        started = time.monotonic()
        try:
            yield
        except (UpstreamError, UpstreamTimeout) as exc:
            self.upstream.failed(exc.code, exc.message)
            raise
        else:
            self.upstream.succeeded()
        finally:
            self.seconds += time.monotonic() - started


@dataclass
class Completion:
    text: str
    model: str
    usage: Usage = field(default_factory=Usage)


class LLMProvider(Protocol):
    """What the chat service needs from a model."""

    name: str
    model: str

    async def complete(self, prompt: Prompt, *, temperature: float, max_tokens: int) -> Completion:
        """The whole answer."""

    def stream(self, prompt: Prompt, *, temperature: float, max_tokens: int,
               usage: Usage) -> AsyncIterator[str]:
        """The answer as text deltas; fills `usage` when the endpoint reports it."""

    async def complete_json(self, messages: Sequence[dict[str, str]], *, temperature: float,
                            max_tokens: int) -> Completion:
        """A whole answer that should be one JSON object (the text is not parsed here)."""

    async def close(self) -> None:
        """Release connections."""


POOL_SHARD = 8  # connections per HTTP client (see OpenAIProvider.__init__)


class OpenAIProvider:
    """Any OpenAI-compatible `chat/completions` endpoint through `AsyncOpenAI`."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float,
                 concurrency: int = 10) -> None:
        self.model = model
        self.timeout = timeout
        # httpx's pool (httpcore 1.0) walks every connection it holds on every request
        # and release: O(n²) in the connections in use (encode/httpcore#1035). At 100
        # slow answers in flight that cost ~15 ms of CPU per answer and capped a process
        # near 30 answers/s (bench/b3_slow_upstream.py), so connections are spread over
        # several clients of about POOL_SHARD each, taken in turn.
        shards = max(1, math.ceil(concurrency / POOL_SHARD))
        # A local endpoint (vLLM, Ollama) may need no key, but the client insists on one.
        self._clients = [
            AsyncOpenAI(api_key=api_key or "none", base_url=base_url or None, timeout=timeout,
                        max_retries=0, http_client=openai.DefaultAsyncHttpxClient(
                            limits=httpx.Limits(max_connections=1000,
                                                max_keepalive_connections=POOL_SHARD)))
            for _ in range(shards)]
        self._next_client = itertools.cycle(self._clients)

    @property
    def _client(self) -> AsyncOpenAI:
        """The client for the next call (round robin over the shards)."""
        return next(self._next_client)

    @_client.setter
    def _client(self, client: AsyncOpenAI) -> None:
        """Use this one client for every call (tests point it elsewhere)."""
        self._clients = [client]
        self._next_client = itertools.cycle(self._clients)

    async def complete(self, prompt: Prompt, *, temperature: float, max_tokens: int) -> Completion:
        return await self._complete_messages(prompt.messages, temperature, max_tokens, {})

    # Whether the endpoint accepts `response_format={"type": "json_object"}`; set to
    # False the first time it refuses it, so later calls go prompt-only at once.
    json_mode: bool = True

    async def complete_json(self, messages: Sequence[dict[str, str]], *, temperature: float,
                            max_tokens: int) -> Completion:
        """One answer asked for as a JSON object.

        Uses the endpoint's JSON mode (`response_format={"type": "json_object"}`);
        an endpoint that refuses that parameter with 400/422 is asked again once
        without it (the prompt itself asks for JSON) and is not offered it again.
        The text is returned as is: parsing and validating it is the caller's job."""
        extra: dict[str, Any] = {"response_format": {"type": "json_object"}} if self.json_mode else {}
        try:
            return await self._complete_messages(list(messages), temperature, max_tokens, extra)
        except _JsonModeRefused:
            self.json_mode = False
            return await self._complete_messages(list(messages), temperature, max_tokens, {})

    async def _complete_messages(self, messages: list[dict[str, str]], temperature: float,
                                 max_tokens: int, extra: dict[str, Any]) -> Completion:
        # Through the client's own transport (auth, base URL, pool, error types) but not
        # its typed layer: `create()` walks every message through a TypedDict transformer
        # and builds pydantic models of the answer, ~0.8 ms of CPU per call, more than the
        # rest of a cache miss (bench/b2_cache_miss.py). We need one string, two counters.
        body = {"model": self.model, "messages": messages, "temperature": temperature,
                "max_tokens": max_tokens, **extra}
        try:
            async with asyncio.timeout(self.timeout):
                response = await self._client.post("/chat/completions", body=body,
                                                   cast_to=httpx.Response)
            data = response.json()
        except (TimeoutError, openai.APITimeoutError):
            raise UpstreamTimeout() from None
        except openai.APIStatusError as exc:
            if extra and exc.status_code in (400, 422) and "response_format" in _error_text(exc):
                raise _JsonModeRefused() from None
            raise UpstreamError.http(exc.status_code) from None
        except openai.APIConnectionError:
            raise UpstreamError(UpstreamError.UNREACHABLE) from None
        except (openai.OpenAIError, ValueError, TypeError):
            raise UpstreamError() from None
        try:
            text = data["choices"][0]["message"]["content"]
            model = data.get("model") or self.model
            counts = data.get("usage") or {}
            usage = Usage(int(counts.get("prompt_tokens") or 0), int(counts.get("completion_tokens") or 0))
        except (AttributeError, IndexError, KeyError, TypeError, ValueError):
            raise UpstreamError() from None
        if not isinstance(text, str) or not text.strip():
            raise UpstreamError(UpstreamError.EMPTY)
        return Completion(text=text, model=str(model), usage=usage)

    async def stream(self, prompt: Prompt, *, temperature: float, max_tokens: int,
                     usage: Usage) -> AsyncIterator[str]:
        """The answer as text, one piece per network read of the upstream's stream."""
        loop = asyncio.get_running_loop()
        got_text = False
        try:
            async with asyncio.timeout(self.timeout) as deadline:
                # The client's request path (auth, base URL, pool, status errors as
                # openai's types) but not its typed stream: that builds a pydantic model
                # per chunk, most of the ~270 µs of CPU a relayed delta cost
                # (bench/b9_stream_relay.py). Leaving the block closes the response, and
                # with it the upstream connection, so a vanished client stops generation.
                async with self._client.chat.completions.with_streaming_response.create(
                        model=self.model, messages=prompt.messages, temperature=temperature,
                        max_tokens=max_tokens, stream=True) as response:
                    async for text in sse_deltas(response.http_response.aiter_bytes(), usage):
                        deadline.reschedule(loop.time() + self.timeout)
                        if text:
                            got_text = True
                            yield text
        except (TimeoutError, openai.APITimeoutError, httpx.TimeoutException):
            raise UpstreamTimeout() from None
        except openai.APIStatusError as exc:
            raise UpstreamError.http(exc.status_code) from None
        except (openai.APIConnectionError, httpx.HTTPError):
            # Mid-stream transport errors reach us as httpx's, not wrapped by openai.
            raise UpstreamError("大模型服务连接中断" if got_text else UpstreamError.UNREACHABLE) from None
        except (openai.OpenAIError, ValueError, TypeError, AttributeError, KeyError, IndexError):
            raise UpstreamError() from None
        if not got_text:
            raise UpstreamError(UpstreamError.EMPTY)

    async def close(self) -> None:
        for client in self._clients:
            await client.close()


class OfflineProvider:
    """Answers with no network, from the candidate's own material (`core.offline`):
    extractive answers in the exam modes, the method and knowledge passages without
    material, so a first run without a key still gives answers fit to use.

    The answer is string work on up to 50 000 characters of material: with an
    executor it runs there, off the event loop."""

    name = "offline"
    model = "offline"
    _CHUNK_CHARS = 24

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor

    def answer_text(self, prompt: Prompt) -> str:
        """The offline answer for a prompt (deterministic)."""
        return offline_answer(prompt)

    async def _answer(self, prompt: Prompt) -> str:
        if self.executor is None:
            return self.answer_text(prompt)
        return await asyncio.get_running_loop().run_in_executor(self.executor, self.answer_text, prompt)

    async def complete(self, prompt: Prompt, *, temperature: float, max_tokens: int) -> Completion:
        return Completion(text=await self._answer(prompt), model=self.model)

    async def complete_json(self, messages: Sequence[dict[str, str]], *, temperature: float,
                            max_tokens: int) -> Completion:
        """No model, no judgement: an empty object. Callers that need one (grading)
        use their deterministic layer instead of calling this."""
        return Completion(text="{}", model=self.model)

    async def stream(self, prompt: Prompt, *, temperature: float, max_tokens: int,
                     usage: Usage) -> AsyncIterator[str]:
        text = await self._answer(prompt)
        for start in range(0, len(text), self._CHUNK_CHARS):
            yield text[start:start + self._CHUNK_CHARS]
            await asyncio.sleep(0)

    async def close(self) -> None:
        return None


async def sse_deltas(chunks: AsyncIterator[bytes], usage: Usage) -> AsyncIterator[str]:
    """The text of a `chat/completions` event stream, one string per network read.

    Deltas that arrive in the same read are joined, so they go out in one write; a read
    with one delta is passed on at once, never held back for company. `usage` is filled
    from the chunk that reports it. OpenAI-compatible servers send each event as one
    `data:` line of JSON; other SSE fields and comments are skipped."""
    buffer = b""
    async for chunk in chunks:
        lines = (buffer + chunk).split(b"\n")
        buffer = lines.pop()
        parts: list[str] = []
        for line in lines:
            if not line.startswith(b"data:"):
                continue
            data = line[5:].strip()
            if data == b"[DONE]":
                yield "".join(parts)
                return
            event = json.loads(data)
            if event.get("error"):
                raise UpstreamError("大模型服务在回答中途报告了错误")
            counts = event.get("usage")
            if counts:
                usage.prompt_tokens = int(counts.get("prompt_tokens") or 0)
                usage.completion_tokens = int(counts.get("completion_tokens") or 0)
            choices = event.get("choices")
            if choices:
                text = (choices[0].get("delta") or {}).get("content")
                if text:
                    parts.append(text)
        yield "".join(parts)


class _JsonModeRefused(Exception):
    """The endpoint rejected `response_format` (internal to `complete_json`)."""


def _error_text(exc: "openai.APIStatusError") -> str:
    try:
        return (exc.response.text or "") + " " + str(exc.message)
    except Exception:
        return str(exc)


def make_provider(*, provider: str, api_key: str, base_url: str, model: str,
                  timeout: float, concurrency: int = 10, executor: Executor | None = None) -> LLMProvider:
    """The provider the settings ask for (`concurrency`: calls expected in flight;
    `executor`: where the offline provider does its string work)."""
    if provider == "openai":
        return OpenAIProvider(api_key=api_key, base_url=base_url, model=model, timeout=timeout,
                              concurrency=concurrency)
    return OfflineProvider(executor)
