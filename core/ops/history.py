"""A bounded history of this process's own metrics, so the console's charts have a past.

Every snapshot this process takes (published to the fleet board each
METRICS_COLLECTION_INTERVAL, and on each view it answers) may add one point; points are
at least STEP_S apart and none older than SPAN_S is kept, so a snapshot carries at most
SPAN_S / STEP_S + 1 points (91, about 3 KB). Each point is [published_at,
total_requests, p95 ms, errors], the counters cumulative: a reader takes differences.
Per process and in memory: a restarted instance starts a new history, as its
counters start anew.
"""
from __future__ import annotations

from collections import deque
from typing import Any

SPAN_S = 900.0  # the console charts the last 15 minutes
STEP_S = 10.0
ERROR_COUNTERS = ("rate_limited_requests", "busy_rejections", "upstream_errors", "upstream_timeouts")


class MetricsHistory:
    """This process's recent points, oldest first."""

    def __init__(self, span: float = SPAN_S, step: float = STEP_S) -> None:
        self.span = span
        self.step = step
        self._points: deque[list[float]] = deque(maxlen=int(span / step) + 1)

    def record(self, snapshot: dict[str, Any]) -> list[list[float]]:
        """Add `snapshot` when a step has passed since the last point; the points now."""
        now = snapshot["published_at"]
        if not self._points or now - self._points[-1][0] >= self.step:
            self._points.append([round(now, 3), snapshot["total_requests"],
                                 snapshot["latency_ms"]["p95"],
                                 sum(snapshot.get(name, 0) for name in ERROR_COUNTERS)])
        while self._points and self._points[0][0] < now - self.span:
            self._points.popleft()
        return [list(p) for p in self._points]
