"""Bench 6: the shared-state costs of one request, in microseconds, in process.

Each figure is the service's own code (core/traffic/ratelimit.py, core/traffic/cache.py, core/ops/metrics.py)
on a temporary data directory, against a plain SQLite statement doing the same job on
the same kind of database (WAL, synchronous=NORMAL) as the floor: the ratio says how
much the abstraction costs over the storage itself. Median of 5 batches.

    python bench/b6_shared_state.py [--n 2000]
"""
from __future__ import annotations

import argparse
import asyncio
import pickle
import sqlite3
import sys
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common
from common import Report, finish

common.ensure_venv()
from prometheus_client import CollectorRegistry  # noqa: E402

from core.ops.metrics import FleetBoard, Metrics  # noqa: E402
from core.store import open_stores  # noqa: E402
from core.traffic.cache import ResponseCache  # noqa: E402
from core.traffic.ratelimit import RateLimiter  # noqa: E402

ANSWER = {"text": "归纳概括题要求全面准确地从给定资料中提炼要点。" * 30, "model": "fake-model",
          "usage": {"prompt_tokens": 11, "completion_tokens": 600}}


def per_call_us(fn: Callable[[], object], n: int, batches: int = 5) -> float:
    results = []
    for _ in range(batches):
        started = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - started) / n * 1e6)
    return common.median(results)


def per_call_us_async(make: Callable[[], object], n: int, batches: int = 5) -> float:
    async def run() -> float:
        results = []
        for _ in range(batches):
            started = time.perf_counter()
            for _ in range(n):
                await make()
            results.append((time.perf_counter() - started) / n * 1e6)
        return common.median(results)
    return asyncio.run(run())


def raw_db(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("CREATE TABLE IF NOT EXISTS kv (k TEXT PRIMARY KEY, v BLOB, t REAL)")
    conn.execute("CREATE TABLE IF NOT EXISTS buckets (k TEXT PRIMARY KEY, tokens REAL, stamp REAL)")
    return conn


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=2000)
    args = ap.parse_args(argv)
    n = args.n
    report = Report("b6_shared_state", "shared-state costs per call, in process")
    report.note(f"before: {common.machine_load()}")
    work = common.tmpdir()
    executor = ThreadPoolExecutor(2)
    raw = raw_db(work / "raw" / "raw.sqlite3")

    # Rate limit: one check of one client's bucket.
    stores = open_stores("diskcache", data_dir=work, redis_url="redis://127.0.0.1:6379/0",
                         executor=executor, cache_max_bytes=256 * 2**20)
    limiter = RateLimiter(stores.ratelimit, 1_000_000)
    rl = per_call_us_async(lambda: limiter.check("ip:127.0.0.1"), n)
    take = ("INSERT INTO buckets VALUES (?, 1e6 - 1, ?) ON CONFLICT (k) DO UPDATE SET "
            "tokens = min(1e6, tokens + (excluded.stamp - stamp) * 16666.7) - 1, stamp = excluded.stamp "
            "RETURNING tokens")
    rl_raw = per_call_us(lambda: raw.execute(take, ("ip:127.0.0.1", time.time())).fetchone(), n)
    report.add("rate-limit check", rl, "µs", reference="one SQLite UPSERT…RETURNING", ref_value=rl_raw)

    # Response cache: read (hit, miss) on the loop, write in the executor thread.
    cache = ResponseCache(stores.cache, ttl_seconds=300, max_entries=100)
    for i in range(100):
        stores.cache._set_many_sync([(f"chat:{i}", ANSWER)], 300, 100)
    blob = pickle.dumps(ANSWER, protocol=pickle.HIGHEST_PROTOCOL)
    raw.execute("INSERT OR REPLACE INTO kv VALUES ('chat:7', ?, ?)", (blob, time.time()))
    hit = per_call_us_async(lambda: cache.get("chat:7"), n)
    miss = per_call_us_async(lambda: cache.get("chat:absent"), n)
    hit_raw = per_call_us(lambda: pickle.loads(raw.execute("SELECT v FROM kv WHERE k = 'chat:7'").fetchone()[0]), n)
    miss_raw = per_call_us(lambda: raw.execute("SELECT v FROM kv WHERE k = 'chat:absent'").fetchone(), n)
    report.add("cache get, hit (3.6 kB answer)", hit, "µs", reference="SQLite SELECT + unpickle", ref_value=hit_raw)
    report.add("cache get, miss", miss, "µs", reference="SQLite SELECT", ref_value=miss_raw)
    counter = iter(range(10**9))
    set_full = per_call_us(lambda: stores.cache._set_many_sync([(f"chat:new:{next(counter)}", ANSWER)], 300, 100),
                           max(50, n // 10))
    set_raw = per_call_us(lambda: raw.execute("INSERT OR REPLACE INTO kv VALUES (?, ?, ?)",
                                              (f"chat:new:{next(counter)}", blob, time.time())), max(50, n // 10))
    report.add("cache set at the entry cap (set + LRU eviction)", set_full, "µs",
               reference="SQLite INSERT OR REPLACE", ref_value=set_raw, note="one write of one entry")

    # Metrics: the per-request counters, the snapshot, and the publish to the fleet board.
    metrics = Metrics(CollectorRegistry(), "server-1", "bench")
    finished = per_call_us(lambda: metrics.request_finished(
        path="/api/chat", endpoint="/api/chat", method="POST", status=200, seconds=0.01,
        cache="HIT", error_code=None), n)
    report.add("metrics: record one request", finished, "µs", note="on the loop, every request")
    snap = per_call_us(metrics.snapshot, max(50, n // 10))
    board = FleetBoard(stores.fleet, server_id="server-1", interval=60)
    snapshot = metrics.snapshot()
    publish = per_call_us_async(lambda: board.publish(metrics.snapshot()),
                          max(50, n // 10))
    sblob = pickle.dumps(snapshot)
    publish_raw = per_call_us(lambda: raw.execute("INSERT OR REPLACE INTO kv VALUES ('server-1', ?, ?)",
                                                  (pickle.dumps(metrics.snapshot()),
                                                   time.time())), max(50, n // 10))
    report.add("metrics: snapshot (registry read, percentiles)", snap, "µs", note="every interval and /api/metrics")
    report.add("metrics publish (snapshot + board write)", publish, "µs",
               reference="snapshot + SQLite INSERT OR REPLACE", ref_value=publish_raw,
               note=f"every METRICS_COLLECTION_INTERVAL, {len(sblob)} B")
    stores.cache.close()
    stores.ratelimit.close()
    stores.fleet.close()
    raw.close()
    executor.shutdown()
    report.note(f"after: {common.machine_load()}")
    return finish(report)


if __name__ == "__main__":
    sys.exit(main())
