"""ResponseCache on the real shared store: one cache for every process of a machine,
a damaged entry is a miss, and Redis down never fails a request."""
from __future__ import annotations

import logging
import sqlite3
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.store import StoreUnavailable, open_stores
from core.traffic.cache import ResponseCache


@pytest.fixture
def executor():
    pool = ThreadPoolExecutor(2)
    yield pool
    pool.shutdown()


def open_cache(tmp_path, executor, backend="diskcache"):
    stores = open_stores(backend, data_dir=tmp_path, redis_url="redis://127.0.0.1:9/0",
                         executor=executor, cache_max_bytes=2 ** 24)
    return stores, ResponseCache(stores.cache, ttl_seconds=60, max_entries=100)


async def test_an_answer_stored_by_one_process_is_read_and_cleared_by_another(tmp_path, executor):
    first_stores, first = open_cache(tmp_path, executor)
    second_stores, second = open_cache(tmp_path, executor)
    try:
        await first.set("chat:a", {"answer": "要点一"})
        await first.set("chat:b", {"answer": "要点二"})
        assert await second.get("chat:a") == {"answer": "要点一"}
        assert await second.count() == 2 and first.directory == second.directory == tmp_path / "cache"
        assert await second.clear() == 2
        assert await first.get("chat:a") is None and await first.count() == 0
    finally:
        await first_stores.aclose()
        await second_stores.aclose()


async def test_a_damaged_entry_is_a_miss_and_logged(tmp_path, executor, caplog):
    stores, cache = open_cache(tmp_path, executor)
    try:
        await cache.set("chat:a", {"answer": "要点一"})
        # Damage the stored pickle in diskcache's SQLite file, as a torn write would.
        with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
            assert db.execute("UPDATE Cache SET value = ? WHERE key = ?", (b"\x80\x05garbage", "chat:a")).rowcount == 1
        with caplog.at_level(logging.WARNING, logger="shenlun.cache"):
            assert await cache.get("chat:a") is None
        assert "cache read failed" in caplog.text
    finally:
        await stores.aclose()


async def test_with_redis_down_reads_raise_writes_are_dropped_and_the_count_is_the_last_known(
        tmp_path, executor):
    stores, cache = open_cache(tmp_path, executor, backend="redis")
    try:
        with pytest.raises(StoreUnavailable):
            await cache.get("chat:a")
        await cache.set("chat:a", {"answer": "要点一"})  # dropped, not raised
        assert await cache.count() == 0
        with pytest.raises(StoreUnavailable):
            await cache.clear()
        assert cache.directory is None
    finally:
        await stores.aclose()
