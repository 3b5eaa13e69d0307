"""Several real server processes share one rate limit, one cache and one fleet view
on one DATA_DIR (diskcache), or through Redis alone (several hosts),
and through a Redis outage."""
from __future__ import annotations

import json
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.conftest import both_backends
from tests.procs import http, start_server
from tests.redis_server import RedisServer

CHAT = {"message": "什么是申论？", "use_knowledge": False}


def until_written() -> None:
    """A miss's cache write follows its answer by about 2 ms (core/traffic/cache.py):
    a repeat sent to another instance within it misses. Wait it out before asking one."""
    time.sleep(0.1)


def store_env(store_backend: dict[str, str]) -> dict[str, str]:
    """The `store_backend` fixture's settings as environment variables."""
    return {name.upper(): value for name, value in store_backend.items()}


@pytest.fixture
def fleet(tmp_path, fake_llm, store_backend):
    """Three servers on one data directory, talking to the fake LLM."""
    started = []

    def start(n: int = 3, **env: str):
        common = {"DATA_DIR": str(tmp_path / "data"), "OPENAI_BASE_URL": fake_llm.base_url,
                  "OPENAI_API_KEY": "sk-test-upstream-key-0003", "LLM_MODEL": "fake-model",
                  **store_env(store_backend), **env}
        for i in range(1, n + 1):
            started.append(start_server(tmp_path, f"server-{i}", **common))
        return started[-n:]

    yield start
    for server in started:
        server.stop()


@both_backends
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


@both_backends
def test_cache_is_shared_survives_restarts_and_clears_for_all(fleet, fake_llm):
    a, b, c = fleet()
    first = http("POST", a.url + "/api/chat", CHAT)
    assert first[1]["X-Cache"] == "MISS" and fake_llm.calls == 1
    until_written()
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


@both_backends
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


# --- several hosts: Redis is the only thing the instances share ---

def start_host(tmp_path, fake_llm, name: str, redis_url: str, **env: str):
    """An instance with its own DATA_DIR, as if on its own host, sharing only Redis."""
    return start_server(tmp_path, name, DATA_DIR=str(tmp_path / f"data-{name}"),
                        STORE_BACKEND="redis", REDIS_URL=redis_url,
                        OPENAI_BASE_URL=fake_llm.base_url, OPENAI_API_KEY="sk-test-upstream-key-0004",
                        LLM_MODEL="fake-model", **env)


def test_two_hosts_sharing_only_redis_enforce_one_limit_and_share_the_cache(tmp_path, fake_llm, redis_server):
    redis_server.flush()
    hosts = [start_host(tmp_path, fake_llm, f"host-{n}", redis_server.url, RATE_LIMIT_PER_MINUTE="20")
             for n in (1, 2)]
    try:
        first = http("POST", hosts[0].url + "/api/chat", CHAT)
        until_written()
        second = http("POST", hosts[1].url + "/api/chat", CHAT)
        assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("MISS", "HIT")
        assert second[1]["X-Server-ID"] == "host-2" and fake_llm.calls == 1
        assert json.loads(second[2])["answer"] == json.loads(first[2])["answer"]
        client = {"X-Real-IP": "198.51.100.9", "Content-Type": "application/json"}
        started = time.monotonic()
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda n: http("POST", hosts[n % 2].url + "/api/chat", CHAT, client),
                                    range(40)))
        seconds = time.monotonic() - started
        admitted = sum(1 for r in results if r[0] == 200)
        # 20 at once (+1 token every 3 s while the burst lasts), never 2 × 20.
        assert 20 <= admitted <= 20 + int(seconds / 3) + 1, (admitted, seconds)
        assert {r[0] for r in results} == {200, 429}
        assert {r[1]["X-Server-ID"] for r in results if r[0] == 429} == {"host-1", "host-2"}
        view = json.loads(http("GET", hosts[0].url + "/api/metrics?scope=fleet")[2])
        assert view["instances"] == 2 and "degraded" not in view
        assert sorted(row["server_id"] for row in view["servers"]) == ["host-1", "host-2"]
    finally:
        for host in hosts:
            host.stop()


def test_a_redis_outage_degrades_without_5xx_and_recovers(tmp_path, fake_llm):
    redis = RedisServer(tmp_path / "redis.log").start()
    hosts = [start_host(tmp_path, fake_llm, f"host-{n}", redis.url, RATE_LIMIT_PER_MINUTE="6000")
             for n in (1, 2)]
    stop_load = False
    statuses: list[int] = []

    def load(n: int) -> None:  # steady traffic on both hosts through the outage
        i = 0
        while not stop_load:
            i += 1
            statuses.append(http("POST", hosts[(n + i) % 2].url + "/api/chat",
                                 {**CHAT, "message": f"负载{n}-{i % 5}"})[0])
            time.sleep(0.01)

    pool = ThreadPoolExecutor(4)
    loaders = [pool.submit(load, n) for n in range(4)]
    try:
        assert http("POST", hosts[0].url + "/api/chat", CHAT)[1]["X-Cache"] == "MISS"
        until_written()
        assert http("POST", hosts[1].url + "/api/chat", CHAT)[1]["X-Cache"] == "HIT"
        time.sleep(0.3)
        redis.stop()
        time.sleep(0.3)
        for host in hosts:
            status, _, body = http("GET", host.url + "/health")
            health = json.loads(body)
            assert status == 200 and health["status"] == "ok"
            assert health["checks"]["store"] == "degraded"
            status, headers, _ = http("POST", host.url + "/api/chat", CHAT)
            assert status == 200 and headers["X-Cache"] == "BYPASS"
            # the local fallback: RATE_LIMIT_PER_MINUTE / INSTANCES (3) per process
            assert headers["X-RateLimit-Limit"] == "2000"
        status, _, body = http("GET", hosts[0].url + "/api/metrics?scope=fleet")
        assert status == 200 and json.loads(body)["degraded"] is True
        time.sleep(0.5)
        redis.start()  # same port, empty (nothing was saved)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            checks = [json.loads(http("GET", h.url + "/health")[2])["checks"]["store"] for h in hosts]
            if checks == ["ok", "ok"]:
                break
            time.sleep(0.2)
        assert checks == ["ok", "ok"]
        first = http("POST", hosts[0].url + "/api/chat", {**CHAT, "message": "恢复之后"})
        until_written()
        second = http("POST", hosts[1].url + "/api/chat", {**CHAT, "message": "恢复之后"})
        assert (first[1]["X-Cache"], second[1]["X-Cache"]) == ("MISS", "HIT")
        assert first[1]["X-RateLimit-Limit"] == "6000"
    finally:
        stop_load = True
        for future in loaders:
            future.result()
        pool.shutdown()
        for host in hosts:
            host.stop()
        redis.stop()
    assert statuses and all(code < 500 for code in statuses), sorted(set(statuses))
    assert statuses.count(200) > 20
