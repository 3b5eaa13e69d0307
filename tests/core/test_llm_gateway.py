"""The one LLM gateway (core.llm.LLMGateway) through the fake OpenAI-compatible server:
a slot per session, every call metered, usage summed, the one follow-up call."""
from __future__ import annotations

import asyncio

import pytest
from prometheus_client import CollectorRegistry

from core.chat.prompts import Prompt
from core.errors import ServerBusy, UpstreamError
from core.llm import LLMGateway, LLMMeter, OpenAIProvider
from core.traffic.concurrency import ConcurrencySlots


def prompt(text: str) -> Prompt:
    return Prompt(mode="chat", question=text, messages=[{"role": "user", "content": text}])


@pytest.fixture
def registry() -> CollectorRegistry:
    return CollectorRegistry()


@pytest.fixture
def gateway(fake_llm, registry, io_loop):
    llm = OpenAIProvider(api_key="sk-test", base_url=fake_llm.base_url, model="fake-model", timeout=10)
    yield LLMGateway(llm, ConcurrencySlots(1), LLMMeter(registry, "server-1"))
    io_loop.run_sync(llm.close)


def calls(registry: CollectorRegistry, outcome: str) -> float:
    return registry.get_sample_value("shenlun_llm_call_duration_seconds_count",
                                     {"server_id": "server-1", "outcome": outcome}) or 0.0


def tokens(registry: CollectorRegistry, kind: str) -> float:
    return registry.get_sample_value("shenlun_llm_tokens_total", {"server_id": "server-1", "kind": kind}) or 0.0


async def test_a_session_sums_the_usage_of_the_answer_and_its_follow_up(gateway, fake_llm, registry):
    async with gateway.session() as call:
        first = await call.complete(prompt("概括问题"), temperature=0.2, max_tokens=100)
        again = await call.follow_up(prompt("请压缩"), temperature=0.2, max_tokens=100, purpose="condense")
    assert again is not None and fake_llm.calls == 2
    # The fake reports 11 prompt tokens and one completion token per character.
    assert first.usage.as_dict() == {"prompt_tokens": 11, "completion_tokens": len(first.text)}
    assert call.usage.as_dict() == {"prompt_tokens": 22,
                                    "completion_tokens": len(first.text) + len(again.text)}
    assert calls(registry, "ok") == 2
    assert (tokens(registry, "prompt"), tokens(registry, "completion")) == (22, call.usage.completion_tokens)


async def test_a_failed_follow_up_leaves_the_first_answer_and_its_usage(gateway, fake_llm, registry):
    async with gateway.session() as call:
        first = await call.complete(prompt("概括问题"), temperature=0.2, max_tokens=100)
        fake_llm.status = 500
        assert await call.follow_up(prompt("请压缩"), temperature=0.2, max_tokens=100, purpose="condense") is None
    assert call.usage == first.usage
    assert (calls(registry, "ok"), calls(registry, "upstream_error")) == (1, 1)
    assert gateway.meter.upstream.as_dict()["state"] == "failing"


async def test_the_slot_is_released_when_a_call_fails(gateway, fake_llm, registry):
    fake_llm.status = 502
    with pytest.raises(UpstreamError):
        async with gateway.session() as call:
            assert gateway.slots.in_use == 1
            await call.complete_json([{"role": "user", "content": "评分"}], temperature=0.2, max_tokens=50)
    assert gateway.slots.in_use == 0
    fake_llm.status = 200
    async with gateway.session() as call:  # the one slot is free again at once (no queue)
        await call.complete(prompt("再来"), temperature=0.2, max_tokens=50)
    assert gateway.slots.in_use == 0 and calls(registry, "upstream_error") == 1


async def test_a_second_session_is_refused_while_the_only_slot_is_held(gateway, fake_llm):
    fake_llm.latency = 0.5
    first = asyncio.ensure_future(_one_answer(gateway))
    while gateway.slots.in_use == 0:  # noqa: ASYNC110 - polls another task's state; the test timeout bounds it
        await asyncio.sleep(0.01)
    with pytest.raises(ServerBusy):
        async with gateway.session():
            pass
    await first
    assert gateway.slots.in_use == 0


async def _one_answer(gateway: LLMGateway) -> None:
    async with gateway.session() as call:
        await call.complete(prompt("慢"), temperature=0.2, max_tokens=50)


async def test_an_abandoned_stream_is_metered_as_abandoned_and_frees_the_slot(gateway, fake_llm, registry):
    fake_llm.chunk_chars, fake_llm.chunk_delay = 2, 0.01
    fake_llm.reply = lambda body: "甲乙丙丁戊己庚辛壬癸" * 3

    async def relay() -> list[str]:
        got = []
        async with gateway.session() as call:
            with call.stream(prompt("流式"), temperature=0.2, max_tokens=50) as deltas:
                async for delta in deltas:
                    got.append(delta)
                    if len(got) == 2:
                        raise asyncio.CancelledError  # the client went away
        return got

    with pytest.raises(asyncio.CancelledError):
        await relay()
    assert gateway.slots.in_use == 0
    assert calls(registry, "abandoned") == 1 and calls(registry, "ok") == 0
    # State is left as it was: giving up says nothing about the upstream.
    assert gateway.meter.upstream.as_dict()["state"] == "unknown"


async def test_a_whole_stream_is_metered_once_as_ok(gateway, fake_llm, registry):
    async with gateway.session() as call:
        with call.stream(prompt("流式"), temperature=0.2, max_tokens=50) as deltas:
            text = "".join([d async for d in deltas])
    assert text.startswith("这是模拟大模型的回答")
    assert calls(registry, "ok") == 1 and gateway.slots.in_use == 0
