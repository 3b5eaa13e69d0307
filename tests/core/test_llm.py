"""OpenAIProvider against the fake OpenAI-compatible server on loopback, through the
real `openai` client: what it sends, what it returns, and each upstream failure as the
error the contract names."""
from __future__ import annotations

import asyncio
import json

import pytest

from core.chat.prompts import build_prompt
from core.errors import UpstreamError, UpstreamTimeout
from core.llm import OfflineProvider, OpenAIProvider, Usage, make_provider
from testkit import free_port

PROMPT = build_prompt(mode="summarize", question="归纳Q市垃圾分类存在的问题")


@pytest.fixture
def provider(fake_llm, io_loop):
    llm = OpenAIProvider(api_key="sk-test-upstream-key-0001", base_url=fake_llm.base_url,
                         model="fake-model", timeout=10)
    yield llm
    io_loop.run_sync(llm.close)


async def test_complete_sends_the_prompt_and_returns_text_model_and_usage(provider, fake_llm):
    fake_llm.reply = lambda body: "要点一：设施不足。"
    completion = await provider.complete(PROMPT, temperature=0.3, max_tokens=256)
    assert (completion.text, completion.model) == ("要点一：设施不足。", "fake-model")
    assert completion.usage.as_dict() == {"prompt_tokens": 11, "completion_tokens": len("要点一：设施不足。")}
    sent = fake_llm.requests[-1]
    assert sent["messages"] == PROMPT.messages and sent["model"] == "fake-model"
    assert (sent["temperature"], sent["max_tokens"]) == (0.3, 256) and not sent.get("stream")


async def test_stream_yields_the_whole_text_in_pieces_and_fills_usage_when_reported(provider, fake_llm):
    fake_llm.reply = lambda body: "分条作答，每条以关键词开头。" * 3
    fake_llm.chunk_delay = 0.01  # chunks that arrive together are passed on together
    usage = Usage()
    pieces = [p async for p in provider.stream(PROMPT, temperature=0.7, max_tokens=64, usage=usage)]
    assert len(pieces) > 1 and "".join(pieces) == fake_llm.reply({})
    assert fake_llm.requests[-1]["stream"] is True
    assert usage.as_dict() == {"prompt_tokens": 0, "completion_tokens": 0}  # the fake reports none


@pytest.mark.parametrize("break_it, message", [
    (lambda fake: setattr(fake, "status", 503), None),
    (lambda fake: setattr(fake, "garbage", True), None),
    (lambda fake: setattr(fake, "reply", lambda body: "   "), "大模型服务返回了空回答"),
])
async def test_a_failing_upstream_is_an_upstream_error(provider, fake_llm, break_it, message):
    break_it(fake_llm)
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(PROMPT, temperature=0.7, max_tokens=64)
    assert raised.value.code == "upstream_error"
    if message:
        assert raised.value.message == message


async def test_a_slow_upstream_is_a_timeout_after_one_call(fake_llm):
    fake_llm.latency = 1.0
    llm = OpenAIProvider(api_key="", base_url=fake_llm.base_url, model="fake-model", timeout=0.3)
    try:
        with pytest.raises(UpstreamTimeout):
            await llm.complete(PROMPT, temperature=0.7, max_tokens=64)
    finally:
        await llm.close()
    assert fake_llm.calls == 1  # no retries behind the caller's back


@pytest.mark.parametrize("latency,chunk_delay", [(1.0, 0.0), (0.0, 1.0)], ids=["before the first", "midway"])
async def test_a_stream_silent_for_the_timeout_is_a_timeout(fake_llm, latency, chunk_delay):
    fake_llm.latency, fake_llm.chunk_delay = latency, chunk_delay
    fake_llm.reply = lambda body: "很长的回答" * 4
    llm = OpenAIProvider(api_key="", base_url=fake_llm.base_url, model="fake-model", timeout=0.3)
    try:
        with pytest.raises(UpstreamTimeout):
            async for _ in llm.stream(PROMPT, temperature=0.7, max_tokens=64, usage=Usage()):
                pass
    finally:
        await llm.close()


async def test_a_client_slow_to_take_the_stream_is_not_the_models_timeout(fake_llm):
    # The upstream sends at once; the reader pauses longer than the timeout between reads.
    fake_llm.reply = lambda body: "很长的回答" * 4
    fake_llm.chunk_chars = 5
    llm = OpenAIProvider(api_key="", base_url=fake_llm.base_url, model="fake-model", timeout=0.3)
    got: list[str] = []
    try:
        async for piece in llm.stream(PROMPT, temperature=0.7, max_tokens=64, usage=Usage()):
            got.append(piece)
            await asyncio.sleep(0.4)
    finally:
        await llm.close()
    assert "".join(got) == "很长的回答" * 4


async def test_a_stream_cut_midway_says_the_connection_broke(provider, fake_llm):
    fake_llm.reply = lambda body: "很长的回答" * 20
    fake_llm.fail_after_chunks = 2
    got: list[str] = []
    with pytest.raises(UpstreamError) as raised:
        async for piece in provider.stream(PROMPT, temperature=0.7, max_tokens=64, usage=Usage()):
            got.append(piece)
    assert got and raised.value.message == "大模型服务连接中断"


async def test_nothing_listening_is_cannot_connect(io_loop):
    llm = OpenAIProvider(api_key="", base_url=f"http://127.0.0.1:{free_port()}/v1", model="m", timeout=2)
    try:
        with pytest.raises(UpstreamError) as raised:
            await llm.complete(PROMPT, temperature=0.7, max_tokens=64)
        assert raised.value.message == "无法连接大模型服务"
    finally:
        await llm.close()


async def test_json_mode_refused_once_is_never_offered_again(provider, fake_llm):
    fake_llm.refuse_json_mode = True
    fake_llm.reply = lambda body: json.dumps({"score": 7})
    messages = [{"role": "user", "content": "只输出 JSON"}]
    for _ in range(2):
        completion = await provider.complete_json(messages, temperature=0.0, max_tokens=64)
        assert json.loads(completion.text) == {"score": 7}
    formats = ["response_format" in body for body in fake_llm.requests]
    assert formats == [True, False, False]


def test_the_settings_choose_the_provider():
    openai_one = make_provider(provider="openai", api_key="k", base_url="http://127.0.0.1:9/v1",
                               model="m", timeout=1)
    assert isinstance(openai_one, OpenAIProvider) and openai_one.model == "m"
    offline = make_provider(provider="offline", api_key="", base_url="", model="m", timeout=1)
    assert isinstance(offline, OfflineProvider) and offline.model == "offline"


async def test_every_call_carries_the_client_s_own_headers(fake_llm, io_loop):
    # The request is built once from the openai client (auth, SDK headers) and reused:
    # the second call must carry the same, with its own body.
    llm = OpenAIProvider(api_key="sk-test-upstream-key-0003", base_url=fake_llm.base_url,
                         model="fake-model", timeout=10)
    try:
        for question in ("第一问", "第二问"):
            await llm.complete(build_prompt(mode="chat", question=question), temperature=0.2, max_tokens=32)
    finally:
        await llm.close()
    assert [r["messages"][-1]["content"] for r in fake_llm.requests] == ["第一问", "第二问"]
    for sent in fake_llm.headers:
        assert sent["Authorization"] == "Bearer sk-test-upstream-key-0003"
        assert sent["User-Agent"].startswith("AsyncOpenAI/Python")
        assert sent["Content-Type"] == "application/json" and "X-Stainless-Lang" in sent
        assert "Accept-Encoding" not in sent  # the body is read as sent


async def test_an_error_status_keeps_the_upstream_s_code(provider, fake_llm):
    fake_llm.status = 429
    with pytest.raises(UpstreamError) as raised:
        await provider.complete(PROMPT, temperature=0.7, max_tokens=64)
    assert raised.value.message == "大模型服务返回错误（HTTP 429）"


async def test_a_redirect_is_an_upstream_error_not_followed(io_loop):
    # An OpenAI-compatible endpoint answers, it does not redirect: a 3xx is its error.
    seen: list[bytes] = []

    async def redirect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        seen.append((await reader.readuntil(b"\r\n\r\n")).split(b"\r\n")[0])
        writer.write(b"HTTP/1.1 307 Temporary Redirect\r\nLocation: http://127.0.0.1:9/v1/chat/completions\r\n"
                     b"Content-Length: 0\r\n\r\n")
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(redirect, "127.0.0.1", 0)
    llm = OpenAIProvider(api_key="sk-test", base_url=f"http://127.0.0.1:{server.sockets[0].getsockname()[1]}/v1",
                         model="m", timeout=5)
    try:
        with pytest.raises(UpstreamError) as raised:
            await llm.complete(PROMPT, temperature=0.7, max_tokens=64)
    finally:
        await llm.close()
        server.close()
    assert raised.value.message == "大模型服务返回错误（HTTP 307）"
    assert seen == [b"POST /v1/chat/completions HTTP/1.1"]
