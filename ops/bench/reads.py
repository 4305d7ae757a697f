"""``cachet bench reads``: verified, audited reads from a warm view vs Redis GET.

Setup: N keys are written through a cache node and materialized in its
RocksDB view (sealed, triple-signed, verified), then read once so the
in-process L1 is warm. Timed: ``get()`` over the N keys, ``passes`` times.
Every get evaluates the bench contract (state, freshness against the
watermark ticks, seal coverage, scope) and produces a CacheRead audit event.

* headline, ``audit = "async"`` (the default): the CacheRead is queued and a
  background thread emits it into the sealing producer. ``cachet_per_s``
  counts the time until the audit queue has drained too, so the figure is
  what the node sustains with every read audited, not just what the caller
  sees before the backlog (``cachet_caller_per_s`` is that second figure).
* ``audit = "sync"``: the read returns only once the broker acknowledged its
  CacheRead (``cachet_sync_audit_per_s``, on a second node, fewer reads).

Baseline, same run, same machine: redis-py GET of the same N keys, one
round trip per call (no pipelining), against a private loopback
redis-server with persistence off.
"""

from __future__ import annotations

import time
from collections import Counter
from typing import Any

from cachet.config import CachetConfig, default_config
from cachet.config.enums import AuditMode
from ops.bench._node import (
    BENCH_CONTRACT,
    BenchSetupError,
    bench_keys,
    bench_ledger,
    bench_value,
    fill,
    wait_until,
    wait_visible,
)
from ops.bench._redis import redis_server, require_redis
from ops.bench._support import percentile
from producers.cache_node import CacheNode

__all__ = ["format_report", "run"]

VALUE_BYTES = 64


def _timed_gets(
    node: CacheNode, keys: list[str], passes: int
) -> tuple[float, float, list[float], Counter[str]]:
    """(start, end (perf_counter), per-call latencies in µs, outcome counts)
    of ``passes`` loops of get() over ``keys``."""
    client = node.client()
    outcomes: Counter[str] = Counter()
    latencies: list[float] = []
    clock = time.perf_counter_ns
    start = time.perf_counter()
    for _ in range(passes):
        for key in keys:
            t0 = clock()
            r = client.get(key, contract=BENCH_CONTRACT)
            latencies.append((clock() - t0) / 1000)
            outcomes["hit" if r.hit else f"miss:{r.reason.value if r.reason else '?'}"] += 1
    return start, time.perf_counter(), latencies, outcomes


def _warm(node: CacheNode, keys: list[str]) -> None:
    client = node.client()
    misses = [k for k in keys if not client.get(k, contract=BENCH_CONTRACT).hit]
    if misses:
        r = client.get(misses[0], contract=BENCH_CONTRACT)
        raise BenchSetupError(
            f"warm-up: {len(misses)} of {len(keys)} keys miss on node {node.node_id} "
            f"(first: {misses[0]!r}, reason {r.reason}, {r.detail})"
        )


def _drained(node: CacheNode, target: int, timeout_s: float = 120.0) -> float | None:
    """perf_counter time at which ``target`` CacheRead events have been emitted."""
    return wait_until(lambda: node.audit.emitted >= target, timeout_s, poll_s=0.001)


def _redis_gets(keys: list[str], value: bytes, passes: int) -> tuple[float, list[float]]:
    with redis_server() as server:
        r = server.client()
        pipe = r.pipeline(transaction=False)
        for k in keys:
            pipe.set(k, value)
        pipe.execute()
        for k in keys:  # warm-up pass, as for Cachet
            r.get(k)
        latencies: list[float] = []
        clock = time.perf_counter_ns
        start = time.perf_counter()
        for _ in range(passes):
            for k in keys:
                t0 = clock()
                got = r.get(k)
                latencies.append((clock() - t0) / 1000)
                if got != value:
                    raise BenchSetupError(f"redis baseline: GET {k!r} returned {got!r}")
        elapsed = time.perf_counter() - start
        r.close()
    return elapsed, latencies


def run(
    quick: bool = False,
    config: CachetConfig | None = None,
    bootstrap_servers: str | None = None,
) -> dict[str, Any]:
    require_redis("reads")  # before minutes of setup: fail fast with the fix
    config = config or default_config()
    n = 1000 if quick else 10_000
    passes = 2 if quick else 3
    n_sync = 200 if quick else 1000
    keys = bench_keys(n)
    value = bench_value(VALUE_BYTES)

    with bench_ledger(config, bootstrap_servers) as ledger:
        node = ledger.node("bench-reads", audit=AuditMode.ASYNC)
        fill_s = fill(node, keys, value)
        _warm(node, keys)
        if _drained(node, node.audit.emitted + node.audit.pending) is None:
            raise BenchSetupError("warm-up reads' audit events were never emitted")
        base_emitted = node.audit.emitted
        start, caller_end, lat, outcomes = _timed_gets(node, keys, passes)
        reads = n * passes
        drained = _drained(node, base_emitted + reads)
        if drained is None:
            raise BenchSetupError(f"{reads} CacheRead events not emitted within 120s")
        caller_s, sustained_s = caller_end - start, drained - start
        ledger.close_node(node)

        # audit = "sync": a second node, its own replica of the same log.
        sync_node = ledger.node("bench-reads-sync", audit=AuditMode.SYNC)
        sync_keys = keys[:n_sync]
        wait_visible(sync_node, [(sync_node.hasher.key("default", k), 1) for k in sync_keys], 120)
        _warm(sync_node, sync_keys)
        sync_start, sync_end, sync_lat, sync_outcomes = _timed_gets(sync_node, sync_keys, 1)
        sync_s = sync_end - sync_start
        ledger.close_node(sync_node)

    redis_s, redis_lat = _redis_gets(keys, value, passes)
    cachet_per_s = reads / sustained_s
    redis_per_s = reads / redis_s
    return {
        "benchmark": "reads",
        "quick": quick,
        "keys": n,
        "passes": passes,
        "value_bytes": VALUE_BYTES,
        "reads": reads,
        "cachet_per_s": cachet_per_s,
        "cachet_caller_per_s": reads / caller_s,
        "cachet_p50_us": percentile(lat, 50),
        "cachet_p99_us": percentile(lat, 99),
        "cachet_outcomes": dict(outcomes),
        "cachet_sync_audit_per_s": n_sync / sync_s,
        "cachet_sync_audit_p50_us": percentile(sync_lat, 50),
        "cachet_sync_audit_p99_us": percentile(sync_lat, 99),
        "cachet_sync_audit_outcomes": dict(sync_outcomes),
        "sync_reads": n_sync,
        "redis_per_s": redis_per_s,
        "redis_p50_us": percentile(redis_lat, 50),
        "redis_p99_us": percentile(redis_lat, 99),
        "ratio": cachet_per_s / redis_per_s,
        "fill_s": fill_s,
    }


def format_report(r: dict[str, Any]) -> str:
    rows = [
        ("cachet get, audit async", r["cachet_per_s"], r["cachet_p50_us"], r["cachet_p99_us"]),
        (
            "cachet get, audit sync",
            r["cachet_sync_audit_per_s"],
            r["cachet_sync_audit_p50_us"],
            r["cachet_sync_audit_p99_us"],
        ),
        ("redis-py GET (baseline)", r["redis_per_s"], r["redis_p50_us"], r["redis_p99_us"]),
    ]
    lines = [
        "cachet bench reads" + (" (quick)" if r["quick"] else ""),
        f"{r['keys']} keys x {r['passes']} passes of {r['value_bytes']}-byte values on a warm "
        f"view ({r['keys']} writes materialized in {r['fill_s']:.1f} s); "
        f"sync audit: {r['sync_reads']} reads",
        f"{'':<26} {'reads/s':>10} {'p50 us':>9} {'p99 us':>9}",
    ]
    lines += [f"{name:<26} {rate:>10.0f} {p50:>9.1f} {p99:>9.1f}" for name, rate, p50, p99 in rows]
    lines.append(
        f"async: {r['cachet_caller_per_s']:.0f} reads/s as the caller sees it, "
        f"{r['cachet_per_s']:.0f}/s until every CacheRead was emitted; "
        f"outcomes {r['cachet_outcomes']}"
    )
    lines.append(f"ratio cachet/redis: {r['ratio']:.3f} ({1 / r['ratio']:.1f}x slower than Redis)")
    return "\n".join(lines)
