"""``cachet bench invalidation``: how long until a second node stops serving.

Two cache nodes, A and B, each with its own RocksDB view and L1, replicate
the same log. For each of M keys (written through A, served and cached in
B's L1 first), A changes the key and B polls ``get()`` until it no longer
serves the old value; the sample is the time from the change call on A to
B's first read that does not return the old value.

* ``revoke`` (headline, ``p50_ms``/``p99_ms``): A revokes the key: an eager
  Invalidated event on the broadcast topic plus a StateTransitioned; B stops
  serving once it has verified the seal covering the Invalidated event.
* ``supersede``: A puts a new version; B stops serving the old value once it
  applied the new CacheWritten (``supersede_p50_ms``/``supersede_p99_ms``).

For now both nodes run in ONE process (two CacheNode instances, two data
dirs, one broker), sharing its GIL and two cores: real nodes run on separate
machines, so the figures include contention between A and B that a
deployment would not have, and no network hop between machines.

Baseline, same run: a Redis pub/sub round trip, PUBLISH on one connection
and a subscriber on another connection receiving it
(``redis_pubsub_p50_ms``/``redis_pubsub_p99_ms``).
"""

from __future__ import annotations

import logging
import time
from typing import Any

from cachet.config import CachetConfig, default_config
from cachet.config.enums import AuditMode
from cachet.ops.bench._node import (
    BENCH_CONTRACT,
    BenchSetupError,
    bench_keys,
    bench_ledger,
    bench_value,
    fill,
    wait_visible,
)
from cachet.ops.bench._redis import redis_server, require_redis
from cachet.ops.bench._support import percentile
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode

__all__ = ["format_report", "run"]

# B's poll interval, the resolution of every sample. Every get() is an
# audited read: polling much faster floods the one process with CacheRead
# events and measures that flood instead of the propagation.
POLL_S = 0.005
TIMEOUT_S = 30.0
# A put of a new version can leave B serving the old one indefinitely (a
# stale L1 refill, see the report): give up on such a key sooner.
SUPERSEDE_TIMEOUT_S = 2.0

log = logging.getLogger(__name__)


def _until_not_served(
    b: CacheClient, key: str, old: bytes, t0: float, timeout_s: float = TIMEOUT_S
) -> float | None:
    """Milliseconds from ``t0`` until B's get() stops returning ``old``;
    None when B still serves it after ``timeout_s`` (reported, not hidden)."""
    deadline = t0 + timeout_s
    while True:
        r = b.get(key, contract=BENCH_CONTRACT)
        now = time.perf_counter()
        if not (r.hit and r.value == old):
            return (now - t0) * 1e3
        if now > deadline:
            log.warning("node B still serves the old value of %r after %.0f s", key, timeout_s)
            return None
        time.sleep(POLL_S)


def _stale_l1(node: CacheNode, key: str) -> bool:
    """B's view holds a newer version than the entry its L1 serves."""
    key_hash = node.hasher.key("default", key)
    cached, current = node.l1_get(key_hash), node.view.current(key_hash)
    return bool(cached and current and current.version > cached.entry.version)


def _warm_b(b: CacheClient, keys: list[str], value: bytes) -> None:
    for k in keys:
        r = b.get(k, contract=BENCH_CONTRACT)
        if not (r.hit and r.value == value):
            raise BenchSetupError(f"node B does not serve {k!r} before the change: {r.reason}")


def _redis_pubsub(samples: int) -> list[float]:
    with redis_server() as server:
        publisher, subscriber = server.client(), server.client()
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("cachet-bench")
        while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
            pass
        latencies = []
        for i in range(samples + 5):  # the first 5 warm the connections up
            payload = f"invalidate:{i}"
            t0 = time.perf_counter()
            publisher.publish("cachet-bench", payload)
            while True:
                msg = pubsub.get_message(timeout=TIMEOUT_S)
                if msg is None:
                    raise BenchSetupError("redis pub/sub: message not received")
                if msg["type"] == "message" and msg["data"] == payload.encode():
                    break
            if i >= 5:
                latencies.append((time.perf_counter() - t0) * 1e3)
        pubsub.close()
        publisher.close()
        subscriber.close()
    return latencies


def run(
    quick: bool = False,
    config: CachetConfig | None = None,
    bootstrap_servers: str | None = None,
) -> dict[str, Any]:
    require_redis("invalidation")  # before minutes of setup: fail fast with the fix
    config = config or default_config()
    m = 8 if quick else 50
    keys = bench_keys(2 * m, prefix="inv")
    revoked, superseded = keys[:m], keys[m:]
    old, new = bench_value(64), bench_value(65)[1:]

    with bench_ledger(config, bootstrap_servers) as ledger:
        node_a = ledger.node("bench-node-a", audit=AuditMode.ASYNC)
        node_b = ledger.node("bench-node-b", audit=AuditMode.ASYNC)
        fill(node_a, keys, old)
        wait_visible(node_b, [(node_b.hasher.key("default", k), 1) for k in keys], 120)
        a, b = CacheClient(node_a), CacheClient(node_b)
        _warm_b(b, keys, old)

        revoke_ms: list[float] = []
        revoke_stuck = 0
        for k in revoked:
            t0 = time.perf_counter()
            if not a.revoke(k, reason="bench"):
                raise BenchSetupError(f"node A could not revoke {k!r}")
            ms = _until_not_served(b, k, old, t0)
            revoke_ms += [ms] if ms is not None else []
            revoke_stuck += ms is None
        supersede_ms: list[float] = []
        supersede_stuck = stale_l1 = 0
        for k in superseded:
            t0 = time.perf_counter()
            a.put(k, new, contract=BENCH_CONTRACT)
            ms = _until_not_served(b, k, old, t0, SUPERSEDE_TIMEOUT_S)
            supersede_ms += [ms] if ms is not None else []
            if ms is None:
                supersede_stuck += 1
                stale_l1 += _stale_l1(node_b, k)

    redis_ms = _redis_pubsub(m)
    return {
        "benchmark": "invalidation",
        "quick": quick,
        "nodes_in_one_process": True,
        "samples": len(revoke_ms),
        "poll_interval_ms": POLL_S * 1e3,
        "seal_batch_max_ms": config.attestation.seal_batch_max_ms,
        "p50_ms": percentile(revoke_ms, 50),
        "p99_ms": percentile(revoke_ms, 99),
        "max_ms": max(revoke_ms, default=0.0),
        "revoke_stuck": revoke_stuck,
        "supersede_samples": len(supersede_ms),
        "supersede_p50_ms": percentile(supersede_ms, 50),
        "supersede_p99_ms": percentile(supersede_ms, 99),
        "supersede_stuck": supersede_stuck,
        "supersede_stuck_with_stale_l1": stale_l1,
        "supersede_timeout_s": SUPERSEDE_TIMEOUT_S,
        "redis_pubsub_p50_ms": percentile(redis_ms, 50),
        "redis_pubsub_p99_ms": percentile(redis_ms, 99),
        "ratio_p50": percentile(revoke_ms, 50) / max(percentile(redis_ms, 50), 1e-9),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        "cachet bench invalidation" + (" (quick)" if r["quick"] else ""),
        f"node A changes a key, node B polls get() every {r['poll_interval_ms']:.1f} ms until it "
        f"stops serving the old value; {r['samples']} keys per mode; seals every "
        f"{r['seal_batch_max_ms']} ms at most",
        "both nodes run in ONE process (two CacheNode instances, own data dirs, one broker)",
        f"{'':<36} {'p50 ms':>9} {'p99 ms':>9}",
        f"{'cachet revoke (eager Invalidated)':<36} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f}",
        f"{'cachet put of a new version':<36} {r['supersede_p50_ms']:>9.2f} "
        f"{r['supersede_p99_ms']:>9.2f}",
        f"{'redis pub/sub round trip (baseline)':<36} {r['redis_pubsub_p50_ms']:>9.2f} "
        f"{r['redis_pubsub_p99_ms']:>9.2f}",
        f"p50 ratio cachet/redis: {r['ratio_p50']:.0f}x",
    ]
    if r["revoke_stuck"] or r["supersede_stuck"]:
        lines.append(
            f"NOT PROPAGATED: B still served the old value of {r['revoke_stuck']} revoked key(s) "
            f"after {TIMEOUT_S:.0f} s and of {r['supersede_stuck']} superseded key(s) after "
            f"{r['supersede_timeout_s']:.0f} s (excluded from the percentiles); "
            f"{r['supersede_stuck_with_stale_l1']} of those: B's view had the new version, "
            "its L1 still held the old one"
        )
    return "\n".join(lines)
