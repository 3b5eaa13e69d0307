"""Faults an operator will meet, made for real: a data directory on a small tmpfs filled
to its last byte (and remounted read-only), a Whoosh segment overwritten, an index
directory deleted, a damaged document store.

For each: the statuses clients see (never a 500), what /health says, that it heals by
itself, and that every acknowledged document is there afterwards. Run with `-s` to see
the figures (requests tried, statuses seen, seconds to heal).
"""
from __future__ import annotations

import asyncio
import errno
import json
import os
import shutil
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path

import pytest

from core.errors import InsufficientStorage
from core.knowledge import KnowledgeBase, SearchRequest, parse_documents
from core.knowledge.index import REINDEX_LOCK, file_lock
from core.knowledge.store import CorruptStore
from core.ops.disk import OK, READ_ONLY, RESERVE_BYTES, DataDisk, DiskState, classify
from tests.conftest import error_of, post_json
from tests.procs import ServerProcess, free_port, http, start_server

TOPICS = ["乡村振兴", "基层治理", "生态保护", "数字政府", "营商环境", "共同富裕"]


def documents(prefix: str, count: int) -> list[dict[str, object]]:
    return [{"id": f"{prefix}-{n}", "title": f"{TOPICS[n % len(TOPICS)]}材料 {n}",
             "category": "测试", "tags": [TOPICS[n % len(TOPICS)]],
             "content": f"{TOPICS[n % len(TOPICS)]}是第 {n} 篇材料的主题。" + "推进基层治理现代化，" * 20}
            for n in range(count)]


class Tally:
    """Every status seen in one fault, printed at the end (pytest -s)."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.statuses: Counter[tuple[str, int]] = Counter()
        self.figures: dict[str, object] = {}

    def saw(self, what: str, status: int) -> int:
        self.statuses[(what, status)] += 1
        return status

    def report(self) -> None:
        tried = sum(self.statuses.values())
        seen = ", ".join(f"{what} {status}×{n}" for (what, status), n in sorted(self.statuses.items()))
        extra = "".join(f", {k} {v}" for k, v in self.figures.items())
        print(f"\n[fault: {self.name}] {tried} requests: {seen}{extra}")
        assert not [k for k in self.statuses if k[1] == 500], self.statuses


# --------------------------------------------------------------------------- a small disk

@contextmanager
def tmpfs(mount: Path, size: str) -> Iterator[Path]:
    """A tmpfs of `size` mounted on `mount` (made if needed) for the body; needs root,
    as CI has."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    mount.mkdir(parents=True, exist_ok=True)
    subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)], check=True)
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.fixture
def small_disk(tmp_path):
    """The data directory on a 6 MiB tmpfs."""
    with tmpfs(tmp_path / "small-disk", "6m") as mount:
        yield mount


@pytest.fixture
def data_dir(request, tmp_path):
    """The conftest's data directory, or the small disk for the tests that ask for it."""
    if "small_disk" in request.fixturenames:
        return request.getfixturevalue("small_disk")
    path = tmp_path / "data"
    path.mkdir()
    return path


def fill(directory: Path) -> Path:
    """Write one file until the filesystem has not a byte left; returns its path."""
    filler = directory / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        for size in (1 << 20, 1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, bytes(size))
            except OSError as exc:
                assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)
    assert os.statvfs(directory).f_bavail == 0
    return filler


async def get_json(client, path: str):
    response = await client.fetch(path, raise_error=False)
    return response, json.loads(response.body)


def search_path(q: str) -> str:
    return "/api/knowledge/search?" + urllib.parse.urlencode({"q": q, "limit": 50})


CHAT = {"message": "乡村振兴怎么写？"}


@pytest.mark.settings(rate_limit_per_minute=600, instances=3)
async def test_full_disk_refuses_writes_keeps_reads_and_recovers_without_restart(
        http_server_client, small_disk, ctx):
    tally = Tally("full disk")
    client = http_server_client
    acknowledged: list[str] = []
    for batch in range(2):
        acknowledged += await add_stored(client, tally, documents(f"before{batch}", 10))
    response = await post_json(client, "/api/chat", CHAT)
    assert tally.saw("chat", response.code) == 200 and response.headers["X-Cache"] == "MISS"
    found_before = json.loads((await client.fetch(search_path("乡村振兴"))).body)

    filler = fill(small_disk)
    for n in range(20):
        response = await post_json(client, "/api/knowledge/add", documents(f"full{n}", 1)[0])
        tally.saw("add", response.code)
        assert response.code == 507, response.body
        error = error_of(response)
        assert error["code"] == "insufficient_storage" and "磁盘" in error["message"]
        assert "/" not in error["message"]  # the data directory's state, never a path
    response = await client.fetch("/api/knowledge/before0-0", method="DELETE", raise_error=False)
    assert tally.saw("delete", response.code) == 507
    for _ in range(10):
        response, found = await get_json(client, search_path("乡村振兴"))
        assert tally.saw("search", response.code) == 200 and found["results"] == found_before["results"]
        # The rate limit's shared buckets cannot be written: each instance takes its share.
        assert response.headers["X-RateLimit-Limit"] == str(600 // 3)
    for n in range(5):
        response = await post_json(client, "/api/chat", {**CHAT, "message": f"第{n}问：乡村振兴"})
        assert tally.saw("chat", response.code) == 200
        assert response.headers["X-Cache"] == "BYPASS"
    response = await client.fetch("/api/knowledge/before1-3", raise_error=False)
    assert tally.saw("get", response.code) == 200
    response, health = await get_json(client, "/health")
    assert tally.saw("health", response.code) == 503
    assert health["status"] == "fail" and health["checks"]["disk"] == "full"
    assert health["disk_free_bytes"] < RESERVE_BYTES
    assert health["checks"]["store"] == "degraded" and health["checks"]["cache"] == "degraded"
    assert health["checks"]["index"] == "ok" and health["documents"] == len(acknowledged)

    filler.unlink()
    freed = time.monotonic()
    while True:
        response, health = await get_json(client, "/health")
        if tally.saw("health", response.code) == 200:
            break
        assert time.monotonic() - freed < 5, health
        await _sleep(0.1)
    tally.figures["seconds to heal"] = round(time.monotonic() - freed, 2)
    assert health["checks"]["disk"] == "ok" and health["checks"]["store"] == "ok"
    acknowledged += await add_stored(client, tally, documents("after", 5))
    response = await post_json(client, "/api/chat", {**CHAT, "message": "恢复后：乡村振兴"})
    assert tally.saw("chat", response.code) == 200 and response.headers["X-Cache"] == "MISS"
    response = await client.fetch(search_path("乡村振兴"), raise_error=False)
    assert tally.saw("search", response.code) == 200
    assert response.headers["X-RateLimit-Limit"] == "600"  # the shared buckets again
    await assert_all_present(client, acknowledged, tally)
    assert ctx.knowledge.store.count() == len(acknowledged)  # no refused add was half-stored
    tally.report()


@pytest.mark.settings(rate_limit_per_minute=0)
async def test_a_write_the_disk_refuses_half_way_is_rolled_back(http_server_client, small_disk, ctx):
    tally = Tally("disk refuses a write half-way")
    client = http_server_client
    acknowledged = await add_stored(client, tally, documents("kept", 5))
    ctx.disk.reserve_bytes = 0  # no refusal up front: the write itself meets the full disk
    filler = fill(small_disk)
    big = documents("big", 20)
    response = await post_json(client, "/api/knowledge/add", {"documents": big})
    assert tally.saw("add", response.code) == 507 and error_of(response)["code"] == "insufficient_storage"
    assert ctx.knowledge.store.count() == len(acknowledged)  # the transaction was rolled back
    response = await client.fetch("/api/knowledge/big-0", raise_error=False)
    assert tally.saw("get", response.code) == 404
    filler.unlink()
    await _sleep(0.3)  # the cached statvfs look expires
    acknowledged += await add_stored(client, tally, big)
    await assert_all_present(client, acknowledged, tally)
    tally.report()


def test_a_read_only_data_directory_is_named_and_refuses_writes(small_disk):
    (small_disk / "knowledge").mkdir()
    # A filesystem with a file open for writing cannot be remounted read-only, so this
    # looks at the disk itself rather than through a running app.
    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(OSError) as refused:
        (small_disk / "knowledge" / "x").write_text("x")
    assert classify(refused.value) == READ_ONLY
    disk = DataDisk(small_disk)
    assert disk.probe().state == READ_ONLY
    with pytest.raises(InsufficientStorage, match="只读"):
        with disk.writing():
            (small_disk / "knowledge" / "x").write_text("x")
    subprocess.run(["mount", "-o", "remount,rw", str(small_disk)], check=True)
    time.sleep(0.3)
    assert disk.probe() == DiskState(OK, disk.probe().free_bytes) and disk.writable


@pytest.fixture
def full_index_disk(data_dir):
    """The index directory on its own 1 MiB tmpfs, beside a roomy document store."""
    with tmpfs(data_dir / "knowledge" / "indexes", "1m") as mount:
        yield mount


@pytest.mark.settings(rate_limit_per_minute=0)
async def test_an_index_the_disk_refuses_catches_up_once_there_is_room(full_index_disk, http_server_client):
    tally = Tally("index disk full, store not")
    client = http_server_client
    await add_stored(client, tally, documents("first", 3))
    filler = fill(full_index_disk)
    response = await post_json(client, "/api/knowledge/add", {"documents": documents("stored", 3)})
    assert tally.saw("add", response.code) == 507
    assert "文档已保存" in error_of(response)["message"]  # honest: the store has them
    response = await client.fetch("/api/knowledge/stored-0", raise_error=False)
    assert tally.saw("get", response.code) == 200
    filler.unlink()
    await _sleep(2.1)  # the failure is remembered for a moment
    # Whoosh's lock of the failed commit was released: the next add applies both batches.
    await add_stored(client, tally, documents("later", 3))
    await assert_all_present(client, [f"{p}-{n}" for p in ("first", "stored", "later") for n in range(3)], tally)
    tally.report()


async def add_stored(client, tally: Tally, docs: list[dict[str, object]]) -> list[str]:
    """POST `docs` to the add API, which must answer 201; the ids it acknowledged."""
    response = await post_json(client, "/api/knowledge/add", {"documents": docs})
    assert tally.saw("add", response.code) == 201
    return list(json.loads(response.body)["ids"])


async def assert_all_present(client, ids: list[str], tally: Tally) -> None:
    """Every acknowledged document can be read and is found by a search of its id."""
    for doc_id in ids:
        response = await client.fetch(f"/api/knowledge/{doc_id}", raise_error=False)
        assert tally.saw("get", response.code) == 200, doc_id
    found: set[str] = set()
    for topic in TOPICS:
        response, body = await get_json(client, search_path(topic))
        tally.saw("search", response.code)
        assert response.code == 200, body
        found |= {r["id"] for r in body["results"]}
    assert set(ids) <= found


async def _sleep(seconds: float) -> None:
    await asyncio.sleep(seconds)


# --------------------------------------------------------------------------- the index

def live_index(data_dir: Path) -> Path:
    root = data_dir / "knowledge"
    return root / "indexes" / (root / "CURRENT").read_text().strip()


@pytest.mark.settings(rate_limit_per_minute=0)
async def test_deleted_index_directory_heals_while_running(http_server_client, data_dir, ctx):
    tally = Tally("index directory deleted while running")
    client = http_server_client
    acknowledged = await add_stored(client, tally, documents("doc", 40))
    before = {t: json.loads((await client.fetch(search_path(t))).body)["results"] for t in TOPICS}

    broken = live_index(data_dir)
    shutil.rmtree(broken)
    started = time.monotonic()
    unavailable = 0
    while True:
        response, body = await get_json(client, search_path("乡村振兴"))
        tally.saw("search", response.code)
        if response.code == 200:
            break
        assert response.code == 503 and body["error"]["code"] == "index_unavailable"
        assert int(response.headers["Retry-After"]) >= 1
        unavailable += 1
        if unavailable == 1:
            _, health = await get_json(client, "/health")
            tally.saw("health", 503 if health["status"] == "fail" else 200)
            assert health["checks"]["index"] in ("rebuilding", "ok")
            # An add during the rebuild waits for the switch (or says it is stored).
            response = await post_json(client, "/api/knowledge/add", documents("during", 1)[0])
            assert tally.saw("add", response.code) in (201, 503)
            acknowledged += ["during-0"]
            response = await post_json(client, "/api/chat", CHAT)  # retrieval needs the index
            assert tally.saw("chat", response.code) in (200, 503)
        assert time.monotonic() - started < 15
        await _sleep(0.05)
    tally.figures["seconds to heal"] = round(time.monotonic() - started, 2)
    assert unavailable >= 1  # the deleted index was noticed, not served from nowhere
    response, health = await get_json(client, "/health")
    assert tally.saw("health", response.code) == 200 and health["checks"]["index"] == "ok"
    assert live_index(data_dir) != broken and ctx.knowledge.healer.rebuilds == 1
    after = {t: json.loads((await client.fetch(search_path(t))).body)["results"] for t in TOPICS}
    strip = lambda rs: [(r["id"], r["title"]) for r in rs if not r["id"].startswith("during")]  # noqa: E731
    assert {t: strip(r) for t, r in after.items()} == {t: strip(r) for t, r in before.items()}
    await assert_all_present(client, acknowledged, tally)
    tally.report()


def _search(server: ServerProcess, q: str) -> tuple[int, dict, object]:
    status, headers, body = http("GET", server.url + search_path(q), timeout=10)
    return status, json.loads(body), headers


def knowledge_base(data: Path, docs: list[dict[str, object]]) -> dict[str, list]:
    """A data directory holding `docs` (made in this process: a server start costs
    seconds), and what a search of each topic finds in it."""
    async def make() -> dict[str, list]:
        with ThreadPoolExecutor(2) as executor:
            base = KnowledgeBase.open(data, executor)
            try:
                await base.add(parse_documents({"documents": docs}))
                return {t: (await base.search(SearchRequest.from_params(
                    {"q": [t], "limit": ["50"]})))["results"] for t in TOPICS}
            finally:
                base.close()
    return asyncio.run(make())


@pytest.mark.slow
def test_overwritten_segment_heals_after_restart_with_one_rebuild_for_the_fleet(tmp_path):
    tally = Tally("segment overwritten, fleet of two restarted")
    data = tmp_path / "data"
    before = knowledge_base(data, documents("doc", 60))
    segment = next(live_index(data).glob("*.seg"))
    segment.write_bytes(os.urandom(segment.stat().st_size))

    # Hold the rebuild lock, as a rebuild elsewhere would: both instances must wait.
    lock_held, release = threading.Event(), threading.Event()

    def hold() -> None:
        with file_lock(data / "knowledge" / REINDEX_LOCK, timeout=None):
            lock_held.set()
            release.wait(60)
    holder = threading.Thread(target=hold)
    holder.start()
    lock_held.wait(5)
    env = {"DATA_DIR": str(data), "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "INFO"}
    fleet: list[ServerProcess] = []
    try:
        with ThreadPoolExecutor(2) as pool:
            fleet = list(pool.map(lambda n: start_server(tmp_path, f"server-{n}", **env), (1, 2)))
        for server in fleet:
            status, found, headers = _search(server, "乡村振兴")
            assert tally.saw("search", status) == 503 and found["error"]["code"] == "index_unavailable"
            assert int(headers["Retry-After"]) >= 1
            status, _, body = http("GET", server.url + "/health")
            assert tally.saw("health", status) == 503
            assert json.loads(body)["checks"]["index"] == "rebuilding"
        release.set()
        holder.join()
        started = time.monotonic()
        pending = list(fleet)
        while pending:
            for server in list(pending):
                status, found, _ = _search(server, "乡村振兴")
                tally.saw("search", status)
                assert status in (200, 503), found
                if status == 200:
                    pending.remove(server)
            assert time.monotonic() - started < 20
            time.sleep(0.05)
        tally.figures["seconds to heal"] = round(time.monotonic() - started, 2)
        for server in fleet:
            status, _, body = http("GET", server.url + "/health")
            assert tally.saw("health", status) == 200 and json.loads(body)["checks"]["index"] == "ok"
            assert {t: _search(server, t)[1]["results"] for t in TOPICS} == before
        logs = "".join(server.log() for server in fleet)
        assert logs.count("rebuilt from the document store in") == 1  # one rebuild for the fleet
        assert live_index(data).name != segment.parent.name
    finally:
        release.set()
        holder.join()
        for server in fleet:
            server.stop()
    tally.report()


@pytest.mark.slow
def test_a_damaged_document_store_refuses_to_start_with_one_clear_line(tmp_path):
    data = tmp_path / "data"
    knowledge_base(data, documents("doc", 40))
    pointer = (data / "knowledge" / "CURRENT").read_text()
    store = data / "knowledge" / "documents.sqlite3"
    raw = bytearray(store.read_bytes())
    page = 4096
    raw[page + 8: 3 * page] = os.urandom(2 * page - 8)  # b-tree pages, not the header
    store.write_bytes(bytes(raw))
    env = {"PORT": str(free_port()), "SERVER_ID": "server-1", "DATA_DIR": str(data), "LOG_LEVEL": "INFO"}
    broken = ServerProcess(env, tmp_path / "server-1.log")
    assert broken.proc.wait(30) == 3
    broken.stop()
    refusals = [line for line in broken.log().splitlines() if "refusing to start" in line]
    assert len(refusals) == 1 and "documents.sqlite3" in refusals[0], broken.log()
    assert (data / "knowledge" / "CURRENT").read_text() == pointer  # nothing rebuilt


def test_an_index_without_its_document_store_refuses_to_open(tmp_path):
    data = tmp_path / "data"
    knowledge_base(data, documents("doc", 3))
    (data / "knowledge" / "documents.sqlite3").unlink()
    with ThreadPoolExecutor(1) as executor, pytest.raises(CorruptStore, match="missing"):
        KnowledgeBase.open(data, executor)
    assert not (data / "knowledge" / "documents.sqlite3").exists()  # no empty store made
