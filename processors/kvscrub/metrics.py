"""Prometheus metrics of KV-cache scrubbing, on an injectable registry.

Labels are limited to ``device``, ``method`` and ``trigger``: tenant ids are
unbounded (a cardinality hazard) and may themselves be sensitive, so they
stay in the signed ledger, not in the metrics.

p50/p95 scrub duration come from the histogram, e.g.
``histogram_quantile(0.95, rate(cachet_kvscrub_duration_seconds_bucket[5m]))``.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cachet.processors.kvscrub.pool import BlockPool
from cachet.processors.kvscrub.report import ScrubReport
from cachet.processors.kvscrub.state import BlockState

__all__ = ["DURATION_BUCKETS_S", "ScrubMetrics"]

# From 10 us (a handful of blocks on a GPU) to 10 s (a whole pool on a CPU),
# dense enough that p50/p95 interpolation stays within ~1.5x.
DURATION_BUCKETS_S: tuple[float, ...] = (
    1e-5,
    2.5e-5,
    5e-5,
    1e-4,
    2.5e-4,
    5e-4,
    1e-3,
    2.5e-3,
    5e-3,
    1e-2,
    2.5e-2,
    5e-2,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    5.0,
    10.0,
)


class ScrubMetrics:
    """The scrubber's metrics; pass a fresh :class:`CollectorRegistry` in tests."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        self.duration = Histogram(
            "cachet_kvscrub_duration_seconds",
            "Device time of one scrub (zeroize + verify), timed with device events.",
            ["device", "method"],
            buckets=DURATION_BUCKETS_S,
            registry=self.registry,
        )
        self.bytes_scrubbed = Counter(
            "cachet_kvscrub_bytes",
            "Bytes of KV blocks zeroized (per scrub, not per pass).",
            ["device", "trigger"],
            registry=self.registry,
        )
        self.blocks_verified = Counter(
            "cachet_kvscrub_blocks_verified",
            "KV blocks verified zero after a scrub.",
            ["device"],
            registry=self.registry,
        )
        self.coverage = Gauge(
            "cachet_kvscrub_coverage_ratio",
            "Fraction of each block's bytes verified by the latest scrub (0..1).",
            ["device"],
            registry=self.registry,
        )
        self.quarantined = Counter(
            "cachet_kvscrub_quarantined_blocks",
            "KV blocks quarantined because verification failed.",
            ["device"],
            registry=self.registry,
        )
        self.queue_depth = Gauge(
            "cachet_kvscrub_queue_depth",
            "Scrub requests waiting in the worker.",
            registry=self.registry,
        )
        self.requests_refused = Counter(
            "cachet_kvscrub_requests_refused",
            "Requests the worker did not act on: the verifier's status, or why a "
            "verified one was refused (e.g. unauthorized_requester).",
            ["reason"],
            registry=self.registry,
        )
        self.pool_blocks = Gauge(
            "cachet_kvscrub_pool_blocks",
            "KV blocks per lifecycle state.",
            ["device", "state"],
            registry=self.registry,
        )

    def observe(self, report: ScrubReport) -> None:
        """Record one scrub report."""
        if report.blocks == 0:
            return
        device = report.device
        self.duration.labels(device, report.method.value).observe(report.duration_us / 1e6)
        self.bytes_scrubbed.labels(device, report.trigger.value).inc(report.bytes)
        self.blocks_verified.labels(device).inc(len(report.verified))
        self.coverage.labels(device).set(report.coverage)
        if report.quarantined:
            self.quarantined.labels(device).inc(len(report.quarantined))

    def refused(self, reason: str) -> None:
        """Count one request not acted on, by ``reason`` (a bounded set of statuses)."""
        self.requests_refused.labels(reason).inc()

    def set_queue_depth(self, depth: int) -> None:
        """Set the number of scrub requests waiting."""
        self.queue_depth.set(depth)

    def observe_pool(self, pool: BlockPool) -> None:
        """Publish the pool's block counts per state."""
        counts = pool.state_counts()
        for state in BlockState:
            self.pool_blocks.labels(str(pool.device), state.value).set(counts[state])
