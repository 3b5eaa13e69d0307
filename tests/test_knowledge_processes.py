"""Several real server processes sharing one data directory (and a reindex beside them):
an add through any instance is found by every instance at once, concurrent adds all land,
a rebuild loses nothing and interrupts no search."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
import urllib.parse
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.procs import ROOT, http, start_server

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    """Three instances on one DATA_DIR, rate limit off (these tests send hundreds of requests)."""
    tmp = tmp_path_factory.mktemp("knowledge-fleet")
    data = tmp / "data"
    env = {"DATA_DIR": str(data), "RATE_LIMIT_PER_MINUTE": "0", "LOG_LEVEL": "WARNING"}
    with ThreadPoolExecutor(3) as pool:  # start them side by side: each loads jieba
        servers = list(pool.map(lambda n: start_server(tmp, f"server-{n}", **env), (1, 2, 3)))
    yield servers, data
    for server in servers:
        server.stop()
    for server in servers:
        assert "Traceback" not in server.log(), server.log()


def add(server, body):
    status, _, raw = http("POST", server.url + "/api/knowledge/add", body)
    return status, json.loads(raw)


def search(server, q, **params):
    query = urllib.parse.urlencode({"q": q, **params})
    status, _, raw = http("GET", f"{server.url}/api/knowledge/search?{query}")
    return status, json.loads(raw)


def test_added_through_one_instance_is_found_by_another_at_once(fleet):
    (one, two, three), _ = fleet
    started = time.monotonic()
    status, body = add(one, {"id": "cross-1", "title": "跨实例检索", "content": "网格员走访独居老人qzxcross。"})
    assert status == 201
    status, found = search(two, "qzxcross")
    elapsed = time.monotonic() - started
    assert status == 200 and [r["id"] for r in found["results"]] == ["cross-1"]
    assert elapsed < 1.0  # the same second
    assert http("GET", three.url + "/api/knowledge/cross-1")[0] == 200
    # A deletion is seen everywhere at once too.
    assert http("DELETE", three.url + "/api/knowledge/cross-1")[0] == 200
    assert search(one, "qzxcross")[1]["total"] == 0


def test_concurrent_adds_from_three_instances_all_land(fleet):
    servers, _ = fleet
    per_server, clients_per_server = 100, 4
    failures: list[tuple[int, dict]] = []

    def client(server, number):
        for n in range(number, per_server, clients_per_server):
            doc_id = f"{server.port}-{n:03d}"
            status, body = add(server, {"id": doc_id, "title": f"并发写入{n}",
                                        "content": f"第{n}篇并发文档 qzxconcurrent。"})
            if status != 201 or body["ids"] != [doc_id]:
                failures.append((status, body))

    started = time.monotonic()
    with ThreadPoolExecutor(len(servers) * clients_per_server) as pool:
        for job in [pool.submit(client, server, k) for server in servers for k in range(clients_per_server)]:
            job.result()
    elapsed = time.monotonic() - started
    assert failures == []
    for server in servers:
        status, found = search(server, "qzxconcurrent", limit=50)
        assert status == 200 and found["total"] == 300, (server.port, found["total"])
    ids = {f"{s.port}-{n:03d}" for s in servers for n in range(per_server)}
    seen = set()
    for offset in range(0, 300, 50):
        seen |= {r["id"] for r in search(servers[0], "qzxconcurrent", limit=50, offset=offset)[1]["results"]}
    assert seen == ids
    print(f"300 concurrent adds through 3 instances in {elapsed:.1f}s")


def test_reindex_while_serving_loses_nothing_and_fails_no_search(fleet):
    (one, two, three), data = fleet
    assert add(one, {"id": "always-here", "title": "常驻文档", "content": "重建期间也要搜得到 qzxalways。"})[0] == 201
    earlier = [{"id": f"before-{n}", "title": "重建前写入", "content": f"重建前的第{n}篇 qzxbefore。"}
               for n in range(30)]
    assert add(three, {"documents": earlier})[0] == 201
    before = (data / "knowledge" / "CURRENT").read_text()
    stop = threading.Event()
    searches: list[tuple[int, int]] = []
    added: list[str] = []
    add_failures: list[int] = []

    def keep_searching():
        while not stop.is_set():
            for server in (one, three):
                status, found = search(server, "qzxalways")
                searches.append((status, found.get("total", -1)))

    def keep_adding():
        n = 0
        while not stop.is_set():
            status, body = add(two, {"id": f"during-{n}", "title": "重建期间写入",
                                     "content": f"重建时通过接口写入的第{n}篇 qzxduring。"})
            if status == 201:
                added.append(f"during-{n}")
            else:
                add_failures.append(status)
            n += 1

    threads = [threading.Thread(target=keep_searching), threading.Thread(target=keep_adding)]
    for thread in threads:
        thread.start()
    try:
        time.sleep(0.2)
        env = {**os.environ, "DATA_DIR": str(data)}
        result = subprocess.run([sys.executable, "scripts/reindex.py", "--source", "tests/fixtures/knowledge"],
                                cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
        time.sleep(0.2)
    finally:
        stop.set()
        for thread in threads:
            thread.join(10)
    assert result.returncode == 0, result.stderr
    summary = result.stdout.strip().splitlines()[-1]
    assert summary.startswith("documents ") and ", passages " in summary and summary.endswith("s")
    assert (data / "knowledge" / "CURRENT").read_text() != before  # a new index is live

    assert searches and add_failures == [] and len(added) > 5
    assert [s for s in searches if s != (200, 1)] == []  # every search answered, and found it
    for server in (one, two, three):
        status, found = search(server, "qzxduring", limit=50)
        assert found["total"] == len(added), (server.port, found["total"], len(added))
        assert search(server, "qzxbefore")[1]["total"] == 30  # earlier API adds survive
        assert search(server, "qzxalways")[1]["total"] == 1
        assert search(server, "枫桥经验")[1]["total"] >= 1  # the imported folder is searchable
    print(f"reindex: {summary}; {len(searches)} searches and {len(added)} adds during it")
