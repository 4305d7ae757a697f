"""``cachet bench idle``: the embedded broker's read schedule the report
explains the figure with, and the report itself."""

from __future__ import annotations

import pytest

from cachet.ops.bench.idle import broker_reads_per_fetch, format_report


@pytest.mark.parametrize(
    ("wait_ms", "reads"),
    [
        # Below 250 ms: on arrival and when the wait is over.
        (1, 2),
        (10, 2),
        (100, 2),
        (249, 2),
        # From 250 ms the wait left is halved while it is 250 ms or more.
        (250, 3),  # 0, 125, 250
        (500, 4),  # 0, 250, 375, 500
        (1000, 5),  # 0, 500, 750, 875, 1000
    ],
)
def test_broker_reads_per_fetch(wait_ms: int, reads: int) -> None:
    assert broker_reads_per_fetch(wait_ms) == reads


def test_the_report_says_where_the_idle_cpu_goes() -> None:
    report = format_report(
        {
            "quick": True,
            "window_s": 5.0,
            "tick_interval_ms": 3000,
            "node_and_ticker_cpu_pct": 2.4,
            "broker_cpu_pct": 7.6,
            "idle_cpu_pct_of_one_core": 10.0,
            "redis_idle_cpu_pct": None,
            "target_pct": 5.0,
            "consumers": [
                {
                    "name": "invalidation listener",
                    "topics": ["invalidations"],
                    "partitions": 3,
                    "fetch_wait_ms": 10,
                    "broker_reads_per_s": 600.0,
                    "broker_cpu_pct": 5.2,
                    "client_cpu_pct": 0.6,
                }
            ],
            "broker_cpu_pct_without_node": 0.1,
            "process_threads_pct": {"cachet-seal-window": 0.8, "idle-thread": 0.0},
        }
    )
    assert "invalidation listener" in report
    assert "3 partitions of invalidations, fetch wait 10 ms: 600 partition reads/s" in report
    assert "broker 5.20%" in report
    assert "invalidation_fetch_wait_ms" in report
    assert "cachet-seal-window" in report
    assert "idle-thread" not in report  # threads that used nothing are left out
