"""What the benchmarks share: a broker to run against, percentiles, timing."""

from __future__ import annotations

import contextlib
import math
import statistics
import uuid
from collections.abc import Iterator, Sequence

from cachet.kafka.settings import create_topics
from cachet.ops.broker import EmbeddedBroker
from cachet.topics import TopicNames

__all__ = ["bench_broker", "fresh_topics", "percentile", "median"]


@contextlib.contextmanager
def bench_broker(
    bootstrap_servers: str | None = None, partitions: int = 3
) -> Iterator[tuple[str, TopicNames]]:
    """A broker (the given one, else a fresh embedded one) and fresh topics."""
    names = TopicNames(f"bench-{uuid.uuid4().hex[:8]}.")
    if bootstrap_servers:
        create_topics(bootstrap_servers, names, partitions)
        yield bootstrap_servers, names
        return
    with EmbeddedBroker(port=0) as broker:
        create_topics(broker.bootstrap_servers, names, partitions)
        yield broker.bootstrap_servers, names


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100), nearest-rank; 0.0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, math.ceil(q / 100 * len(ordered)) - 1))
    return ordered[rank]


def median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def fresh_topics(bootstrap_servers: str, partitions: int = 3) -> TopicNames:
    """Every Cachet topic under a new prefix, so one run never sees another's events."""
    names = TopicNames(f"bench-{uuid.uuid4().hex[:8]}.")
    create_topics(bootstrap_servers, names, partitions)
    return names


def against_redis(ratio: float) -> str:
    """``ratio`` (cachet/redis) in words: how many times faster or slower."""
    if ratio >= 1:
        return f"{ratio:.1f}x faster than Redis"
    return f"{1 / ratio:.1f}x slower than Redis"
