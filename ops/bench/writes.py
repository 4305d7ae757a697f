"""``cachet bench writes``: end-to-end writes until served, vs Redis SET.

Timed on one cache node: ``put()`` of N new keys (frame and AES-256-GCM
encrypt the value, commit to it, emit the CacheWritten event into the
sealing producer, which Merkle-batches and triple-signs it off the hot path
and sends it to the broker), until the node's own RocksDB view holds every
one of them (its verifying consumer read the events back, verified the
seals covering them and applied them in synced WriteBatches). The clock
runs from the first put to the moment the view serves the last version
(``cachet_per_s``). The rate of the put() calls alone, before
materialization, is the second figure (``cachet_put_call_per_s``).

Baseline, same run, same machine: redis-py SET of the same N keys and
values, one round trip per call (no pipelining), against a private loopback
redis-server with persistence off.
"""

from __future__ import annotations

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
    wait_visible,
)
from cachet.ops.bench._redis import redis_server, require_redis
from cachet.ops.bench._support import percentile
from cachet.producers.cache_client import CacheClient

__all__ = ["format_report", "run"]

VALUE_BYTES = 64


def _redis_sets(keys: list[str], value: bytes) -> tuple[float, list[float]]:
    with redis_server() as server:
        r = server.client()
        r.set("warm-up", value)
        latencies: list[float] = []
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for k in keys:
            t0 = clock()
            r.set(k, value)
            latencies.append((clock() - t0) / 1000)
        elapsed = time.perf_counter() - start
        if r.dbsize() != len(keys) + 1:
            raise BenchSetupError(f"redis baseline: {r.dbsize()} keys after {len(keys)} SETs")
        r.close()
    return elapsed, latencies


def run(
    quick: bool = False,
    config: CachetConfig | None = None,
    bootstrap_servers: str | None = None,
) -> dict[str, Any]:
    require_redis("writes")  # before minutes of setup: fail fast with the fix
    config = config or default_config()
    n = 1000 if quick else 10_000
    keys = bench_keys(n, prefix="w")
    value = bench_value(VALUE_BYTES)

    with bench_ledger(config, bootstrap_servers) as ledger:
        node = ledger.node("bench-writes", audit=AuditMode.ASYNC)
        client = CacheClient(node)
        client.put("warm-up", value, contract=BENCH_CONTRACT, wait=True, timeout_s=30)
        latencies: list[float] = []
        clock = time.perf_counter_ns
        start = time.perf_counter()
        pending = []
        for k in keys:
            t0 = clock()
            # put_async pipelines; every write is still waited on for its
            # acknowledgement (acks=all) below, before the clock stops.
            pending.append(client.put_async(k, value, contract=BENCH_CONTRACT))
            latencies.append((clock() - t0) / 1000)
        receipts = [p.acknowledged(60.0) for p in pending]
        puts_done = time.perf_counter()
        served = wait_visible(node, [(r.key_hash, r.version) for r in receipts], 300)
        last = client.get(keys[-1], contract=BENCH_CONTRACT)  # untimed: it is served
        if not last.hit:
            raise BenchSetupError(
                f"last write materialized but not served: {last.reason} {last.detail}"
            )
        lag_ms = (served - puts_done) * 1e3

    redis_s, redis_lat = _redis_sets(keys, value)
    cachet_per_s = n / (served - start)
    redis_per_s = n / redis_s
    return {
        "benchmark": "writes",
        "quick": quick,
        "writes": n,
        "value_bytes": VALUE_BYTES,
        "seal_batch_max_events": config.attestation.seal_batch_max_events,
        "seal_batch_max_ms": config.attestation.seal_batch_max_ms,
        "cachet_per_s": cachet_per_s,
        "cachet_put_call_per_s": n / (puts_done - start),
        "cachet_put_p50_us": percentile(latencies, 50),
        "cachet_put_p99_us": percentile(latencies, 99),
        "materialize_lag_after_last_put_ms": lag_ms,
        "redis_per_s": redis_per_s,
        "redis_p50_us": percentile(redis_lat, 50),
        "redis_p99_us": percentile(redis_lat, 99),
        "ratio": cachet_per_s / redis_per_s,
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        "cachet bench writes" + (" (quick)" if r["quick"] else ""),
        f"{r['writes']} new keys, {r['value_bytes']}-byte values; seals of up to "
        f"{r['seal_batch_max_events']} events / {r['seal_batch_max_ms']} ms",
        f"{'':<34} {'writes/s':>10} {'p50 us':>9} {'p99 us':>9}",
        f"{'cachet put -> served by the view':<34} {r['cachet_per_s']:>10.0f} {'':>9} {'':>9}",
        f"{'cachet put() calls alone':<34} {r['cachet_put_call_per_s']:>10.0f} "
        f"{r['cachet_put_p50_us']:>9.1f} {r['cachet_put_p99_us']:>9.1f}",
        f"{'redis-py SET (baseline)':<34} {r['redis_per_s']:>10.0f} "
        f"{r['redis_p50_us']:>9.1f} {r['redis_p99_us']:>9.1f}",
        f"last version served {r['materialize_lag_after_last_put_ms']:.0f} ms after the last put()",
        f"ratio cachet/redis: {r['ratio']:.3f} ({1 / r['ratio']:.1f}x slower than Redis)",
    ]
    return "\n".join(lines)
