"""The process's metrics (core.ops.metrics): real collectors on one registry per process,
read back through real HTTP — `/metrics` parsed with prometheus_client's own parser,
and the JSON view that must agree with it."""
from __future__ import annotations

import json

import prometheus_client
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from core.ops.metrics import RECENT_LATENCIES, Metrics
from tests.conftest import post_json

EXAM = {"message": "概括问题", "mode": "summarize", "material": "某市老旧小区改造进度慢，居民意见大。",
        "question": "概括问题", "word_limit": 20, "use_knowledge": False}


def families(text: str) -> dict[str, list]:
    """Sample name → samples of a text exposition."""
    out: dict[str, list] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out.setdefault(sample.name, []).append(sample)
    return out


def total(samples: dict[str, list], name: str, **labels: str) -> float:
    return sum(s.value for s in samples.get(name, [])
               if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.mark.settings(rate_limit_per_minute=3)
async def test_the_exposition_is_labelled_and_the_json_view_is_read_from_it(http_server_client, fake_llm):
    # The first answer is twice the limit, the condensed one fits: two LLM calls.
    fake_llm.reply = lambda body: "改造进度慢，居民意见大。" * (1 if len(fake_llm.requests) > 1 else 4)
    assert (await post_json(http_server_client, "/api/chat", EXAM)).code == 200            # MISS
    assert (await post_json(http_server_client, "/api/chat", EXAM)).code == 200            # HIT
    assert (await post_json(http_server_client, "/api/chat", {**EXAM, "cache": False})).code == 200  # BYPASS
    assert (await post_json(http_server_client, "/api/chat", EXAM)).code == 429
    await http_server_client.fetch("/nowhere", raise_error=False)
    response = await http_server_client.fetch("/metrics")
    text = response.body.decode()
    samples = families(text)
    body = json.loads((await http_server_client.fetch("/api/metrics")).body)

    chat = {"server_id": "server-1", "endpoint": "/api/chat", "method": "POST"}
    assert total(samples, "shenlun_requests_total", **chat, status="200", cache="HIT", code="") == 1
    assert total(samples, "shenlun_requests_total", **chat, status="200", cache="MISS") == 1
    assert total(samples, "shenlun_requests_total", **chat, status="200", cache="BYPASS") == 1
    assert total(samples, "shenlun_requests_total", **chat, status="429", code="rate_limited") == 1
    assert total(samples, "shenlun_requests_total", endpoint="(unmatched)", status="404", code="not_found") == 1
    # The JSON view says the same, from the same collectors.
    assert body["total_requests"] == total(samples, "shenlun_requests_total") == 5
    assert (body["cache_hits"], body["cache_misses"], body["rate_limited_requests"]) == (1, 1, 1)
    assert body["requests_by_status"] == {"200": 3, "404": 1, "429": 1}
    count = total(samples, "shenlun_request_duration_seconds_count")
    assert count == 5 and total(samples, "shenlun_request_duration_seconds_count", **chat) == 4
    assert body["average_response_time"] == round(total(samples, "shenlun_request_duration_seconds_sum") / count, 6)
    inf = [s for s in samples["shenlun_request_duration_seconds_bucket"] if s.labels["le"] == "+Inf"]
    assert sum(s.value for s in inf) == count
    # Two answers reached the model, the first one with its condense call: four calls.
    assert total(samples, "shenlun_llm_call_duration_seconds_count", outcome="ok") == body["llm_calls"] == 4
    assert total(samples, "shenlun_llm_tokens_total", kind="prompt") == 4 * 11
    assert total(samples, "shenlun_cache_entries") == body["cache_size"] == 1
    assert total(samples, "process_resident_memory_bytes") == pytest.approx(body["memory_rss_bytes"], rel=0.2)
    assert total(samples, "shenlun_info", version=body["version"]) == 1
    assert total(samples, "shenlun_requests_in_flight") == body["concurrent_requests"] == 0


def test_a_registry_is_per_process_and_the_global_default_stays_empty():
    first, second = CollectorRegistry(), CollectorRegistry()
    a, b = Metrics(first, "server-1", "t"), Metrics(second, "server-2", "t")
    a.request_started("/api/chat")
    a.request_finished(path="/api/chat", endpoint="/api/chat", method="POST", status=200,
                       seconds=0.01, cache="MISS", error_code=None)
    assert a.snapshot()["total_requests"] == 1 and b.snapshot()["total_requests"] == 0
    assert not [n for n in prometheus_client.REGISTRY._names_to_collectors if n.startswith("shenlun_")]


def test_monitoring_paths_are_not_counted():
    metrics = Metrics(CollectorRegistry(), "server-1", "t")
    for path in ("/health", "/metrics", "/api/metrics"):
        metrics.request_started(path)
        metrics.request_finished(path=path, endpoint=path, method="GET", status=200, seconds=0.001,
                                 cache=None, error_code=None)
    snap = metrics.snapshot()
    assert snap["total_requests"] == 0 and snap["concurrent_requests"] == 0


def test_the_percentiles_are_exact_over_the_recent_window_only():
    metrics = Metrics(CollectorRegistry(), "server-1", "t")

    def answer(seconds: float) -> None:
        metrics.request_started("/api/chat")
        metrics.request_finished(path="/api/chat", endpoint="/api/chat", method="POST", status=200,
                                 seconds=seconds, cache="HIT", error_code=None)

    for _ in range(RECENT_LATENCIES):
        answer(5.0)  # slow, then pushed out of the window
    for n in range(1, RECENT_LATENCIES + 1):
        answer(n / 1_000_000)  # 1 µs … 4096 µs, within the first few buckets
    latency = metrics.snapshot()["latency_ms"]
    assert latency == {"p50": round(2048 / 1000, 3), "p95": round(3892 / 1000, 3), "p99": round(4056 / 1000, 3)}
    exposed = families(metrics.exposition().decode())["shenlun_request_latency_recent_seconds"]
    assert {s.labels["quantile"]: s.value for s in exposed}["0.95"] == pytest.approx(3892e-6)
