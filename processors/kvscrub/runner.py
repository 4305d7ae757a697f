"""Process wiring of a KV-cache scrub worker: the device, pool and scrubber
``[kvscrub]`` describes, the broadcast consumer, the sealing producer, the
metrics server, and the poll/drain/tick loop that runs a
:class:`~processors.kvscrub.worker.KvScrubWorker` until stopped.

What the worker *does* with a request lives in :mod:`processors.kvscrub.worker`;
this module only builds and runs it.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping
from typing import Any

import torch
from confluent_kafka import OFFSET_BEGINNING, Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, start_http_server

from cachet.config import CachetConfig
from cachet.consume import ConsumeLoop, DeadLetters
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka import consumer_settings, producer_settings
from cachet.topics import Topic, TopicNames
from processors.kvscrub.errors import WorkerSetupError
from processors.kvscrub.pool import BlockPool, PoolShape
from processors.kvscrub.scrub import Scrubber, ScrubMethod, ScrubSettings
from processors.kvscrub.worker import KvScrubWorker
from producers.sealing import SealingProducer, SealingSettings
from schemas.codec import EventCodec

__all__ = [
    "build_pool",
    "build_scrubber",
    "resolve_device",
    "run_worker",
    "scrub_consumer",
    "serve",
]

logger = logging.getLogger(__name__)


def resolve_device(requested: str) -> torch.device:
    """``auto`` -> CUDA when present, else CPU; ``cuda`` without a GPU is an error."""
    if requested == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise WorkerSetupError("kvscrub device 'cuda' requested but no CUDA device is available")
    if requested not in ("cpu", "cuda"):
        raise WorkerSetupError(f"kvscrub device must be auto, cpu or cuda, got {requested!r}")
    return torch.device(requested)


def build_pool(config: CachetConfig, device: torch.device) -> BlockPool:
    """The block pool ``[kvscrub]`` describes, on ``device``."""
    kv = config.kvscrub
    shape = PoolShape(
        num_blocks=kv.num_blocks,
        layers=kv.layers,
        heads=kv.heads,
        head_dim=kv.head_dim,
        block_size=kv.block_size,
        dtype=getattr(torch, kv.dtype.value),
    )
    return BlockPool(shape, device)


def build_scrubber(config: CachetConfig, pool: BlockPool, sample_key: bytes = b"") -> Scrubber:
    """A scrubber with ``[kvscrub]``'s settings and no metrics (the worker keeps them).

    Config enums are lowercase, the scrubber's uppercase: mapped by name.
    ``sample_key`` is needed for SAMPLED only.
    """
    kv = config.kvscrub
    settings = ScrubSettings(
        method=ScrubMethod[kv.method.name],
        coverage_threshold=kv.coverage_threshold,
        double_pass=kv.double_pass,
        sample_key=sample_key,
    )
    return Scrubber(pool, settings)


def scrub_consumer(
    bootstrap_servers: str,
    names: TopicNames,
    *,
    overrides: Mapping[str, Any] | None = None,
    group_id: str = "cachet-kvscrub",
    from_beginning: bool = False,
    timeout_s: float = 10.0,
) -> Consumer:
    """A consumer assigned to every partition of ``kvscrub`` and ``erasure``.

    Broadcast by ``assign()``: no group, so every worker sees every request.
    By default it starts at each partition's current end, resolved NOW (not
    lazily), so a request produced after this returns is never skipped; the
    pool is process memory, so nothing before this process can name its blocks.
    """
    consumer = Consumer(consumer_settings(bootstrap_servers, group_id, overrides))
    assignment: list[TopicPartition] = []
    for topic in (Topic.KVSCRUB, Topic.ERASURE):
        name = names(topic)
        meta = consumer.list_topics(name, timeout=timeout_s).topics.get(name)
        if meta is None or meta.error is not None or not meta.partitions:
            consumer.close()
            raise WorkerSetupError(f"topic {name} is missing on {bootstrap_servers}")
        for p in sorted(meta.partitions):
            if from_beginning:
                offset = OFFSET_BEGINNING
            else:
                _, offset = consumer.get_watermark_offsets(
                    TopicPartition(name, p), timeout=timeout_s
                )
            assignment.append(TopicPartition(name, p, offset))
    consumer.assign(assignment)
    return consumer


def serve(
    worker: KvScrubWorker,
    loop: ConsumeLoop,
    stop: threading.Event,
    *,
    tick_interval_s: float = 1.0,
    poll_timeout_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll, drain, and run the policy tick every ``tick_interval_s`` until ``stop``."""
    next_tick = clock()
    while not stop.is_set():
        loop.poll(poll_timeout_s)
        worker.drain()
        if clock() >= next_tick:
            worker.tick()
            next_tick = clock() + tick_interval_s


def run_worker(
    config: CachetConfig,
    bootstrap_servers: str,
    names: TopicNames,
    keys: PrivateKeySet,
    stop: threading.Event,
    *,
    hasher: IdentifierHasher,
    worker_id: str | None = None,
    identity: str | None = None,
    device: str | None = None,
    sample_key: bytes = b"",
    registry: CollectorRegistry | None = None,
    from_beginning: bool = False,
    tick_interval_s: float = 1.0,
    on_ready: Callable[[KvScrubWorker], None] | None = None,
) -> None:
    """Run one scrub worker until ``stop`` is set.

    ``keys`` must already be registered under ``identity`` (default: the
    worker id, default ``config.node.node_id``) for its evidence to verify.
    ``device`` overrides ``[kvscrub] device``. Metrics are served on
    ``config.node.metrics_port`` when non-zero. ``on_ready`` is called once
    the consumer is assigned and before the first poll.
    """
    worker_id = worker_id or config.node.node_id
    registry = registry if registry is not None else CollectorRegistry()
    pool = build_pool(config, resolve_device(device or config.kvscrub.device.value))
    scrubber = build_scrubber(config, pool, sample_key)
    codec = EventCodec()
    kafka = config.kafka
    sealing = SealingProducer(
        Producer(producer_settings(bootstrap_servers, kafka.producer_overrides)),
        codec,
        names,
        identity or worker_id,
        keys,
        SealingSettings(
            batch_max_events=config.attestation.seal_batch_max_events,
            batch_max_ms=config.attestation.seal_batch_max_ms,
        ),
    )
    deadletters = DeadLetters(
        Producer(producer_settings(bootstrap_servers, kafka.producer_overrides)),
        names(Topic.DEADLETTER),
    )
    server = None
    consumer: Consumer | None = None
    try:
        worker = KvScrubWorker(pool, scrubber, sealing, worker_id, registry=registry, hasher=hasher)
        consumer = scrub_consumer(
            bootstrap_servers,
            names,
            overrides=kafka.consumer_overrides,
            group_id=f"cachet-kvscrub-{worker_id}",
            from_beginning=from_beginning,
        )
        loop = ConsumeLoop(
            consumer,
            codec,
            deadletters,
            worker.handlers(),
            registry=registry,
            name=f"kvscrub-{worker_id}",
        )
        if config.node.metrics_port:
            server, _ = start_http_server(config.node.metrics_port, registry=registry)
        logger.info(
            "kvscrub worker %s on %s: %d blocks of %d bytes",
            worker_id,
            pool.device,
            pool.shape.num_blocks,
            pool.shape.block_bytes,
        )
        if on_ready is not None:
            on_ready(worker)
        serve(worker, loop, stop, tick_interval_s=tick_interval_s)
    finally:
        if server is not None:
            server.shutdown()
        if consumer is not None:
            consumer.close()
        deadletters.flush()
        sealing.close()
