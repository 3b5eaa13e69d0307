"""Traffic control in one process: rate limit answers, the concurrency cap, the cache."""
from __future__ import annotations

import asyncio
import json
import re
import time

import pytest

from tests.conftest import both_backends, error_of, post_json
from tests.handlers.test_chat import parse_sse, stream_chat

CHAT = {"message": "如何答好归纳概括题？", "mode": "summarize", "use_knowledge": False}


# --- rate limit ---

@both_backends
@pytest.mark.settings(rate_limit_per_minute=5)
async def test_bucket_empties_into_429_with_headers(http_server_client, fake_llm):
    codes, last_ok = [], None
    started = time.monotonic()
    for _ in range(7):
        response = await post_json(http_server_client, "/api/chat", CHAT)
        codes.append(response.code)
        if response.code == 200:
            last_ok = response
    assert codes == [200] * 5 + [429] * 2
    assert last_ok.headers["X-RateLimit-Limit"] == "5"
    assert last_ok.headers["X-RateLimit-Remaining"] == "0"
    refused = await post_json(http_server_client, "/api/chat", CHAT)
    assert error_of(refused)["code"] == "rate_limited"
    # 5/min: one token every 12 s, less what refilled since the first request (the first
    # LLM call may wait for the client to load).
    assert 12 - (time.monotonic() - started) <= int(refused.headers["Retry-After"]) <= 12
    assert refused.headers["X-RateLimit-Limit"] == "5"
    assert refused.headers["X-RateLimit-Remaining"] == "0"
    assert 0 < int(refused.headers["X-RateLimit-Reset"]) <= 60
    assert fake_llm.calls == 1  # four of the five were cache hits, the refusals cost nothing


@both_backends
@pytest.mark.settings(rate_limit_per_minute=2)
async def test_clients_have_their_own_buckets_and_health_is_never_limited(http_server_client):
    for _ in range(2):
        assert (await post_json(http_server_client, "/api/chat", CHAT,
                                headers={"X-Real-IP": "10.0.0.1"})).code == 200
    assert (await post_json(http_server_client, "/api/chat", CHAT,
                            headers={"X-Real-IP": "10.0.0.1"})).code == 429
    # Loopback is a trusted proxy by default: X-Real-IP names another client.
    assert (await post_json(http_server_client, "/api/chat", CHAT,
                            headers={"X-Real-IP": "10.0.0.2"})).code == 200
    for _ in range(5):
        assert (await http_server_client.fetch("/health", raise_error=False)).code == 200


@both_backends
@pytest.mark.settings(rate_limit_per_minute=2, trusted_proxies=("192.0.2.0/24",))
async def test_forwarded_headers_from_an_untrusted_peer_are_ignored(http_server_client):
    for n in range(2):
        assert (await post_json(http_server_client, "/api/chat", CHAT,
                                headers={"X-Forwarded-For": f"10.9.9.{n}"})).code == 200
    spoofed = await post_json(http_server_client, "/api/chat", CHAT,
                              headers={"X-Forwarded-For": "10.9.9.99", "X-Real-IP": "10.9.9.98"})
    assert spoofed.code == 429  # still the loopback peer's bucket


# --- concurrency cap ---

@pytest.mark.settings(max_concurrent_requests=3)
async def test_requests_beyond_the_cap_get_503_at_once(http_server_client, fake_llm, ctx):
    fake_llm.latency = 1.0
    loop = asyncio.get_running_loop()

    async def one(n: int):
        started = loop.time()
        response = await post_json(http_server_client, "/api/chat", {**CHAT, "message": f"问题{n}"})
        return response, loop.time() - started

    results = await asyncio.gather(*(one(n) for n in range(8)))
    ok = [r for r, _ in results if r.code == 200]
    busy = [(r, t) for r, t in results if r.code == 503]
    assert len(ok) == 3 and len(busy) == 5
    for response, elapsed in busy:
        assert error_of(response)["code"] == "server_busy"
        assert response.headers["Retry-After"] == "1"
        assert elapsed < 0.9  # refused, not queued behind the slow ones
    assert ctx.slots.in_use == 0 and fake_llm.calls == 3


@pytest.mark.settings(max_concurrent_requests=2, request_timeout=0.3)
async def test_slots_come_back_after_timeouts_and_errors(http_server_client, fake_llm, ctx):
    fake_llm.latency = 1.0
    timed_out = await asyncio.gather(*(post_json(http_server_client, "/api/chat",
                                                 {**CHAT, "message": f"超时{n}"}) for n in range(2)))
    assert [r.code for r in timed_out] == [504, 504]
    fake_llm.latency, fake_llm.status = 0.0, 500
    assert (await post_json(http_server_client, "/api/chat", {**CHAT, "message": "错误"})).code == 502
    assert ctx.slots.in_use == 0
    fake_llm.status = 200
    fine = await asyncio.gather(*(post_json(http_server_client, "/api/chat",
                                            {**CHAT, "message": f"正常{n}"}) for n in range(2)))
    assert [r.code for r in fine] == [200, 200]


@pytest.mark.settings(max_concurrent_requests=1, queue_timeout=2.0)
async def test_queue_timeout_lets_a_request_wait_for_a_slot(http_server_client, fake_llm):
    fake_llm.latency = 0.3
    results = await asyncio.gather(*(post_json(http_server_client, "/api/chat",
                                               {**CHAT, "message": f"排队{n}"}) for n in range(3)))
    assert [r.code for r in results] == [200, 200, 200]


@pytest.mark.settings(max_concurrent_requests=1)
async def test_a_busy_stream_is_a_plain_503(http_server_client, fake_llm):
    fake_llm.latency = 0.8
    slow = asyncio.ensure_future(post_json(http_server_client, "/api/chat", {**CHAT, "message": "慢"}))
    await asyncio.sleep(0.2)
    response, chunks = await stream_chat(http_server_client, {**CHAT, "message": "快"})
    assert response.code == 503
    assert json.loads(b"".join(c for _, c in chunks))["error"]["code"] == "server_busy"
    assert (await slow).code == 200


# --- response cache ---

@both_backends
async def test_identical_requests_hit_the_cache(http_server_client, fake_llm):
    first = await post_json(http_server_client, "/api/chat", CHAT)
    second = await post_json(http_server_client, "/api/chat", CHAT)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    a, b = json.loads(first.body), json.loads(second.body)
    assert (a["cached"], b["cached"]) == (False, True)
    assert a["answer"] == b["answer"] and fake_llm.calls == 1
    other = await post_json(http_server_client, "/api/chat", {**CHAT, "temperature": 0.2})
    assert other.headers["X-Cache"] == "MISS" and fake_llm.calls == 2


@both_backends
async def test_cache_false_bypasses(http_server_client, fake_llm):
    await post_json(http_server_client, "/api/chat", CHAT)
    bypass = await post_json(http_server_client, "/api/chat", {**CHAT, "cache": False})
    assert bypass.headers["X-Cache"] == "BYPASS" and fake_llm.calls == 2


@pytest.mark.settings(enable_response_cache=False)
async def test_cache_can_be_turned_off(http_server_client, fake_llm):
    for _ in range(2):
        response = await post_json(http_server_client, "/api/chat", CHAT)
        assert response.headers["X-Cache"] == "BYPASS"
    assert fake_llm.calls == 2


@both_backends
@pytest.mark.settings(cache_ttl_seconds=1)
async def test_entries_expire_after_the_ttl(http_server_client, fake_llm):
    await post_json(http_server_client, "/api/chat", CHAT)
    assert (await post_json(http_server_client, "/api/chat", CHAT)).headers["X-Cache"] == "HIT"
    await asyncio.sleep(1.2)
    assert (await post_json(http_server_client, "/api/chat", CHAT)).headers["X-Cache"] == "MISS"
    assert fake_llm.calls == 2


@both_backends
@pytest.mark.settings(max_cache_size=2)
async def test_entry_cap_evicts_the_least_recently_used(http_server_client, fake_llm, ctx):
    async def ask(message: str) -> str:
        response = await post_json(http_server_client, "/api/chat", {**CHAT, "message": message})
        return response.headers["X-Cache"]

    assert [await ask("甲"), await ask("乙")] == ["MISS", "MISS"]
    assert await ask("甲") == "HIT"          # 甲 is now the most recently used
    assert await ask("丙") == "MISS"         # evicts 乙, once written (WRITE_DELAY after the answer)
    await ctx.cache.flush()
    assert await ctx.cache.count() == 2
    assert [await ask("甲"), await ask("丙"), await ask("乙")] == ["HIT", "HIT", "MISS"]


@both_backends
async def test_errors_are_never_cached(http_server_client, fake_llm):
    fake_llm.status = 500
    assert (await post_json(http_server_client, "/api/chat", CHAT)).code == 502
    fake_llm.status = 200
    response = await post_json(http_server_client, "/api/chat", CHAT)
    assert response.code == 200 and response.headers["X-Cache"] == "MISS"
    assert fake_llm.calls == 2


@both_backends
async def test_cut_off_streams_are_never_cached(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "丁" * 64
    fake_llm.fail_after_chunks = 2
    await stream_chat(http_server_client, CHAT)
    fake_llm.fail_after_chunks = None
    response = await post_json(http_server_client, "/api/chat", CHAT)
    assert response.headers["X-Cache"] == "MISS" and fake_llm.calls == 2


@both_backends
async def test_stream_then_cache_then_stream(http_server_client, fake_llm):
    fake_llm.reply = lambda body: "流式回答被缓存之后可以再次流式返回。" * 4
    first, chunks1 = await stream_chat(http_server_client, CHAT)
    second, chunks2 = await stream_chat(http_server_client, CHAT)
    assert (first.headers["X-Cache"], second.headers["X-Cache"]) == ("MISS", "HIT")
    def text(chunks):
        return "".join(d["delta"] for n, d in parse_sse(b"".join(c for _, c in chunks).decode()) if n == "message")
    assert text(chunks1) == text(chunks2) == fake_llm.reply({})
    done = parse_sse(b"".join(c for _, c in chunks2).decode())[-1]
    assert done[0] == "done" and done[1]["cached"] is True
    whole = await post_json(http_server_client, "/api/chat", CHAT)
    assert json.loads(whole.body)["answer"] == text(chunks1)
    assert fake_llm.calls == 1


@both_backends
async def test_concurrent_identical_misses_call_the_llm_once(http_server_client, fake_llm):
    fake_llm.latency = 0.5
    results = await asyncio.gather(*(post_json(http_server_client, "/api/chat", CHAT) for _ in range(5)))
    assert [r.code for r in results] == [200] * 5
    assert len({json.loads(r.body)["answer"] for r in results}) == 1
    assert fake_llm.calls == 1


@both_backends
async def test_cache_clear_empties_it(http_server_client, fake_llm):
    for n in range(3):
        await post_json(http_server_client, "/api/chat", {**CHAT, "message": f"问题{n}"})
    cleared = await post_json(http_server_client, "/api/cache/clear", b"")
    assert cleared.code == 200 and json.loads(cleared.body) == {"cleared": 3}
    again = await post_json(http_server_client, "/api/chat", {**CHAT, "message": "问题0"})
    assert again.headers["X-Cache"] == "MISS" and fake_llm.calls == 4


@both_backends
async def test_a_knowledge_change_that_alters_retrieval_is_a_miss(http_server_client, fake_llm):
    ask = {"message": "枫桥经验如何化解矛盾？", "mode": "analyze"}
    first_doc = {"id": "fengqiao-1", "title": "新时代枫桥经验与基层治理",
                 "content": "枫桥经验强调矛盾不上交，依靠群众就地化解矛盾，是基层治理的重要经验。"}
    others = [{"title": "垃圾分类", "content": "推进垃圾分类需要居民参与和设施配套。"},
              {"title": "文章写作的立意", "content": "立意要准确，紧扣材料主旨。"}]
    added = await post_json(http_server_client, "/api/knowledge/add", {"documents": [first_doc, *others]})
    assert added.code == 201
    assert (await post_json(http_server_client, "/api/chat", ask)).headers["X-Cache"] == "MISS"
    assert (await post_json(http_server_client, "/api/chat", ask)).headers["X-Cache"] == "HIT"
    changed = {**first_doc, "content": first_doc["content"] + "枫桥经验还要求把矛盾纠纷化解在萌芽状态。"}
    assert (await post_json(http_server_client, "/api/knowledge/add", changed)).code == 201
    again = await post_json(http_server_client, "/api/chat", ask)
    assert again.headers["X-Cache"] == "MISS"  # the passage it is grounded on changed
    assert "萌芽状态" in json.dumps(fake_llm.requests[-1]["messages"], ensure_ascii=False)
    assert fake_llm.calls == 2


async def ask_with_knowledge(client, body):
    response = await post_json(client, "/api/chat", body)
    assert response.code == 200
    return response.headers["X-Cache"], json.loads(response.body)


@both_backends
async def test_a_hit_repeats_the_answers_sources_and_an_add_changes_them_on_the_next_call(
        http_server_client, fake_llm):
    ask = {"message": "枫桥经验如何化解基层矛盾？", "mode": "analyze"}
    first_doc = {"id": "fengqiao-1", "title": "新时代枫桥经验与基层治理",
                 "content": "枫桥经验强调矛盾不上交，依靠群众就地化解基层矛盾。"}
    assert (await post_json(http_server_client, "/api/knowledge/add", first_doc)).code == 201
    status, miss = await ask_with_knowledge(http_server_client, ask)
    assert status == "MISS" and [s["id"] for s in miss["sources"]] == ["fengqiao-1"]
    status, hit = await ask_with_knowledge(http_server_client, ask)
    assert status == "HIT" and hit["cached"] is True
    # The sources are kept with the answer; id and timing are the response's own.
    assert {k: v for k, v in hit.items() if k not in ("id", "cached", "elapsed_ms")} == \
        {k: v for k, v in miss.items() if k not in ("id", "cached", "elapsed_ms")}
    assert hit["id"] != miss["id"] and re.fullmatch(r"[0-9a-f]{32}", hit["id"])
    streamed, chunks = await stream_chat(http_server_client, ask)
    events = parse_sse(b"".join(c for _, c in chunks).decode())
    assert streamed.headers["X-Cache"] == "HIT"
    assert ("sources", {"sources": miss["sources"]}) in events
    assert events[-1][1]["sources"] == miss["sources"] and events[-1][1]["cached"] is True

    second_doc = {"id": "fengqiao-2", "title": "枫桥经验化解基层矛盾的做法",
                  "content": "枫桥经验化解基层矛盾：小事不出村，大事不出镇，矛盾不上交。"}
    assert (await post_json(http_server_client, "/api/knowledge/add", second_doc)).code == 201
    status, after = await ask_with_knowledge(http_server_client, ask)
    assert status == "MISS" and "fengqiao-2" in [s["id"] for s in after["sources"]]
    assert "小事不出村" in json.dumps(fake_llm.requests[-1]["messages"], ensure_ascii=False)
    status, again = await ask_with_knowledge(http_server_client, ask)
    assert status == "HIT" and again["sources"] == after["sources"] and fake_llm.calls == 2


async def test_a_hit_is_answered_without_retrieval(http_server_client, fake_llm, ctx):
    ask = {"message": "归纳概括题的要点怎么合并？", "mode": "summarize"}
    doc = {"id": "merge-1", "title": "归纳概括题的要点合并",
           "content": "归纳概括题的要点要同类合并，合并后用关键词领起，不重复。"}
    assert (await post_json(http_server_client, "/api/knowledge/add", doc)).code == 201
    status, miss = await ask_with_knowledge(http_server_client, ask)
    assert status == "MISS" and [s["id"] for s in miss["sources"]] == ["merge-1"]
    ctx.knowledge._retrieved.clear()  # the per-process memo a retrieval fills
    status, hit = await ask_with_knowledge(http_server_client, ask)
    assert status == "HIT" and hit["sources"] == miss["sources"]
    assert not ctx.knowledge._retrieved  # nothing was searched for the hit
    deleted = await http_server_client.fetch("/api/knowledge/merge-1", method="DELETE", raise_error=False)
    assert deleted.code in (200, 204)
    status, after = await ask_with_knowledge(http_server_client, ask)
    assert status == "MISS" and after["sources"] == [] and fake_llm.calls == 2


# --- Redis unreachable: the documented degraded mode ---

@pytest.mark.settings(store_backend="redis", redis_url="redis://127.0.0.1:9/0",
                      rate_limit_per_minute=30, instances=3)
async def test_an_unreachable_redis_degrades_instead_of_failing(http_server_client, fake_llm):
    for n in range(3):
        response = await post_json(http_server_client, "/api/chat", CHAT)
        assert response.code == 200 and response.headers["X-Cache"] == "BYPASS"
        # the local fallback bucket: RATE_LIMIT_PER_MINUTE / INSTANCES in this process
        assert response.headers["X-RateLimit-Limit"] == "10"
        assert response.headers["X-RateLimit-Remaining"] == str(9 - n)
    assert fake_llm.calls == 3
    health = await http_server_client.fetch("/health", raise_error=False)
    body = json.loads(health.body)
    assert health.code == 200 and body["status"] == "ok"
    assert body["checks"]["store"] == "degraded" and body["checks"]["cache"] == "degraded"
    fleet = json.loads((await http_server_client.fetch("/api/metrics?scope=fleet")).body)
    assert fleet["degraded"] is True and fleet["instances"] == 1
    cleared = await post_json(http_server_client, "/api/cache/clear", b"")
    assert cleared.code == 503 and error_of(cleared)["code"] == "server_busy"
    for _ in range(8):
        await post_json(http_server_client, "/api/chat", CHAT)
    refused = await post_json(http_server_client, "/api/chat", CHAT)
    assert refused.code == 429 and refused.headers["Retry-After"] == "6"  # 10/min locally
