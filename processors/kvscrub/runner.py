"""Process wiring of a KV-cache scrub worker: the device, pool and scrubber
``[kvscrub]`` describes, the verified request intake, the sealing producer,
the metrics server, and the poll/drain/tick loop that runs a
:class:`~cachet.processors.kvscrub.worker.KvScrubWorker` until stopped.

What the worker *does* with a request lives in :mod:`cachet.processors.kvscrub.worker`;
which requests may reach it, in :mod:`cachet.processors.kvscrub.intake`; this module
only builds and runs them.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable

import torch
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, start_http_server

from cachet.config import CachetConfig
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.kafka.settings import producer_settings
from cachet.processors.kvscrub.errors import WorkerSetupError
from cachet.processors.kvscrub.intake import RequestAuthority, ScrubIntake, request_log_layout
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.report import ScrubMethod
from cachet.processors.kvscrub.scrub import Scrubber, ScrubSettings
from cachet.processors.kvscrub.worker import KvScrubWorker
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.topics import TopicNames

__all__ = [
    "build_pool",
    "build_scrubber",
    "resolve_device",
    "run_worker",
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


def serve(
    worker: KvScrubWorker,
    intake: ScrubIntake,
    stop: threading.Event,
    *,
    tick_interval_s: float = 1.0,
    poll_timeout_s: float = 0.2,
    clock: Callable[[], float] = time.monotonic,
) -> None:
    """Poll, drain, and run the policy tick every ``tick_interval_s`` until ``stop``."""
    next_tick = clock()
    while not stop.is_set():
        intake.poll(poll_timeout_s)
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
    anchor: KeySet,
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
    ``anchor`` is the pinned trust anchor that signs key registrations: only
    requests sealed under keys it registered, by an identity named in
    ``[kvscrub] allowed_requesters``, make the worker act
    (:mod:`cachet.processors.kvscrub.intake`). ``device`` overrides ``[kvscrub]
    device``. Metrics are served on ``config.node.metrics_port`` when
    non-zero. ``on_ready`` is called once the intake is assigned and before
    the first poll. ``from_beginning`` acts on every request in the log,
    not only those produced after start (tests and drills only).
    """
    worker_id = worker_id or config.node.node_id
    identity = identity or worker_id
    registry = registry if registry is not None else CollectorRegistry()
    pool = build_pool(config, resolve_device(device or config.kvscrub.device.value))
    scrubber = build_scrubber(config, pool, sample_key)
    codec = EventCodec()
    kafka = config.kafka
    sealing = SealingProducer.from_config(
        config, bootstrap_servers, identity, keys, codec=codec, names=names
    )
    deadletter_producer = Producer(producer_settings(bootstrap_servers, kafka.producer_overrides))
    allowed = config.kvscrub.allowed_requesters
    if not allowed:
        logger.warning(
            "kvscrub worker %s: [kvscrub] allowed_requesters is empty; it will act on no "
            "erasure and on no scrub request but its own identity's",
            worker_id,
        )
    server = None
    intake: ScrubIntake | None = None
    try:
        worker = KvScrubWorker(pool, scrubber, sealing, worker_id, registry=registry, hasher=hasher)
        partitions, act_from = request_log_layout(
            bootstrap_servers,
            names,
            from_beginning=from_beginning,
            overrides=kafka.consumer_overrides,
        )
        intake = ScrubIntake(
            worker,
            bootstrap_servers=bootstrap_servers,
            names=names,
            anchor=anchor,
            required=config.attestation.schemes,
            authority=RequestAuthority.of(allowed, own=identity),
            deadletter_producer=deadletter_producer,
            partitions=partitions,
            act_from=act_from,
            unsealed_timeout_s=config.attestation.unsealed_timeout_ms / 1000,
            codec=codec,
            consumer_overrides=kafka.consumer_overrides,
            name=f"kvscrub-{worker_id}",
        )
        if config.node.metrics_port:
            server, _ = start_http_server(config.node.metrics_port, registry=registry)
        logger.info(
            "kvscrub worker %s on %s: %d blocks of %d bytes; requests from %s",
            worker_id,
            pool.device,
            pool.shape.num_blocks,
            pool.shape.block_bytes,
            sorted(allowed) or "nobody else",
        )
        if on_ready is not None:
            on_ready(worker)
        serve(worker, intake, stop, tick_interval_s=tick_interval_s)
    finally:
        if server is not None:
            server.shutdown()
        if intake is not None:
            intake.close()
        deadletter_producer.flush(10)
        sealing.close()
