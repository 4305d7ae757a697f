"""``cachet bench reads``: verified, audited reads from a warm view vs Redis GET.

Setup: N keys are written through a cache node and materialized in its
RocksDB view (sealed, triple-signed, verified), then read once so the
in-process L1 is warm. Timed: ``get()`` over the N keys, ``passes`` times.
Every get evaluates the bench contract (state, freshness against the
watermark ticks, seal coverage, scope) and produces a CacheRead audit event.

* headline, ``audit = "async"`` (the default): the CacheRead record joins
  the node's open batch and a background thread emits the batch as one
  CacheReadBatch event into the sealing producer. ``cachet_per_s`` counts
  the time until the broker acknowledged every read's batch too, so the
  figure is what the node sustains with every read audited, not just what
  the caller sees before the backlog (``cachet_caller_per_s`` is that
  second figure).
* ``audit = "sync"``: the read returns only once the broker acknowledged its
  batch (``cachet_sync_audit_per_s``, on a second node, fewer reads, one
  reader thread: group commit has no concurrent reader to share with).

Every read is in the audit log, and the run checks it: after the nodes
closed, the reads topic is read back and the reads inside its CacheReadBatch
(and CacheRead) events are counted per node; each count must equal the
reads that node served (its ``cachet_reads`` counter), or the run fails.

Where the time goes (``breakdown_us``): a sample of reads through a client
whose read steps (the methods ``CacheClient.get`` is made of) are timed
with ``perf_counter_ns``, median per step: key hash, lookup (L1, or the
view on an L1 miss), evaluate (contract, view health, pending seal, eager
invalidation), decrypt (L1 misses: data key, AES-GCM, and the value
commitment when the contract's classification verifies), audit (metric and
CacheRead enqueue); ``other`` is the rest of ``get`` (the freshness proof is
in evaluate; the response, its detail) plus the timing itself (five timed
calls: a few us). Warm: L1 hits,
as in the timed passes; ``breakdown_cold_us``: the same keys after the L1
and the key-hash cache were emptied (view read, decrypt, L1 fill). Every
one of these reads is a real, audited read.

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
from cachet.ledger.identity import identity_of
from cachet.ledger.reads import audited_reads
from cachet.materializers.replay.source import BrokerSource, PartitionEnd
from cachet.ops.bench._node import (
    BENCH_CONTRACT,
    BenchSetupError,
    bench_keys,
    bench_ledger,
    bench_value,
    fill,
    wait_until,
    wait_visible,
)
from cachet.ops.bench._redis import redis_server, require_redis
from cachet.ops.bench._support import against_redis, percentile
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode
from cachet.schemas.codec import EventCodec
from cachet.topics import Topic, TopicNames

__all__ = ["format_report", "run"]

VALUE_BYTES = 64
BREAKDOWN_SAMPLE = 2000
# The steps of CacheClient.get, in the order a read takes them.
READ_STEPS = ("key_hash", "lookup", "evaluate", "decrypt", "audit")


class _TimedClient(CacheClient):
    """A CacheClient whose read steps add their time to ``spent_ns`` (reset
    it between reads); ``get`` itself is the client's own, so what is timed
    is what a read does."""

    def __init__(self, node: CacheNode) -> None:
        super().__init__(node)
        self.spent_ns = dict.fromkeys(READ_STEPS, 0)

    def _spent(self, step: str, since_ns: int) -> None:
        self.spent_ns[step] += time.perf_counter_ns() - since_ns

    def _key_hash(self, namespace: str, key: str) -> bytes:
        t0 = time.perf_counter_ns()
        try:
            return super()._key_hash(namespace, key)
        finally:
            self._spent("key_hash", t0)

    def _lookup(self, key_hash: bytes) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return super()._lookup(key_hash)
        finally:
            self._spent("lookup", t0)

    def _evaluate(self, *args: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return super()._evaluate(*args)
        finally:
            self._spent("evaluate", t0)

    def _decrypt(self, *args: Any) -> Any:
        t0 = time.perf_counter_ns()
        try:
            return super()._decrypt(*args)
        finally:
            self._spent("decrypt", t0)

    def _audit(self, *args: Any) -> None:
        t0 = time.perf_counter_ns()
        try:
            super()._audit(*args)
        finally:
            self._spent("audit", t0)


def _breakdown(node: CacheNode, keys: list[str]) -> dict[str, dict[str, float]]:
    """Median microseconds per read of each step of get() (the median, like
    the p50 headline: the background audit emitter and seal signing share
    the GIL and stall some reads): ``cold`` right after the L1 was emptied,
    then ``warm`` (L1 hits) over the same keys. ``other``: the median read
    less the steps' medians."""
    sample = keys[:BREAKDOWN_SAMPLE]
    out: dict[str, dict[str, float]] = {}
    for phase in ("cold", "warm"):
        if phase == "cold":
            node.evict_all()
        client = _TimedClient(node)
        clock = time.perf_counter_ns
        spent: dict[str, list[float]] = {step: [] for step in (*READ_STEPS, "total")}
        for key in sample:
            client.spent_ns = dict.fromkeys(READ_STEPS, 0)
            t0 = clock()
            r = client.get(key, contract=BENCH_CONTRACT)
            spent["total"].append((clock() - t0) / 1000)
            if not r.hit:
                raise BenchSetupError(
                    f"breakdown ({phase}): {key!r} missed: {r.reason}, {r.detail}"
                )
            for step, ns in client.spent_ns.items():
                spent[step].append(ns / 1000)
        parts = {step: percentile(spent[step], 50) for step in READ_STEPS}
        total_us = percentile(spent["total"], 50)
        parts["other"] = max(0.0, total_us - sum(parts.values()))
        parts["total"] = total_us
        out[phase] = parts
    return out


def _timed_gets(
    node: CacheNode, keys: list[str], passes: int
) -> tuple[float, float, list[float], Counter[str]]:
    """(start, end (perf_counter), per-call latencies in µs, outcome counts)
    of ``passes`` loops of get() over ``keys``."""
    client = CacheClient(node)
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
    client = CacheClient(node)
    misses = [k for k in keys if not client.get(k, contract=BENCH_CONTRACT).hit]
    if misses:
        r = client.get(misses[0], contract=BENCH_CONTRACT)
        raise BenchSetupError(
            f"warm-up: {len(misses)} of {len(keys)} keys miss on node {node.node_id} "
            f"(first: {misses[0]!r}, reason {r.reason}, {r.detail})"
        )


def _served(node: CacheNode) -> int:
    """Reads the node served (hits and misses): its ``cachet_reads`` counter."""
    return node.reads.total()


def _drained(node: CacheNode, target: int, timeout_s: float = 120.0) -> float | None:
    """perf_counter time at which the broker has acknowledged ``target`` of the
    node's audited reads (reads, not events: a batch holds many)."""
    return wait_until(lambda: node.audit.acknowledged >= target, timeout_s, poll_s=0.001)


def _audited_reads(servers: str, names: TopicNames) -> Counter[str]:
    """Reads in the reads topic per producer identity (node): the reads of
    each CacheReadBatch event, one per CacheRead event. Read back from the
    log, not from the nodes' own counters."""
    codec = EventCodec()
    counts: Counter[str] = Counter()
    for item in BrokerSource(servers, names).read(topics=[names(Topic.READS)]):
        if isinstance(item, PartitionEnd):
            continue
        event = codec.decode(item.raw)
        counts[identity_of(event.producer_id)] += sum(1 for _ in audited_reads(event))
    return counts


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
        if _drained(node, _served(node)) is None:
            raise BenchSetupError("warm-up reads were never acknowledged as audited")
        base = node.audit.acknowledged
        start, caller_end, lat, outcomes = _timed_gets(node, keys, passes)
        reads = n * passes
        drained = _drained(node, base + reads)
        if drained is None:
            raise BenchSetupError(f"{reads} reads' audit records not acknowledged within 120s")
        caller_s, sustained_s = caller_end - start, drained - start
        breakdown = _breakdown(node, keys)
        ledger.close_node(node)
        served = {node.node_id: _served(node)}

        # audit = "sync": a second node, its own replica of the same log.
        sync_node = ledger.node("bench-reads-sync", audit=AuditMode.SYNC)
        sync_keys = keys[:n_sync]
        wait_visible(sync_node, [(sync_node.hasher.key("default", k), 1) for k in sync_keys], 120)
        _warm(sync_node, sync_keys)
        sync_start, sync_end, sync_lat, sync_outcomes = _timed_gets(sync_node, sync_keys, 1)
        sync_s = sync_end - sync_start
        ledger.close_node(sync_node)
        served[sync_node.node_id] = _served(sync_node)

        # Every read in the audit log: count them there, per node.
        audited = _audited_reads(ledger.servers, ledger.names)
        missing = {n: (done, audited[n]) for n, done in served.items() if audited[n] != done}
        if missing:
            raise BenchSetupError(
                "reads served vs audited reads in the log differ: "
                + ", ".join(
                    f"{n}: {done} served, {got} audited" for n, (done, got) in missing.items()
                )
            )

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
        "breakdown_us": breakdown["warm"],
        "breakdown_cold_us": breakdown["cold"],
        "breakdown_reads": min(n, BREAKDOWN_SAMPLE),
        # Reads each node served, all of them found in the reads topic.
        "audited_reads": served,
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
        f"{r['cachet_per_s']:.0f}/s until every read's audit record was acknowledged; "
        f"outcomes {r['cachet_outcomes']}"
    )
    lines.append(
        "every read served is in the audit log (reads counted in the reads topic): "
        + ", ".join(f"{node} {count}" for node, count in r["audited_reads"].items())
    )
    lines.append(f"ratio cachet/redis: {r['ratio']:.3f} ({against_redis(r['ratio'])})")
    warm, cold = r["breakdown_us"], r["breakdown_cold_us"]
    lines.append(
        f"where a read's time goes: median us per step over {r['breakdown_reads']} reads "
        "(warm: L1 hit; cold: L1 emptied first):"
    )
    lines.append(f"  {'step':<10} {'warm':>8} {'cold':>8}")
    lines += [f"  {step:<10} {warm[step]:>8.2f} {cold[step]:>8.2f}" for step in warm]
    return "\n".join(lines)
