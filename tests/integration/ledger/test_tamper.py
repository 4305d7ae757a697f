"""The tamper battery: an attacker who can write the Kafka log but holds no
private key. Every attack must be detected with the right status, and the
tampered event must never be applied."""

from __future__ import annotations

from dataclasses import replace

import pytest
from confluent_kafka import Producer

from cachet.crypto.registry import RevocationReason
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.ledger.registration import revocation_payload
from cachet.ledger.verifier import IntegrityStatus
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.topics import Topic
from tests.integration.ledger_support import Ledger, Record, emit_sample, read_all

pytestmark = [pytest.mark.integration, pytest.mark.tamper]

N = 8  # events, sealed in batches of 4 -> 2 seals
TOPICS = [Topic.ENTRIES, Topic.READS, Topic.SEALS]


def genuine(
    ledger: Ledger,
    staging: Ledger,
    keys: PrivateKeySet,
    identity: str = "svc",
    n: int = N,
    batch: int = 4,
    register: bool = True,
) -> list[Record]:
    """A real producer's records (events then seals), written to staging."""
    if register:
        ledger.register(identity, keys)
    # Batches close by count only (a long window): a window closing early
    # under load would add a seal and change the record count.
    sp = staging.sealing_producer(identity, keys, batch=batch, window_ms=60_000)
    emit_sample(sp, n)
    sp.close()
    return read_all(staging.servers, staging.names, TOPICS, n + -(-n // batch))


def events(records: list[Record]) -> list[Record]:
    return [r for r in records if r.topic is not Topic.SEALS]


def seals(records: list[Record]) -> list[Record]:
    return [r for r in records if r.topic is Topic.SEALS]


def decoded(codec: EventCodec, r: Record) -> Event:
    return codec.decode(r.value)


def reencoded_seal(codec: EventCodec, r: Record, **changes) -> Record:
    e = codec.decode(r.value)
    payload = dict(e.payload)
    for k, fn in changes.items():
        payload[k] = fn(payload[k])
    return replace(r, value=codec.encode(replace(e, payload=payload)))


def flip(data: bytes, index: int, bit: int = 0) -> bytes:
    b = bytearray(data)
    b[index] ^= 1 << bit
    return bytes(b)


def seq_of(codec: EventCodec, r: Record) -> int:
    return codec.decode(r.value).producer_seq


def test_bit_flip_in_an_event(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys)
    victim = events(recs)[0]
    key_hash = codec.decode(victim.value).payload["key_hash"]
    pos = victim.value.index(key_hash) + 5  # inside a bytes field: still decodes
    tampered = replace(victim, value=flip(victim.value, pos))
    victim_seq = seq_of(codec, victim)
    ledger.copy([tampered if r is victim else r for r in recs])
    run = ledger.verify(until=lambda r: len(r.applied) >= N - 1 and r.rejected)
    assert IntegrityStatus.LEAF_MISMATCH in run.statuses()
    assert victim_seq not in run.applied_seqs
    assert len(run.applied) == N - 1


@pytest.mark.parametrize(
    "scheme_index, status",
    [
        (0, IntegrityStatus.SIGNATURE_INVALID_ML_DSA_65),
        (1, IntegrityStatus.SIGNATURE_INVALID_FN_DSA_512),
        (2, IntegrityStatus.SIGNATURE_INVALID_SLH_DSA_SHA2_128F),
    ],
)
def test_bit_flip_in_each_signature(
    ledger, staging, producer_keys, codec, scheme_index, status
) -> None:
    recs = genuine(ledger, staging, producer_keys)
    first_seal = seals(recs)[0]

    def corrupt(sigs):
        sigs = [dict(s) for s in sigs]
        sigs[scheme_index]["signature"] = flip(sigs[scheme_index]["signature"], 17, 3)
        return sigs

    bad = reencoded_seal(codec, first_seal, signatures=corrupt)
    ledger.copy([bad if r is first_seal else r for r in recs])
    run = ledger.verify(until=lambda r: len(r.applied) >= 4 and r.rejected, settle_s=0.5)
    assert status in run.statuses()
    covered = {seq_of(codec, r) for r in events(recs)} & set(range(4))
    assert not covered & run.applied_seqs, "events of a forged seal must not be applied"


def test_bit_flip_in_the_root(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys)
    s0 = seals(recs)[0]
    bad = reencoded_seal(codec, s0, merkle_root=lambda root: flip(root, 0))
    ledger.copy([bad if r is s0 else r for r in recs])
    run = ledger.verify(until=lambda r: bool(r.rejected), settle_s=0.5)
    assert IntegrityStatus.ROOT_MISMATCH in run.statuses()
    assert not run.applied_seqs & set(range(4))


def test_forged_leaf_hashes_to_cover_a_forged_event(ledger, staging, producer_keys, codec) -> None:
    """Swap in an attacker's event and its leaf hash: the root no longer matches."""
    recs = genuine(ledger, staging, producer_keys)
    victim = events(recs)[0]
    e = codec.decode(victim.value)
    forged = codec.encode(replace(e, payload={**e.payload, "namespace": "forged"}))
    idx = e.seal_ref.leaf_index
    from cachet.crypto.merkle import leaf_hash

    def swap(leaves):
        leaves = list(leaves)
        leaves[idx] = leaf_hash(forged)
        return leaves

    s0 = seals(recs)[0]
    bad_seal = reencoded_seal(codec, s0, leaf_hashes=swap)
    out = [replace(r, value=forged) if r is victim else bad_seal if r is s0 else r for r in recs]
    ledger.copy(out)
    run = ledger.verify(until=lambda r: bool(r.rejected), settle_s=0.5)
    assert IntegrityStatus.ROOT_MISMATCH in run.statuses()
    assert e.producer_seq not in run.applied_seqs


def test_dropped_event(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys)
    victim = events(recs)[2]
    ledger.copy([r for r in recs if r is not victim])
    run = ledger.verify(until=lambda r: bool(r.rejected), unsealed_timeout_s=1.0, timeout_s=8)
    assert IntegrityStatus.EVENT_MISSING in run.statuses()
    assert len(run.applied) == N - 1


def test_duplicated_event(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys)
    victim = events(recs)[1]
    ledger.copy(recs + [victim])
    run = ledger.verify(until=lambda r: len(r.applied) >= N and r.rejected)
    assert IntegrityStatus.DUPLICATE_EVENT in run.statuses()
    assert len(run.applied) == N, "the duplicate is not applied a second time"


def test_reordered_events(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys, n=12)
    evs = events(recs)
    # Two events of one producer in one partition, written in swapped order.
    pairs = [
        (a, b)
        for i, a in enumerate(evs)
        for b in evs[i + 1 :]
        if a.topic is b.topic and a.partition == b.partition
    ]
    a, b = pairs[0]
    out = [b if r is a else a if r is b else r for r in recs]
    ledger.copy(out)
    run = ledger.verify(until=lambda r: bool(r.rejected) and len(r.applied) >= 11, settle_s=0.3)
    assert IntegrityStatus.EVENT_REORDERED in run.statuses()
    assert seq_of(codec, a) not in run.applied_seqs


def test_replayed_old_seal(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys)
    s0 = seals(recs)[0]
    ledger.copy(recs + [s0])
    run = ledger.verify(until=lambda r: len(r.applied) >= N and r.rejected)
    assert IntegrityStatus.SEAL_REPLAYED in run.statuses()
    assert len(run.applied) == N


def test_dropped_seal_is_a_sequence_gap(ledger, staging, producer_keys, codec) -> None:
    recs = genuine(ledger, staging, producer_keys, n=12)
    s1 = seals(recs)[1]
    ledger.copy([r for r in recs if r is not s1])
    run = ledger.verify(
        until=lambda r: IntegrityStatus.UNSEALED_TIMEOUT in r.statuses(), unsealed_timeout_s=1.0
    )
    assert IntegrityStatus.SEQUENCE_GAP in run.statuses()
    assert run.applied_seqs == set(range(4)), "only the first seal's events are applied"


def test_seal_by_an_unregistered_key(ledger, staging, producer_keys, other_keys, codec) -> None:
    ledger.register("svc", producer_keys)
    recs = genuine(ledger, staging, other_keys, register=False)  # signed, but never registered
    ledger.copy(recs)
    run = ledger.verify(
        until=lambda r: IntegrityStatus.UNKNOWN_KEY in r.statuses(), unsealed_timeout_s=1.0
    )
    assert IntegrityStatus.UNKNOWN_KEY in run.statuses()
    assert not run.applied


def test_seal_by_a_revoked_key_after_compromise(
    ledger, staging, producer_keys, anchor, codec
) -> None:
    recs = genuine(ledger, staging, producer_keys)
    first_sealed_at = decoded(codec, seals(recs)[0]).payload["sealed_at_us"]
    second_sealed_at = decoded(codec, seals(recs)[1]).payload["sealed_at_us"]
    compromise = (
        (first_sealed_at + second_sealed_at) // 2
        if second_sealed_at > first_sealed_at
        else second_sealed_at
    )
    publish_control(
        Producer(producer_settings(ledger.servers)),
        codec,
        ledger.names,
        EventType.SIGNING_KEY_REVOKED,
        revocation_payload(
            "svc", producer_keys.key_set_id, compromise, RevocationReason.KEY_COMPROMISE, anchor
        ),
    )
    ledger.copy(recs)
    run = ledger.verify(until=lambda r: bool(r.rejected) and len(r.applied) >= 4, settle_s=0.5)
    assert IntegrityStatus.REVOKED_KEY in run.statuses()
    assert run.applied_seqs == set(range(4)), "seals before the compromise stay valid"


def test_forged_registration(ledger, staging, producer_keys, other_keys, codec) -> None:
    """A registration signed by a key that is not the trust anchor is refused,
    and the seals of the key it tried to register stay unverified."""
    ledger.register("svc", other_keys, anchor=other_keys)  # self-signed: forged
    recs = genuine(ledger, staging, other_keys, register=False)
    ledger.copy(recs)
    run = ledger.verify(until=lambda r: len(r.rejected) >= 2, unsealed_timeout_s=1.0)
    assert IntegrityStatus.UNKNOWN_KEY in run.statuses()
    assert any("forged" in r.detail for r in run.rejected)
    assert not run.applied
