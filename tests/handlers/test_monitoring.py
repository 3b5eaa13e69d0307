"""GET /health, /api/metrics and /metrics."""
from __future__ import annotations

import asyncio
import json
import os

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.conftest import both_backends, error_of, post_json

CHAT = {"message": "综合分析题怎么答？", "mode": "analyze", "use_knowledge": False}


async def get_json(client, path: str):
    response = await client.fetch(path, raise_error=False)
    return response, json.loads(response.body)


@both_backends
async def test_health_reports_checks_and_provider(http_server_client):
    response, body = await get_json(http_server_client, "/health")
    assert response.code == 200
    assert body["status"] == "ok" and body["server_id"] == "server-1"
    assert body["pid"] == os.getpid() and body["version"]
    assert body["checks"]["cache"] == "ok" and body["checks"]["llm"] == "openai"
    assert body["checks"]["store"] == "ok"
    assert body["uptime_s"] >= 0


async def test_health_counts_documents_and_says_an_empty_index_once(http_server_client, caplog):
    for _ in range(2):
        response, body = await get_json(http_server_client, "/health")
        assert response.code == 200 and body["status"] == "ok"
        assert body["checks"]["index"] == "empty" and body["documents"] == 0
        assert body["checks"]["disk"] == "ok" and body["disk_free_bytes"] > 0
        await asyncio.sleep(1.1)  # past the reuse of a passing round: the probe runs again
    assert sum("no documents" in r.getMessage() for r in caplog.records) == 1
    response = await post_json(http_server_client, "/api/knowledge/add", {"title": "甲", "content": "乡村振兴。"})
    assert response.code == 201
    await asyncio.sleep(1.1)
    _, body = await get_json(http_server_client, "/health")
    assert body["checks"]["index"] == "ok" and body["documents"] == 1


@pytest.mark.settings(offline=True)
async def test_health_names_the_offline_provider(http_server_client):
    _, body = await get_json(http_server_client, "/health")
    assert body["checks"]["llm"] == "offline"


async def test_health_reports_the_upstreams_last_state_without_calling_it(http_server_client, fake_llm):
    _, body = await get_json(http_server_client, "/health")
    assert body["llm"] == {"provider": "openai", "state": "unknown", "since": None, "error": None,
                           "message": None}
    assert (await post_json(http_server_client, "/api/chat", CHAT)).code == 200
    _, body = await get_json(http_server_client, "/health")
    assert body["llm"]["state"] == "ok" and body["llm"]["since"].endswith("+00:00")
    fake_llm.status = 500
    assert (await post_json(http_server_client, "/api/chat", {**CHAT, "cache": False})).code == 502
    response, body = await get_json(http_server_client, "/health")
    assert response.code == 200  # a failing model is reported, not a reason to leave the balancer
    assert body["llm"]["state"] == "failing" and body["llm"]["error"] == "upstream_error"
    failing_since = body["llm"]["since"]
    calls = fake_llm.calls
    for _ in range(3):
        await get_json(http_server_client, "/health")
    assert fake_llm.calls == calls  # the probe never calls the model itself
    assert (await post_json(http_server_client, "/api/chat", {**CHAT, "cache": False})).code == 502
    assert (await get_json(http_server_client, "/health"))[1]["llm"]["since"] == failing_since
    fake_llm.status = 200
    assert (await post_json(http_server_client, "/api/chat", {**CHAT, "cache": False})).code == 200
    assert (await get_json(http_server_client, "/health"))[1]["llm"]["state"] == "ok"


@pytest.mark.settings(health_check_enabled=False, enable_metrics=False)
async def test_disabled_endpoints_are_404(http_server_client):
    for path in ("/health", "/api/metrics", "/metrics"):
        response = await http_server_client.fetch(path, raise_error=False)
        assert response.code == 404 and error_of(response)["code"] == "not_found"


async def test_health_fails_naming_the_cache_when_its_directory_is_unusable(http_server_client, ctx):
    directory = ctx.cache.directory
    aside = directory.with_name("cache-aside")
    directory.rename(aside)
    directory.write_text("not a directory")  # unusable even for root
    try:
        response, body = await get_json(http_server_client, "/health")
        assert response.code == 503
        assert body["status"] == "fail" and body["checks"]["cache"].startswith("fail")
    finally:
        directory.unlink()
        aside.rename(directory)
    response, body = await get_json(http_server_client, "/health")
    assert response.code == 200 and body["checks"]["cache"] == "ok"


@both_backends
async def test_metrics_move_exactly_with_requests(http_server_client, fake_llm):
    _, before = await get_json(http_server_client, "/api/metrics")
    assert before["total_requests"] == 0
    for _ in range(3):
        await post_json(http_server_client, "/api/chat", CHAT)         # MISS, HIT, HIT
    await post_json(http_server_client, "/api/chat", {"message": 1})    # 400
    await http_server_client.fetch("/nowhere", raise_error=False)       # 404
    _, after = await get_json(http_server_client, "/api/metrics")
    assert after["total_requests"] == 5
    assert after["cache_hit_rate"] == round(2 / 3, 4)
    assert (after["cache_hits"], after["cache_misses"]) == (2, 1)
    assert after["requests_by_status"] == {"200": 3, "400": 1, "404": 1}
    assert after["requests_by_endpoint"] == {"POST /api/chat": 4, "GET (unmatched)": 1}
    assert after["llm_calls"] == 1 and after["cache_size"] == 1
    assert after["concurrent_requests"] == 0
    assert after["average_response_time"] > 0
    assert after["memory_rss_bytes"] > 10_000_000 and after["server_id"] == "server-1"
    assert set(after["latency_ms"]) == {"p50", "p95", "p99"}


@both_backends
@pytest.mark.settings(rate_limit_per_minute=1)
async def test_a_429_counts_once_as_rate_limited(http_server_client):
    await post_json(http_server_client, "/api/chat", CHAT)
    await post_json(http_server_client, "/api/chat", CHAT)
    _, metrics = await get_json(http_server_client, "/api/metrics")
    assert metrics["rate_limited_requests"] == 1
    assert metrics["requests_by_status"] == {"200": 1, "429": 1}


@pytest.mark.settings(max_concurrent_requests=1, request_timeout=0.5)
async def test_busy_and_upstream_failures_are_counted(http_server_client, fake_llm):
    fake_llm.latency = 0.8
    results = await asyncio.gather(*(post_json(http_server_client, "/api/chat", {**CHAT, "message": f"{n}"})
                                     for n in range(2)))
    assert sorted(r.code for r in results) == [503, 504]
    fake_llm.latency, fake_llm.status = 0, 500
    await post_json(http_server_client, "/api/chat", {**CHAT, "message": "x"})
    _, metrics = await get_json(http_server_client, "/api/metrics")
    assert (metrics["busy_rejections"], metrics["upstream_timeouts"], metrics["upstream_errors"]) == (1, 1, 1)


@both_backends
async def test_prometheus_text_parses_and_agrees_with_json(http_server_client, fake_llm):
    for _ in range(2):
        await post_json(http_server_client, "/api/chat", CHAT)
    response = await http_server_client.fetch("/metrics")
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    families = {f.name: f for f in text_string_to_metric_families(response.body.decode())}
    _, snap = await get_json(http_server_client, "/api/metrics")
    requests = families["shenlun_requests"]  # the parser drops the _total suffix
    assert requests.type == "counter"
    assert sum(s.value for s in requests.samples if s.name == "shenlun_requests_total") == snap["total_requests"]
    hits = sum(s.value for s in requests.samples if s.labels.get("cache") == "HIT")
    assert hits == snap["cache_hits"] == 1
    histogram = families["shenlun_request_duration_seconds"]
    count = [s.value for s in histogram.samples if s.name.endswith("_count")][0]
    assert count == snap["total_requests"]
    buckets = [s for s in histogram.samples if s.name.endswith("_bucket")]
    assert buckets[-1].labels["le"] == "+Inf" and buckets[-1].value == count
    assert all(s.labels["server_id"] == "server-1" for s in requests.samples)


@pytest.mark.settings(max_concurrent_requests=4)
async def test_health_answers_while_slow_chats_hold_every_slot(http_server_client, fake_llm, ctx):
    fake_llm.latency = 1.5
    chats = [asyncio.ensure_future(post_json(http_server_client, "/api/chat", {**CHAT, "message": f"慢{n}"}))
             for n in range(4)]
    while ctx.slots.in_use < 4:  # noqa: ASYNC110 (the slots expose a count, not an event)
        await asyncio.sleep(0.01)
    for _ in range(20):
        response = await http_server_client.fetch("/health", raise_error=False)
        assert response.code == 200
    # Every health answer came back while the slots were still all held.
    assert ctx.slots.in_use == 4 and not any(c.done() for c in chats)
    assert [r.code for r in await asyncio.gather(*chats)] == [200] * 4
