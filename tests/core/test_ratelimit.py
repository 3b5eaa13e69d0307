"""RateLimiter on the real shared store: its decisions and headers, one bucket for
every process on the machine, and the per-process fallback while Redis is down."""
from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.store import open_stores
from core.traffic.ratelimit import LocalBuckets, RateLimiter

PER_MINUTE = 6


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown()


def open_limiter(tmp_path, executor, *, per_minute=PER_MINUTE, instances=1, backend="diskcache",
                 redis_url="redis://127.0.0.1:9/0"):
    """One process's limiter on the store in `tmp_path` (as server.py builds it)."""
    stores = open_stores(backend, data_dir=tmp_path, redis_url=redis_url, executor=executor,
                         cache_max_bytes=2 ** 24)
    return stores, RateLimiter(stores.ratelimit, per_minute, instances=instances)


async def test_a_client_gets_its_capacity_then_a_refusal_with_the_wait_for_one_token(tmp_path, executor):
    stores, limiter = open_limiter(tmp_path, executor)
    try:
        decisions = [await limiter.check("client-a") for _ in range(PER_MINUTE + 1)]
    finally:
        await stores.aclose()
    assert [d.allowed for d in decisions] == [True] * PER_MINUTE + [False]
    assert [d.remaining for d in decisions] == [5, 4, 3, 2, 1, 0, 0]
    refused = decisions[-1]
    assert refused.retry_after == math.ceil(60 / PER_MINUTE)  # one token every 10 s
    assert (refused.limit, refused.remaining) == (6, 0)
    assert 50 <= refused.reset_seconds <= 60  # until the bucket is full again
    assert decisions[0].retry_after == 0


async def test_two_processes_on_one_machine_share_each_clients_bucket(tmp_path, executor):
    first_stores, first = open_limiter(tmp_path, executor)
    second_stores, second = open_limiter(tmp_path, executor)
    try:
        for _ in range(PER_MINUTE // 2):
            assert (await first.check("client-a")).allowed
            assert (await second.check("client-a")).allowed
        assert not (await first.check("client-a")).allowed
        assert not (await second.check("client-a")).allowed
        assert (await second.check("client-b")).remaining == PER_MINUTE - 1  # buckets are per client
    finally:
        await first_stores.aclose()
        await second_stores.aclose()


async def test_with_redis_down_each_instance_admits_its_share_of_the_limit(tmp_path, executor):
    stores, limiter = open_limiter(tmp_path, executor, per_minute=30, instances=3, backend="redis")
    try:
        decisions = [await limiter.check("client-a") for _ in range(11)]
    finally:
        await stores.aclose()
    assert [d.allowed for d in decisions] == [True] * 10 + [False]
    assert decisions[0].limit == 10 and decisions[-1].retry_after == 6  # 10 a minute here


def test_a_local_bucket_refills_at_its_rate():
    buckets = LocalBuckets(per_minute=60)
    assert all(buckets.take("c", now=0.0).allowed for _ in range(60))
    assert not buckets.take("c", now=0.0).allowed
    assert not buckets.take("c", now=0.5).allowed
    assert buckets.take("c", now=1.6).allowed  # one token a second
