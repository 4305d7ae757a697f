"""The signed ledger end to end on the real broker: sealing producer ->
Kafka -> verifying consumer, with real triple post-quantum signatures."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.crypto.merkle import inclusion_proof, leaf_hash, verify_inclusion
from cachet.crypto.seal import PrivateKeySet, SignatureLine
from cachet.crypto.signing_process import shared_signer
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.kafka.verifying import VerifyingConsumer, alert_for
from cachet.ledger.verifier import IntegrityStatus
from cachet.producers.sealing import SealRecord
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.integration.ledger_support import PARTITIONS, REQUIRED, Ledger, emit_sample

pytestmark = pytest.mark.integration


def test_every_event_is_applied_once_under_a_verified_seal(ledger: Ledger, producer_keys) -> None:
    ledger.register("svc-a", producer_keys)
    sp = ledger.sealing_producer("svc-a", producer_keys, batch=16)
    sent = emit_sample(sp, 100)
    sp.close()

    run = ledger.verify(until=lambda r: len(r.applied) >= 100)
    assert not run.rejected, [r.detail for r in run.rejected]
    assert sorted(a.event.producer_seq for a in run.applied) == [e.producer_seq for e in sent]
    # Each applied event is provably in its seal's Merkle tree.
    for a in run.applied[:10]:
        leaves = a.seal.leaf_hashes
        idx = a.event.seal_ref.leaf_index
        proof = inclusion_proof(idx, leaves)
        assert verify_inclusion(
            leaf_hash(a.origin.raw), idx, len(leaves), proof, a.seal.header.merkle_root
        )


def test_time_window_seals_a_partial_batch(ledger: Ledger, producer_keys) -> None:
    ledger.register("svc-b", producer_keys)
    sp = ledger.sealing_producer("svc-b", producer_keys, batch=1000)
    emit_sample(sp, 3)  # far below the batch size: only the 30 ms window seals it
    run = ledger.verify(until=lambda r: len(r.applied) >= 3, timeout_s=10)
    sp.close()
    assert len(run.applied) == 3 and not run.rejected


class _SlowSigner:
    """Signs as the shared child does, each signing taking at least ``cost_s``:
    a host too busy to sign at the pace of the batch window."""

    def __init__(self, cost_s: float) -> None:
        self.cost_s = cost_s
        self.signings = 0

    def start(self) -> None:
        shared_signer().start()

    def sign(self, message: bytes, keys: PrivateKeySet) -> tuple[SignatureLine, ...]:
        self.signings += 1
        time.sleep(self.cost_s)
        return shared_signer().sign(message, keys)


def test_a_signer_slower_than_the_window_grows_batches_instead_of_a_queue(
    ledger: Ledger, producer_keys
) -> None:
    # Under a 10 ms window and a signer taking 100 ms, batches closed at
    # every window would queue behind the signer, each seal a signing later
    # than the last: after 1.5 s of steady writes the last events would wait
    # seconds for theirs (past a verifier's unsealed timeout). A window never
    # closes a batch while one waits for the signer, so seals stay about one
    # per signing and every event is sealed soon after the writes stop.
    ledger.register("svc-slow", producer_keys)
    signer = _SlowSigner(0.1)
    records: list[SealRecord] = []
    sp = ledger.sealing_producer(
        "svc-slow",
        producer_keys,
        batch=100_000,
        window_ms=10,
        signer=signer,
        on_seal=records.append,
    )
    started = time.monotonic()
    sent = 0
    while time.monotonic() - started < 1.5:
        emit_sample(sp, 5)
        sent += 5
        time.sleep(0.002)
    writing_s = time.monotonic() - started
    sp.close()
    # One seal closes when the signer takes the previous one: at most one per
    # signing over the writes, plus the batches open and waiting at the end.
    assert signer.signings <= writing_s / signer.cost_s + 3, signer.signings
    assert sum(r.leaf_count for r in records) == sent
    run = ledger.verify(until=lambda r: len(r.applied) >= sent, timeout_s=20)
    assert len(run.applied) == sent and not run.rejected


def test_unsealed_events_are_never_applied(ledger: Ledger, producer_keys, staging: Ledger) -> None:
    """A producer that dies before its seal leaves its events unsealed: they
    time out as UnsealedTimeout and are never applied."""
    from tests.integration.ledger_support import read_all

    ledger.register("svc-c", producer_keys)
    sp = staging.sealing_producer("svc-c", producer_keys, batch=4)
    emit_sample(sp, 8)
    sp.close()
    records = read_all(
        staging.servers, staging.names, [Topic.ENTRIES, Topic.READS, Topic.SEALS], 10
    )
    ledger.copy(r for r in records if r.topic is not Topic.SEALS)  # the seals never made it
    run = ledger.verify(until=lambda r: len(r.rejected) >= 8, unsealed_timeout_s=1.0)
    assert not run.applied
    assert run.statuses() == {IntegrityStatus.UNSEALED_TIMEOUT}


def test_alerts_reach_the_alerts_topic(ledger: Ledger, producer_keys, staging: Ledger) -> None:
    from tests.integration.ledger_support import read_all

    ledger.register("svc-d", producer_keys)
    sp = staging.sealing_producer("svc-d", producer_keys, batch=2)
    emit_sample(sp, 2)
    sp.close()
    records = read_all(staging.servers, staging.names, [Topic.ENTRIES, Topic.READS, Topic.SEALS], 3)
    ledger.copy(r for r in records if r.topic is not Topic.SEALS)

    emitted: list[EventType] = []
    alerts_out = ledger.sealing_producer("verifier-node", producer_keys)

    def alert(event_type: EventType, payload: dict) -> None:
        emitted.append(event_type)
        alerts_out.emit(event_type, payload)

    vc = VerifyingConsumer(
        ledger.servers,
        ledger.names,
        ledger.codec,
        ledger.anchor.public(),
        REQUIRED,
        [Topic.ENTRIES, Topic.READS],
        lambda a: None,
        alert,
        Producer(producer_settings(ledger.servers)),
        partitions=PARTITIONS,
        unsealed_timeout_s=0.5,
    )
    deadline = time.monotonic() + 10
    while len(emitted) < 2 and time.monotonic() < deadline:
        vc.poll(0.2)
    vc.close()
    alerts_out.close()
    assert emitted == [EventType.UNSEALED_TIMEOUT] * 2

    c = Consumer(consumer_settings(ledger.servers))
    c.assign([TopicPartition(ledger.names(Topic.ALERTS), p, 0) for p in range(PARTITIONS)])
    seen = []
    deadline = time.monotonic() + 10
    while len(seen) < 2 and time.monotonic() < deadline:
        seen += [ledger.codec.decode(m.value()) for m in c.consume(10, 0.3) if m.error() is None]
    c.close()
    assert [e.type for e in seen] == [EventType.UNSEALED_TIMEOUT] * 2
    assert all(e.seal_ref is not None for e in seen), "alerts are themselves sealed"


def test_alert_mapping_names_the_right_event_type() -> None:
    from cachet.ledger.verifier import Rejected

    assert (
        alert_for(Rejected((IntegrityStatus.SEQUENCE_GAP,), "x"))[0] is EventType.LOG_DISCONTINUITY
    )
    assert (
        alert_for(Rejected((IntegrityStatus.LEAF_MISMATCH,), "x"))[0] is EventType.INTEGRITY_FAILURE
    )
    assert (
        alert_for(Rejected((IntegrityStatus.UNSEALED_TIMEOUT,), "x"))[0]
        is EventType.UNSEALED_TIMEOUT
    )


def test_new_epoch_restarts_the_chain_and_seals_nothing_falsely(
    ledger: Ledger, producer_keys
) -> None:
    """What a producer does when the broker lost its session: a new epoch.
    The abandoned open batch is never sealed; the new chain verifies."""
    from cachet.producers.sealing import SealingProducer, SealingSettings

    ledger.register("svc-e", producer_keys)

    def client() -> Producer:
        return Producer(producer_settings(ledger.servers))

    sp = SealingProducer(
        client(),
        ledger.codec,
        ledger.names,
        "svc-e",
        producer_keys,
        SealingSettings(batch_max_events=1000, batch_max_ms=60_000),
        producer_factory=client,
    )
    abandoned = emit_sample(sp, 4)  # still in the open batch when the epoch changes
    old_id = sp.producer_id
    assert sp.new_epoch() != old_id
    kept = emit_sample(sp, 4)
    sp.close()
    run = ledger.verify(until=lambda r: len(r.applied) >= 4, unsealed_timeout_s=1.0, settle_s=1.5)
    assert {a.event.event_id for a in run.applied} == {e.event_id for e in kept}
    assert all(a.event.producer_id == sp.producer_id for a in run.applied)
    assert not {e.event_id for e in abandoned} & {a.event.event_id for a in run.applied}
    assert run.statuses() <= {IntegrityStatus.UNSEALED_TIMEOUT}
