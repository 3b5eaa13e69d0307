"""The per-process metrics history the console charts from: bounded in count and age."""
from __future__ import annotations

from core.ops.history import MetricsHistory


def snap(t: float, total: int, p95: float = 5.0, limited: int = 0, busy: int = 0) -> dict:
    return {"published_at": t, "total_requests": total, "latency_ms": {"p95": p95},
            "rate_limited_requests": limited, "busy_rejections": busy,
            "upstream_errors": 0, "upstream_timeouts": 0}


def test_a_point_per_step_with_cumulative_counters():
    history = MetricsHistory(span=900, step=10)
    history.record(snap(1000, 3))
    history.record(snap(1004, 5))  # within the step: not a new point
    points = history.record(snap(1010, 9, p95=7.5, limited=2, busy=1))
    assert points == [[1000, 3, 5.0, 0], [1010, 9, 7.5, 3]]


def test_points_older_than_the_span_fall_off_and_the_count_is_bounded():
    history = MetricsHistory(span=60, step=10)
    for n in range(20):
        points = history.record(snap(1000 + 10 * n, n))
    assert len(points) <= 7
    assert points[0][0] >= points[-1][0] - 60
    assert points[-1] == [1190, 19, 5.0, 0]
    # A long pause: everything before the span is gone.
    assert history.record(snap(5000, 99)) == [[5000, 99, 5.0, 0]]
