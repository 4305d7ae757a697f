"""The KV scrub worker against the real broker: requests in, scrubs done,
evidence out through the signed ledger and verified by a real consumer."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace

import pytest
import torch
from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry

from cachet.config import load_config
from cachet.consume import DL_HEADER_FAILURE, ConsumeLoop, DeadLetters, headers_dict
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka import consumer_settings, producer_settings
from cachet.topics import Topic, TopicNames
from processors.kvscrub.pool import BlockPool, BlockState, PoolShape
from processors.kvscrub.runner import run_worker, scrub_consumer
from processors.kvscrub.scrub import Scrubber
from processors.kvscrub.worker import KvScrubWorker
from producers.sealing import SealingProducer
from schemas.codec import EventCodec
from schemas.events import Event, EventType, new_event
from tests.integration.ledger_support import Ledger
from tests.unit.kvscrub.helpers import SkipOneScrubber, block_is_zero

pytestmark = pytest.mark.integration

SHAPE = PoolShape(num_blocks=16, layers=2, heads=2, head_dim=8, block_size=4, dtype=torch.float32)
SECRET = b"s" * 32
# A byte pattern no event may ever carry: the KV "payload" of every block.
PATTERN = b"KVSECRET"


def write_pattern(pool: BlockPool, blocks: list[int]) -> torch.Tensor:
    raw = PATTERN * (len(blocks) * SHAPE.block_bytes // len(PATTERN))
    values = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(
        len(blocks), *SHAPE.block_dims
    )
    pool.write(blocks, values)
    return values.clone()


@dataclass
class Rig:
    worker: KvScrubWorker
    loop: ConsumeLoop
    sealing: SealingProducer
    producer: Producer
    names: TopicNames
    codec: EventCodec
    hasher: IdentifierHasher

    def send(self, topic: Topic, event_type: EventType, payload: dict, seq: int = 0) -> None:
        event = new_event(event_type, payload, producer_id="requester", producer_seq=seq)
        self.producer.produce(self.names(topic), value=self.codec.encode(event))
        assert self.producer.flush(10) == 0

    def send_raw(self, topic: Topic, value: bytes) -> None:
        self.producer.produce(self.names(topic), value=value)
        assert self.producer.flush(10) == 0

    def run_until(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self.loop.poll(0.2)
            self.worker.drain()
        assert done(), "the worker did not act in time"


def make_rig(
    ledger: Ledger,
    keys: PrivateKeySet,
    scrubber_cls: type[Scrubber] = Scrubber,
    worker_id: str = "w1",
) -> Iterator[Rig]:
    ledger.register(worker_id, keys)
    pool = BlockPool(SHAPE, "cpu")
    hasher = IdentifierHasher(SECRET)
    sealing = ledger.sealing_producer(worker_id, keys)
    worker = KvScrubWorker(
        pool, scrubber_cls(pool), sealing, worker_id, registry=CollectorRegistry(), hasher=hasher
    )
    producer = Producer(producer_settings(ledger.servers))
    consumer = scrub_consumer(ledger.servers, ledger.names)
    loop = ConsumeLoop(
        consumer,
        ledger.codec,
        DeadLetters(producer, ledger.names(Topic.DEADLETTER)),
        worker.handlers(),
    )
    yield Rig(worker, loop, sealing, producer, ledger.names, ledger.codec, hasher)
    consumer.close()
    sealing.close()


@pytest.fixture
def rig(ledger: Ledger, producer_keys: PrivateKeySet) -> Iterator[Rig]:
    yield from make_rig(ledger, producer_keys)


def applied_of(ledger: Ledger, event_type: EventType, count: int = 1) -> list[Event]:
    run = ledger.verify(
        until=lambda r: sum(a.event.type is event_type for a in r.applied) >= count,
        topics=[Topic.KVSCRUB],
    )
    # The test's own requests are produced unsealed (by "requester") and are
    # rightly refused; nothing the worker emitted may be.
    assert all(r.producer_id == "requester" for r in run.rejected), run.rejected
    return [a.event for a in run.applied if a.event.type is event_type]


def kvscrub_bytes(ledger: Ledger) -> list[bytes]:
    c = Consumer(consumer_settings(ledger.servers))
    c.assign([TopicPartition(ledger.names(Topic.KVSCRUB), p, 0) for p in range(3)])
    got: list[bytes] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        got += [m.value() or b"" for m in c.consume(100, 0.2) if m.error() is None]
    c.close()
    return got


def test_tenant_erasure_scrubs_only_that_tenant_and_is_sealed(rig: Rig, ledger: Ledger) -> None:
    w = rig.worker
    a = w.open_session("tenant-a", "a1", 3) + w.open_session("tenant-a", "a2", 2)
    b = w.open_session("tenant-b", "b1", 4)
    write_pattern(w.pool, a)
    kept = write_pattern(w.pool, b)

    rig.send(
        Topic.ERASURE,
        EventType.ERASURE_REQUESTED,
        {
            "request_id": "er-1",
            "subject_hash": rig.hasher.subject("tenant-a"),
            "scope": "TENANT",
            "requested_by": "dpo@example.com",
            "legal_basis": "GDPR Art. 17(1)(a)",
        },
    )
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])
    for blk in a:
        assert w.pool.state_of(blk) is BlockState.FREE and block_is_zero(w.pool, blk)
    assert torch.equal(w.pool.read(b), kept), "another tenant's blocks must stay intact"
    rig.sealing.flush()

    (done,) = applied_of(ledger, EventType.KV_SCRUB_COMPLETED)
    p = done.payload
    assert p["tenant"] == rig.hasher.subject("tenant-a").hex()
    assert (p["trigger"], p["blocks"], p["worker_id"]) == ("ERASURE", len(a), "w1")
    assert p["bytes"] == len(a) * SHAPE.block_bytes and p["coverage"] == 1.0
    for value in kvscrub_bytes(ledger):
        assert PATTERN not in value, "KV payload bytes reached the log"
        assert b"tenant-a" not in value, "a plaintext tenant id reached the log"


def test_request_finished_scrubs_only_that_request(rig: Rig, ledger: Ledger) -> None:
    w = rig.worker
    r1 = w.open_session("tenant-a", "r1", 2)
    r2 = w.open_session("tenant-a", "r2", 2)
    write_pattern(w.pool, r1)
    kept = write_pattern(w.pool, r2)
    tenant = rig.hasher.subject("tenant-a").hex()
    request = {"trigger": "REQUEST_FINISHED", "tenant": tenant, "subject_hash": None}
    # Addressed to another worker: not ours to act on.
    rig.send(
        Topic.KVSCRUB,
        EventType.KV_SCRUB_REQUESTED,
        {**request, "worker_id": "w2", "request_id": "r2"},
        seq=0,
    )
    rig.send(
        Topic.KVSCRUB,
        EventType.KV_SCRUB_REQUESTED,
        {**request, "worker_id": "w1", "request_id": "r1"},
        seq=1,
    )
    rig.run_until(lambda: w.pool.blocks_of("tenant-a", "r1") == [])
    for _ in range(3):
        rig.loop.poll(0.2)
        rig.worker.drain()
    assert all(block_is_zero(w.pool, blk) for blk in r1)
    assert torch.equal(w.pool.read(r2), kept)
    rig.sealing.flush()
    (done,) = applied_of(ledger, EventType.KV_SCRUB_COMPLETED)
    assert (done.payload["request_id"], done.payload["trigger"]) == ("r1", "REQUEST_FINISHED")


def test_injected_zeroize_failure_emits_quarantine(
    ledger: Ledger, producer_keys: PrivateKeySet
) -> None:
    rig = next(gen := make_rig(ledger, producer_keys, SkipOneScrubber))
    w = rig.worker
    blocks = w.open_session("tenant-a", "r1", 3)
    write_pattern(w.pool, blocks)
    assert isinstance(w.scrubber, SkipOneScrubber)
    w.scrubber.skip = blocks[1]
    rig.send(
        Topic.KVSCRUB,
        EventType.KV_SCRUB_REQUESTED,
        {
            "worker_id": None,
            "trigger": "REQUEST_FINISHED",
            "request_id": "r1",
            "tenant": rig.hasher.subject("tenant-a").hex(),
            "subject_hash": None,
        },
    )
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])
    assert w.pool.state_of(blocks[1]) is BlockState.QUARANTINED
    rig.sealing.flush()
    (q,) = applied_of(ledger, EventType.KV_BLOCK_QUARANTINED)
    assert (q.payload["blocks"], q.payload["request_id"]) == (1, "r1")
    assert q.payload["bytes"] == SHAPE.block_bytes and q.payload["reason"] == "VERIFY_FAILED"
    list(gen)  # teardown


def test_garbage_is_dead_lettered_and_the_worker_keeps_going(rig: Rig, ledger: Ledger) -> None:
    w = rig.worker
    blocks = w.open_session("tenant-a", "r1", 2)
    write_pattern(w.pool, blocks)
    rig.send_raw(Topic.KVSCRUB, b"\x17\x99 not an event")
    # A plaintext tenant id is refused, never matched.
    rig.send(
        Topic.KVSCRUB,
        EventType.KV_SCRUB_REQUESTED,
        {
            "worker_id": None,
            "trigger": "REQUEST_FINISHED",
            "request_id": "r1",
            "tenant": "tenant-a",
            "subject_hash": None,
        },
    )
    rig.send(
        Topic.KVSCRUB,
        EventType.KV_SCRUB_REQUESTED,
        {
            "worker_id": None,
            "trigger": "REQUEST_FINISHED",
            "request_id": "r1",
            "tenant": rig.hasher.subject("tenant-a").hex(),
            "subject_hash": None,
        },
        seq=1,
    )
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])
    rig.producer.flush(10)

    c = Consumer(consumer_settings(ledger.servers))
    c.assign([TopicPartition(ledger.names(Topic.DEADLETTER), p, 0) for p in range(3)])
    letters: list = []
    deadline = time.monotonic() + 10
    while len(letters) < 2 and time.monotonic() < deadline:
        letters += [m for m in c.consume(100, 0.2) if m.error() is None]
    c.close()
    failures = sorted(headers_dict(m.headers())[DL_HEADER_FAILURE] for m in letters)
    assert failures == [b"handler_failed", b"undecodable"]


def test_run_worker_scrubs_a_subject_end_to_end(
    ledger: Ledger, producer_keys: PrivateKeySet
) -> None:
    base = load_config(None)
    config = replace(base, kvscrub=replace(base.kvscrub, num_blocks=32, device=base.kvscrub.device))
    ledger.register("w-e2e", producer_keys)
    hasher = IdentifierHasher(SECRET)
    ready: list[KvScrubWorker] = []
    ready_event, stop = threading.Event(), threading.Event()

    def on_ready(worker: KvScrubWorker) -> None:
        ready.append(worker)
        ready_event.set()

    thread = threading.Thread(
        target=run_worker,
        args=(config, ledger.servers, ledger.names, producer_keys, stop),
        kwargs={
            "hasher": hasher,
            "worker_id": "w-e2e",
            "device": "cpu",
            "on_ready": on_ready,
            "registry": CollectorRegistry(),
            "tick_interval_s": 0.2,
        },
        daemon=True,
    )
    thread.start()
    try:
        assert ready_event.wait(20)
        w = ready[0]
        mine = w.open_session("tenant-a", "r1", 2, subject="user-1")
        other = w.open_session("tenant-a", "r2", 2, subject="user-2")
        w.pool.write(mine + other, 3.0)
        producer = Producer(producer_settings(ledger.servers))
        event = new_event(
            EventType.ERASURE_REQUESTED,
            {
                "request_id": "er-2",
                "subject_hash": hasher.subject("user-1"),
                "scope": "SUBJECT",
                "requested_by": "dpo@example.com",
                "legal_basis": "GDPR Art. 17(1)(a)",
            },
            producer_id="requester",
            producer_seq=0,
        )
        producer.produce(ledger.names(Topic.ERASURE), value=ledger.codec.encode(event))
        assert producer.flush(10) == 0
        (done,) = applied_of(ledger, EventType.KV_SCRUB_COMPLETED)
        assert (done.payload["request_id"], done.payload["trigger"]) == ("r1", "ERASURE")
        assert w.pool.blocks_of("tenant-a") == other
        assert all(block_is_zero(w.pool, blk) for blk in mine)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
