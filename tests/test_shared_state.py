"""Several real server processes on one DATA_DIR share one rate limit, one cache and
one fleet view (CONTRACT §3, §4)."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.procs import http, start_server

CHAT = {"message": "什么是申论？", "use_knowledge": False}


@pytest.fixture
def fleet(tmp_path, fake_llm):
    """Three servers on one data directory, talking to the fake LLM."""
    started = []

    def start(n: int = 3, **env: str):
        common = {"DATA_DIR": str(tmp_path / "data"), "OPENAI_BASE_URL": fake_llm.base_url,
                  "OPENAI_API_KEY": "sk-test-upstream-key-0003", "LLM_MODEL": "fake-model", **env}
        for i in range(1, n + 1):
            started.append(start_server(tmp_path, f"server-{i}", **common))
        return started[-n:]

    yield start
    for server in started:
        server.stop()


def test_three_processes_enforce_one_rate_limit(fleet):
    servers = fleet(RATE_LIMIT_PER_MINUTE="60")
    client = {"X-Real-IP": "203.0.113.7", "Content-Type": "application/json"}

    def call(n: int):
        server = servers[n % 3]
        return http("POST", server.url + "/api/chat", CHAT, client)

    started = time.monotonic()
    with ThreadPoolExecutor(12) as pool:
        results = list(pool.map(call, range(90)))
    burst_seconds = time.monotonic() - started
    admitted = [r for r in results if r[0] == 200]
    refused = [r for r in results if r[0] == 429]
    # 60 at once, plus the one token a second that refills while the burst lasts
    # (a loaded machine stretches it) — and never 3 × 60.
    assert 59 <= len(admitted) <= 61 + int(burst_seconds), (len(admitted), burst_seconds)
    assert len(admitted) + len(refused) == 90
    retry_after = int(refused[-1][1]["Retry-After"])
    assert retry_after == 1  # 60/min: a token a second
    assert json.loads(refused[-1][2])["error"]["code"] == "rate_limited"
    other = http("POST", servers[1].url + "/api/chat", CHAT, {"X-Real-IP": "203.0.113.8"})
    assert other[0] == 200  # a second client is unaffected
    time.sleep(retry_after + 0.1)
    assert http("POST", servers[2].url + "/api/chat", CHAT, client)[0] == 200


def test_cache_is_shared_survives_restarts_and_clears_for_all(fleet, fake_llm):
    a, b, c = fleet()
    first = http("POST", a.url + "/api/chat", CHAT)
    assert first[1]["X-Cache"] == "MISS" and fake_llm.calls == 1
    second = http("POST", b.url + "/api/chat", CHAT)
    assert second[1]["X-Cache"] == "HIT" and second[1]["X-Server-ID"] == "server-2"
    assert json.loads(second[2])["answer"] == json.loads(first[2])["answer"]
    assert fake_llm.calls == 1  # B answered without calling the LLM
    b.stop()
    b2 = fleet(1, RATE_LIMIT_PER_MINUTE="60")[0]  # a restarted instance on the same data
    assert http("POST", b2.url + "/api/chat", CHAT)[1]["X-Cache"] == "HIT"
    cleared = http("POST", c.url + "/api/cache/clear", b"")
    assert cleared[0] == 200 and json.loads(cleared[2]) == {"cleared": 1}
    assert http("POST", a.url + "/api/chat", CHAT)[1]["X-Cache"] == "MISS"
    assert fake_llm.calls == 2


def test_fleet_metrics_sum_the_live_instances(fleet):
    servers = fleet(METRICS_COLLECTION_INTERVAL="0.4")
    for n, server in enumerate(servers, 1):
        for i in range(n):  # 1, 2 and 3 requests
            assert http("POST", server.url + "/api/chat", {**CHAT, "message": f"问{n}-{i}"})[0] == 200
    time.sleep(0.6)  # every instance has published since
    status, _, body = http("GET", servers[0].url + "/api/metrics?scope=fleet")
    view = json.loads(body)
    assert status == 200 and view["instances"] == 3
    assert view["totals"]["total_requests"] == 6
    assert view["totals"]["cache_misses"] == 6
    assert sorted(row["server_id"] for row in view["servers"]) == ["server-1", "server-2", "server-3"]
    servers[2].stop()  # graceful: it withdraws at once
    view = json.loads(http("GET", servers[0].url + "/api/metrics?scope=fleet")[2])
    assert view["instances"] == 2 and view["totals"]["total_requests"] == 3
    servers[1].proc.kill()  # a crash: it drops out once its snapshot expires
    servers[1].proc.wait()
    time.sleep(0.4 * 2.5 + 1.2)
    view = json.loads(http("GET", servers[0].url + "/api/metrics?scope=fleet")[2])
    assert view["instances"] == 1 and view["servers"][0]["server_id"] == "server-1"
