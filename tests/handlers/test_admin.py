"""POST /api/cache/clear through real HTTP: it empties the cache every instance of the
machine reads, answers how many entries went, and says when it cannot."""
from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor

import pytest

from core.store import open_stores
from core.traffic.cache import ResponseCache
from tests.conftest import error_of, post_json


async def test_clearing_empties_the_cache_another_instance_filled(http_server_client, settings):
    # Another instance of the machine: its own store handles on the same DATA_DIR.
    executor = ThreadPoolExecutor(1)
    stores = open_stores("diskcache", data_dir=settings.data_dir, redis_url="", executor=executor,
                         cache_max_bytes=2 ** 24)
    other = ResponseCache(stores.cache, ttl_seconds=60, max_entries=100)
    try:
        for n in range(3):
            await other.set(f"chat:other-{n}", {"answer": f"回答{n}"})
        cleared = await post_json(http_server_client, "/api/cache/clear", b"")
        assert cleared.code == 200 and json.loads(cleared.body) == {"cleared": 3}
        assert await other.get("chat:other-0") is None and await other.count() == 0
        again = await post_json(http_server_client, "/api/cache/clear", b"")
        assert json.loads(again.body) == {"cleared": 0}
    finally:
        await stores.aclose()
        executor.shutdown()


@pytest.mark.settings(store_backend="redis", redis_url="redis://127.0.0.1:9/0")
async def test_with_redis_down_clearing_is_busy_and_says_when_to_retry(http_server_client):
    response = await post_json(http_server_client, "/api/cache/clear", b"")
    error = error_of(response)
    assert response.code == 503 and error["code"] == "server_busy"
    assert "Redis" in error["message"] and response.headers["Retry-After"] == "2"


async def test_clearing_is_a_post_only(http_server_client):
    response = await http_server_client.fetch("/api/cache/clear", raise_error=False)
    assert response.code == 405 and response.headers["Allow"] == "POST"
    assert error_of(response)["code"] == "method_not_allowed"
