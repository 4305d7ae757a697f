"""iter_verified over an in-memory signed log: what is applied, what is
refused, and that the interleaving of partitions does not matter."""

from __future__ import annotations

import pytest

from cachet.crypto.seal import PrivateKeySet
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import IntegrityStatus
from cachet.materializers.replay import Refusal, RefusalReason, ReplayTrust, iter_verified
from cachet.materializers.replay.verified import VerifiedReplay
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.unit.materializers.replay.memlog import T0, ListSource, MemoryLog, written


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="module")
def keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


@pytest.fixture
def trust(anchor: PrivateKeySet) -> ReplayTrust:
    from cachet.crypto.schemes import SignatureScheme

    return ReplayTrust(anchor.public(), frozenset(SignatureScheme))


@pytest.fixture
def log(codec, anchor, keys) -> MemoryLog:
    log = MemoryLog(codec, anchor, keys)
    log.register()
    return log


def run(records: list[RecordOrigin], trust: ReplayTrust, **kw) -> tuple[list, list[Refusal]]:
    refused: list[Refusal] = []
    events = list(iter_verified(ListSource(records), trust=trust, on_refused=refused.append, **kw))
    return events, refused


def test_sealed_events_are_yielded_with_their_seal_and_bytes(log: MemoryLog, trust) -> None:
    a = written(log, 1, T0)
    b = log.emit(EventType.CACHE_READ, T0 + 10)
    log.seal(T0 + 20)
    events, refused = run(log.records, trust)
    assert refused == []
    assert events[0].anchor_signed and events[0].event.type is EventType.SIGNING_KEY_REGISTERED
    sealed = events[1:]
    assert [(e.topic, e.offset, e.raw) for e in sealed] == [
        (a.topic, 0, a.raw),
        (b.topic, 0, b.raw),
    ]
    assert {(e.seal.producer_id, e.seal.seal_seq) for e in sealed} == {(log.pid, 0)}
    assert [e.seal.leaf_index for e in sealed] == [0, 1]


def test_order_across_partitions_does_not_change_the_outcome(log: MemoryLog, trust) -> None:
    for i in range(6):
        written(log, i, T0 + i, partition=i % 3)
    log.seal(T0 + 100)
    forward, _ = run(log.records, trust)
    # The seal first, then the partitions one after another, reversed.
    shuffled = [
        log.records[0],
        log.records[-1],
        *sorted(log.records[1:-1], key=lambda r: -r.partition),
    ]
    backward, refused = run(shuffled, trust)
    assert refused == []
    per_partition = lambda evs: sorted((e.partition, e.offset) for e in evs)  # noqa: E731
    assert per_partition(forward) == per_partition(backward)
    assert len(forward) == 7


def test_tampered_bytes_are_refused_and_never_yielded(log: MemoryLog, trust) -> None:
    a = written(log, 1, T0)
    log.seal(T0 + 20)
    tampered = RecordOrigin(
        a.topic,
        a.partition,
        a.offset,
        a.key,
        a.timestamp_ms,
        (),
        a.raw[:-1] + bytes([a.raw[-1] ^ 1]),
    )
    records = [tampered if r is a else r for r in log.records]
    events, refused = run(records, trust)
    assert all(e.event.type is EventType.SIGNING_KEY_REGISTERED for e in events)
    # The tampered copy is refused; the genuine leaf never came: missing.
    assert [(r.topic, r.statuses[0]) for r in refused] == [
        ("t.entries", IntegrityStatus.LEAF_MISMATCH),
        ("t.seals", IntegrityStatus.EVENT_MISSING),
    ]


def test_a_forged_seal_verifies_nothing(log: MemoryLog, trust, codec, anchor) -> None:
    forger = MemoryLog(codec, anchor, PrivateKeySet.generate())  # not registered
    written(forger, 1, T0)
    forger.seal(T0 + 20)
    events, refused = run([log.records[0], *forger.records], trust)
    assert len(events) == 1  # the registration only
    assert {r.reason for r in refused} == {RefusalReason.INTEGRITY, RefusalReason.UNSEALED}


def test_a_forged_registration_is_refused_by_the_anchor(codec, keys, trust) -> None:
    rogue = MemoryLog(codec, PrivateKeySet.generate("rogue-root"), keys)
    rogue.register()
    written(rogue, 1, T0)
    rogue.seal(T0 + 20)
    events, refused = run(rogue.records, trust)
    assert events == []
    assert refused[0].reason is RefusalReason.FORGED_CONTROL


def test_a_missing_seal_leaves_the_event_unsealed(log: MemoryLog, trust) -> None:
    written(log, 1, T0)
    events, refused = run(log.records, trust)
    assert len(events) == 1
    assert [(r.reason, r.statuses) for r in refused] == [
        (RefusalReason.UNSEALED, (IntegrityStatus.UNSEALED_TIMEOUT,))
    ]


def test_undecodable_records_are_refused(log: MemoryLog, trust) -> None:
    written(log, 1, T0)
    log.seal(T0 + 20)
    log.append(Topic.ENTRIES, 0, b"\x00garbage", T0 // 1000)
    events, refused = run(log.records, trust)
    assert len(events) == 2
    assert [r.reason for r in refused] == [RefusalReason.UNDECODABLE]


def test_until_cuts_each_partition_at_its_first_later_event(log: MemoryLog, trust) -> None:
    written(log, 1, T0)
    written(log, 2, T0 + 1_000)
    written(log, 3, T0 + 500, partition=1)
    written(log, 4, T0 + 400)  # behind the cut in partition 0: not applied
    log.seal(T0 + 2_000)
    replay = VerifiedReplay(ListSource(log.records), trust, until_us=T0 + 500)
    events = list(replay.events())
    got = sorted((e.partition, e.offset) for e in events if not e.anchor_signed)
    assert got == [(0, 0), (1, 0)]
    assert replay.cut == {("t.entries", 0): 1}
    assert replay.refused == []
    # A continuing run from where this one stands applies the rest, exactly once.
    from cachet.ledger.checkpoint import VerifierCheckpoint

    rows = replay.verifier.take_checkpoint()
    more = VerifiedReplay(
        ListSource(log.records),
        trust,
        checkpoint=VerifierCheckpoint.from_rows({k: v for k, v in rows.items() if v is not None}),
        start=replay.positions(),
    )
    rest = [e for e in more.events() if not e.anchor_signed]
    assert sorted((e.partition, e.offset) for e in rest) == [(0, 1), (0, 2)]
    assert more.refused == []


@pytest.mark.tamper
def test_a_genuine_record_copied_again_is_refused_as_a_duplicate(log: MemoryLog, trust) -> None:
    a = written(log, 1, T0)
    log.seal(T0 + 20)
    copy = log.append(Topic.ENTRIES, a.partition, a.raw, a.timestamp_ms)
    events, refused = run(log.records, trust)
    assert [e.offset for e in events if e.topic == a.topic] == [a.offset]
    assert [(r.offset, r.statuses[0]) for r in refused] == [
        (copy.offset, IntegrityStatus.DUPLICATE_EVENT)
    ]


@pytest.mark.tamper
def test_a_genuine_record_copied_onto_another_topic_is_refused(log: MemoryLog, trust) -> None:
    read = log.emit(EventType.CACHE_READ, T0)
    log.seal(T0 + 20)
    moved = log.append(Topic.ENTRIES, 0, read.raw, read.timestamp_ms)
    events, refused = run(log.records, trust)
    assert all(e.topic != moved.topic for e in events)
    assert [(r.topic, r.statuses[0]) for r in refused] == [
        (moved.topic, IntegrityStatus.LEAF_MISMATCH)
    ]


@pytest.mark.tamper
def test_a_revocation_later_in_the_log_refuses_seals_after_the_compromise(
    log: MemoryLog, trust, anchor
) -> None:
    """The key registry is read to its end before any seal is judged: a seal
    made after the compromise is refused although the revocation comes later
    in the log than the seal (a one-pass read would have accepted it)."""
    from cachet.crypto.registry import RevocationReason
    from cachet.ledger.registration import revocation_payload
    from cachet.schemas.events import new_event

    written(log, 1, T0)
    log.seal(T0 + 20)
    payload = revocation_payload(
        log.identity, log.keys.key_set_id, T0, RevocationReason.KEY_COMPROMISE, anchor
    )
    revoked = new_event(
        EventType.SIGNING_KEY_REVOKED, payload, producer_id="keys-admin@0", producer_seq=0
    )
    log.append(Topic.CONTROL, 0, log.codec.encode(revoked), T0 // 1000 + 1_000)
    events, refused = run(log.records, trust)
    assert not any(e.topic == "t.entries" for e in events)
    assert IntegrityStatus.REVOKED_KEY in {r.statuses[0] for r in refused}
