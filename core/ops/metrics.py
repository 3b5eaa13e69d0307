"""Per-instance metrics on the process's `prometheus_client` registry, and the fleet board.

`Metrics` records what this process answered as labelled collectors on one
`CollectorRegistry`, built in `build_context` and passed in (never the library's global
default registry). `/metrics` is that registry's exposition; the JSON view
(`snapshot()`) is read back from the same collectors, so the two cannot disagree.

`FleetBoard` lives on the shared store (diskcache for one machine, Redis for several
hosts): each instance publishes its snapshot every `METRICS_COLLECTION_INTERVAL` seconds
with an expiry of a few intervals, and removes it on shutdown, so the board lists the
live instances only.
"""
from __future__ import annotations

import os
import time
from collections import Counter as Tally
from collections import defaultdict, deque
from collections.abc import Iterator
from typing import Any

import psutil
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_PLAIN_0_0_4, generate_latest
from prometheus_client.samples import Sample

from core.store import SharedStore, StoreUnavailable

# Cache hits answer in about a millisecond: the first buckets are fine-grained.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
                   10.0, 30.0, 60.0)
RECENT_LATENCIES = 4096  # window of the JSON percentiles
QUANTILES = (50, 95, 99)
EXPOSITION_CONTENT_TYPE = CONTENT_TYPE_PLAIN_0_0_4  # what generate_latest writes
# Monitoring traffic is not counted as requests: a scraper must not move the figures.
UNCOUNTED_PATHS = frozenset({"/health", "/metrics", "/api/metrics"})

_RequestKey = tuple[str, str, int, str | None, str | None]  # endpoint, method, status, code, cache


class RecentLatency:
    """A collector of the exact p50/p95/p99 over the last `RECENT_LATENCIES` requests.

    Kept beside the histogram on purpose: the console charts the *recent* p95 (the
    histogram is cumulative since start), and cache hits of about a millisecond all
    fall in one bucket, where bucket interpolation would report a made-up figure.
    Appending to a bounded deque costs ~40 ns per request; sorting happens per scrape."""

    def __init__(self, server_id: str, size: int = RECENT_LATENCIES) -> None:
        self.server_id = server_id
        self._window: deque[float] = deque(maxlen=size)
        self.append = self._window.append

    def quantiles(self) -> dict[int, float]:
        """Seconds at each of `QUANTILES` (0 with no request yet)."""
        ordered = sorted(self._window)
        if not ordered:
            return {q: 0.0 for q in QUANTILES}
        return {q: ordered[max(0, -(-q * len(ordered) // 100) - 1)] for q in QUANTILES}

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("shenlun_request_latency_recent_seconds",
                                   f"Latency quantiles over the last {RECENT_LATENCIES} requests.",
                                   labels=["server_id", "quantile"])
        for q, seconds in self.quantiles().items():
            family.add_metric([self.server_id, str(q / 100)], seconds)
        yield family


class Metrics:
    """Counters and latencies of this process since it started, on `registry`.

    Recording a request is one dict lookup of its pre-bound children, one counter
    increment and one histogram observation (bench/b11_metrics_record.py)."""

    def __init__(self, registry: CollectorRegistry, server_id: str, version: str) -> None:
        self.registry = registry
        self.server_id = server_id
        self.version = version
        self.started = time.time()
        self.in_flight = 0
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # prime: the next call measures since now
        # server_id on every series: several instances scraped through one balancer,
        # or summed in Prometheus, stay told apart.
        Gauge("shenlun_info", "Instance information.", ["server_id", "version"],
              registry=registry).labels(server_id, version).set(1)
        self._requests = Counter(
            "shenlun_requests", "Requests answered, by endpoint, method, status, error code "
            "and cache result (X-Cache).", ["server_id", "endpoint", "method", "status", "code", "cache"],
            registry=registry)
        self._duration = Histogram(
            "shenlun_request_duration_seconds", "Time to answer a request, by endpoint and method.",
            ["server_id", "endpoint", "method"], buckets=LATENCY_BUCKETS, registry=registry)
        Gauge("shenlun_requests_in_flight", "Requests being answered now.", ["server_id"],
              registry=registry).labels(server_id).set_function(lambda: self.in_flight)
        self._cache_entries = Gauge("shenlun_cache_entries", "Entries in the shared response cache.",
                                    ["server_id"], registry=registry).labels(server_id)
        self._recent = RecentLatency(server_id)
        registry.register(self._recent)
        ProcessCollector(registry=registry)  # process_cpu_seconds_total, process_resident_memory_bytes…
        self._bound: dict[_RequestKey, tuple[Any, Any]] = {}

    def request_started(self, path: str) -> None:
        if path not in UNCOUNTED_PATHS:
            self.in_flight += 1

    def request_finished(self, *, path: str, endpoint: str, method: str, status: int,
                         seconds: float, cache: str | None, error_code: str | None) -> None:
        """Record one answered request (monitoring paths are not counted)."""
        if path in UNCOUNTED_PATHS:
            return
        self.in_flight -= 1
        key = (endpoint, method, status, error_code, cache)
        bound = self._bound.get(key)
        if bound is None:
            bound = self._bound[key] = (
                self._requests.labels(self.server_id, endpoint, method, str(status),
                                      error_code or "", cache or ""),
                self._duration.labels(self.server_id, endpoint, method))
        bound[0].inc()
        bound[1].observe(seconds)
        self._recent.append(seconds)

    def set_cache_entries(self, entries: int) -> None:
        """The shared cache's size, read by the caller (it is a store call)."""
        self._cache_entries.set(entries)

    def exposition(self) -> bytes:
        """The registry in the Prometheus text format (`EXPOSITION_CONTENT_TYPE`)."""
        return generate_latest(self.registry)

    def snapshot(self) -> dict[str, Any]:
        """The JSON view, read from the registry: the seed's six fields first, then the rest."""
        samples = _samples(self.registry)

        def total(name: str, **match: str) -> float:
            return sum(s.value for s in samples[name]
                       if all(s.labels.get(k) == v for k, v in match.items()))

        by_endpoint: Tally[str] = Tally()
        by_status: Tally[str] = Tally()
        by_code: Tally[str] = Tally()
        for s in samples["shenlun_requests_total"]:
            n = int(s.value)
            by_endpoint[f"{s.labels['method']} {s.labels['endpoint']}"] += n
            by_status[s.labels["status"]] += n
            by_code[s.labels["code"]] += n
        answered = int(total("shenlun_requests_total"))
        hits = int(total("shenlun_requests_total", cache="HIT"))
        misses = int(total("shenlun_requests_total", cache="MISS"))
        timed = total("shenlun_request_duration_seconds_count")
        llm_calls = int(total("shenlun_llm_call_duration_seconds_count"))
        llm_seconds = total("shenlun_llm_call_duration_seconds_sum")
        recent = {s.labels["quantile"]: s.value for s in samples["shenlun_request_latency_recent_seconds"]}
        return {
            "total_requests": answered,
            "concurrent_requests": int(total("shenlun_requests_in_flight")),
            "cache_hit_rate": round(hits / (hits + misses), 4) if hits + misses else 0.0,
            "rate_limited_requests": by_code["rate_limited"],
            "average_response_time": round(total("shenlun_request_duration_seconds_sum") / timed, 6)
            if timed else 0.0,
            "cache_size": int(total("shenlun_cache_entries")),
            "server_id": self.server_id,
            "version": self.version,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "cache_hits": hits,
            "cache_misses": misses,
            "busy_rejections": by_code["server_busy"],
            "upstream_errors": by_code["upstream_error"],
            "upstream_timeouts": by_code["upstream_timeout"],
            "requests_by_endpoint": dict(sorted(by_endpoint.items())),
            "requests_by_status": dict(sorted(by_status.items())),
            "latency_ms": {f"p{q}": round(recent.get(str(q / 100), 0.0) * 1000, 3) for q in QUANTILES},
            "llm_calls": llm_calls,
            "llm_average_seconds": round(llm_seconds / llm_calls, 6) if llm_calls else 0.0,
            "llm_seconds_total": round(llm_seconds, 6),
            "memory_rss_bytes": int(total("process_resident_memory_bytes")),
            "cpu_percent": self._process.cpu_percent(None),
            "cpu_seconds_total": round(total("process_cpu_seconds_total"), 3),
            "published_at": time.time(),
        }


def _samples(registry: CollectorRegistry) -> dict[str, list[Sample]]:
    """Every sample the registry holds now, by sample name (one collection pass)."""
    by_name: dict[str, list[Sample]] = defaultdict(list)
    for family in registry.collect():
        for sample in family.samples:
            by_name[sample.name].append(sample)
    return by_name


# Fields of the fleet view that add up across instances.
_SUMMED = ("total_requests", "concurrent_requests", "rate_limited_requests", "cache_hits",
           "cache_misses", "busy_rejections", "upstream_errors", "upstream_timeouts",
           "llm_calls", "llm_seconds_total", "memory_rss_bytes", "cpu_percent")


class FleetBoard:
    """Snapshots of the live instances, on the shared store (one machine's diskcache
    directory, or Redis for several hosts)."""

    def __init__(self, store: SharedStore, *, server_id: str, interval: float) -> None:
        self.server_id = server_id
        # An instance that stops publishing (crashed) drops out after a few intervals.
        self.ttl = interval * 2.5 + 1
        self._store = store

    async def publish(self, snapshot: dict[str, Any]) -> bool:
        """Put this instance's snapshot on the board; False when the store is
        unreachable (skipped: the next interval tries again)."""
        try:
            await self._store.publish(self.server_id, snapshot, ttl=self.ttl)
            return True
        except StoreUnavailable:
            return False

    async def withdraw(self) -> None:
        """Mark this instance gone (graceful shutdown)."""
        try:
            await self._store.delete(self.server_id)
        except StoreUnavailable:
            pass  # its snapshot expires by itself

    async def fleet(self, own: dict[str, Any] | None = None) -> dict[str, Any]:
        """Sums over the live instances, plus one row per instance. While the store is
        unreachable: this instance only (`own`), with `"degraded": true`."""
        degraded = False
        try:
            rows = await self._store.snapshots()
        except StoreUnavailable:
            rows, degraded = ([own] if own is not None else []), True
        totals: dict[str, Any] = {name: sum(r.get(name, 0) for r in rows) for name in _SUMMED}
        looked_up = totals["cache_hits"] + totals["cache_misses"]
        totals["cache_hit_rate"] = round(totals["cache_hits"] / looked_up, 4) if looked_up else 0.0
        answered = totals["total_requests"]
        totals["average_response_time"] = round(
            sum(r["average_response_time"] * r["total_requests"] for r in rows) / answered, 6) \
            if answered else 0.0
        totals["cache_size"] = max((r["cache_size"] for r in rows), default=0)  # one shared cache
        statuses: Tally[str] = Tally()
        for r in rows:
            statuses.update(r.get("requests_by_status", {}))
        totals["requests_by_status"] = dict(sorted(statuses.items()))
        # age_s: how old each row is (published every METRICS_COLLECTION_INTERVAL s).
        now = time.time()
        view = {"scope": "fleet", "instances": len(rows), "totals": totals,
                "servers": [{**r, "age_s": round(max(0.0, now - r.get("published_at", now)), 3)}
                            for r in rows]}
        if degraded:
            view["degraded"] = True
        return view
