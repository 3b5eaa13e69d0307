"""The shared store's two backends behave alike: TTLs, the entry bound, the atomic
token bucket, snapshots with expiry; Redis unreachable is StoreUnavailable, quickly."""
from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sqlite3
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import diskcache
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


# --- diskcache: the bounds a write applies in SQL of its own, on diskcache's own data ---

BIG = "长" * 40_000  # over diskcache's disk_min_file_size (32,768 characters): a file of its own


@contextlib.asynccontextmanager
async def disk_store(path, *, max_bytes=2 ** 24, executor=None):
    own = executor or ThreadPoolExecutor(2)
    stores = open_stores("diskcache", data_dir=path, redis_url="", executor=own, cache_max_bytes=max_bytes)
    try:
        yield stores.cache
    finally:
        await stores.aclose()
        if executor is None:
            own.shutdown()


def value_files(cache_dir):
    return sorted(p for p in cache_dir.rglob("*.val"))


async def test_an_entry_kept_in_a_file_is_read_by_diskcache_and_its_file_goes_with_its_eviction(tmp_path):
    async with disk_store(tmp_path) as cache:
        await cache.set("big", BIG, ttl=60, max_entries=2)
        assert len(value_files(tmp_path / "cache")) == 1
        with diskcache.Cache(str(tmp_path / "cache")) as plain:  # another process's view
            assert plain.get("big") == BIG
        await cache.set("a", "甲", ttl=60, max_entries=2)
        await cache.set("b", "乙", ttl=60, max_entries=2)  # evicts "big", the least recently used
        assert await cache.get("big") is None and await cache.get("a") == "甲"
    assert value_files(tmp_path / "cache") == []


async def test_diskcache_keeps_its_own_count_and_size_through_evictions(tmp_path):
    async with disk_store(tmp_path) as cache:
        for n in range(12):
            await cache.set_many([(f"k{n}", BIG if n % 3 == 0 else f"小{n}")], ttl=60, max_entries=5)
    with diskcache.Cache(str(tmp_path / "cache")) as plain:
        rows, size = plain._sql("SELECT count(*), sum(size) FROM Cache").fetchone()
        assert len(plain) == rows == 5
        assert plain.volume() - plain._page_size * plain._sql("PRAGMA page_count").fetchone()[0] == size
        assert size == sum(p.stat().st_size for p in value_files(tmp_path / "cache")) > 0
        assert set(plain) == {f"k{n}" for n in range(7, 12)}


async def test_an_expired_entry_goes_before_a_live_least_recently_used_one(tmp_path):
    async with disk_store(tmp_path) as cache:
        await cache.set("oldest", "甲", ttl=60, max_entries=3)
        await cache.set("short", "乙", ttl=0.2, max_entries=3)
        await cache.set("live", "丙", ttl=60, max_entries=3)
        await asyncio.sleep(0.3)
        await cache.set("new", "丁", ttl=60, max_entries=3)
        assert await cache.count() == 3 and await cache.get("oldest") == "甲"
        assert cache._cache._sql("SELECT count(*) FROM Cache WHERE key = 'short'").fetchone() == (0,)


async def test_the_byte_bound_evicts_the_least_recently_used_too(tmp_path):
    limit, entry = 2 ** 21, len(BIG.encode())  # room for about 17 entries
    async with disk_store(tmp_path, max_bytes=limit) as cache:
        written = 0
        while cache._cache.volume() + 2 * entry < limit:
            await cache.set(f"k{written}", BIG, ttl=60, max_entries=1000)
            written += 1
        assert await cache.get("k0") == BIG  # k0 now used after every other entry was written
        for n in range(written, written + 3):  # the third at the latest reaches the bound
            await cache.set(f"k{n}", BIG, ttl=60, max_entries=1000)
        assert cache._cache.volume() < limit and await cache.count() < written
        assert len(value_files(tmp_path / "cache")) == await cache.count()
        with diskcache.Cache(str(tmp_path / "cache")) as plain:
            assert "k0" in plain and "k1" not in plain and f"k{written + 2}" in plain


async def test_a_write_lock_held_elsewhere_sends_the_write_off_the_loop(tmp_path):
    async with disk_store(tmp_path) as cache:
        await cache.set("a", "甲", ttl=60, max_entries=10)
        holder = sqlite3.connect(tmp_path / "cache" / "cache.db", isolation_level=None)
        try:
            holder.execute("BEGIN IMMEDIATE")  # another process in the middle of its write
            write = asyncio.ensure_future(cache.set("b", "乙", ttl=60, max_entries=10))
            started = time.monotonic()
            await asyncio.sleep(0.2)
            assert time.monotonic() - started < 1 and not write.done()  # the loop runs meanwhile
            assert await cache.count() == 1  # and reads on its connection, which never waits
            holder.execute("COMMIT")
            await asyncio.wait_for(write, 5)
        finally:
            holder.close()
        with diskcache.Cache(str(tmp_path / "cache")) as plain:
            assert plain.get("b") == "乙"


async def test_a_cache_directory_from_diskcaches_own_policy_is_bounded_the_same(tmp_path):
    with diskcache.Cache(str(tmp_path / "cache"), eviction_policy="least-recently-stored") as before:
        before.set("old", "甲")  # as the store before this one wrote it: a store_time index too
    async with disk_store(tmp_path) as cache:
        indexes = {name for (name,) in cache._cache._sql("SELECT name FROM sqlite_master WHERE type = 'index'")}
        assert "Cache_store_time" not in indexes and "Cache_access_time" in indexes
        await cache.set("a", "乙", ttl=60, max_entries=2)
        await cache.set("b", "丙", ttl=60, max_entries=2)
        assert await cache.count() == 2 and await cache.get("old") is None
