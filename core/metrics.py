"""Per-instance metrics, their Prometheus rendering, and the fleet board.

`Metrics` counts what this process answered. `FleetBoard` lives on the shared store
(diskcache for one machine, Redis for several hosts): each instance publishes its snapshot every
`METRICS_COLLECTION_INTERVAL` seconds with an expiry of a few intervals, and removes
it on shutdown, so the board lists the live instances only.
"""
from __future__ import annotations

import bisect
import math
import os
import time
from collections import Counter, deque
from collections.abc import Iterable
from typing import Any

import psutil

from core.store import SharedStore, StoreUnavailable

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0)
RECENT_LATENCIES = 4096  # window of the JSON percentiles
# Monitoring traffic is not counted as requests: a scraper must not move the figures.
UNCOUNTED_PATHS = frozenset({"/health", "/metrics", "/api/metrics"})


class Histogram:
    """Cumulative-bucket latency histogram in seconds (Prometheus semantics)."""

    def __init__(self, buckets: Iterable[float] = LATENCY_BUCKETS) -> None:
        self.bounds = tuple(buckets)
        self.counts = [0] * (len(self.bounds) + 1)  # the last one is +Inf
        self.total = 0.0
        self.count = 0

    def observe(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(self.bounds, seconds)] += 1
        self.total += seconds
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        rows, running = [], 0
        for bound, n in zip((*map(_fmt, self.bounds), "+Inf"), self.counts, strict=True):
            running += n
            rows.append((bound, running))
        return rows


class Metrics:
    """Counters and latencies of this process since it started."""

    def __init__(self, server_id: str, version: str) -> None:
        self.server_id = server_id
        self.version = version
        self.started = time.time()
        self._process = psutil.Process(os.getpid())
        self._process.cpu_percent(None)  # prime: the next call measures since now
        self.total_requests = 0
        self.in_flight = 0
        self.by_endpoint_status: Counter[tuple[str, str, int]] = Counter()
        self.rate_limited = 0
        self.busy_rejections = 0
        self.upstream_errors = 0
        self.upstream_timeouts = 0
        self.cache_hits = 0
        self.cache_misses = 0
        self.latency = Histogram()
        self._recent: deque[float] = deque(maxlen=RECENT_LATENCIES)

    def request_started(self, path: str) -> None:
        if path not in UNCOUNTED_PATHS:
            self.in_flight += 1

    def request_finished(self, *, path: str, endpoint: str, method: str, status: int,
                         seconds: float, cache: str | None, error_code: str | None) -> None:
        """Record one answered request (monitoring paths are not counted)."""
        if path in UNCOUNTED_PATHS:
            return
        self.in_flight -= 1
        self.total_requests += 1
        self.by_endpoint_status[(endpoint, method, status)] += 1
        self.latency.observe(seconds)
        self._recent.append(seconds)
        if cache == "HIT":
            self.cache_hits += 1
        elif cache == "MISS":
            self.cache_misses += 1
        if error_code == "rate_limited":
            self.rate_limited += 1
        elif error_code == "server_busy":
            self.busy_rejections += 1
        elif error_code == "upstream_error":
            self.upstream_errors += 1
        elif error_code == "upstream_timeout":
            self.upstream_timeouts += 1

    def snapshot(self, *, cache_size: int, llm_calls: int, llm_seconds: float) -> dict[str, Any]:
        """The JSON view: the seed's six fields first, then the rest."""
        looked_up = self.cache_hits + self.cache_misses
        recent = sorted(self._recent)
        memory = self._process.memory_info().rss
        by_endpoint: Counter[str] = Counter()
        by_status: Counter[str] = Counter()
        for (endpoint, method, status), n in self.by_endpoint_status.items():
            by_endpoint[f"{method} {endpoint}"] += n
            by_status[str(status)] += n
        cpu = self._process.cpu_times()
        return {
            "total_requests": self.total_requests,
            "concurrent_requests": self.in_flight,
            "cache_hit_rate": round(self.cache_hits / looked_up, 4) if looked_up else 0.0,
            "rate_limited_requests": self.rate_limited,
            "average_response_time": round(self.latency.total / self.latency.count, 6)
            if self.latency.count else 0.0,
            "cache_size": cache_size,
            "server_id": self.server_id,
            "version": self.version,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - self.started, 3),
            "cache_hits": self.cache_hits,
            "cache_misses": self.cache_misses,
            "busy_rejections": self.busy_rejections,
            "upstream_errors": self.upstream_errors,
            "upstream_timeouts": self.upstream_timeouts,
            "requests_by_endpoint": dict(sorted(by_endpoint.items())),
            "requests_by_status": dict(sorted(by_status.items())),
            "latency_ms": {f"p{q}": round(_percentile(recent, q) * 1000, 3) for q in (50, 95, 99)},
            "llm_calls": llm_calls,
            "llm_average_seconds": round(llm_seconds / llm_calls, 6) if llm_calls else 0.0,
            "llm_seconds_total": round(llm_seconds, 6),
            "memory_rss_bytes": memory,
            "cpu_percent": self._process.cpu_percent(None),
            "cpu_seconds_total": round(cpu.user + cpu.system, 3),
            "published_at": time.time(),
        }

    def prometheus(self, snap: dict[str, Any]) -> str:
        """This process's metrics in the Prometheus text exposition format (0.0.4)."""
        lines: list[str] = []
        label = f'server_id="{_escape(self.server_id)}"'

        def metric(name: str, kind: str, help_text: str, samples: list[tuple[str, Any]]) -> None:
            lines.append(f"# HELP {name} {help_text}")
            lines.append(f"# TYPE {name} {kind}")
            for labels, value in samples:
                lines.append(f"{name}{{{label}{labels}}} {_fmt(value)}")

        metric("shenlun_info", "gauge", "Instance information.",
               [(f',version="{_escape(self.version)}"', 1)])
        metric("shenlun_requests_total", "counter", "Requests answered, by endpoint, method and status.",
               [(f',endpoint="{_escape(e)}",method="{m}",status="{s}"', n)
                for (e, m, s), n in sorted(self.by_endpoint_status.items())])
        metric("shenlun_requests_in_flight", "gauge", "Requests being answered now.",
               [("", self.in_flight)])
        lines.append("# HELP shenlun_request_duration_seconds Time to answer a request.")
        lines.append("# TYPE shenlun_request_duration_seconds histogram")
        for bound, n in self.latency.cumulative():
            lines.append(f'shenlun_request_duration_seconds_bucket{{{label},le="{bound}"}} {n}')
        lines.append(f"shenlun_request_duration_seconds_sum{{{label}}} {_fmt(self.latency.total)}")
        lines.append(f"shenlun_request_duration_seconds_count{{{label}}} {self.latency.count}")
        for name, help_text, value in (
            ("shenlun_rate_limited_requests_total", "Requests refused with 429.", self.rate_limited),
            ("shenlun_busy_rejections_total", "Requests refused with 503 server_busy.", self.busy_rejections),
            ("shenlun_upstream_errors_total", "Requests answered 502 upstream_error.", self.upstream_errors),
            ("shenlun_upstream_timeouts_total", "Requests answered 504 upstream_timeout.", self.upstream_timeouts),
            ("shenlun_cache_hits_total", "Chat answers served from the shared cache.", self.cache_hits),
            ("shenlun_cache_misses_total", "Chat answers not found in the shared cache.", self.cache_misses),
            ("shenlun_llm_calls_total", "Calls made to the LLM.", snap["llm_calls"]),
            ("shenlun_llm_call_seconds_total", "Time spent waiting on the LLM.", snap["llm_seconds_total"]),
            ("process_cpu_seconds_total", "User and system CPU time of the process.", snap["cpu_seconds_total"]),
        ):
            metric(name, "counter", help_text, [("", value)])
        for name, help_text, value in (
            ("shenlun_cache_entries", "Entries in the shared response cache.", snap["cache_size"]),
            ("process_resident_memory_bytes", "Resident memory of the process.", snap["memory_rss_bytes"]),
            ("process_start_time_seconds", "Start time of the process (Unix time).", self.started),
            ("shenlun_uptime_seconds", "Seconds since the process started.", snap["uptime_s"]),
        ):
            metric(name, "gauge", help_text, [("", value)])
        return "\n".join(lines) + "\n"


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
        statuses: Counter[str] = Counter()
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


def _percentile(ordered: list[float], q: float) -> float:
    if not ordered:
        return 0.0
    rank = max(0, math.ceil(q / 100 * len(ordered)) - 1)
    return ordered[rank]


def _fmt(value: Any) -> str:
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if math.isinf(value):
            return "+Inf" if value > 0 else "-Inf"
        return repr(value)
    return str(value)


def _escape(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")
