"""The shared store's two backends behave alike: TTLs, the entry bound, the atomic
token bucket, snapshots with expiry; Redis unreachable is StoreUnavailable, quickly."""
from __future__ import annotations

import asyncio
import os
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.store import StoreUnavailable, open_stores
from core.store.redis import BREAKER_SECONDS, REDIS_TIMEOUT
from tests.procs import free_port
from tests.redis_server import RedisServer


@pytest.fixture(params=["diskcache", "redis"])
def stores(request, tmp_path, io_loop):
    url = "redis://127.0.0.1:1/0"
    if request.param == "redis":
        server = request.getfixturevalue("redis_server")
        server.flush()
        url = server.url
    executor = ThreadPoolExecutor(2)
    opened = open_stores(request.param, data_dir=tmp_path, redis_url=url, executor=executor,
                         cache_max_bytes=2 ** 24, prefix="test:")
    yield opened
    io_loop.run_sync(opened.aclose)
    executor.shutdown()


async def test_entries_expire_and_the_bound_evicts_the_least_recently_used(stores):
    cache = stores.cache
    for key in ("a", "b"):
        await cache.set(key, {"v": key}, ttl=60, max_entries=2)
    await asyncio.sleep(0.02)
    assert await cache.get("a") == {"v": "a"}  # a is now the most recently used
    await asyncio.sleep(1.1)                   # diskcache stamps hits at most once a second
    await cache.set("c", {"v": "c"}, ttl=60, max_entries=2)
    assert (await cache.get("b"), await cache.count()) == (None, 2)
    await cache.set("short", {"v": 1}, ttl=0.3, max_entries=10)
    await asyncio.sleep(0.5)
    assert await cache.get("short") is None
    # diskcache counts an expired entry until it is culled; Redis forgets it at once.
    assert await cache.clear() >= 2 and await cache.count() == 0


async def test_the_token_bucket_admits_its_capacity_then_refills(stores):
    bucket = stores.ratelimit
    taken = [await bucket.take("k", capacity=5, per_second=5 / 60) for _ in range(7)]
    assert [t.allowed for t in taken] == [True] * 5 + [False] * 2
    assert taken[4].tokens < 1 and taken[0].tokens == pytest.approx(4, abs=0.01)
    fast = [await bucket.take("fast", capacity=2, per_second=20) for _ in range(3)]
    assert [t.allowed for t in fast] == [True, True, False]
    await asyncio.sleep(0.06)
    assert (await bucket.take("fast", capacity=2, per_second=20)).allowed


async def test_snapshots_list_the_live_publishers(stores):
    board = stores.fleet
    await board.publish("server-1", {"n": 1}, ttl=60)
    await board.publish("server-2", {"n": 2}, ttl=0.3)
    assert await board.snapshots() == [{"n": 1}, {"n": 2}]
    await asyncio.sleep(0.5)
    assert await board.snapshots() == [{"n": 1}]
    await board.delete("server-1")
    assert await board.snapshots() == []


async def test_an_unreachable_redis_fails_fast_behind_the_breaker(tmp_path):
    executor = ThreadPoolExecutor(1)
    stores = open_stores("redis", data_dir=tmp_path, redis_url=f"redis://127.0.0.1:{free_port()}/0",
                         executor=executor, cache_max_bytes=2 ** 24)
    try:
        with pytest.raises(StoreUnavailable):
            await stores.cache.get("x")
        started = time.monotonic()
        for _ in range(100):  # breaker open: no connection attempts at all
            with pytest.raises(StoreUnavailable):
                await stores.ratelimit.take("k", capacity=5, per_second=1)
        assert time.monotonic() - started < 0.05
        assert await stores.ping() == "degraded"
        assert stores.redis is not None and stores.redis.breaker.open
        assert BREAKER_SECONDS <= 5
    finally:
        await stores.aclose()
        executor.shutdown()


async def test_a_stalled_redis_costs_one_timeout_then_recovers_by_itself(tmp_path):
    redis = RedisServer(tmp_path / "redis.log").start()
    executor = ThreadPoolExecutor(1)
    stores = open_stores("redis", data_dir=tmp_path, redis_url=redis.url, executor=executor,
                         cache_max_bytes=2 ** 24)
    try:
        assert (await stores.ratelimit.take("k", capacity=5, per_second=1)).allowed
        os.kill(redis.proc.pid, signal.SIGSTOP)  # accepts connections, never answers
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await stores.ratelimit.take("k", capacity=5, per_second=1)
        assert time.monotonic() - started < REDIS_TIMEOUT + 0.4  # one timeout…
        started = time.monotonic()
        for _ in range(50):
            with pytest.raises(StoreUnavailable):
                await stores.cache.get("x")
        assert time.monotonic() - started < 0.05  # …then none while the breaker is open
        os.kill(redis.proc.pid, signal.SIGCONT)
        await asyncio.sleep(BREAKER_SECONDS + 0.1)
        bucket = await stores.ratelimit.take("k", capacity=5, per_second=1)
        assert bucket.allowed and await stores.ping() == "ok"
    finally:
        if redis.proc is not None:
            os.kill(redis.proc.pid, signal.SIGCONT)
        await stores.aclose()
        executor.shutdown()
        redis.stop()


async def test_answers_held_in_a_process_memo_expire_and_go_with_a_clear_elsewhere(tmp_path):
    # Two openings of one directory are two processes' views: all they share is the disk.
    executor = ThreadPoolExecutor(2)
    one, other = (open_stores("diskcache", data_dir=tmp_path, redis_url="", executor=executor,
                              cache_max_bytes=2 ** 24, prefix="t:") for _ in range(2))
    try:
        await one.cache.set("answer", '{"answer": "一"}', ttl=60, max_entries=10)
        await one.cache.set("short", '{"answer": "短"}', ttl=0.3, max_entries=10)
        assert await one.cache.get("answer") == await other.cache.get("answer") == '{"answer": "一"}'
        assert await one.cache.get("short") == '{"answer": "短"}'
        await asyncio.sleep(0.5)
        assert await one.cache.get("short") is None  # its expiry holds in memory too
        assert await other.cache.clear() >= 1
        assert await one.cache.get("answer") is None  # the clear was another process's
        await one.cache.set("answer", '{"answer": "二"}', ttl=60, max_entries=10)
        assert await other.cache.get("answer") == '{"answer": "二"}'
    finally:
        await one.aclose()
        await other.aclose()
        executor.shutdown()


async def test_a_hit_counts_for_the_entry_cap_even_while_its_stamp_waits_for_a_thread(tmp_path):
    busy = ThreadPoolExecutor(1)
    gate = threading.Event()
    one = open_stores("diskcache", data_dir=tmp_path, redis_url="", executor=busy, cache_max_bytes=2 ** 24)
    other = open_stores("diskcache", data_dir=tmp_path, redis_url="", executor=None, cache_max_bytes=2 ** 24)
    try:
        await one.cache.set("a", '{"n": 1}', ttl=60, max_entries=2)
        await one.cache.set("b", '{"n": 2}', ttl=60, max_entries=2)
        busy.submit(gate.wait)  # the one thread is busy (a loaded machine): the stamp waits
        assert await one.cache.get("a") == '{"n": 1}'
        await one.cache.set("c", '{"n": 3}', ttl=60, max_entries=2)  # written on the loop
        # "a" was used after "b" was written: "b" goes, though the hit's own stamp is not in yet.
        assert await other.cache.get("b") is None and await other.cache.get("a") == '{"n": 1}'
    finally:
        gate.set()
        await one.aclose()
        await other.aclose()
        busy.shutdown()
