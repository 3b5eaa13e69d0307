"""What recording one request in the metrics costs, on the event loop, every request.

    .venv/bin/python bench/metrics_record.py [-n 100000]

Prints ns per request for `Metrics.request_finished` (pre-bound children: one dict
lookup, one counter increment, one histogram observation), for the same through
`labels()` on every request, and for a bare reference: a plain dict increment and a
deque append, the least any per-request bookkeeping could cost. Also the snapshot and
the exposition (per view and per scrape, not per request).
"""
from __future__ import annotations

import argparse
import sys
import time
from collections import Counter as Tally
from collections import deque
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import common

common.ensure_venv()
from prometheus_client import CollectorRegistry  # noqa: E402

from core.ops.metrics import Metrics  # noqa: E402

# A mix like a busy instance's: cache hits and misses, a 429, a 404.
REQUESTS = [("/api/chat", "POST", 200, None, "HIT"), ("/api/chat", "POST", 200, None, "MISS"),
            ("/api/chat", "POST", 429, "rate_limited", None), ("(unmatched)", "GET", 404, "not_found", None),
            ("/api/knowledge/search", "GET", 200, None, None)]


def per_call_ns(fn: Callable[[int], object], n: int, batches: int = 5) -> float:
    """Median over `batches` of the time per call of fn(i), i in range(n)."""
    results = []
    for _ in range(batches):
        started = time.perf_counter()
        for i in range(n):
            fn(i)
        results.append((time.perf_counter() - started) / n * 1e9)
    return sorted(results)[len(results) // 2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", type=int, default=100_000, help="requests per batch")
    n = parser.parse_args().n
    metrics = Metrics(CollectorRegistry(), "server-1", "bench")

    def record(i: int) -> None:
        endpoint, method, status, code, cache = REQUESTS[i % len(REQUESTS)]
        metrics.request_started(endpoint)
        metrics.request_finished(path=endpoint, endpoint=endpoint, method=method, status=status,
                                 seconds=0.0012, cache=cache, error_code=code)

    def unbound(i: int) -> None:
        endpoint, method, status, code, cache = REQUESTS[i % len(REQUESTS)]
        metrics._requests.labels("server-1", endpoint, method, str(status), code or "", cache or "").inc()
        metrics._duration.labels("server-1", endpoint, method).observe(0.0012)
        metrics._recent.append(0.0012)

    tally: Tally[tuple[object, ...]] = Tally()
    window: deque[float] = deque(maxlen=4096)

    def bare(i: int) -> None:
        tally[REQUESTS[i % len(REQUESTS)]] += 1
        window.append(0.0012)

    reference = per_call_ns(bare, n)
    rows = [("record one request (pre-bound children)", per_call_ns(record, n)),
            ("same through labels() every request", per_call_ns(unbound, n)),
            ("bare reference: dict += 1, deque append", reference)]
    for name, ns in rows:
        print(f"{name:<44} {ns:8.0f} ns   {ns / reference:5.1f}× bare")
    per_view = per_call_ns(lambda i: metrics.snapshot(), max(20, n // 1000))
    per_scrape = per_call_ns(lambda i: metrics.exposition(), max(20, n // 1000))
    print(f"{'snapshot (JSON view, per view/publish)':<44} {per_view / 1000:8.0f} µs")
    print(f"{'exposition (/metrics, per scrape)':<44} {per_scrape / 1000:8.0f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
