"""``cachet bench writes``: end-to-end writes until served, vs Redis SET.

Timed on one cache node: ``put()`` of N new keys (frame and AES-256-GCM
encrypt the value, commit to it, emit the CacheWritten event into the
sealing producer, which Merkle-batches and triple-signs it off the hot path
and sends it to the broker), until the node's own RocksDB view holds every
one of them (its verifying consumer read the events back, verified the
seals covering them and applied them in synced WriteBatches). The clock
runs from the first put to the moment the view serves the last version
(``cachet_per_s``). The rate of the put() calls alone, before
materialization, is the second figure (``cachet_put_call_per_s``);
``cachet_put_cpu_us`` is the CPU time the caller's thread spent per put
(the rest of a call's wall time is waiting for the GIL while the node's
own threads verify and materialize the same stream).

Where a put's time goes (``breakdown_us``, after the timed run, on the same
node: a sample of ``put_async`` calls of new keys, median us per step):
``check`` (argument validation, the value's size limit), ``emit`` (the
sealing producer: encode the event, take its sequence and leaf, produce it
to the client), and ``client`` (the rest of put: key hash, fingerprint, the
current version from the view, the data key, encrypt, commit, the payload).

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
from cachet.ops.bench._support import against_redis, percentile
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode

__all__ = ["format_report", "run"]

VALUE_BYTES = 64
BREAKDOWN_SAMPLE = 1000
PUT_STEPS = ("check", "client", "emit")


class _TimedClient(CacheClient):
    """A CacheClient whose argument check and producer emit add their time
    to ``spent_ns`` (reset it between puts); ``put_async`` is the client's own."""

    def __init__(self, node: CacheNode) -> None:
        super().__init__(node)
        self.spent_ns = dict.fromkeys(PUT_STEPS, 0)
        emit = node.producer.emit_with_receipt

        def timed_emit(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter_ns()
            try:
                return emit(*args, **kwargs)
            finally:
                self.spent_ns["emit"] += time.perf_counter_ns() - t0

        self._emit = timed_emit

    def _check_put(self, *args: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return super()._check_put(*args)
        finally:
            self.spent_ns["check"] += time.perf_counter_ns() - t0


def _breakdown(node: CacheNode, value: bytes) -> dict[str, float]:
    """Median us per step of put_async over new keys (see the module doc)."""
    client = _TimedClient(node)
    real_emit = node.producer.emit_with_receipt
    node.producer.emit_with_receipt = client._emit  # type: ignore[method-assign]
    spent: dict[str, list[float]] = {step: [] for step in (*PUT_STEPS, "total")}
    pending = []
    try:
        for k in bench_keys(BREAKDOWN_SAMPLE, prefix="breakdown"):
            client.spent_ns = dict.fromkeys(PUT_STEPS, 0)
            t0 = time.perf_counter_ns()
            pending.append(client.put_async(k, value, contract=BENCH_CONTRACT))
            total_ns = time.perf_counter_ns() - t0
            client.spent_ns["client"] = (
                total_ns - client.spent_ns["check"] - client.spent_ns["emit"]
            )
            spent["total"].append(total_ns / 1000)
            for step, ns in client.spent_ns.items():
                spent[step].append(ns / 1000)
    finally:
        node.producer.emit_with_receipt = real_emit  # type: ignore[method-assign]
    for p in pending:
        p.acknowledged(60.0)
    return {step: percentile(values, 50) for step, values in spent.items()}


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
        cpu_start = time.thread_time_ns()
        pending = []
        for k in keys:
            t0 = clock()
            # put_async pipelines; every write is still waited on for its
            # acknowledgement (acks=all) below, before the clock stops.
            pending.append(client.put_async(k, value, contract=BENCH_CONTRACT))
            latencies.append((clock() - t0) / 1000)
        cpu_ns = time.thread_time_ns() - cpu_start
        receipts = [p.acknowledged(60.0) for p in pending]
        puts_done = time.perf_counter()
        served = wait_visible(node, [(r.key_hash, r.version) for r in receipts], 300)
        last = client.get(keys[-1], contract=BENCH_CONTRACT)  # untimed: it is served
        if not last.hit:
            raise BenchSetupError(
                f"last write materialized but not served: {last.reason} {last.detail}"
            )
        lag_ms = (served - puts_done) * 1e3
        breakdown = _breakdown(node, value)

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
        "cachet_put_cpu_us": cpu_ns / 1000 / n,
        "breakdown_us": breakdown,
        "breakdown_puts": BREAKDOWN_SAMPLE,
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
        f"ratio cachet/redis: {r['ratio']:.3f} ({against_redis(r['ratio'])})",
        f"caller thread CPU per put(): {r['cachet_put_cpu_us']:.1f} us",
        f"where a put's time goes: median us per step over {r['breakdown_puts']} put_async calls:",
    ]
    lines += [f"  {step:<8} {us:>8.2f}" for step, us in r["breakdown_us"].items()]
    return "\n".join(lines)
