"""``cachet bench replay``: verified replay throughput vs a plain consume.

A sealing producer writes N events (cache writes and, as nodes log reads
since schema set v4, CacheReadBatch events of :data:`READS_PER_BATCH` reads;
realistic payloads, sealed in batches by ML-DSA-65 + FN-DSA-512 + SLH-DSA-SHA2-128f)
through a fresh embedded broker; the archive consumer writes them to
segment files. Then, in the same run, over the same records:

* baseline, ``plain``: read every record and decode it (no verification),
  from the archive and from the broker;
* ``replay``: :class:`~cachet.materializers.replay.VerifiedReplay`, every
  seal's three signatures, every leaf hash and every log-order check, from
  the archive and from the broker;
* ``as_of``: :func:`~cachet.materializers.replay.as_of.replay_as_of`, the
  verified replay applied to a scratch live view in RocksDB (the state), and
  every read served: the run checks that each read written is listed once.

``ratio`` = verified replay / plain consume, from the archive (1.0 would
mean verification is free). The aim is 100,000 verified events/s from the
archive.
"""

from __future__ import annotations

import os
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from confluent_kafka import Producer

from cachet.config import CachetConfig, default_config
from cachet.crypto.seal import PrivateKeySet
from cachet.errors import CachetError
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.ledger.registration import registration_payload
from cachet.materializers.archive.archiver import Archiver, ArchiveSettings
from cachet.materializers.replay import (
    ArchiveSource,
    BrokerSource,
    PartitionEnd,
    ReplaySource,
    ReplayTrust,
    VerifiedReplay,
)
from cachet.materializers.replay.as_of import replay_as_of
from cachet.ops.bench._support import bench_broker
from cachet.producers.sealing import SealingProducer, SealingSettings
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import TopicNames

IDENTITY = "bench-replay"
READS_PER_BATCH = 32


class BenchCheckError(CachetError):
    """The replay did not give back what was written."""


def _write(
    servers: str, names: TopicNames, keys: PrivateKeySet, anchor: PrivateKeySet, n: int
) -> int:
    """N sealed events: 3 writes per CacheReadBatch, keys spread over the
    partitions. Returns the number of reads written."""
    codec = EventCodec()
    publish_control(
        Producer(producer_settings(servers)),
        codec,
        names,
        EventType.SIGNING_KEY_REGISTERED,
        registration_payload(IDENTITY, keys.public(), 0, anchor),
    )
    sp = SealingProducer(
        Producer(producer_settings(servers, {"linger.ms": 5})),
        codec,
        names,
        IDENTITY,
        keys,
        SealingSettings(batch_max_events=256, batch_max_ms=50),
    )
    written, read = SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN], SAMPLE_PAYLOADS[EventType.CACHE_READ]
    node = read["node_id"]
    reads = 0
    try:
        for i in range(n):
            key_hash = (i % 997).to_bytes(32, "big")
            if i % 4 == 3:
                batch = [
                    {**read, "key_hash": ((i + j) % 997).to_bytes(32, "big")}
                    for j in range(READS_PER_BATCH)
                ]
                # Keyed by node, as the read audit keys its batches.
                sp.emit(
                    EventType.CACHE_READ_BATCH,
                    {"node_id": node, "reads": batch},
                    key=node.encode(),
                )
                reads += len(batch)
            else:
                sp.emit(
                    EventType.CACHE_WRITTEN,
                    {**written, "key_hash": key_hash, "version": i},
                    key=key_hash,
                )
        sp.flush(120)
    finally:
        sp.close()
    return reads


def _archive(servers: str, names: TopicNames, directory: Path, want: dict) -> None:
    archiver = Archiver(servers, names, ArchiveSettings(directory=directory, segment_max_age_s=2.0))
    stop = threading.Event()
    thread = threading.Thread(target=archiver.run, args=(stop,), daemon=True)
    thread.start()
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        if all(archiver.positions.get(k, 0) >= end for k, end in want.items()):
            break
        time.sleep(0.05)
    stop.set()
    thread.join(60)


def _records(source: ReplaySource) -> Iterator[Any]:
    for item in source.read():
        if not isinstance(item, PartitionEnd):
            yield item


def _plain(source: ReplaySource) -> tuple[int, float, float]:
    """Baseline: every record read and decoded, nothing verified. Returns the
    count, wall seconds and CPU seconds (a shared host's load inflates the
    wall time, not the CPU time)."""
    codec = EventCodec()
    start, cpu = time.perf_counter(), time.process_time()
    n = 0
    for record in _records(source):
        codec.decode(record.raw)
        n += 1
    return n, time.perf_counter() - start, time.process_time() - cpu


def _verified(source: ReplaySource, trust: ReplayTrust) -> tuple[int, float, float, int]:
    start, cpu = time.perf_counter(), time.process_time()
    replay = VerifiedReplay(source, trust)
    n = sum(1 for _ in replay.events())
    return n, time.perf_counter() - start, time.process_time() - cpu, len(replay.refused)


def run(quick: bool = False, config: CachetConfig | None = None) -> dict[str, Any]:
    config = config or default_config()
    n = 20_000 if quick else 100_000
    keys, anchor = PrivateKeySet.generate(), PrivateKeySet.generate()
    trust = ReplayTrust(anchor.public(), frozenset(config.attestation.schemes))
    with bench_broker(None) as (servers, names), tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        reads_written = _write(servers, names, keys, anchor, n)
        write_s = time.perf_counter() - t0
        broker = BrokerSource(servers, names)
        ends = {
            (i.topic, i.partition): i.next_offset
            for i in broker.read()
            if isinstance(i, PartitionEnd)
        }
        archive_dir = Path(tmp) / "archive"
        _archive(servers, names, archive_dir, ends)
        archive = ArchiveSource(archive_dir, names)
        records = sum(1 for _ in _records(archive))
        plain_n, plain_s, plain_cpu = _plain(archive)
        replay_n, replay_s, replay_cpu, refused = _verified(archive, trust)
        b_plain_n, b_plain_s, _ = _plain(broker)
        b_replay_n, b_replay_s, _, b_refused = _verified(broker, trust)
        view_config = replace(config, kafka=replace(config.kafka, topic_prefix=names.prefix))
        start = time.perf_counter()
        state = replay_as_of(
            archive,
            time.time_ns() // 1000,
            work_dir=Path(tmp) / "work",
            config=view_config,
            trust=trust,
        )
        as_of_s = time.perf_counter() - start
    if len(state.reads) != reads_written:
        raise BenchCheckError(f"{reads_written} reads written, {len(state.reads)} replayed")
    replay_rate = replay_n / replay_s
    plain_rate = plain_n / plain_s
    return {
        "quick": quick,
        "events_written": n,
        "reads_written": reads_written,
        "reads_replayed": len(state.reads),
        "records": records,
        "write_s": write_s,
        "cpus": os.cpu_count(),
        "plain_events_per_s": plain_rate,
        "replay_events_per_s": replay_rate,
        "ratio": replay_rate / plain_rate,
        "plain_events_per_cpu_s": plain_n / plain_cpu,
        "replay_events_per_cpu_s": replay_n / replay_cpu,
        "load_average_1m": os.getloadavg()[0],
        "replay_events": replay_n,
        "refused": refused + b_refused,
        "broker_plain_events_per_s": b_plain_n / b_plain_s,
        "broker_replay_events_per_s": b_replay_n / b_replay_s,
        "broker_ratio": (b_replay_n / b_replay_s) / (b_plain_n / b_plain_s),
        "as_of_events_per_s": replay_n / as_of_s,
        "aim_events_per_s": 100_000,
    }


def format_report(r: dict[str, Any]) -> str:
    return "\n".join(
        [
            "cachet bench replay" + (" (quick)" if r["quick"] else ""),
            f"{r['events_written']} sealed events ({r['records']} records with seals and "
            f"control), {r['refused']} refused; {r['reads_written']} reads in CacheReadBatch "
            f"events, {r['reads_replayed']} replayed",
            f"{'source':>8} {'plain decode/s':>15} {'verified/s':>12} {'ratio':>6}",
            f"{'archive':>8} {r['plain_events_per_s']:>15,.0f} {r['replay_events_per_s']:>12,.0f} "
            f"{r['ratio']:>6.2f}",
            f"{'(cpu)':>8} {r['plain_events_per_cpu_s']:>15,.0f} "
            f"{r['replay_events_per_cpu_s']:>12,.0f}   per CPU second "
            f"(load average {r['load_average_1m']:.1f} on {r['cpus']} CPUs)",
            f"{'broker':>8} {r['broker_plain_events_per_s']:>15,.0f} "
            f"{r['broker_replay_events_per_s']:>12,.0f} {r['broker_ratio']:>6.2f}",
            f"state (replay_as_of into RocksDB): {r['as_of_events_per_s']:,.0f} events/s",
            f"aim: {r['aim_events_per_s']:,} verified events/s from the archive",
        ]
    )
