"""ChatService without HTTP: the real OpenAI provider against the fake LLM on loopback,
the real response cache in a diskcache directory and real concurrency slots."""
from __future__ import annotations

import asyncio
from concurrent.futures import ThreadPoolExecutor

import pytest
from prometheus_client import CollectorRegistry

from core.chat.service import ChatRequest, ChatService
from core.errors import ServerBusy
from core.llm import LLMGateway, LLMMeter, OpenAIProvider
from core.store import open_stores
from core.traffic.cache import ResponseCache
from core.traffic.concurrency import ConcurrencySlots

ASK = {"message": "归纳概括题怎么答？", "use_knowledge": False}


@pytest.fixture
def registry():
    return CollectorRegistry()


@pytest.fixture
def service(tmp_path, fake_llm, io_loop, registry):
    executor = ThreadPoolExecutor(2)
    stores = open_stores("diskcache", data_dir=tmp_path, redis_url="", executor=executor,
                         cache_max_bytes=2 ** 24)
    llm = OpenAIProvider(api_key="sk-test-upstream-key-0001", base_url=fake_llm.base_url,
                         model="fake-model", timeout=10)
    gateway = LLMGateway(llm, ConcurrencySlots(2), LLMMeter(registry, "server-t"))
    chat = ChatService(gateway=gateway, server_id="server-t",
                       cache=ResponseCache(stores.cache, ttl_seconds=60, max_entries=100), executor=executor)
    yield chat
    io_loop.run_sync(llm.close)
    io_loop.run_sync(stores.aclose)
    executor.shutdown()


async def test_a_miss_calls_the_llm_once_and_the_same_question_is_then_a_hit(service, fake_llm, registry):
    first = await service.answer(ChatRequest.from_payload(ASK))
    second = await service.answer(ChatRequest.from_payload(ASK))
    assert (first.cache_status, second.cache_status) == ("MISS", "HIT")
    assert first.body["answer"] == second.body["answer"] == fake_llm.reply(fake_llm.requests[0])
    assert (first.body["cached"], second.body["cached"]) == (False, True)
    assert first.body["server_id"] == "server-t" and first.body["model"] == "fake-model"
    calls = registry.get_sample_value("shenlun_llm_call_duration_seconds_count",
                                      {"server_id": "server-t", "outcome": "ok"})
    assert fake_llm.calls == 1 and calls == 1


class HeldWrites:
    """The real store, with its writes held until `release` is set."""

    def __init__(self, store):
        self._store = store
        self.release = asyncio.Event()

    async def set_many(self, items, *, ttl, max_entries=None):
        await self.release.wait()
        await self._store.set_many(items, ttl=ttl, max_entries=max_entries)

    def __getattr__(self, name):
        return getattr(self._store, name)


@pytest.mark.parametrize("stream", [False, True])
async def test_a_miss_is_answered_before_its_cache_write_and_repeats_here_hit_meanwhile(
        service, fake_llm, tmp_path, stream):
    held = service.cache.store = HeldWrites(service.cache.store)
    other = open_stores("diskcache", data_dir=tmp_path, redis_url="", executor=None, cache_max_bytes=2 ** 24)
    try:
        request = ChatRequest.from_payload(ASK)
        if stream:
            events = [name async for name, _ in service.stream(request)]
            assert events[0] == "start" and events[-1] == "done"
        else:
            assert (await service.answer(request)).cache_status == "MISS"
        # Answered while the write waits: another process does not see it yet, this one does.
        assert await other.cache.count() == 0
        assert (await service.answer(ChatRequest.from_payload(ASK))).cache_status == "HIT"
        held.release.set()
        await service.cache.flush()
        assert await other.cache.count() == 1 and fake_llm.calls == 1
    finally:
        await other.aclose()


async def test_asking_not_to_use_the_cache_calls_the_llm_every_time(service, fake_llm):
    for _ in range(2):
        result = await service.answer(ChatRequest.from_payload({**ASK, "cache": False}))
        assert result.cache_status == "BYPASS"
    assert fake_llm.calls == 2


def test_each_field_that_shapes_the_answer_changes_the_cache_key(service):
    base = {"message": "问题", "mode": "summarize", "messages": [{"role": "user", "content": "先前"},
                                                                  {"role": "assistant", "content": "答"}]}
    changes = [{"message": "问题二"}, {"mode": "analyze"}, {"material": "资料"}, {"question": "题目"},
               {"word_limit": 300}, {"temperature": 0.2}, {"max_tokens": 512},
               {"messages": [{"role": "user", "content": "先前"}, {"role": "assistant", "content": "答二"}]}]
    keys = {service._cache_key(ChatRequest.from_payload({**base, **change}), None) for change in changes}
    same = service._cache_key(ChatRequest.from_payload(dict(base)), None)
    assert same == service._cache_key(ChatRequest.from_payload(dict(reversed(list(base.items())))), None)
    assert len(keys | {same}) == len(changes) + 1
    versions = {service._cache_key(ChatRequest.from_payload(base), v) for v in (None, "", "v1", "v2", "库\"1")}
    assert len(versions) == 5


async def test_a_different_temperature_is_a_different_answer(service, fake_llm):
    await service.answer(ChatRequest.from_payload(ASK))
    other = await service.answer(ChatRequest.from_payload({**ASK, "temperature": 0.1}))
    assert other.cache_status == "MISS" and fake_llm.calls == 2
    assert fake_llm.requests[-1]["temperature"] == 0.1


async def test_with_every_slot_held_a_miss_is_busy_before_any_call(service, fake_llm):
    async with service.gateway.slots.hold(), service.gateway.slots.hold():
        with pytest.raises(ServerBusy):
            await service.answer(ChatRequest.from_payload(ASK))
    assert fake_llm.calls == 0 and service.gateway.slots.in_use == 0


async def test_a_streamed_answer_is_cached_once_complete_and_replayed_as_a_hit(service, fake_llm):
    fake_llm.reply = lambda body: "分条作答，每条以关键词开头，同类合并。" * 3

    async def events():
        return [event async for event in service.stream(ChatRequest.from_payload({**ASK, "stream": True}))]

    first, second = await events(), await events()
    for run, status in ((first, "MISS"), (second, "HIT")):
        assert run[0] == ("start", {"cache": status}) and run[-1][0] == "done"
        assert "".join(data["delta"] for kind, data in run if kind == "delta") == fake_llm.reply({})
    assert fake_llm.calls == 1


async def test_a_streamed_answer_not_to_be_cached_still_reports_its_counts_and_is_never_stored(service, fake_llm):
    fake_llm.reply = lambda body: "分条作答，同类合并。" * 4  # 40 characters
    ask = {**ASK, "stream": True, "word_limit": 30}

    async def events(body):
        return [event async for event in service.stream(ChatRequest.from_payload(body))]

    for _ in range(2):
        run = await events({**ask, "cache": False})
        assert run[0] == ("start", {"cache": "BYPASS"})
        kind, done = run[-1]
        assert kind == "done" and "answer" not in done
        assert (done["char_count"], done["word_limit"], done["over_limit"]) == (40, 30, True)
        assert set(done["usage"]) >= {"prompt_tokens", "completion_tokens"}
    # Nothing was stored: the same question asked with the cache is a miss.
    assert (await events(ask))[0] == ("start", {"cache": "MISS"})
    assert fake_llm.calls == 3
