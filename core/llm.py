"""LLM providers (one interface, an OpenAI-compatible one and an offline one) and the
one gateway the use cases call them through (`LLMGateway`: slot, meter, usage).

Retry policy: the `openai` client is built with `max_retries=0`, and every call is
bounded by one deadline of `REQUEST_TIMEOUT` seconds (for a stream: until the first
delta, then between two deltas). A user request therefore never waits more than
one timeout on the model; retrying is left to the client, which sees 502/504.
"""
from __future__ import annotations

import asyncio
import json
import logging
import sys
import threading
import time
from collections.abc import AsyncIterable, AsyncIterator, Iterator, Sequence
from concurrent.futures import Executor, Future
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol

from prometheus_client import CollectorRegistry, Counter, Histogram

from core.chat.offline import offline_answer
from core.chat.prompts import Prompt
from core.errors import UpstreamError, UpstreamTimeout
from core.ops.health import UpstreamState
from core.traffic.concurrency import ConcurrencySlots

if TYPE_CHECKING:  # imported by OpenAIProvider.prepare(), in the executor (the warm-up)
    import openai
    from openai import AsyncOpenAI

    from core.curl_transport import CurlStream, CurlTransport

log = logging.getLogger("shenlun.llm")


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def add(self, other: Usage) -> None:
        """Count `other`'s tokens in too (the calls of one answer add up)."""
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens

    def as_dict(self) -> dict[str, int]:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens}


# An LLM call takes seconds, not milliseconds.
LLM_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0)
CALL_OUTCOMES = ("ok", "upstream_error", "upstream_timeout", "abandoned")


class LLMMeter:
    """Calls this process made to the LLM (by outcome), the time spent waiting on them,
    the tokens they reported and how the last one went, for the metrics and /health;
    shared by every service that calls the model.

    The collectors live on `registry` (the process's, from `build_context`; a private
    one when none is given, never the library's global default)."""

    def __init__(self, registry: CollectorRegistry | None = None, server_id: str = "") -> None:
        registry = registry if registry is not None else CollectorRegistry()
        self.upstream = UpstreamState()
        calls = Histogram("shenlun_llm_call_duration_seconds",
                          "Time waiting on one LLM call, by outcome (ok, upstream_error, "
                          "upstream_timeout, abandoned: the caller gave up first).",
                          ["server_id", "outcome"], buckets=LLM_BUCKETS, registry=registry)
        self._calls = {outcome: calls.labels(server_id, outcome) for outcome in CALL_OUTCOMES}
        tokens = Counter("shenlun_llm_tokens", "Tokens the LLM reported, by kind.",
                         ["server_id", "kind"], registry=registry)
        self._prompt_tokens = tokens.labels(server_id, "prompt")
        self._completion_tokens = tokens.labels(server_id, "completion")

    @contextmanager
    def timed(self) -> Iterator[None]:
        """Count one call and the time its body takes, by outcome, and record whether
        the upstream answered (a caller that gives up early records no state)."""
        started = time.monotonic()
        outcome = "abandoned"
        try:
            yield
        except (UpstreamError, UpstreamTimeout) as exc:
            outcome = exc.code
            self.upstream.failed(exc.code, exc.message)
            raise
        else:
            outcome = "ok"
            self.upstream.succeeded()
        finally:
            self._calls[outcome].observe(time.monotonic() - started)

    def counted(self, usage: Usage) -> None:
        """Add one call's reported tokens."""
        self._prompt_tokens.inc(usage.prompt_tokens)
        self._completion_tokens.inc(usage.completion_tokens)


@dataclass
class Completion:
    """One answer from the model, or the answer a use case settled on.

    `citations`, `revised` and `revision_kept` are the chat service's: an exam answer's
    grounding, and the one revision call asked for (condense | expand | revise) with
    whether its answer was the better one."""

    text: str
    model: str
    usage: Usage = field(default_factory=Usage)
    citations: list[dict[str, Any]] = field(default_factory=list)
    revised: str | None = None
    revision_kept: bool | None = None


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

    def warm_up(self) -> Future[None]:
        """Start loading what the first call needs, off the loop (call on the loop)."""

    async def close(self) -> None:
        """Release connections."""


class LLMGateway:
    """The one way the use cases (chat, grading) reach the model.

    A `session()` holds one concurrency slot for its whole body (the answer and its one
    follow-up call); each call through it is metered and its tokens added to the
    session's `usage`, so what an answer reports is what all of its calls cost."""

    def __init__(self, llm: LLMProvider, slots: ConcurrencySlots, meter: LLMMeter) -> None:
        self.llm = llm
        self.slots = slots
        self.meter = meter

    @property
    def offline(self) -> bool:
        return self.llm.name == "offline"

    @asynccontextmanager
    async def session(self) -> AsyncIterator[LLMSession]:
        """One slot, held until the block is left (ServerBusy when none frees up)."""
        async with self.slots.hold():
            yield LLMSession(self.llm, self.meter)


class LLMSession:
    """The calls of one answer, made while its slot is held (see `LLMGateway`)."""

    def __init__(self, llm: LLMProvider, meter: LLMMeter) -> None:
        self._llm = llm
        self._meter = meter
        self.usage = Usage()  # summed over every call of the session

    async def complete(self, prompt: Prompt, *, temperature: float, max_tokens: int) -> Completion:
        """The whole answer to `prompt` (its own usage; the session's grows by it)."""
        with self._meter.timed():
            completion = await self._llm.complete(prompt, temperature=temperature, max_tokens=max_tokens)
        self._count(completion.usage)
        return completion

    async def complete_json(self, messages: Sequence[dict[str, str]], *, temperature: float,
                            max_tokens: int) -> Completion:
        """A whole answer asked for as one JSON object (not parsed here)."""
        with self._meter.timed():
            completion = await self._llm.complete_json(messages, temperature=temperature,
                                                       max_tokens=max_tokens)
        self._count(completion.usage)
        return completion

    async def follow_up(self, prompt: Prompt, *, temperature: float, max_tokens: int,
                        purpose: str) -> Completion | None:
        """The one optional second call of an answer (condense, expand, revise): None
        when the upstream fails or times out, and the first answer stands."""
        try:
            return await self.complete(prompt, temperature=temperature, max_tokens=max_tokens)
        except (UpstreamError, UpstreamTimeout):
            log.warning("the %s call failed; the first answer stands", purpose)
            return None

    @contextmanager
    def stream(self, prompt: Prompt, *, temperature: float, max_tokens: int) -> Iterator[AsyncIterator[str]]:
        """The provider's delta iterator, metered for the body of the `with`; its usage
        is added when the body completes. No wrapper sits between the deltas and the
        caller: a relayed delta costs what the provider's iterator costs."""
        usage = Usage()
        with self._meter.timed():
            yield self._llm.stream(prompt, temperature=temperature, max_tokens=max_tokens, usage=usage)
        self._count(usage)

    def _count(self, usage: Usage) -> None:
        self.usage.add(usage)
        self._meter.counted(usage)


class OpenAIProvider:
    """Any OpenAI-compatible `chat/completions` endpoint through `AsyncOpenAI`."""

    name = "openai"

    def __init__(self, *, api_key: str, base_url: str, model: str, timeout: float,
                 concurrency: int = 10, executor: Executor | None = None) -> None:
        self.model = model
        self.timeout = timeout
        self._api_key = api_key
        self._base_url = base_url
        self._concurrency = concurrency
        # `import openai` is ~1 s of CPU (more under load): the largest part of the
        # start-up. prepare() imports it and builds the client; the server runs it in
        # `executor` while it starts (warm_up), and a call that comes before that is
        # done waits for it there, never on the event loop.
        self._executor = executor
        self._sdk: Any = None    # the openai module, once prepared
        self._httpx: Any = None  # and httpx
        self._openai: AsyncOpenAI | None = None
        self._transport: CurlTransport | None = None
        self._completions_url = ""
        self._headers: list[str] = []  # the client's own request headers, built once
        self._preparing: Future[None] | None = None
        self._build_lock = threading.Lock()

    def prepare(self) -> None:
        """Import openai and build the client, once (blocking)."""
        with self._build_lock:
            if self._openai is not None:
                return
            # httpx imports its command-line client whenever click and rich are installed
            # (dev tools bring them): ~90 ms of the start-up for a module a server never
            # runs. An import of a module that sys.modules holds as None fails, and httpx
            # then defines a stub `main` (the change upstream: encode/httpx#3547).
            sys.modules.setdefault("httpx._main", None)  # type: ignore[arg-type]
            import httpx
            import openai
            from openai._models import FinalRequestOptions

            from core.curl_transport import CurlTransport

            # Every call is carried by libcurl (see core/curl_transport.py): one pool for
            # every call in flight. The client only builds the request (below) and maps
            # error statuses, it never sends: its httpx client gets a transport that
            # cannot, and looks at no proxy variable (libcurl does; httpx's default client
            # builds an SSL context per proxy, ~60–120 ms, and refuses a socks proxy
            # without socksio). A local endpoint (vLLM, Ollama) may need no key, but the
            # client insists on one.
            transport = CurlTransport(max_clients=self._concurrency)
            client = openai.AsyncOpenAI(
                api_key=self._api_key or "none", base_url=self._base_url or None,
                timeout=self.timeout, max_retries=0,
                http_client=httpx.AsyncClient(transport=httpx.AsyncBaseTransport(), trust_env=False))
            # The endpoint's absolute URL, from the client's base URL once (a query on it kept).
            base = client.base_url
            url = str(base.copy_with(path=base.path.rstrip("/") + "/chat/completions"))
            # The request the client itself would send, built once: its URL (and default
            # query), auth and headers are the same on every call, only the body changes.
            # `client.post()` rebuilds all of it per call (option models, header merging,
            # cookies, the httpx request and response): ~0.6 ms of CPU. With the transport's
            # own change, an LLM call went from 1.57 to 0.51 ms of CPU (bench/hit_costs.py,
            # one run each). Accept-Encoding goes: the body is read as sent.
            template = client._build_request(FinalRequestOptions.construct(
                method="post", url=url, json_data={}))
            self._completions_url = str(template.url)
            self._headers = [f"{name}: {value}" for name, value in template.headers.multi_items()
                             if name.lower() not in ("content-length", "accept-encoding")]
            self._transport = transport
            # `_openai` last: a call on the loop that sees it set finds the rest set too.
            self._sdk, self._httpx = openai, httpx
            self._openai = client

    def warm_up(self) -> Future[None]:
        """prepare() in the executor, started once; its future (call on the loop)."""
        if self._preparing is None:
            if self._executor is None:
                self._preparing = Future()
                self.prepare()
                self._preparing.set_result(None)
            else:
                self._preparing = self._executor.submit(self.prepare)
        return self._preparing

    async def _client(self) -> AsyncOpenAI:
        """The client; the first calls wait for prepare(), off the loop."""
        if self._openai is None:
            await asyncio.wrap_future(self.warm_up())
            assert self._openai is not None
        return self._openai

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

    @asynccontextmanager
    async def _post(self, payload: dict[str, Any]) -> AsyncIterator[CurlStream]:
        """One `chat/completions` call through the client's transport with the client's
        headers: the stream once a 2xx head is in; an error status raised as the openai
        client's own APIStatusError (its subclass for the code, its message). Leaving
        the block closes the transfer, so a caller that gives up stops generation."""
        client = await self._client()
        assert self._transport is not None  # set by prepare() before _openai
        # The typed layer is skipped too: `create()` walks every message through a
        # TypedDict transformer and builds pydantic models of the answer (~0.8 ms a call)
        # or of every streamed chunk (most of the ~270 µs a relayed delta cost); we need
        # the text and two counters. The JSON is what httpx would encode.
        body = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
        stream = self._transport.open("POST", self._completions_url, self._headers, body,
                                      connect_timeout=self.timeout, read_timeout=self.timeout)
        try:
            status = await stream.head()
            if status >= 300:
                httpx = self._httpx
                response = httpx.Response(status, headers=stream.fields(), content=await stream.read(),
                                          request=httpx.Request("POST", self._completions_url))
                raise client._make_status_error_from_response(response)
            yield stream
        finally:
            await stream.aclose()

    async def _complete_messages(self, messages: list[dict[str, str]], temperature: float,
                                 max_tokens: int, extra: dict[str, Any]) -> Completion:
        payload = {"model": self.model, "messages": messages, "temperature": temperature,
                   "max_tokens": max_tokens, **extra}
        await self._client()
        openai, httpx = self._sdk, self._httpx  # imported by prepare()
        try:
            async with asyncio.timeout(self.timeout):
                async with self._post(payload) as stream:
                    data = json.loads(await stream.read())
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamTimeout() from None
        except openai.APIStatusError as exc:
            if extra and exc.status_code in (400, 422) and "response_format" in _error_text(exc):
                raise _JsonModeRefused() from None
            raise UpstreamError.http(exc.status_code) from None
        except httpx.TransportError:
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
        got_text = False
        payload = {"model": self.model, "messages": prompt.messages, "temperature": temperature,
                   "max_tokens": max_tokens, "stream": True}
        await self._client()
        openai, httpx = self._sdk, self._httpx  # imported by prepare()
        try:
            # No deadline of our own around the stream: the transport times the silence
            # (connect, then `timeout` without a byte from the upstream, pushed back per
            # read), so a client slow to take the deltas is not blamed on the model, and
            # no timer is moved per delta.
            async with self._post(payload) as stream:
                async for text in sse_deltas(stream, usage):
                    if text:
                        got_text = True
                        yield text
        except (TimeoutError, httpx.TimeoutException):
            raise UpstreamTimeout() from None
        except openai.APIStatusError as exc:
            raise UpstreamError.http(exc.status_code) from None
        except httpx.TransportError:
            # Mid-stream: the answer was cut off, not refused.
            raise UpstreamError("大模型服务连接中断" if got_text else UpstreamError.UNREACHABLE) from None
        except (openai.OpenAIError, ValueError, TypeError, AttributeError, KeyError, IndexError):
            raise UpstreamError() from None
        if not got_text:
            raise UpstreamError(UpstreamError.EMPTY)

    async def close(self) -> None:
        if self._openai is not None:
            await self._openai.close()
        if self._transport is not None:
            await self._transport.aclose()


class OfflineProvider:
    """Answers with no network, from the candidate's own material (`core.chat.offline`):
    extractive answers in the exam modes, the method and knowledge passages without
    material, so a first run without a key still gives answers fit to use.

    The answer is string work on up to 50 000 characters of material: with an
    executor it runs there, off the event loop."""

    name = "offline"
    model = "offline"
    _CHUNK_CHARS = 24

    def __init__(self, executor: Executor | None = None) -> None:
        self.executor = executor

    def warm_up(self) -> Future[None]:
        """Nothing to load: a done future."""
        done: Future[None] = Future()
        done.set_result(None)
        return done

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


async def sse_deltas(chunks: AsyncIterable[bytes], usage: Usage) -> AsyncIterator[str]:
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


def _error_text(exc: openai.APIStatusError) -> str:
    try:
        return (exc.response.text or "") + " " + str(exc.message)
    except Exception:
        return str(exc)


def make_provider(*, provider: str, api_key: str, base_url: str, model: str,
                  timeout: float, concurrency: int = 10, executor: Executor | None = None) -> LLMProvider:
    """The provider the settings ask for (`concurrency`: calls expected in flight;
    `executor`: where the client is built and the offline provider does its string work)."""
    if provider == "openai":
        return OpenAIProvider(api_key=api_key, base_url=base_url, model=model, timeout=timeout,
                              concurrency=concurrency, executor=executor)
    return OfflineProvider(executor)
