"""Cache Attestation Bundles: build, format, and a verifier that refuses
every forgery. The attacker here can rewrite any byte of a bundle and build
bundles of their own, but holds neither the anchor's nor the producer's keys.
"""

from __future__ import annotations

import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, replace

import pytest

from cachet.cli.main import main
from cachet.crypto.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import registration_statement, sign_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    PrivateKeySet,
    SealHeader,
    SignatureLine,
    note_bytes,
    seal_hash,
    sign_header,
)
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.cab import (
    BundleReport,
    CabCheck,
    CabError,
    CheckOutcome,
    anchor_fingerprint,
    build_bundle,
    verify_bundle,
)
from cachet.ledger.cab_format import (
    CAB_MAGIC,
    Bundle,
    CabFormatError,
    Section,
    decode_bundle,
    encode_bundle,
    encode_key_set,
    encode_signature_lines,
    parse_key_set,
    parse_registration,
    parse_signature_lines,
    sections_of,
)
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, VerifiedSeal
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event

IDENTITY = "svc"
PRODUCER_ID = "svc@0a1b2c"
SEAL_SEQ = 3
FIRST_SEQ = 40
N_LEAVES = 5
LEAF = 2
SEALED_AT = 1_700_000_000_000_000


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate()  # id derived from the keys, as `keys init` makes


@pytest.fixture(scope="module")
def rogue_anchor() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def producer() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def rogue_producer() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


@dataclass(frozen=True)
class Made:
    """A sealed batch and the bundle of one of its events."""

    applied: Applied
    statement: bytes
    anchor_lines: tuple[SignatureLine, ...]
    anchor: KeySet
    data: bytes


def _sealed_event(
    codec: EventCodec,
    keys: PrivateKeySet,
    *,
    producer_id: str = PRODUCER_ID,
    seq_of_leaf: int | None = None,
    mutate_leaf: Callable[[bytes], bytes] | None = None,
) -> Applied:
    """A real batch of N_LEAVES events, sealed and signed; leaf LEAF applied.
    ``mutate_leaf`` rewrites leaf LEAF's bytes *before* sealing (a producer
    that seals bytes the codec would not write)."""
    events: list[Event] = []
    raws: list[bytes] = []
    for i in range(N_LEAVES):
        payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
        payload["key_hash"] = i.to_bytes(32, "big")
        seq = FIRST_SEQ + i if (i != LEAF or seq_of_leaf is None) else seq_of_leaf
        e = new_event(
            EventType.CACHE_WRITTEN,
            payload,
            producer_id=producer_id,
            producer_seq=seq,
            seal_ref=SealRef(SEAL_SEQ, i),
        )
        events.append(e)
        raw = codec.encode(e)
        raws.append(mutate_leaf(raw) if (i == LEAF and mutate_leaf) else raw)
    leaves = [leaf_hash(r) for r in raws]
    header = SealHeader(
        producer_id=producer_id,
        seal_seq=SEAL_SEQ,
        tree_size=N_LEAVES,
        first_producer_seq=FIRST_SEQ,
        merkle_root=root_from_leaf_hashes(leaves),
        prev_seal_hash=bytes(range(32)),
        key_set_id=keys.key_set_id,
        sealed_at_us=SEALED_AT,
        leaf_topics_digest=None,
    )
    sigs = sign_header(header, keys)
    seal_event = new_event(
        EventType.SEAL,
        {
            "signatures": [
                {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature}
                for s in sigs
            ]
        },
        producer_id=producer_id,
        producer_seq=0,
    )
    verified = VerifiedSeal(header, tuple(leaves), (), seal_hash(header, sigs), seal_event, None)
    origin = RecordOrigin("t.entries", 0, 7, None, 0, (), raws[LEAF])
    return Applied(events[LEAF], origin, verified)


def _make(
    codec: EventCodec,
    anchor: PrivateKeySet,
    keys: PrivateKeySet,
    *,
    identity: str = IDENTITY,
    valid_from: int = 0,
    **kw: object,
) -> Made:
    applied = _sealed_event(codec, keys, **kw)  # type: ignore[arg-type]
    statement = registration_statement(identity, keys.public(), valid_from)
    lines = sign_statement(statement, anchor)
    bundle = Bundle(
        event_bytes=applied.origin.raw,
        leaf_index=LEAF,
        tree_size=N_LEAVES,
        proof=tuple(inclusion_proof(LEAF, applied.seal.leaf_hashes)),
        seal_note=note_bytes(
            applied.seal.header,
            [
                SignatureLine(s["algorithm"], s["key_id"], s["signature"])
                for s in applied.seal.event.payload["signatures"]
            ],
        ),
        producer_key_set=keys.public(),
        registration=statement,
        registration_signatures=lines,
        anchor=anchor.public(),
    )
    return Made(applied, statement, lines, anchor.public(), encode_bundle(bundle))


@pytest.fixture(scope="module")
def made(codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet) -> Made:
    return _make(codec, anchor, producer)


def _verify(data: bytes, anchor: KeySet | None, codec: EventCodec, **kw: object) -> BundleReport:
    return verify_bundle(data, pinned_anchor=anchor, codec=codec, **kw)  # type: ignore[arg-type]


def _outcome(report: BundleReport, check: CabCheck) -> CheckOutcome:
    return next(c.outcome for c in report.checks if c.check is check)


def _failed(report: BundleReport) -> set[CabCheck]:
    return {c.check for c in report.failures}


# --- the genuine bundle ----------------------------------------------------------


def test_build_bundle_verifies_and_reports_every_check(made: Made, codec: EventCodec) -> None:
    data = build_bundle(made.applied, made.statement, made.anchor_lines, made.anchor)
    assert data == made.data, "build_bundle writes the documented bytes"
    report = _verify(data, made.anchor, codec)
    assert report.ok, report.failures
    # Every check but the read bundles' own (tests/unit/ledger/test_cab_read.py).
    assert [c.check for c in report.checks] == [c for c in CabCheck if c is not CabCheck.READ]
    assert all(c.outcome is CheckOutcome.PASSED for c in report.checks)
    assert report.event_id == made.applied.event.event_id
    assert report.producer_id == PRODUCER_ID
    assert report.producer_seq == FIRST_SEQ + LEAF
    assert (report.seal_seq, report.leaf_index, report.tree_size) == (SEAL_SEQ, LEAF, N_LEAVES)
    assert report.anchor_pinned
    assert report.anchor_fingerprint == anchor_fingerprint(made.anchor)
    assert report.to_json()["ok"] is True


def test_pinning_by_fingerprint_alone(made: Made, codec: EventCodec) -> None:
    report = _verify(made.data, None, codec, pinned_fingerprint=anchor_fingerprint(made.anchor))
    assert report.ok


def test_unpinned_bundle_is_not_verified_but_says_what_it_claims(
    made: Made, codec: EventCodec
) -> None:
    report = _verify(made.data, None, codec)
    assert not report.ok
    assert _failed(report) == {CabCheck.ANCHOR_PINNED}
    assert report.anchor_fingerprint in report.checks[1].detail


def test_the_envelope_check_may_only_be_skipped_without_a_codec(made: Made) -> None:
    import cachet.ledger.cab as cab

    cab._default_codec.cache_clear()
    try:
        original = cab._default_codec
        cab._default_codec = lambda: None  # type: ignore[assignment]
        report = verify_bundle(made.data, pinned_anchor=made.anchor)
    finally:
        cab._default_codec = original  # type: ignore[assignment]
    assert _outcome(report, CabCheck.ENVELOPE) is CheckOutcome.NOT_RUN
    assert report.ok, "the cryptographic checks need no Avro library"


# --- every byte counts -----------------------------------------------------------


def _section_spans(data: bytes) -> dict[Section, tuple[int, int]]:
    spans: dict[Section, tuple[int, int]] = {}
    pos = len(CAB_MAGIC) + 2
    for tag in sections_of(int.from_bytes(data[len(CAB_MAGIC) : pos], "big")):
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        spans[tag] = (pos, pos + 5 + length)
        pos += 5 + length
    return spans


def _signature_spans(data: bytes) -> list[tuple[int, int]]:
    """Byte ranges of base64 signature text (note and registration)."""
    out = []
    for tag in (Section.SEAL_NOTE, Section.REGISTRATION_SIGNATURES):
        start, end = _section_spans(data)[tag]
        body = data[start + 5 : end]
        pos = 0
        for line in body.split(b"\n"):
            if line.startswith("\u2014 ".encode()):
                sig_at = line.rindex(b" ") + 1
                out.append((start + 5 + pos + sig_at, start + 5 + pos + len(line)))
            pos += len(line) + 1
    return out


def _flip_positions(data: bytes, sample_per_signature: int = 48) -> list[int]:
    """Every byte outside signature base64, plus a sample inside each signature
    (its first and last bytes always: padding and trailing bits)."""
    rng = random.Random(20261101)
    positions: set[int] = set(range(len(data)))
    for start, end in _signature_spans(data):
        positions -= set(range(start, end))
        inner = list(range(start + 4, end - 4))
        positions |= set(range(start, start + 4)) | set(range(end - 4, end))
        positions |= set(rng.sample(inner, min(sample_per_signature, len(inner))))
    return sorted(positions)


def test_flipping_any_byte_fails_verification(made: Made, codec: EventCodec) -> None:
    positions = _flip_positions(made.data)
    assert len(positions) > 8000  # the whole non-signature part is covered
    accepted = []
    for pos in positions:
        tampered = bytearray(made.data)
        tampered[pos] ^= 0x01
        report = _verify(bytes(tampered), made.anchor, codec)
        if report.ok:
            accepted.append(pos)
    assert not accepted, f"flips accepted at byte positions {accepted[:20]}"


def test_flipping_a_high_bit_in_every_section_fails(made: Made, codec: EventCodec) -> None:
    for tag, (start, end) in _section_spans(made.data).items():
        for pos in (start, start + 1, start + 4, start + 5, (start + end) // 2, end - 1):
            tampered = bytearray(made.data)
            tampered[pos] ^= 0x80
            assert not _verify(bytes(tampered), made.anchor, codec).ok, (tag, pos)


# --- the anchor ------------------------------------------------------------------


def test_wrong_pinned_anchor_fails(
    made: Made, codec: EventCodec, rogue_anchor: PrivateKeySet
) -> None:
    report = _verify(made.data, rogue_anchor.public(), codec)
    assert not report.ok
    assert {CabCheck.ANCHOR_PINNED, CabCheck.REGISTRATION_SIGNED} <= _failed(report)
    fp = _verify(
        made.data, None, codec, pinned_fingerprint=anchor_fingerprint(rogue_anchor.public())
    )
    assert not fp.ok and CabCheck.ANCHOR_PINNED in _failed(fp)


def test_self_made_anchor_proves_nothing_when_an_anchor_is_pinned(
    made: Made,
    codec: EventCodec,
    rogue_anchor: PrivateKeySet,
    rogue_producer: PrivateKeySet,
) -> None:
    """The attacker builds a complete, internally consistent bundle: their own
    anchor registers their own producer keys, which seal a forged batch."""
    forged = _make(codec, rogue_anchor, rogue_producer)
    unpinned = _verify(forged.data, None, codec)
    assert _failed(unpinned) == {CabCheck.ANCHOR_PINNED}, "consistent, yet unpinned"
    pinned = _verify(forged.data, made.anchor, codec)
    assert not pinned.ok
    assert {CabCheck.ANCHOR_PINNED, CabCheck.REGISTRATION_SIGNED} <= _failed(pinned)
    by_fp = _verify(forged.data, None, codec, pinned_fingerprint=anchor_fingerprint(made.anchor))
    assert not by_fp.ok
    # Swapping only the anchor section of the genuine bundle fails too.
    genuine = decode_bundle(made.data)
    swapped = encode_bundle(replace(genuine, anchor=rogue_anchor.public()))
    assert CabCheck.ANCHOR_PINNED in _failed(_verify(swapped, made.anchor, codec))
    # A rogue anchor that borrows the real anchor's key set id gains nothing.
    borrowed = KeySet(made.anchor.key_set_id, dict(rogue_anchor.public().public_keys))
    relabelled = encode_bundle(replace(decode_bundle(forged.data), anchor=borrowed))
    assert not _verify(relabelled, made.anchor, codec).ok
    by_id = _verify(relabelled, None, codec, pinned_fingerprint=made.anchor.key_set_id)
    assert CabCheck.ANCHOR_PINNED in _failed(by_id)


# --- forgeries an attacker can assemble from real parts --------------------------


def test_registration_of_another_identity_does_not_vouch(
    codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet
) -> None:
    other = _make(codec, anchor, producer, identity="other-svc")
    report = _verify(other.data, anchor.public(), codec)
    assert _failed(report) == {CabCheck.REGISTRATION_MATCHES}


def test_seal_before_valid_from_fails(
    codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet
) -> None:
    late = _make(codec, anchor, producer, valid_from=SEALED_AT + 1)
    assert _failed(_verify(late.data, anchor.public(), codec)) == {CabCheck.KEY_VALID_AT_SEAL}
    exact = _make(codec, anchor, producer, valid_from=SEALED_AT)
    assert _verify(exact.data, anchor.public(), codec).ok


def test_swapped_producer_keys_and_self_signed_seal_fail(
    made: Made, codec: EventCodec, anchor: PrivateKeySet, rogue_producer: PrivateKeySet
) -> None:
    """The real registration, but a seal signed by the attacker's keys, and the
    attacker's keys in the key set section."""
    rogue = _sealed_event(codec, rogue_producer)
    header = replace(rogue.seal.header, key_set_id=made.applied.seal.header.key_set_id)
    sigs = sign_header(replace(header, key_set_id=rogue_producer.key_set_id), rogue_producer)
    genuine = decode_bundle(made.data)
    forged = replace(
        genuine,
        event_bytes=rogue.origin.raw,
        seal_note=note_bytes(header, sigs),
        producer_key_set=KeySet(header.key_set_id, dict(rogue_producer.public().public_keys)),
    )
    report = _verify(encode_bundle(forged), anchor.public(), codec)
    assert {CabCheck.REGISTRATION_MATCHES, CabCheck.SEAL_SIGNED} <= _failed(report)


def test_missing_required_signature_fails(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    for scheme in SignatureScheme:
        fewer_reg = [s for s in genuine.registration_signatures if s.algorithm != scheme.value]
        r = _verify(
            encode_bundle(replace(genuine, registration_signatures=tuple(fewer_reg))),
            made.anchor,
            codec,
        )
        assert _failed(r) == {CabCheck.REGISTRATION_SIGNED}, scheme
        from cachet.crypto.seal import parse_note

        header, sigs = parse_note(genuine.seal_note)
        note = note_bytes(header, [s for s in sigs if s.algorithm != scheme.value])
        r = _verify(encode_bundle(replace(genuine, seal_note=note)), made.anchor, codec)
        assert _failed(r) == {CabCheck.SEAL_SIGNED}, scheme
    # Requiring fewer schemes is the verifier's policy, not the bundle's.
    only_ml = tuple(
        s for s in genuine.registration_signatures if s.algorithm == SignatureScheme.ML_DSA_65
    )
    r = _verify(
        encode_bundle(replace(genuine, registration_signatures=only_ml)),
        made.anchor,
        codec,
        required=(SignatureScheme.ML_DSA_65,),
    )
    assert r.ok


def test_other_event_with_the_genuine_proof_fails(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    event = codec.decode(genuine.event_bytes)
    forged_event = codec.encode(replace(event, payload={**event.payload, "namespace": "forged"}))
    r = _verify(encode_bundle(replace(genuine, event_bytes=forged_event)), made.anchor, codec)
    assert CabCheck.INCLUSION in _failed(r)
    for index in (LEAF - 1, LEAF + 1):
        r = _verify(encode_bundle(replace(genuine, leaf_index=index)), made.anchor, codec)
        assert {CabCheck.INCLUSION, CabCheck.ENVELOPE} <= _failed(r)
    # A tree size that walks the same path (RFC 9162 does not commit to size).
    r = _verify(encode_bundle(replace(genuine, tree_size=N_LEAVES + 1)), made.anchor, codec)
    assert CabCheck.INCLUSION in _failed(r)
    r = _verify(encode_bundle(replace(genuine, proof=genuine.proof[:-1])), made.anchor, codec)
    assert CabCheck.INCLUSION in _failed(r)


def test_envelope_must_match_the_leaf_position(
    codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet
) -> None:
    """A producer bug or lie: the sealed event's seq is not first + leaf index."""
    odd = _make(codec, anchor, producer, seq_of_leaf=FIRST_SEQ + LEAF + 100)
    report = _verify(odd.data, anchor.public(), codec)
    assert _failed(report) == {CabCheck.ENVELOPE}
    with pytest.raises(CabError, match="event-envelope"):
        build_bundle(odd.applied, odd.statement, odd.anchor_lines, odd.anchor)


def test_build_refuses_a_registration_the_anchor_did_not_sign(
    made: Made, rogue_anchor: PrivateKeySet
) -> None:
    lines = sign_statement(made.statement, rogue_anchor)
    with pytest.raises(CabError, match="registration-signed-by-anchor"):
        build_bundle(made.applied, made.statement, lines, made.anchor)


# --- the rules of docs/cab-format.md, one test each ------------------------------
# Each test fails if the one check that enforces its rule is removed.


def test_anchor_key_set_id_must_be_its_fingerprint(
    made: Made, codec: EventCodec, producer: PrivateKeySet
) -> None:
    """Pinned by fingerprint, the id line of section 0x07 is covered by nothing
    else: it must be the fingerprint, or it could be rewritten freely."""
    fp = anchor_fingerprint(made.anchor)
    genuine = decode_bundle(made.data)
    relabelled = replace(genuine, anchor=KeySet("anchor-root", dict(made.anchor.public_keys)))
    report = _verify(encode_bundle(relabelled), None, codec, pinned_fingerprint=fp)
    assert _failed(report) == {CabCheck.ANCHOR_PINNED}
    assert "is not its fingerprint" in report.checks[1].detail
    # A consistent bundle under an anchor with a chosen label fails the same way,
    # even pinned by that very key set.
    labelled = PrivateKeySet.generate("anchor-root")
    other = _make(codec, labelled, producer)
    report = _verify(other.data, labelled.public(), codec)
    assert _failed(report) == {CabCheck.ANCHOR_PINNED}


def test_producer_key_set_id_must_be_its_fingerprint(
    codec: EventCodec, anchor: PrivateKeySet
) -> None:
    labelled = PrivateKeySet.generate("ks-chosen-label")
    made = _make(codec, anchor, labelled)
    report = _verify(made.data, anchor.public(), codec)
    assert _failed(report) == {CabCheck.REGISTRATION_MATCHES}
    assert "not the id derived from its keys" in next(
        c.detail for c in report.failures if c.check is CabCheck.REGISTRATION_MATCHES
    )
    with pytest.raises(CabError, match="registration-matches-seal"):
        build_bundle(made.applied, made.statement, made.anchor_lines, made.anchor)


def _note_lines(genuine: Bundle) -> tuple[SealHeader, tuple[SignatureLine, ...]]:
    from cachet.crypto.seal import parse_note

    return parse_note(genuine.seal_note)


def test_signature_lines_must_be_in_scheme_order(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    header, sigs = _note_lines(genuine)
    for reordered in ((sigs[1], sigs[0], sigs[2]), tuple(reversed(sigs))):
        note = note_bytes(header, reordered)
        _refused(
            encode_bundle(replace(genuine, seal_note=note)), codec, made.anchor, "scheme order"
        )
    lines = genuine.registration_signatures
    swapped = (lines[0], lines[2], lines[1])
    _refused(
        encode_bundle(replace(genuine, registration_signatures=swapped)),
        codec,
        made.anchor,
        "scheme order",
    )
    # Building puts lines into the one order (the log's order carries no meaning).
    rebuilt = build_bundle(made.applied, made.statement, swapped, made.anchor)
    assert rebuilt == made.data


def test_signature_lines_of_unknown_algorithms_are_refused(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    header, sigs = _note_lines(genuine)
    future = SignatureLine("ml-dsa-87", "00" * 16, b"not checked by anyone")
    note = note_bytes(header, (*sigs, future))
    _refused(
        encode_bundle(replace(genuine, seal_note=note)), codec, made.anchor, "unknown algorithm"
    )
    extra = (*genuine.registration_signatures, future)
    _refused(
        encode_bundle(replace(genuine, registration_signatures=extra)),
        codec,
        made.anchor,
        "unknown algorithm",
    )
    with pytest.raises(CabError, match="ml-dsa-87"):
        build_bundle(made.applied, made.statement, extra, made.anchor)


def test_decimal_fields_are_below_2_to_the_63(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    at = f"\nat {SEALED_AT}\n".encode()
    assert at in genuine.seal_note
    for value, parses in ((2**63 - 1, True), (2**63, False), (10**19, False), (10**20, False)):
        note = genuine.seal_note.replace(at, f"\nat {value}\n".encode())
        data = encode_bundle(replace(genuine, seal_note=note))
        if parses:  # in range: parses, and the signatures catch the change
            assert _failed(_verify(data, made.anchor, codec)) == {CabCheck.SEAL_SIGNED}
        else:
            _refused(data, codec, made.anchor, "canonical decimal integer")
    top = registration_statement(IDENTITY, genuine.producer_key_set, 2**63 - 1)
    assert parse_registration(top).valid_from_us == 2**63 - 1
    over = top.replace(b"valid-from 9223372036854775807", b"valid-from 9223372036854775808")
    with pytest.raises(CabFormatError, match="valid-from is out of range"):
        parse_registration(over)


def test_leaf_index_must_fit_an_avro_int(made: Made, codec: EventCodec) -> None:
    genuine = decode_bundle(made.data)
    with pytest.raises(CabError, match="leaf index"):
        encode_bundle(replace(genuine, leaf_index=2**31))
    start, end = _section_spans(made.data)[Section.INCLUSION]
    body = made.data[start + 5 : end]

    def with_leaf_index(index: int) -> bytes:
        value = index.to_bytes(8, "big") + body[8:]
        section = bytes([Section.INCLUSION]) + len(value).to_bytes(4, "big") + value
        return made.data[:start] + section + made.data[end:]

    _refused(with_leaf_index(2**31), codec, made.anchor, "Avro int")
    _refused(with_leaf_index(2**63 - 1), codec, made.anchor, "Avro int")
    # The largest Avro int parses (and then fails inclusion in a 5-leaf tree).
    report = _verify(with_leaf_index(2**31 - 1), made.anchor, codec)
    assert _outcome(report, CabCheck.PARSE) is CheckOutcome.PASSED
    assert CabCheck.INCLUSION in _failed(report)


def test_envelope_type_must_equal_the_payload_branch(
    codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet
) -> None:
    """A producer that sealed an envelope saying Invalidated around a
    CacheWritten payload: signatures and inclusion hold, the meaning does not."""
    written, invalidated = b"\x18CacheWritten", b"\x16Invalidated"  # Avro strings
    odd = _make(
        codec, anchor, producer, mutate_leaf=lambda raw: raw.replace(written, invalidated, 1)
    )
    assert invalidated in odd.applied.origin.raw
    report = _verify(odd.data, anchor.public(), codec)
    assert _failed(report) == {CabCheck.ENVELOPE}
    assert "envelope type Invalidated but payload is a CacheWritten" in report.failures[0].detail


def _crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO written from the Avro specification, bit by bit (no table)."""
    empty = 0xC15D213AA4D7A795
    fp = empty
    for byte in data:
        fp ^= byte
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
    return fp


def test_event_fingerprint_is_crc64_avro_of_the_inlined_canonical_form(
    made: Made, codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet
) -> None:
    import json

    from cachet.schemas.loader import SCHEMA_DIR, load_schema_set

    canonical = load_schema_set(SCHEMA_DIR).canonical_form
    # Parsing Canonical Form: no doc/default/logicalType/namespace, full names,
    # and each named type defined once, at its first use (later uses: its name).
    assert canonical.startswith('{"name":"cachet.events.Envelope","type":"record","fields":[')
    defined: list[str] = []
    keys: set[str] = set()

    def walk(node: object) -> None:
        if isinstance(node, list):
            for item in node:
                walk(item)
        elif isinstance(node, dict):
            keys.update(node)
            if node.get("type") in ("record", "enum", "fixed"):
                defined.append(str(node["name"]))
            for value in node.values():
                walk(value)

    walk(json.loads(canonical))
    assert keys <= {"name", "type", "fields", "symbols", "items", "values", "size"}
    assert len(defined) == len(set(defined)) and all("." in name for name in defined)
    event = decode_bundle(made.data).event_bytes
    assert event[:2] == b"\xc3\x01"
    assert event[2:10] == struct.pack("<Q", _crc64_avro(canonical.encode("utf-8")))
    # Bytes under any other fingerprint name no known schema: the envelope fails.
    alien = _make(codec, anchor, producer, mutate_leaf=lambda raw: raw[:2] + bytes(8) + raw[10:])
    report = _verify(alien.data, anchor.public(), codec)
    assert _failed(report) == {CabCheck.ENVELOPE}
    assert "not a known schema set" in report.failures[0].detail


# --- the container format --------------------------------------------------------


def _refused(data: bytes, codec: EventCodec, anchor: KeySet, match: str) -> None:
    with pytest.raises(CabFormatError, match=match):
        decode_bundle(data)
    report = _verify(data, anchor, codec)
    assert not report.ok
    assert _outcome(report, CabCheck.PARSE) is CheckOutcome.FAILED
    assert all(c.outcome is CheckOutcome.NOT_RUN for c in report.checks[1:])


def test_trailing_bytes_refused(made: Made, codec: EventCodec) -> None:
    _refused(made.data + b"\x00", codec, made.anchor, "trailing")
    extra = bytes([Section.ANCHOR_KEY_SET]) + (1).to_bytes(4, "big") + b"x"
    _refused(made.data + extra, codec, made.anchor, "trailing")


def test_every_truncation_refused(made: Made) -> None:
    spans = _section_spans(made.data)
    cuts = set(range(0, 40)) | {len(made.data) - i for i in range(1, 40)}
    for start, end in spans.values():
        cuts |= {start, start + 1, start + 4, start + 5, end - 1}
    for cut in sorted(cuts):
        with pytest.raises(CabFormatError):
            decode_bundle(made.data[:cut])


def test_duplicated_missing_or_reordered_sections_refused(made: Made, codec: EventCodec) -> None:
    spans = _section_spans(made.data)
    head = made.data[: len(CAB_MAGIC) + 2]
    raw = {tag: made.data[s:e] for tag, (s, e) in spans.items()}
    order = list(sections_of(1))
    dup = (
        head
        + b"".join(raw[t] for t in order[:2])
        + raw[order[1]]
        + b"".join(raw[t] for t in order[2:])
    )
    _refused(dup, codec, made.anchor, "expected SEAL_NOTE")
    dup_last = made.data + raw[Section.ANCHOR_KEY_SET]
    _refused(dup_last, codec, made.anchor, "trailing")
    missing = head + b"".join(raw[t] for t in order if t is not Section.REGISTRATION)
    _refused(missing, codec, made.anchor, "expected REGISTRATION")
    swapped = head + b"".join(raw[t] for t in [order[1], order[0], *order[2:]])
    _refused(swapped, codec, made.anchor, "expected EVENT")


def test_bad_magic_version_and_lengths_refused(made: Made, codec: EventCodec) -> None:
    _refused(b"X" + made.data[1:], codec, made.anchor, "magic")
    v3 = CAB_MAGIC + (3).to_bytes(2, "big") + made.data[len(CAB_MAGIC) + 2 :]
    _refused(v3, codec, made.anchor, "version")
    # Version 2 (a read bundle) needs its read section: an event bundle
    # relabelled as one is refused.
    v2 = CAB_MAGIC + (2).to_bytes(2, "big") + made.data[len(CAB_MAGIC) + 2 :]
    _refused(v2, codec, made.anchor, "truncated before section READ")
    first = len(CAB_MAGIC) + 2
    huge = bytearray(made.data)
    huge[first + 1 : first + 5] = (2**32 - 1).to_bytes(4, "big")
    _refused(bytes(huge), codec, made.anchor, "truncated")
    empty = made.data[:first] + bytes([Section.EVENT]) + bytes(4) + made.data[first:]
    _refused(empty, codec, made.anchor, "empty")
    _refused(b"", codec, made.anchor, "magic")


def test_inclusion_section_shape_refused(made: Made, codec: EventCodec) -> None:
    spans = _section_spans(made.data)
    start, end = spans[Section.INCLUSION]
    body = made.data[start + 5 : end]
    for bad in (body + b"\x00", body[:-1], body[:15], body + bytes(32) * 70):
        section = bytes([Section.INCLUSION]) + len(bad).to_bytes(4, "big") + bad
        _refused(made.data[:start] + section + made.data[end:], codec, made.anchor, "inclusion")


def test_non_canonical_inner_texts_refused(made: Made, producer: PrivateKeySet) -> None:
    ks = encode_key_set(producer.public())
    assert parse_key_set(ks) == producer.public()
    lines = ks.split(b"\n")
    for bad in (
        ks[:-1],  # no final newline
        ks + b"\n",
        b"\n".join([lines[0], lines[1], lines[3], lines[2], *lines[4:]]),  # scheme order
        b"\n".join([lines[0], lines[1], lines[2], lines[2], *lines[3:]]),  # duplicate key
        ks.replace(b"keyset ", b"keyset  "),
        ks.replace(lines[2].split(b" ")[2], b"0" * 32),  # wrong key id
    ):
        with pytest.raises(CabFormatError):
            parse_key_set(bad)
    sigs = encode_signature_lines(sign_statement(b"x\n", producer))
    assert encode_signature_lines(parse_signature_lines(sigs)) == sigs
    for bad in (sigs[:-1], b"", sigs.replace(b" ", b"  ", 1), sigs + b"\n"):
        with pytest.raises(CabFormatError):
            parse_signature_lines(bad)
    stmt = registration_statement(IDENTITY, producer.public(), 5)
    assert parse_registration(stmt).valid_from_us == 5
    for bad in (
        stmt.replace(b"valid-from 5", b"valid-from 05"),
        stmt.replace(b"cachet.key-registration/v1", b"cachet.key-rotation/v1"),
        stmt[:-1],
    ):
        with pytest.raises(CabFormatError):
            parse_registration(bad)


def test_garbage_never_raises(made: Made, codec: EventCodec) -> None:
    rng = random.Random(7)
    for n in (0, 1, 11, 16, 100, 5000):
        for _ in range(20):
            assert not _verify(rng.randbytes(n), made.anchor, codec).ok
    for _ in range(200):
        data = bytearray(made.data)
        for _ in range(rng.randint(1, 8)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        if bytes(data) != made.data:
            assert not _verify(bytes(data), made.anchor, codec).ok


# --- the command line --------------------------------------------------------------


def test_cli_verify(made: Made, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    bundle = tmp_path / "event.cab"
    bundle.write_bytes(made.data)
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(made.anchor))
    fp = anchor_fingerprint(made.anchor)

    assert main(["cab", "verify", str(bundle), "--anchor-file", str(anchor_file)]) == 0
    out = capsys.readouterr().out
    assert f"ANCHOR FINGERPRINT  {fp}  (pinned)" in out
    assert out.rstrip().endswith("VERIFIED")
    assert out.count("PASS ") == len(CabCheck) - 1  # an event bundle: no read check

    assert main(["cab", "verify", str(bundle), "--anchor-fingerprint", fp, "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out

    assert main(["cab", "verify", str(bundle)]) == 1
    out = capsys.readouterr().out
    assert fp in out and "NOT VERIFIED" in out and "no anchor pinned" in out

    tampered = bytearray(made.data)
    tampered[len(tampered) // 3] ^= 0x04
    bundle.write_bytes(bytes(tampered))
    assert main(["cab", "verify", str(bundle), "--anchor-file", str(anchor_file)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out
