"""ResponseCache on the real shared store: one cache for every process of a machine,
a damaged entry is a miss, and Redis down never fails a request."""
from __future__ import annotations

import asyncio
import logging
import sqlite3
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.context import build_context
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


class CountingStore:
    """The real diskcache store, with the batches handed to it counted."""

    def __init__(self, store, *, held: bool = False):
        self._store = store
        self.batches: list[list[str]] = []
        self.handed = asyncio.Event()
        self.release = asyncio.Event()  # a held store writes nothing until it is set
        if not held:
            self.release.set()

    async def set_many(self, items, *, ttl, max_entries=None):
        self.batches.append([key for key, _ in items])
        self.handed.set()
        await self.release.wait()
        await self._store.set_many(items, ttl=ttl, max_entries=max_entries)

    def __getattr__(self, name):
        return getattr(self._store, name)


async def test_writes_made_while_one_is_in_the_store_s_hands_go_together_in_the_next(tmp_path, executor):
    stores, _ = open_cache(tmp_path, executor)
    store = CountingStore(stores.cache)
    cache = ResponseCache(store, ttl_seconds=60, max_entries=100)
    try:
        first = asyncio.ensure_future(cache.set("chat:alone", "{}"))
        await store.handed.wait()  # the first write is in the store's hands
        await asyncio.gather(first, *(cache.set(f"chat:{i}", f'{{"n": {i}}}') for i in range(6)))
        # The six made meanwhile waited for it, then went out together: one write.
        assert store.batches == [["chat:alone"], [f"chat:{i}" for i in range(6)]]
        assert [await cache.get(f"chat:{i}") for i in range(6)] == [f'{{"n": {i}}}' for i in range(6)]
    finally:
        await stores.aclose()


async def test_answers_put_one_after_another_within_the_write_delay_share_one_write(tmp_path, executor):
    stores, _ = open_cache(tmp_path, executor)
    store = CountingStore(stores.cache)
    cache = ResponseCache(store, ttl_seconds=60, max_entries=100)
    try:
        cache.put("chat:0", "{}")
        for i in range(1, 4):  # misses answered one after another, each in a loop turn of its own
            await asyncio.sleep(0)
            cache.put(f"chat:{i}", "{}")
        assert store.batches == []  # nothing written in front of the answers that follow
        await cache.flush()
        assert store.batches == [[f"chat:{i}" for i in range(4)]]
    finally:
        await stores.aclose()


async def test_an_answer_read_while_its_write_is_under_way_is_written_again_as_recently_used(
        tmp_path, executor):
    stores, _ = open_cache(tmp_path, executor)
    store = CountingStore(stores.cache, held=True)
    cache = ResponseCache(store, ttl_seconds=60, max_entries=100)
    try:
        cache.put("chat:a", "{}")
        await store.handed.wait()  # its batch is in the store's hands, not written yet
        assert await cache.get("chat:a") == "{}"
        store.release.set()
        await cache.flush()
        # The read stamped no access time (nothing was there to stamp): the entry is
        # written once more, so the entry cap sees it as used after it was written.
        assert store.batches == [["chat:a"], ["chat:a"]]
    finally:
        await stores.aclose()


async def test_a_writer_that_gives_up_does_not_take_the_others_writes_with_it(tmp_path, executor):
    stores, cache = open_cache(tmp_path, executor)
    try:
        first = asyncio.ensure_future(cache.set("chat:first", "{}"))
        await asyncio.sleep(0)
        others = asyncio.ensure_future(cache.set("chat:second", '{"n": 2}'))
        await asyncio.sleep(0)
        first.cancel()
        await others
        assert await cache.get("chat:first") == "{}" and await cache.get("chat:second") == '{"n": 2}'
    finally:
        await stores.aclose()


async def test_a_batch_over_the_entry_cap_keeps_the_most_recent_and_no_write_checkpoints(tmp_path, executor):
    stores, _ = open_cache(tmp_path, executor)
    cache = ResponseCache(stores.cache, ttl_seconds=60, max_entries=3)
    try:
        await asyncio.gather(*(cache.set(f"chat:{i}", "{}") for i in range(5)))
        await cache.set("chat:last", "{}")
        assert await cache.count() == 3 and await cache.get("chat:last") == "{}"
        # SQLite's own checkpoint (an fsync inside a write) is off for the cache's
        # connections; the store checkpoints off the write path instead.
        with sqlite3.connect(tmp_path / "cache" / "cache.db") as db:
            setting = db.execute("SELECT value FROM Settings WHERE key = 'sqlite_wal_autocheckpoint'").fetchone()
        assert setting == (0,)
    finally:
        await stores.aclose()


async def test_a_write_while_another_process_holds_the_lock_waits_off_the_loop_and_lands(tmp_path, executor):
    stores, cache = open_cache(tmp_path, executor)
    try:
        await cache.set("chat:first", "{}")  # the lock free: written at once
        other = sqlite3.connect(tmp_path / "cache" / "cache.db", isolation_level=None)
        other.execute("BEGIN IMMEDIATE")  # another process's write in progress
        try:
            write = asyncio.ensure_future(cache.set("chat:late", '{"n": 2}'))
            started = time.monotonic()
            for _ in range(20):  # the loop runs on while the write waits for the lock
                await asyncio.sleep(0.01)
            # Far below the store's 5 s lock timeout, which a busy wait on the loop would take.
            assert not write.done() and time.monotonic() - started < 2
        finally:
            other.execute("COMMIT")
            other.close()
        await write
        assert await cache.get("chat:late") == '{"n": 2}' and await cache.get("chat:first") == "{}"
    finally:
        await stores.aclose()


async def test_a_put_answer_is_read_here_at_once_and_by_other_processes_once_written(tmp_path, executor):
    first_stores, first = open_cache(tmp_path, executor)
    second_stores, second = open_cache(tmp_path, executor)
    try:
        first.put("chat:a", '{"answer": "要点一"}')
        assert await first.get("chat:a") == '{"answer": "要点一"}'  # this process: at once
        assert await second.get("chat:a") is None  # not in the store yet
        await first.flush()
        assert await second.get("chat:a") == '{"answer": "要点一"}'
    finally:
        await first_stores.aclose()
        await second_stores.aclose()


async def test_a_clear_drops_the_answers_not_written_yet(tmp_path, executor):
    first_stores, first = open_cache(tmp_path, executor)
    second_stores, second = open_cache(tmp_path, executor)
    try:
        await first.set("chat:a", "{}")
        first.put("chat:b", "{}")
        assert await first.clear() == 2  # the one not written yet counts too
        await first.flush()
        assert await first.get("chat:b") is None and await second.get("chat:b") is None
        assert await second.count() == 0
    finally:
        await first_stores.aclose()
        await second_stores.aclose()


async def test_closing_the_context_writes_the_answers_not_written_yet(settings, executor):
    ctx = build_context(settings)
    ctx.cache.put("chat:late", '{"answer": "收尾"}')
    await ctx.close()
    stores, other = open_cache(settings.data_dir, executor)
    try:
        assert await other.get("chat:late") == '{"answer": "收尾"}'
    finally:
        await stores.aclose()
