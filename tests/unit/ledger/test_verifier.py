"""The pure seal verifier, no broker: one test per check, and the invariants.

Each check of :class:`SealVerifier` has a test here that fails when that one
check is removed (issue: "every check in a verifier has a test that fails
when the check is removed"). Where a removed check is still caught by a
backup check, the test says which.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace

import pytest

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import (
    KeyRegistry,
    registration_statement,
    revocation_statement,
    rotation_statement,
    sign_statement,
)
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet, SealHeader, leaf_topics_digest, seal_hash, sign_header
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.identity import GENESIS_SEAL_HASH
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, IntegrityStatus, Outcome, Rejected, SealVerifier
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event

REQUIRED = tuple(SignatureScheme)
PREFIX = "t."
ENTRIES = "t.entries"
IDENTITY = "node-a"
PID = "node-a@01"
T0 = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="module")
def keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def keys2() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


@dataclass
class Producer:
    """A sealing producer in memory: events, then a seal over them."""

    codec: EventCodec
    keys: PrivateKeySet
    pid: str = PID
    seq: int = 0
    seal_seq: int = 0
    prev: bytes = GENESIS_SEAL_HASH
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    seal_offset: int = 0

    def batch(
        self, n: int, topic: str = "entries", partition: int = 0, at_us: int = T0
    ) -> tuple[list[tuple[Event, RecordOrigin]], tuple[Event, RecordOrigin]]:
        events: list[tuple[Event, RecordOrigin]] = []
        raws: list[bytes] = []
        first = self.seq
        for i in range(n):
            payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
            payload["key_hash"] = self.seq.to_bytes(32, "big")
            e = new_event(
                EventType.CACHE_WRITTEN,
                payload,
                producer_id=self.pid,
                producer_seq=self.seq,
                seal_ref=SealRef(self.seal_seq, i),
            )
            raw = self.codec.encode(e)
            raws.append(raw)
            events.append((e, self.origin(PREFIX + topic, partition, raw)))
            self.seq += 1
        return events, self.seal(raws, first, [topic] * n, at_us)

    def origin(self, topic: str, partition: int, raw: bytes) -> RecordOrigin:
        off = self.offsets.get((topic, partition), 0)
        self.offsets[(topic, partition)] = off + 1
        return RecordOrigin(topic, partition, off, None, 0, (), raw)

    def seal(
        self,
        raws: Sequence[bytes],
        first: int,
        topics: Sequence[str],
        at_us: int,
        *,
        keys: PrivateKeySet | None = None,
        prev: bytes | None = None,
        drop_scheme: SignatureScheme | None = None,
    ) -> tuple[Event, RecordOrigin]:
        keys = keys or self.keys
        leaves = [leaf_hash(r) for r in raws]
        header = SealHeader(
            producer_id=self.pid,
            seal_seq=self.seal_seq,
            tree_size=len(leaves),
            first_producer_seq=first,
            merkle_root=root_from_leaf_hashes(leaves),
            prev_seal_hash=self.prev if prev is None else prev,
            key_set_id=keys.key_set_id,
            sealed_at_us=at_us,
            leaf_topics_digest=leaf_topics_digest(list(topics)),
        )
        sigs = [s for s in sign_header(header, keys) if s.algorithm != drop_scheme]
        payload = {
            "producer_id": self.pid,
            "seal_seq": self.seal_seq,
            "prev_seal_hash": header.prev_seal_hash,
            "merkle_root": header.merkle_root,
            "tree_size": header.tree_size,
            "first_producer_seq": first,
            "leaf_hashes": leaves,
            "leaf_topics": list(topics),
            "key_set_id": keys.key_set_id,
            "signatures": [
                {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature}
                for s in sigs
            ],
            "sealed_at_us": at_us,
        }
        event = new_event(EventType.SEAL, payload, producer_id=self.pid, producer_seq=self.seal_seq)
        raw = self.codec.encode(event)
        self.prev = seal_hash(header, sigs)
        self.seal_seq += 1
        origin = RecordOrigin(PREFIX + "seals", 0, self.seal_offset, None, 0, (), raw)
        self.seal_offset += 1
        return event, origin


def registry(anchor: PrivateKeySet, keys: PrivateKeySet, valid_from: int = 0) -> KeyRegistry:
    reg = KeyRegistry(anchor.public(), REQUIRED)
    statement = registration_statement(IDENTITY, keys.public(), valid_from)
    reg.register(IDENTITY, keys.public(), valid_from, sign_statement(statement, anchor))
    return reg


def verifier(reg: KeyRegistry, **kw: object) -> SealVerifier:
    return SealVerifier(reg, REQUIRED, {"entries"}, 5.0, topic_prefix=PREFIX, **kw)  # type: ignore[arg-type]


def applied(outcomes: list[Outcome]) -> list[int]:
    return [o.event.producer_seq for o in outcomes if isinstance(o, Applied)]


def statuses(outcomes: list[Outcome]) -> list[IntegrityStatus]:
    return [o.status for o in outcomes if isinstance(o, Rejected)]


def feed(v: SealVerifier, events, seal, now: float = 0.0) -> list[Outcome]:
    out: list[Outcome] = []
    for e, o in events:
        out += v.on_event(e, o, now)
    out += v.on_seal(seal[0], seal[1], now)
    return out


# --------------------------------------------------------------- happy path


def test_sealed_events_apply_in_log_order(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(4)
    out = feed(v, events, seal)
    assert applied(out) == [0, 1, 2, 3] and not statuses(out)


# ------------------------------------------------------------ seal checks


def test_chain_link_to_a_foreign_previous_hash_is_refused(anchor, keys, codec) -> None:
    """The previous-seal-hash check alone: right number, valid signatures,
    foreign prev hash (removing the chain check makes this test fail)."""
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    feed(v, *p.batch(1))
    events, _ = p.batch(1)
    p.seal_seq -= 1  # re-seal the same seq with a foreign previous hash
    seal = p.seal([events[0][1].raw], 1, ["entries"], T0, prev=bytes(range(32)))
    out = feed(v, events, seal)
    assert statuses(out) == [IntegrityStatus.CHAIN_BROKEN]
    assert not applied(out)


def test_seal_missing_one_required_signature_line_is_refused(anchor, keys, codec) -> None:
    for scheme in SignatureScheme:
        v = verifier(registry(anchor, keys))
        p = Producer(codec, keys)
        events, _ = p.batch(2)
        p.seal_seq -= 1
        seal = p.seal([o.raw for _, o in events], 0, ["entries"] * 2, T0, drop_scheme=scheme)
        out = feed(v, events, seal)
        assert IntegrityStatus.SIGNATURE_MISSING in out[0].statuses  # type: ignore[union-attr]
        assert not applied(out)
        assert v.waiting_count == 2  # held, never applied: they time out later


def test_required_schemes_are_all_enforced(anchor, keys, codec) -> None:
    """A verifier handed every scheme refuses a seal signed with one only;
    one handed a single scheme would accept it (the weakened set is visible)."""
    p = Producer(codec, keys)
    events, _ = p.batch(1)
    p.seal_seq -= 1
    only_ml = [s for s in SignatureScheme if s is not SignatureScheme.ML_DSA_65]
    seal = p.seal([events[0][1].raw], 0, ["entries"], T0, drop_scheme=only_ml[0])
    p.seal_seq -= 1
    seal2 = p.seal([events[0][1].raw], 0, ["entries"], T0, drop_scheme=only_ml[1])
    assert statuses(feed(verifier(registry(anchor, keys)), events, seal)) == [
        IntegrityStatus.SIGNATURE_MISSING
    ]
    assert statuses(feed(verifier(registry(anchor, keys)), events, seal2)) == [
        IntegrityStatus.SIGNATURE_MISSING
    ]


def test_sequence_gap_and_replayed_seal(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    first = p.batch(1)
    feed(v, *first)
    p.batch(1)  # seal 1 is dropped
    events, seal = p.batch(1)
    out = feed(v, events, seal)
    # The gap check fires first; without it the chain check would (prev is seal 1's).
    assert statuses(out)[0] is IntegrityStatus.SEQUENCE_GAP
    out = v.on_seal(first[1][0], replace(first[1][1], offset=99), 0.0)
    assert statuses(out) == [IntegrityStatus.SEAL_REPLAYED]


def test_seal_by_a_retired_key_after_rotation_is_refused(anchor, keys, keys2, codec) -> None:
    reg = registry(anchor, keys)
    rotated_at = T0 + 1_000
    statement = rotation_statement(IDENTITY, keys.key_set_id, keys2.public(), rotated_at)
    reg.rotate(
        IDENTITY, keys.key_set_id, keys2.public(), rotated_at, sign_statement(statement, anchor)
    )
    v = verifier(reg)
    p = Producer(codec, keys)
    events, seal = p.batch(1, at_us=rotated_at + 1)  # made with the retired key afterwards
    out = feed(v, events, seal)
    assert statuses(out) == [IntegrityStatus.RETIRED_KEY] and not applied(out)
    # The new key set seals fine from the rotation on.
    p2 = Producer(codec, keys2, pid="node-a@02")
    assert applied(feed(v, *p2.batch(1, partition=1, at_us=rotated_at + 1))) == [0]


def test_seal_by_a_revoked_key_after_compromise_is_refused(anchor, keys, codec) -> None:
    reg = registry(anchor, keys)
    at = T0 + 1_000
    statement = revocation_statement(IDENTITY, keys.key_set_id, at, "key-compromise")
    reg.revoke(IDENTITY, keys.key_set_id, at, "key-compromise", sign_statement(statement, anchor))
    v = verifier(reg)
    p = Producer(codec, keys)
    assert applied(feed(v, *p.batch(1, at_us=at - 1))) == [0]  # before: still valid
    out = feed(v, *p.batch(1, at_us=at + 1))
    assert statuses(out) == [IntegrityStatus.REVOKED_KEY]


# ----------------------------------------------------------- event checks


def test_offset_regressed(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    feed(v, events, seal)
    e, o = events[1]
    out = v.on_event(e, replace(o, offset=0), 0.0)
    assert statuses(out) == [IntegrityStatus.OFFSET_REGRESSED]


def test_leaf_bytes_and_topic_are_checked(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    e, o = events[0]
    tampered = o.raw[:-1] + bytes([o.raw[-1] ^ 1])
    out = v.on_event(e, replace(o, raw=tampered), 0.0)
    out += v.on_seal(*seal, 0.0)
    assert statuses(out) == [IntegrityStatus.LEAF_MISMATCH]
    # The genuine second event, copied onto another topic this verifier reads.
    v2 = SealVerifier(registry(anchor, keys), REQUIRED, {"entries", "reads"}, topic_prefix=PREFIX)
    e, o = events[1]
    out = v2.on_seal(*seal, 0.0) + v2.on_event(e, replace(o, topic="t.reads"), 0.0)
    assert statuses(out) == [IntegrityStatus.LEAF_MISMATCH]


def test_event_reordered_within_a_partition(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    (e0, o0), (e1, o1) = events
    out = v.on_seal(*seal, 0.0)
    out += v.on_event(e1, replace(o1, offset=0), 0.0)
    out += v.on_event(e0, replace(o0, offset=1), 0.0)
    assert applied(out) == [1]
    assert statuses(out) == [IntegrityStatus.EVENT_REORDERED]


def test_duplicate_in_one_run(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    feed(v, events, seal)
    e, o = events[0]
    out = v.on_event(e, replace(o, offset=10), 0.0)
    assert statuses(out) == [IntegrityStatus.DUPLICATE_EVENT]


def test_event_without_seal_ref_is_not_sealed(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, _ = p.batch(1)
    e, o = events[0]
    out = v.on_event(replace(e, seal_ref=None), o, 0.0)
    assert statuses(out) == [IntegrityStatus.NOT_SEALED]


def test_missing_event_and_unsealed_timeout(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    out = v.on_event(*events[0], 0.0) + v.on_seal(*seal, 0.0)
    assert applied(out) == [0]
    assert statuses(v.expire(10.0)) == [IntegrityStatus.EVENT_MISSING]
    lone, _ = p.batch(1)  # its seal never comes
    assert v.on_event(*lone[0], 20.0) == []
    assert statuses(v.expire(30.0)) == [IntegrityStatus.UNSEALED_TIMEOUT]


# ------------------------------------------------------------ invariants


def test_forged_record_changes_nothing(anchor, keys, codec) -> None:
    """Verify before you remember: a forged record claiming a real producer's
    id with a huge sequence number is refused and leaves no trace."""
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    feed(v, *p.batch(1))
    before = v.take_checkpoint()
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    forged = new_event(
        EventType.CACHE_WRITTEN,
        payload,
        producer_id=PID,
        producer_seq=2**62,
        seal_ref=SealRef(0, 0),
    )
    raw = codec.encode(forged)
    out = v.on_event(forged, p.origin(ENTRIES, 1, raw), 1.0)
    assert statuses(out) == [IntegrityStatus.LEAF_MISMATCH]
    assert v.take_checkpoint() == {}  # nothing changed
    assert before  # (and the first checkpoint did hold the chain)
    # The producer's next genuine events still apply.
    assert applied(feed(v, *p.batch(2, partition=1))) == [1, 2]


def test_waiting_event_holds_back_its_partition(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    a = Producer(codec, keys)
    b = Producer(codec, keys, pid="node-a@02")
    a_events, a_seal = a.batch(1)
    b.offsets = a.offsets  # same partition, b's event behind a's
    b_events, b_seal = b.batch(1)
    out = v.on_event(*a_events[0], 0.0) + v.on_event(*b_events[0], 0.0)
    out += v.on_seal(*b_seal, 0.0)
    assert applied(out) == []  # b waits behind a, in log order
    out = v.on_seal(*a_seal, 0.0)
    assert [(o.event.producer_id) for o in out if isinstance(o, Applied)] == [PID, "node-a@02"]


def test_replay_after_restart_is_refused(anchor, keys, codec) -> None:
    """Durable replay protection: a checkpoint restored into a new verifier
    (a restart) refuses a genuine event re-produced later."""
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(3)
    out = feed(v, events[:2], seal)  # the third is still to come
    assert applied(out) == [0, 1]
    rows = {k: val for k, val in v.take_checkpoint().items() if val is not None}
    restarted = verifier(registry(anchor, keys))
    restarted.restore(VerifierCheckpoint.from_rows(rows), codec.decode, 0.0)
    # The one not yet applied still applies after the restart, without its seal re-read.
    assert applied(restarted.on_event(*events[2], 1.0)) == [2]
    e, o = events[0]
    assert statuses(restarted.on_event(e, replace(o, offset=50), 1.0)) == [
        IntegrityStatus.DUPLICATE_EVENT
    ]
    assert restarted.expire(100.0) == []  # nothing missing: no false alarm
    # Once closed, the seal's events are refused even after it left every cache.
    rows2 = dict(rows)
    for k, val in restarted.take_checkpoint().items():
        if val is None:
            rows2.pop(k, None)
        else:
            rows2[k] = val
    again = verifier(registry(anchor, keys))
    again.restore(VerifierCheckpoint.from_rows(rows2), codec.decode, 0.0)
    e, o = events[2]
    assert statuses(again.on_event(e, replace(o, offset=60), 1.0)) == [
        IntegrityStatus.DUPLICATE_EVENT
    ]


def test_seals_wait_for_the_registry_to_catch_up(anchor, keys, codec) -> None:
    reg = KeyRegistry(anchor.public(), REQUIRED)
    v = verifier(reg, registry_ready=False)
    p = Producer(codec, keys)
    events, seal = p.batch(1)
    assert feed(v, events, seal, 0.0) == []
    assert v.expire(100.0) == []  # nothing times out before the registry is read
    statement = registration_statement(IDENTITY, keys.public(), 0)
    reg.register(IDENTITY, keys.public(), 0, sign_statement(statement, anchor))
    assert applied(v.on_registry_caught_up(100.0)) == [0]


def test_seal_whose_envelope_names_another_producer_is_malformed(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, (seal, origin) = p.batch(1)
    out = v.on_seal(replace(seal, producer_id="node-a@99"), origin, 0.0)
    assert statuses(out) == [IntegrityStatus.SEAL_MALFORMED]


def test_event_at_a_leaf_its_sequence_does_not_match(anchor, keys, codec) -> None:
    """A key holder that seals an event whose producer seq is not the one its
    leaf position implies, or a leaf index beyond the tree: refused, not
    applied (the leaf hash matches: only this check sees it)."""
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    wrong_seq = new_event(
        EventType.CACHE_WRITTEN, payload, producer_id=PID, producer_seq=7, seal_ref=SealRef(0, 0)
    )
    beyond = new_event(
        EventType.CACHE_WRITTEN, payload, producer_id=PID, producer_seq=1, seal_ref=SealRef(0, 5)
    )
    raws = [codec.encode(wrong_seq), codec.encode(beyond)]
    seal = p.seal(raws, 0, ["entries", "entries"], T0)
    out = v.on_seal(*seal, 0.0)
    out += v.on_event(wrong_seq, p.origin(ENTRIES, 0, raws[0]), 0.0)
    out += v.on_event(beyond, p.origin(ENTRIES, 0, raws[1]), 0.0)
    assert statuses(out) == [IntegrityStatus.LEAF_MISMATCH, IntegrityStatus.LEAF_MISMATCH]
    assert not applied(out)


def test_duplicate_while_its_seal_is_still_open(anchor, keys, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys)
    events, seal = p.batch(3)
    out = feed(v, events[:1], seal)
    assert applied(out) == [0]
    e, o = events[0]
    out = v.on_event(e, replace(o, offset=10), 0.0)
    assert statuses(out) == [IntegrityStatus.DUPLICATE_EVENT]


def test_seal_of_an_unregistered_key_times_out_as_unknown_key(anchor, keys, keys2, codec) -> None:
    v = verifier(registry(anchor, keys))
    p = Producer(codec, keys2)  # never registered
    events, seal = p.batch(1)
    assert feed(v, events, seal, 0.0) == []
    out = v.expire(10.0)
    assert IntegrityStatus.UNKNOWN_KEY in statuses(out)
    assert IntegrityStatus.UNSEALED_TIMEOUT in statuses(out)
    assert not applied(out)


def test_timeouts_count_only_once_the_other_side_of_the_log_was_read(anchor, keys, codec) -> None:
    """A node rebuilding a long log reads data faster than seals (or the other
    way round): nothing may time out while the other side is still being read,
    else a rebuild refuses genuine events and disagrees with the live view."""
    v = verifier(registry(anchor, keys), seals_current=False, data_current=False)
    p = Producer(codec, keys)
    events, seal = p.batch(2)
    assert v.on_event(*events[0], 0.0) == []
    assert v.expire(100.0) == []  # seals not read to the end yet: still waiting
    v.on_seals_caught_up(100.0)
    assert statuses(v.expire(106.0)) == [IntegrityStatus.UNSEALED_TIMEOUT]
    # A verified seal whose events the data side has not reached yet.
    w = verifier(registry(anchor, keys), data_current=False)
    assert w.on_seal(*seal, 0.0) == []
    assert w.expire(100.0) == []
    assert applied(w.on_event(*events[0], 100.0)) == [0]
    w.on_data_caught_up(100.0)
    assert statuses(w.expire(106.0)) == [IntegrityStatus.EVENT_MISSING]
