"""The KV scrub worker against the real broker: sealed requests in through the
verifying intake, scrubs done, evidence out through the signed ledger and
verified by a real consumer; forged and unauthorized requests refused and
alerted, never acted on."""

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
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.consume import DL_HEADER_FAILURE, headers_dict
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.processors.kvscrub.intake import RequestAuthority, ScrubIntake, request_log_layout
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.runner import run_worker
from cachet.processors.kvscrub.scrub import Scrubber
from cachet.processors.kvscrub.state import BlockState
from cachet.processors.kvscrub.worker import KvScrubWorker
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType, SealRef, new_event
from cachet.topics import Topic, TopicNames
from tests.integration.ledger_support import REQUIRED, Ledger
from tests.unit.processors.kvscrub.helpers import SkipOneScrubber, block_is_zero

pytestmark = pytest.mark.integration

SHAPE = PoolShape(num_blocks=16, layers=2, heads=2, head_dim=8, block_size=4, dtype=torch.float32)
SECRET = b"s" * 32
# A byte pattern no event may ever carry: the KV "payload" of every block.
PATTERN = b"KVSECRET"
# The identity the rig's worker takes requests from.
REQUESTER = "requester"
UNSEALED_TIMEOUT_S = 1.5


def write_pattern(pool: BlockPool, blocks: list[int]) -> torch.Tensor:
    raw = PATTERN * (len(blocks) * SHAPE.block_bytes // len(PATTERN))
    values = torch.frombuffer(bytearray(raw), dtype=torch.float32).reshape(
        len(blocks), *SHAPE.block_dims
    )
    pool.write(blocks, values)
    return values.clone()


@pytest.fixture(scope="session")
def requester_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@dataclass
class Rig:
    worker: KvScrubWorker
    intake: ScrubIntake
    sealing: SealingProducer
    requester: SealingProducer
    producer: Producer
    names: TopicNames
    codec: EventCodec
    hasher: IdentifierHasher

    def send(
        self,
        event_type: EventType,
        payload: dict,
        *,
        by: SealingProducer | None = None,
    ) -> Event:
        """A genuine request, sealed by ``by`` (default: the allowed requester)."""
        sealer = by or self.requester
        event = sealer.emit(event_type, payload)
        sealer.flush()
        return event

    def send_raw(self, topic: Topic, value: bytes) -> None:
        self.producer.produce(self.names(topic), value=value)
        assert self.producer.flush(10) == 0

    def poll(self, rounds: int = 1) -> None:
        for _ in range(rounds):
            self.intake.poll(0.2)
            self.worker.drain()

    def run_until(self, done: Callable[[], bool], timeout_s: float = 10.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not done() and time.monotonic() < deadline:
            self.poll()
        assert done(), "the worker did not act in time"

    def refused(self, reason: str) -> float:
        value = self.worker.metrics.registry.get_sample_value(
            "cachet_kvscrub_requests_refused_total", {"reason": reason}
        )
        return value or 0.0


def make_rig(
    ledger: Ledger,
    keys: PrivateKeySet,
    requester_keys: PrivateKeySet,
    scrubber_cls: type[Scrubber] = Scrubber,
    worker_id: str = "w1",
) -> Iterator[Rig]:
    ledger.register(worker_id, keys)
    ledger.register(REQUESTER, requester_keys)
    pool = BlockPool(SHAPE, "cpu")
    hasher = IdentifierHasher(SECRET)
    sealing = ledger.sealing_producer(worker_id, keys)
    requester = ledger.sealing_producer(REQUESTER, requester_keys)
    worker = KvScrubWorker(
        pool, scrubber_cls(pool), sealing, worker_id, registry=CollectorRegistry(), hasher=hasher
    )
    producer = Producer(producer_settings(ledger.servers))
    partitions, act_from = request_log_layout(ledger.servers, ledger.names)
    intake = ScrubIntake(
        worker,
        bootstrap_servers=ledger.servers,
        names=ledger.names,
        anchor=ledger.anchor.public(),
        required=REQUIRED,
        authority=RequestAuthority.of([REQUESTER], own=worker_id),
        deadletter_producer=producer,
        partitions=partitions,
        act_from=act_from,
        unsealed_timeout_s=UNSEALED_TIMEOUT_S,
        codec=ledger.codec,
    )
    yield Rig(worker, intake, sealing, requester, producer, ledger.names, ledger.codec, hasher)
    intake.close()
    requester.close()
    sealing.close()


@pytest.fixture
def rig(
    ledger: Ledger, producer_keys: PrivateKeySet, requester_keys: PrivateKeySet
) -> Iterator[Rig]:
    yield from make_rig(ledger, producer_keys, requester_keys)


def applied_of(
    ledger: Ledger, event_type: EventType, count: int = 1, topic: Topic = Topic.KVSCRUB
) -> list[Event]:
    run = ledger.verify(
        until=lambda r: sum(a.event.type is event_type for a in r.applied) >= count,
        topics=[topic],
    )
    # Every request and every piece of evidence in these tests is sealed.
    assert run.rejected == [], run.rejected
    return [a.event for a in run.applied if a.event.type is event_type]


def records_of(ledger: Ledger, topic: Topic) -> list[bytes]:
    c = Consumer(consumer_settings(ledger.servers))
    c.assign([TopicPartition(ledger.names(topic), p, 0) for p in range(3)])
    got: list[bytes] = []
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        got += [m.value() or b"" for m in c.consume(100, 0.2) if m.error() is None]
    c.close()
    return got


def kvscrub_bytes(ledger: Ledger) -> list[bytes]:
    return records_of(ledger, Topic.KVSCRUB)


def types_on(ledger: Ledger, topic: Topic) -> list[EventType]:
    return [ledger.codec.decode(v).type for v in records_of(ledger, topic)]


def tenant_erasure(rig: Rig, tenant: str) -> dict:
    return {
        "worker_id": None,
        "trigger": "ERASURE",
        "tenant": rig.hasher.subject(tenant).hex(),
        "request_id": None,
        "subject_hash": None,
    }


def erasure_request(rig: Rig, subject: str, scope: str, request_id: str = "er-1") -> dict:
    return {
        "request_id": request_id,
        "subject_hash": rig.hasher.subject(subject),
        "scope": scope,
        "requested_by": "dpo@example.com",
        "legal_basis": "GDPR Art. 17(1)(a)",
    }


def test_tenant_erasure_scrubs_only_that_tenant_and_is_sealed(rig: Rig, ledger: Ledger) -> None:
    w = rig.worker
    a = w.open_session("tenant-a", "a1", 3) + w.open_session("tenant-a", "a2", 2)
    b = w.open_session("tenant-b", "b1", 4)
    write_pattern(w.pool, a)
    kept = write_pattern(w.pool, b)

    rig.send(EventType.ERASURE_REQUESTED, erasure_request(rig, "tenant-a", "TENANT"))
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])
    for blk in a:
        assert w.pool.state_of(blk) is BlockState.FREE and block_is_zero(w.pool, blk)
    assert torch.equal(w.pool.read(b), kept), "another tenant's blocks must stay intact"
    rig.sealing.flush()

    # The tenant's scrub, then the worker's summary of the erasure (named by
    # its request id): the same blocks, counted by the erasure processor once.
    found = applied_of(ledger, EventType.KV_SCRUB_COMPLETED, count=2)
    done, summary = sorted(found, key=lambda e: e.payload["request_id"] is not None)
    for event in (done, summary):
        p = event.payload
        assert p["tenant"] == rig.hasher.subject("tenant-a").hex()
        assert (p["trigger"], p["blocks"], p["worker_id"]) == ("ERASURE", len(a), "w1")
        assert p["bytes"] == len(a) * SHAPE.block_bytes and p["coverage"] == 1.0
    assert (done.payload["request_id"], summary.payload["request_id"]) == (None, "er-1")
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
    rig.send(EventType.KV_SCRUB_REQUESTED, {**request, "worker_id": "w2", "request_id": "r2"})
    rig.send(EventType.KV_SCRUB_REQUESTED, {**request, "worker_id": "w1", "request_id": "r1"})
    rig.run_until(lambda: w.pool.blocks_of("tenant-a", "r1") == [])
    rig.poll(3)
    assert all(block_is_zero(w.pool, blk) for blk in r1)
    assert torch.equal(w.pool.read(r2), kept)
    rig.sealing.flush()
    (done,) = applied_of(ledger, EventType.KV_SCRUB_COMPLETED)
    assert (done.payload["request_id"], done.payload["trigger"]) == ("r1", "REQUEST_FINISHED")


def test_the_workers_own_request_ends_keep_working(rig: Rig, ledger: Ledger) -> None:
    """In process (no log record), and sealed by the worker's own identity."""
    w = rig.worker
    r1 = w.open_session("tenant-a", "r1", 2)
    r2 = w.open_session("tenant-a", "r2", 2)
    write_pattern(w.pool, r1 + r2)
    w.finish_request("tenant-a", "r1")
    (report,) = w.drain()
    assert (report.request_id, report.trigger.value) == ("r1", "REQUEST_FINISHED")
    assert all(block_is_zero(w.pool, blk) for blk in r1)

    rig.send(
        EventType.KV_SCRUB_REQUESTED,
        {
            "worker_id": "w1",
            "trigger": "REQUEST_FINISHED",
            "tenant": rig.hasher.subject("tenant-a").hex(),
            "request_id": "r2",
            "subject_hash": None,
        },
        by=rig.sealing,
    )
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])
    assert all(block_is_zero(w.pool, blk) for blk in r2)
    assert rig.refused("unauthorized_requester") == 0


def test_injected_zeroize_failure_emits_quarantine(
    ledger: Ledger, producer_keys: PrivateKeySet, requester_keys: PrivateKeySet
) -> None:
    rig = next(gen := make_rig(ledger, producer_keys, requester_keys, SkipOneScrubber))
    w = rig.worker
    blocks = w.open_session("tenant-a", "r1", 3)
    write_pattern(w.pool, blocks)
    assert isinstance(w.scrubber, SkipOneScrubber)
    w.scrubber.skip = blocks[1]
    rig.send(
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
    request = {
        "worker_id": None,
        "trigger": "REQUEST_FINISHED",
        "request_id": "r1",
        "subject_hash": None,
    }
    # Sealed by an allowed requester, yet a plaintext tenant id is refused,
    # never matched.
    rig.send(EventType.KV_SCRUB_REQUESTED, {**request, "tenant": "tenant-a"})
    rig.send(
        EventType.KV_SCRUB_REQUESTED, {**request, "tenant": rig.hasher.subject("tenant-a").hex()}
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
    assert rig.refused("malformed_request") == 1


# -- forged, unauthorized and replayed requests --------------------------------


def alerts_on(ledger: Ledger, want: Callable[[Event], bool]) -> list[Event]:
    """The sealed alerts that match ``want`` (waits for at least one)."""
    run = ledger.verify(
        until=lambda r: any(want(a.event) for a in r.applied), topics=[Topic.ALERTS]
    )
    return [a.event for a in run.applied if want(a.event)]


@pytest.mark.parametrize("seal_ref", [None, SealRef(99, 0)], ids=["no-seal-ref", "seal-never-made"])
def test_forged_unsigned_erasure_is_refused_and_alerted(
    rig: Rig, ledger: Ledger, seal_ref: SealRef | None
) -> None:
    """The defect: a plain producer holding no key wiped a tenant's sessions."""
    w = rig.worker
    a = w.open_session("tenant-a", "a1", 3) + w.open_session("tenant-a", "a2", 2)
    kept = write_pattern(w.pool, a)
    # The attacker reads the tenant hash and the allowed requester's producer
    # id off the log, and claims to be it: authority must come from a seal.
    rig.send(EventType.KV_SCRUB_REQUESTED, {**tenant_erasure(rig, "tenant-b"), "worker_id": "w9"})
    forged = new_event(
        EventType.KV_SCRUB_REQUESTED,
        tenant_erasure(rig, "tenant-a"),
        producer_id=rig.requester.producer_id,
        producer_seq=10_000,
        seal_ref=seal_ref,
    )
    rig.send_raw(Topic.KVSCRUB, rig.codec.encode(forged))

    status = "not_sealed" if seal_ref is None else "unsealed_timeout"
    # Waits past the unsealed timeout: the verifier's verdict, then more polls.
    rig.run_until(lambda: rig.refused(status) >= 1, timeout_s=UNSEALED_TIMEOUT_S + 10)
    rig.poll(3)

    assert w.pool.blocks_of("tenant-a") == a, "a forged request released the tenant's blocks"
    assert all(w.pool.state_of(blk) is BlockState.ALLOCATED for blk in a)
    assert torch.equal(w.pool.read(a), kept), "a forged request touched the tenant's KV data"
    rig.sealing.flush()
    assert EventType.KV_SCRUB_COMPLETED not in types_on(ledger, Topic.KVSCRUB)

    kvscrub = rig.names(Topic.KVSCRUB)
    if seal_ref is None:
        (alert,) = alerts_on(
            ledger,
            lambda e: e.type is EventType.INTEGRITY_FAILURE and e.payload["topic"] == kvscrub,
        )
        assert alert.payload["status"] == "not_sealed"
    else:
        (alert,) = alerts_on(ledger, lambda e: e.type is EventType.UNSEALED_TIMEOUT)
        assert alert.payload["topic"] == kvscrub
    assert alert.payload["producer_id"] == rig.requester.producer_id


@pytest.fixture(scope="module")
def intruder_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


def test_sealed_request_from_an_identity_not_allowed_is_refused_and_alerted(
    rig: Rig, ledger: Ledger, intruder_keys: PrivateKeySet
) -> None:
    """Registered and genuinely sealed, but not an allowed requester: refused."""
    w = rig.worker
    a = w.open_session("tenant-a", "a1", 3)
    b = w.open_session("tenant-b", "b1", 2)
    kept = write_pattern(w.pool, a)
    write_pattern(w.pool, b)
    ledger.register("intruder", intruder_keys)
    intruder = ledger.sealing_producer("intruder", intruder_keys)
    try:
        rig.send(EventType.KV_SCRUB_REQUESTED, tenant_erasure(rig, "tenant-a"), by=intruder)
        rig.send(
            EventType.ERASURE_REQUESTED, erasure_request(rig, "tenant-a", "TENANT"), by=intruder
        )
        # The worker's own identity may end its requests, never ask for an erasure.
        rig.send(
            EventType.ERASURE_REQUESTED, erasure_request(rig, "tenant-a", "TENANT"), by=rig.sealing
        )
        # An allowed requester's erasure of tenant-b shows the intake is live.
        rig.send(EventType.ERASURE_REQUESTED, erasure_request(rig, "tenant-b", "TENANT"))
        rig.run_until(
            lambda: (
                w.pool.blocks_of("tenant-b") == [] and rig.refused("unauthorized_requester") == 3
            )
        )
        rig.poll(3)
    finally:
        intruder.close()

    assert w.pool.blocks_of("tenant-a") == a
    assert torch.equal(w.pool.read(a), kept), "an unauthorized request touched KV data"
    rig.sealing.flush()
    # tenant-b's scrub and the summary of its erasure; nothing for tenant-a.
    done, summary = applied_of(ledger, EventType.KV_SCRUB_COMPLETED, count=2)
    for event in (done, summary):
        assert event.payload["tenant"] == rig.hasher.subject("tenant-b").hex()

    alerts = alerts_on(
        ledger,
        lambda e: (
            e.type is EventType.INTEGRITY_FAILURE
            and e.payload["status"] == "unauthorized_requester"
        ),
    )
    refused = sorted(
        (e.payload["producer_id"].split("@")[0], e.payload["topic"].rsplit(".", 1)[1])
        for e in alerts
    )
    assert refused == [("intruder", "erasure"), ("intruder", "kvscrub"), ("w1", "erasure")]
    assert all("allowed_requesters" in e.payload["detail"] for e in alerts)


def test_a_replayed_genuine_request_is_not_acted_on_again(rig: Rig, ledger: Ledger) -> None:
    """A genuine erasure, re-produced byte for byte later, wipes nothing new."""
    w = rig.worker
    first = w.open_session("tenant-a", "a1", 2)
    write_pattern(w.pool, first)
    rig.send(EventType.ERASURE_REQUESTED, erasure_request(rig, "tenant-a", "TENANT"))
    rig.run_until(lambda: w.pool.blocks_of("tenant-a") == [])

    # The tenant comes back; an attacker replays the erasure it saw.
    again = w.open_session("tenant-a", "a2", 2)
    kept = write_pattern(w.pool, again)
    (original,) = records_of(ledger, Topic.ERASURE)
    rig.send_raw(Topic.ERASURE, original)
    rig.run_until(lambda: rig.refused("duplicate_event") >= 1)
    rig.poll(3)
    assert w.pool.blocks_of("tenant-a") == again
    assert torch.equal(w.pool.read(again), kept)


def test_requests_from_before_the_worker_started_are_history(
    ledger: Ledger, producer_keys: PrivateKeySet, requester_keys: PrivateKeySet
) -> None:
    """Verified, never acted on: they cannot name blocks of a pool made after
    them. Re-produced into any partition after the start, still not acted on."""
    ledger.register(REQUESTER, requester_keys)
    hasher = IdentifierHasher(SECRET)
    with ledger.sealing_producer(REQUESTER, requester_keys) as early:
        early.emit(
            EventType.KV_SCRUB_REQUESTED,
            {
                "worker_id": None,
                "trigger": "ERASURE",
                "tenant": hasher.subject("tenant-a").hex(),
                "request_id": None,
                "subject_hash": None,
            },
        )
        early.flush()
    (original,) = records_of(ledger, Topic.KVSCRUB)
    rig = next(gen := make_rig(ledger, producer_keys, requester_keys))
    w = rig.worker
    a = w.open_session("tenant-a", "a1", 2)
    kept = write_pattern(w.pool, a)
    for partition in range(3):  # one lands behind the original, two beside it
        rig.producer.produce(rig.names(Topic.KVSCRUB), value=original, partition=partition)
    assert rig.producer.flush(10) == 0
    # Of the original and its three copies the verifier applies exactly one
    # (the first it reads) and refuses three as duplicates; when the one it
    # applied is a copy, the intake refuses it as a replay.
    rig.run_until(lambda: rig.refused("duplicate_event") == 3)
    rig.poll(3)
    assert rig.refused("replayed_request") <= 1
    assert rig.intake.caught_up
    assert w.pool.blocks_of("tenant-a") == a
    assert torch.equal(w.pool.read(a), kept)
    rig.sealing.flush()
    assert EventType.KV_SCRUB_COMPLETED not in types_on(ledger, Topic.KVSCRUB)
    list(gen)  # teardown


def test_run_worker_scrubs_a_subject_end_to_end(
    ledger: Ledger, producer_keys: PrivateKeySet, requester_keys: PrivateKeySet
) -> None:
    base = load_config(None)
    config = replace(
        base,
        kvscrub=replace(base.kvscrub, num_blocks=32, allowed_requesters=(REQUESTER,)),
    )
    ledger.register("w-e2e", producer_keys)
    ledger.register(REQUESTER, requester_keys)
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
            "anchor": ledger.anchor.public(),
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
        with ledger.sealing_producer(REQUESTER, requester_keys) as requester:
            requester.emit(
                EventType.ERASURE_REQUESTED,
                {
                    "request_id": "er-2",
                    "subject_hash": hasher.subject("user-1"),
                    "scope": "SUBJECT",
                    "requested_by": "dpo@example.com",
                    "legal_basis": "GDPR Art. 17(1)(a)",
                },
            )
            requester.flush()
        # The subject's session and the worker's summary of the erasure (keyed
        # by tenant and by subject: partitions, and so their order, differ).
        found = applied_of(ledger, EventType.KV_SCRUB_COMPLETED, count=2)
        done, summary = sorted(found, key=lambda e: e.payload["request_id"] != "r1")
        assert (done.payload["request_id"], done.payload["trigger"]) == ("r1", "ERASURE")
        assert (summary.payload["request_id"], summary.payload["blocks"]) == ("er-2", 2)
        assert summary.payload["tenant"] == hasher.subject("user-1").hex()
        assert w.pool.blocks_of("tenant-a") == other
        assert all(block_is_zero(w.pool, blk) for blk in mine)
    finally:
        stop.set()
        thread.join(20)
    assert not thread.is_alive()
