"""``cachet bench seal``: what triple post-quantum sealing costs, batched vs not.

Baseline, measured in the same run: triple-signing every event on its own
(ML-DSA-65 + FN-DSA-512 + SLH-DSA-SHA2-128f per event, no batching).
Figures per batch size: amortized signing cost per event (Merkle tree plus
one triple signature over the seal header, divided by the batch), seal
latency (batch closed -> seal acknowledged, through the real broker) and
verified-consume throughput (a verifying consumer applying sealed events),
and the emitting thread's CPU per event (what sets the batch under load).
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

from confluent_kafka import Producer

from cachet.clock import SYSTEM_CLOCK
from cachet.config import CachetConfig, default_config
from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet, SealHeader, sign_header, sign_message
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.registration import registration_payload
from cachet.ops.bench._support import bench_broker, fresh_topics, percentile
from cachet.producers.sealing import SealingProducer, SealingSettings, SealRecord
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import Topic


def _per_event_sign_us(keys: PrivateKeySet, event_bytes: bytes, n: int) -> float:
    sign_message(event_bytes, keys)  # warm-up
    start = time.perf_counter()
    for i in range(n):
        sign_message(event_bytes + i.to_bytes(4, "big"), keys)
    return (time.perf_counter() - start) / n * 1e6


def _amortized_sign_us(keys: PrivateKeySet, event_bytes: bytes, batch: int, rounds: int) -> float:
    total = 0.0
    for r in range(rounds):
        start = time.perf_counter()
        leaves = [leaf_hash(event_bytes + i.to_bytes(4, "big")) for i in range(batch)]
        header = SealHeader(
            "bench@0",
            r,
            batch,
            r * batch,
            root_from_leaf_hashes(leaves),
            bytes(32),
            keys.key_set_id,
            SYSTEM_CLOCK.now_us(),
        )
        sign_header(header, keys)
        total += time.perf_counter() - start
    return total / (rounds * batch) * 1e6


def _through_broker(
    config: CachetConfig,
    servers: str,
    names,
    keys: PrivateKeySet,
    anchor: PrivateKeySet,
    batch: int | None,
    n_events: int,
    identity: str,
) -> dict[str, float]:
    """Emits ``n_events`` as fast as one thread can through a real sealing
    producer; ``batch`` None: the deployment's adaptive batching (the size
    the producer picks under this load), else a fixed batch size."""
    codec = EventCodec()
    publish_control(
        Producer(producer_settings(servers)),
        codec,
        names,
        EventType.SIGNING_KEY_REGISTERED,
        registration_payload(identity, keys.public(), 0, anchor),
    )
    seals: list[SealRecord] = []
    # The batch size is what this bench varies; the rest is the deployment's.
    settings = SealingSettings.from_config(config)
    if batch is not None:
        settings = replace(
            settings,
            batch_max_events=batch,
            batch_max_ms=1000,
            max_delay_ms=1000,
            sign_cpu_budget=1.0,
        )
    sp = SealingProducer.from_config(
        config,
        servers,
        identity,
        keys,
        codec=codec,
        names=names,
        settings=settings,
        on_seal=seals.append,
    )
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    start = time.perf_counter()
    # CPU of the emitting thread alone: under load the batch the producer
    # picks is this rate times the window, so it is what grows batches.
    cpu_start = time.thread_time_ns()
    for i in range(n_events):
        payload["version"] = i
        sp.emit(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])
    emit_cpu_ns = time.thread_time_ns() - cpu_start
    # Small fixed batches queue many seals behind the signer (20,000 events
    # in batches of 16: 1,250 triple signatures, ~25 s): wait for them all.
    sp.close(300)
    produce_s = time.perf_counter() - start
    latencies = [(s.sealed_at - s.closed_at) * 1e3 for s in seals]

    applied = 0

    def count(_: object) -> None:
        nonlocal applied
        applied += 1

    vc = VerifyingConsumer(
        servers,
        names,
        codec,
        anchor.public(),
        tuple(SignatureScheme),
        [Topic.ENTRIES],
        count,
        lambda t, p: None,
        Producer(producer_settings(servers)),
    )
    start = time.perf_counter()
    deadline = start + 120
    while applied < n_events and time.perf_counter() < deadline:
        vc.poll(0.05, 5000)
    consume_s = time.perf_counter() - start
    vc.close()
    return {
        "mean_batch": sum(s.leaf_count for s in seals) / max(1, len(seals)),
        "seal_latency_ms_p50": percentile(latencies, 50),
        "seal_latency_ms_p99": percentile(latencies, 99),
        "sealed_produce_events_per_s": n_events / produce_s,
        "emit_cpu_us_per_event": emit_cpu_ns / 1000 / n_events,
        "verified_consume_events_per_s": applied / consume_s if applied == n_events else 0.0,
    }


def run(quick: bool = False, config: CachetConfig | None = None) -> dict[str, Any]:
    config = config or default_config()
    keys, anchor = PrivateKeySet.generate(), PrivateKeySet.generate()
    codec = EventCodec()
    from cachet.schemas.events import new_event

    event_bytes = codec.encode(
        new_event(
            EventType.CACHE_WRITTEN,
            SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN],
            producer_id="bench@0",
            producer_seq=0,
        )
    )
    per_event = _per_event_sign_us(keys, event_bytes, 10 if quick else 40)
    batches = [16, 64, 256] if quick else [16, 64, 256, 1024]
    n_events = 2000 if quick else 20000
    rows = []
    with bench_broker(None) as (servers, _):
        for b in batches:
            amort = _amortized_sign_us(keys, event_bytes, b, 3 if quick else 8)
            names = fresh_topics(servers)
            live = _through_broker(config, servers, names, keys, anchor, b, n_events, f"bench-{b}")
            rows.append(
                {
                    "batch": b,
                    "amortized_sign_us_per_event": amort,
                    "ratio_vs_per_event": per_event / amort,
                    **live,
                }
            )
        # The headline: the batch size the producer picks itself under this
        # load (adaptive batching), and what signing costs per event there.
        names = fresh_topics(servers)
        # Long enough to use up the signing budget's burst: sustained load.
        sustained = 30_000 if quick else 100_000
        live = _through_broker(config, servers, names, keys, anchor, None, sustained, "bench-auto")
        picked = max(1, round(live["mean_batch"]))
        amort = _amortized_sign_us(keys, event_bytes, picked, 3 if quick else 8)
        head = {
            "batch": picked,
            "amortized_sign_us_per_event": amort,
            "ratio_vs_per_event": per_event / amort,
            **live,
        }
    return {
        "benchmark": "seal",
        "quick": quick,
        "events_per_batch_size": n_events,
        "per_event_sign_us": per_event,
        "headline_batch": head["batch"],
        "headline_is_adaptive": True,
        "amortized_sign_us_per_event": head["amortized_sign_us_per_event"],
        "ratio": head["ratio_vs_per_event"],
        "seal_latency_ms_p50": head["seal_latency_ms_p50"],
        "seal_latency_ms_p99": head["seal_latency_ms_p99"],
        "emit_cpu_us_per_event": head["emit_cpu_us_per_event"],
        "verified_consume_events_per_s": head["verified_consume_events_per_s"],
        "per_event_signing_cap_events_per_s": 1e6 / per_event,
        "by_batch": rows,
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        "cachet bench seal" + (" (quick)" if r["quick"] else ""),
        f"baseline: triple-signing each event alone: {r['per_event_sign_us']:.0f} us/event "
        f"(caps one core at {r['per_event_signing_cap_events_per_s']:.0f} events/s)",
        f"{'batch':>6} {'sign us/event':>14} {'x cheaper':>10} {'seal p50 ms':>12} "
        f"{'seal p99 ms':>12} {'sealed prod/s':>14} {'verified cons/s':>16}",
    ]
    for row in r["by_batch"]:
        lines.append(
            f"{row['batch']:>6} {row['amortized_sign_us_per_event']:>14.1f} "
            f"{row['ratio_vs_per_event']:>10.0f} {row['seal_latency_ms_p50']:>12.1f} "
            f"{row['seal_latency_ms_p99']:>12.1f} {row['sealed_produce_events_per_s']:>14.0f} "
            f"{row['verified_consume_events_per_s']:>16.0f}"
        )
    lines.append(
        f"headline: under load the producer picked batches of {r['headline_batch']} events on "
        f"average: {r['amortized_sign_us_per_event']:.1f} us/event amortized, "
        f"{r['ratio']:.0f}x cheaper than per-event signing; seal latency "
        f"p50 {r['seal_latency_ms_p50']:.0f} ms, p99 {r['seal_latency_ms_p99']:.0f} ms; "
        f"emitting thread {r['emit_cpu_us_per_event']:.1f} us CPU per event"
    )
    return "\n".join(lines)
