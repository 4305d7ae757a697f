"""Read bundles (CAB version 2): one read of a CacheReadBatch, provable offline
from (batch event bytes, index, the batch's inclusion proof, seal, keys).

The attacker can rewrite any byte of a bundle and assemble bundles from real
parts (other batches, other seals), but holds neither the anchor's nor the
producer's keys. Each test of the read step fails if the one check that
enforces its rule is removed (``cachet/ledger/cab_read.py``).
"""

from __future__ import annotations

import io
import random
from dataclasses import dataclass, replace
from typing import Any

import pytest
from fastavro import schemaless_writer

from cachet.cli.main import main
from cachet.crypto.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import registration_statement, sign_statement
from cachet.crypto.seal import (
    KeySet,
    PrivateKeySet,
    SealHeader,
    SignatureLine,
    note_bytes,
    parse_note,
    seal_hash,
    sign_header,
)
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.cab import (
    BundleReport,
    CabCheck,
    CabError,
    CheckOutcome,
    build_bundle,
    build_read_bundle,
    verify_bundle,
)
from cachet.ledger.cab_format import (
    CAB_MAGIC,
    CAB_READ_VERSION,
    CabFormatError,
    ReadClaim,
    Section,
    decode_bundle,
    encode_bundle,
    sections_of,
)
from cachet.ledger.cab_read import check_read, read_claim
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, VerifiedSeal
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event
from cachet.schemas.loader import SCHEMA_DIR, load_schema_set

IDENTITY = "node"
PRODUCER_ID = "node@0a1b"
SEALED_AT = 1_700_000_000_000_000
FIRST_SEQ = 10
BATCH_LEAF = 1  # leaves: write, batch, batch, write
READ = 1  # the read proven: the batch's second


def _read(n: int, **fields: Any) -> dict[str, Any]:
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_READ])
    payload.update(key_hash=n.to_bytes(32, "big"), version=n, node_id="node-a", **fields)
    return payload


def _batch(first: int) -> dict[str, Any]:
    return {"node_id": "node-a", "reads": [_read(first + i) for i in range(3)]}


@dataclass(frozen=True)
class Sealed:
    """A sealed batch of four events, and what a bundle of each is made from."""

    events: tuple[Event, ...]
    raws: tuple[bytes, ...]
    seal: VerifiedSeal

    def applied(self, leaf: int) -> Applied:
        origin = RecordOrigin("t.reads", 0, 40 + leaf, None, 0, (), self.raws[leaf])
        return Applied(self.events[leaf], origin, self.seal)


def _seal(codec: EventCodec, keys: PrivateKeySet, seal_seq: int = 3, first: int = 0) -> Sealed:
    kinds = [
        (EventType.CACHE_WRITTEN, dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])),
        (EventType.CACHE_READ_BATCH, _batch(first)),
        (EventType.CACHE_READ_BATCH, _batch(first + 100)),
        (EventType.CACHE_WRITTEN, dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])),
    ]
    events = tuple(
        new_event(
            kind,
            payload,
            producer_id=PRODUCER_ID,
            producer_seq=FIRST_SEQ + i,
            seal_ref=SealRef(seal_seq, i),
        )
        for i, (kind, payload) in enumerate(kinds)
    )
    raws = tuple(codec.encode(e) for e in events)
    leaves = tuple(leaf_hash(r) for r in raws)
    header = SealHeader(
        producer_id=PRODUCER_ID,
        seal_seq=seal_seq,
        tree_size=len(leaves),
        first_producer_seq=FIRST_SEQ,
        merkle_root=root_from_leaf_hashes(list(leaves)),
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
        producer_id=PRODUCER_ID,
        producer_seq=seal_seq,
    )
    return Sealed(
        events, raws, VerifiedSeal(header, leaves, (), seal_hash(header, sigs), seal_event, None)
    )


@dataclass(frozen=True)
class Made:
    sealed: Sealed
    statement: bytes
    lines: tuple[SignatureLine, ...]
    anchor: KeySet
    data: bytes  # the read bundle of read READ of leaf BATCH_LEAF


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def producer() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def rogue() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def made(codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet) -> Made:
    sealed = _seal(codec, producer)
    statement = registration_statement(IDENTITY, producer.public(), 0)
    lines = sign_statement(statement, anchor)
    data = build_read_bundle(sealed.applied(BATCH_LEAF), READ, statement, lines, anchor.public())
    return Made(sealed, statement, lines, anchor.public(), data)


def _verify(data: bytes, made: Made, codec: EventCodec | None = None) -> BundleReport:
    return verify_bundle(data, pinned_anchor=made.anchor, codec=codec or EventCodec())


def _failed(report: BundleReport) -> set[CabCheck]:
    return {c.check for c in report.failures}


def _detail(report: BundleReport, check: CabCheck) -> str:
    return next(c.detail for c in report.checks if c.check is check)


def _with_claim(made: Made, **kw: Any) -> bytes:
    bundle = decode_bundle(made.data)
    assert bundle.read is not None
    return encode_bundle(replace(bundle, read=replace(bundle.read, **kw)))


# --- the genuine read -------------------------------------------------------------


def test_read_bundle_verifies_and_names_its_read(made: Made, codec: EventCodec) -> None:
    report = _verify(made.data, made, codec)
    assert report.ok, report.failures
    assert [c.check for c in report.checks] == list(CabCheck)
    assert all(c.outcome is CheckOutcome.PASSED for c in report.checks)
    assert made.data[len(CAB_MAGIC) : len(CAB_MAGIC) + 2] == CAB_READ_VERSION.to_bytes(2, "big")
    batch = made.sealed.events[BATCH_LEAF]
    assert (report.event_id, report.event_type) == (batch.event_id, "CacheReadBatch")
    assert (report.read_index, report.leaf_index) == (READ, BATCH_LEAF)
    expected = batch.payload["reads"][READ]
    assert report.read is not None
    assert report.read["key_hash"] == expected["key_hash"].hex()
    assert report.read["version"] == expected["version"]
    assert report.read["freshness"] == expected["freshness"]
    assert report.to_json()["read_index"] == READ


def test_every_read_of_the_batch_has_its_own_bundle(made: Made, codec: EventCodec) -> None:
    applied = made.sealed.applied(BATCH_LEAF)
    reads = made.sealed.events[BATCH_LEAF].payload["reads"]
    for index, read in enumerate(reads):
        data = build_read_bundle(applied, index, made.statement, made.lines, made.anchor)
        report = _verify(data, made, codec)
        assert report.ok and report.read_index == index
        assert report.read is not None and report.read["key_hash"] == read["key_hash"].hex()
    with pytest.raises(CabError, match="holds 3 reads"):
        build_read_bundle(applied, len(reads), made.statement, made.lines, made.anchor)
    with pytest.raises(CabError, match="not a CacheReadBatch"):
        build_read_bundle(made.sealed.applied(0), 0, made.statement, made.lines, made.anchor)


def test_the_batch_event_bundle_still_proves_the_whole_batch(made: Made, codec: EventCodec) -> None:
    applied = made.sealed.applied(BATCH_LEAF)
    data = build_bundle(applied, made.statement, made.lines, made.anchor)
    report = _verify(data, made, codec)
    assert report.ok and report.read_index is None and "read_index" not in report.to_json()
    assert CabCheck.READ not in {c.check for c in report.checks}


# --- the attacks of the brief ------------------------------------------------------


def test_wrong_index_is_refused(made: Made, codec: EventCodec) -> None:
    """A genuine batch and proof, with the index of another read: the read
    shown is not the one at that index."""
    for index in (0, 2):
        report = _verify(_with_claim(made, index=index), made, codec)
        assert _failed(report) == {CabCheck.READ}, index
        assert f"read {index} of the batch is not the bundle's read" in _detail(
            report, CabCheck.READ
        )
        assert "key_hash" in _detail(report, CabCheck.READ)
    past = _verify(_with_claim(made, index=3), made, codec)
    assert _failed(past) == {CabCheck.READ}
    assert "index 3 is past the batch's 3 reads" in _detail(past, CabCheck.READ)


def test_a_read_edited_inside_the_batch_is_refused(made: Made, codec: EventCodec) -> None:
    """The attacker edits read READ inside the batch (a miss into a hit, say)
    and shows the edited read: the batch no longer hashes to the sealed leaf."""
    batch = made.sealed.events[BATCH_LEAF]
    reads = [dict(r) for r in batch.payload["reads"]]
    reads[READ]["reason"] = "stale"
    edited = codec.encode(replace(batch, payload={**batch.payload, "reads": reads}))
    genuine = decode_bundle(made.data)
    forged = replace(genuine, event_bytes=edited, read=read_claim(edited, READ))
    report = _verify(encode_bundle(forged), made, codec)
    assert _failed(report) == {CabCheck.INCLUSION}
    assert "does not lead to the sealed root" in _detail(report, CabCheck.INCLUSION)
    # Editing only the read shown (the batch left genuine) fails the read check.
    shown = read_claim(edited, READ)
    report = _verify(_with_claim(made, record=shown.record), made, codec)
    assert _failed(report) == {CabCheck.READ}
    assert "differs in reason" in _detail(report, CabCheck.READ)


def test_a_batch_the_seal_does_not_cover_is_refused(
    made: Made, codec: EventCodec, producer: PrivateKeySet
) -> None:
    genuine = decode_bundle(made.data)
    # A genuine batch of the same producer, sealed by another of its seals.
    other = _seal(codec, producer, seal_seq=4, first=500)
    raw = other.raws[BATCH_LEAF]
    report = _verify(
        encode_bundle(replace(genuine, event_bytes=raw, read=read_claim(raw, READ))), made, codec
    )
    assert {CabCheck.INCLUSION, CabCheck.ENVELOPE} <= _failed(report)
    assert CabCheck.READ not in _failed(report), "its read is genuinely at that index"
    # The other batch of the same seal, under this batch's leaf index.
    sibling = made.sealed.raws[BATCH_LEAF + 1]
    report = _verify(
        encode_bundle(replace(genuine, event_bytes=sibling, read=read_claim(sibling, READ))),
        made,
        codec,
    )
    assert {CabCheck.INCLUSION, CabCheck.ENVELOPE} <= _failed(report)


def test_a_forged_seal_is_refused(
    made: Made, codec: EventCodec, rogue: PrivateKeySet, producer: PrivateKeySet
) -> None:
    """The attacker seals a batch of their own making under the genuine
    producer's name and key set id, with their own keys."""
    forged = _seal(codec, rogue)
    header = replace(forged.seal.header, key_set_id=producer.key_set_id)
    note = note_bytes(header, sign_header(forged.seal.header, rogue))
    raw = forged.raws[BATCH_LEAF]
    genuine = decode_bundle(made.data)
    bundle = replace(
        genuine,
        event_bytes=raw,
        proof=tuple(inclusion_proof(BATCH_LEAF, list(forged.seal.leaf_hashes))),
        seal_note=note,
        read=read_claim(raw, READ),
    )
    report = _verify(encode_bundle(bundle), made, codec)
    assert _failed(report) == {CabCheck.SEAL_SIGNED}
    # The genuine seal's signatures over a header naming another root fail too.
    _, genuine_lines = parse_note(genuine.seal_note)
    relabelled = note_bytes(header, genuine_lines)
    report = _verify(encode_bundle(replace(bundle, seal_note=relabelled)), made, codec)
    assert _failed(report) == {CabCheck.SEAL_SIGNED}


# --- each rule of the read step, one test each ---------------------------------------


def test_a_read_section_on_an_event_that_is_no_batch_is_refused(
    made: Made, codec: EventCodec
) -> None:
    """A genuine bundle of a CacheWritten with a read section bolted on."""
    applied = made.sealed.applied(0)
    event_bundle = decode_bundle(build_bundle(applied, made.statement, made.lines, made.anchor))
    claim = decode_bundle(made.data).read
    report = _verify(encode_bundle(replace(event_bundle, read=claim)), made, codec)
    assert _failed(report) == {CabCheck.READ}
    assert "is a CacheWritten, not a CacheReadBatch" in _detail(report, CabCheck.READ)


def test_the_batch_must_be_named_a_batch_by_its_envelope(made: Made) -> None:
    """Envelope type and payload branch must both be CacheReadBatch."""
    raw = made.sealed.raws[BATCH_LEAF]
    # The envelope's type is an Avro string: its length prefix, then the name.
    renamed = raw.replace(b"\x1cCacheReadBatch", b"\x12CacheRead", 1)
    assert renamed != raw
    verdict = check_read(renamed, read_claim(raw, READ))
    assert not verdict.passed and "not a CacheReadBatch" in verdict.detail
    # And the reverse: an envelope saying CacheReadBatch around a CacheWritten.
    written = made.sealed.raws[0]
    posing = written.replace(b"\x18CacheWritten", b"\x1cCacheReadBatch", 1)
    assert posing != written
    verdict = check_read(posing, read_claim(raw, READ))
    assert not verdict.passed and "not a CacheReadBatch" in verdict.detail


def test_the_event_must_decode_under_a_known_writer_set(made: Made) -> None:
    raw = made.sealed.raws[BATCH_LEAF]
    claim = read_claim(raw, READ)
    for bad, why in (
        (b"\x00\x01" + raw[2:], "known schema set"),  # not single-object encoding
        (raw[:2] + bytes(8) + raw[10:], "known schema set"),  # unknown fingerprint
        (raw[:5], "known schema set"),
        (raw[:-3], "does not decode"),
        (raw + b"\x00", "bytes after the envelope"),
    ):
        verdict = check_read(bad, claim)
        assert not verdict.passed and why in verdict.detail, (why, verdict.detail)


def test_the_read_section_must_hold_exactly_one_cache_read(made: Made, codec: EventCodec) -> None:
    record = decode_bundle(made.data).read.record  # type: ignore[union-attr]
    trailing = _verify(_with_claim(made, record=record + b"\x00"), made, codec)
    assert _failed(trailing) == {CabCheck.READ}
    assert "1 byte(s) after" in _detail(trailing, CabCheck.READ)
    cut = _verify(_with_claim(made, record=record[:-4]), made, codec)
    assert _failed(cut) == {CabCheck.READ}
    assert "not a CacheRead" in _detail(cut, CabCheck.READ)


def test_the_read_section_must_be_in_canonical_encoding(made: Made, codec: EventCodec) -> None:
    """The same read with an overlong varint (its key_hash length 64 written
    as C0 00): it decodes to the genuine read, yet its bytes differ."""
    record = decode_bundle(made.data).read.record  # type: ignore[union-attr]
    assert record[0] == 0x40  # zigzag(32): the 32-byte key hash's length
    overlong = b"\xc0\x00" + record[1:]
    report = _verify(_with_claim(made, record=overlong), made, codec)
    assert _failed(report) == {CabCheck.READ}
    assert "canonical" in _detail(report, CabCheck.READ)


def test_a_read_bundle_needs_avro_to_verify(made: Made) -> None:
    """Without a codec the envelope check may be skipped (it binds meaning),
    the read check may not: which read is proven is the bundle's claim."""
    import cachet.ledger.cab as cab

    original = cab._default_codec
    try:
        cab._default_codec = lambda: None  # type: ignore[assignment]
        report = verify_bundle(made.data, pinned_anchor=made.anchor)
        event_bundle = build_bundle(
            made.sealed.applied(BATCH_LEAF), made.statement, made.lines, made.anchor
        )
        event_report = verify_bundle(event_bundle, pinned_anchor=made.anchor)
    finally:
        cab._default_codec = original  # type: ignore[assignment]
    outcomes = {c.check: c.outcome for c in report.checks}
    assert outcomes[CabCheck.READ] is CheckOutcome.NOT_RUN
    assert outcomes[CabCheck.INCLUSION] is CheckOutcome.PASSED
    assert not report.ok
    assert event_report.ok, "the batch itself is proven without Avro"


# --- the container --------------------------------------------------------------------


def _spans(data: bytes) -> dict[Section, tuple[int, int]]:
    spans: dict[Section, tuple[int, int]] = {}
    pos = len(CAB_MAGIC) + 2
    for tag in sections_of(CAB_READ_VERSION):
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        spans[tag] = (pos, pos + 5 + length)
        pos += 5 + length
    assert pos == len(data)
    return spans


def test_the_read_section_is_part_of_the_format(made: Made) -> None:
    spans = _spans(made.data)
    start, end = spans[Section.READ]
    assert made.data[start] == Section.READ == 0x08
    value = made.data[start + 5 : end]
    assert int.from_bytes(value[:4], "big") == READ
    assert decode_bundle(made.data).read == ReadClaim(READ, value[4:])
    # Version 1 with a read section: trailing bytes. Version 2 without: truncated.
    v1 = made.data[: len(CAB_MAGIC)] + (1).to_bytes(2, "big") + made.data[len(CAB_MAGIC) + 2 :]
    with pytest.raises(CabFormatError, match="trailing"):
        decode_bundle(v1)
    with pytest.raises(CabFormatError, match="truncated before section READ"):
        decode_bundle(made.data[:start])
    for short in (b"", b"\x00\x00\x00\x01"):
        section = bytes([Section.READ]) + len(short).to_bytes(4, "big") + short
        with pytest.raises(CabFormatError, match="read section|empty"):
            decode_bundle(made.data[:start] + section)
    with pytest.raises(CabError, match="read index"):
        encode_bundle(replace(decode_bundle(made.data), read=ReadClaim(2**32, b"x")))


def test_flipping_any_byte_of_the_event_or_the_read_fails(made: Made, codec: EventCodec) -> None:
    spans = _spans(made.data)
    positions = set(range(*spans[Section.EVENT])) | set(range(*spans[Section.READ]))
    positions |= {s for s, _ in spans.values()} | set(range(len(CAB_MAGIC) + 2))
    accepted = []
    for pos in sorted(positions):
        for mask in (0x01, 0x80):
            tampered = bytearray(made.data)
            tampered[pos] ^= mask
            if _verify(bytes(tampered), made, codec).ok:
                accepted.append((pos, mask))
    assert not accepted, f"flips accepted at {accepted[:20]}"


def test_garbage_read_sections_never_raise(made: Made, codec: EventCodec) -> None:
    rng = random.Random(11)
    for n in (1, 2, 5, 40, 300):
        for _ in range(20):
            report = _verify(_with_claim(made, record=rng.randbytes(n)), made, codec)
            assert not report.ok and CabCheck.READ in _failed(report)


def test_the_read_section_is_the_avro_cache_read_of_the_writer_set(made: Made) -> None:
    """What docs/cab-format.md says section 0x08 holds, computed independently."""
    schema = load_schema_set(SCHEMA_DIR).payloads["cachet.events.CacheRead"]
    out = io.BytesIO()
    schemaless_writer(out, schema, made.sealed.events[BATCH_LEAF].payload["reads"][READ])
    assert decode_bundle(made.data).read == ReadClaim(READ, out.getvalue())


# --- the command line -------------------------------------------------------------------


def test_cli_verifies_a_read_bundle(made: Made, tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    bundle = tmp_path / "read.cab"
    bundle.write_bytes(made.data)
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(made.anchor))
    assert main(["cab", "verify", str(bundle), "--anchor-file", str(anchor_file)]) == 0
    out = capsys.readouterr().out
    assert out.count("PASS ") == len(CabCheck)
    assert f"read bundle: read {READ} of the batch" in out
    assert "read by node-a as owner: HIT (served)" in out
    assert out.rstrip().endswith("VERIFIED")
    bundle.write_bytes(_with_claim(made, index=0))
    assert main(["cab", "verify", str(bundle), "--anchor-file", str(anchor_file)]) == 1
    out = capsys.readouterr().out
    assert "FAIL  read-in-batch" in out and "NOT VERIFIED" in out


def _varint(data: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint, as docs/cab-format.md describes it (no Avro library)."""
    shift = raw = 0
    while True:
        byte = data[pos]
        pos += 1
        raw |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return (raw >> 1) ^ -(raw & 1), pos


def test_the_read_section_decodes_by_hand_as_the_doc_says(made: Made) -> None:
    """A third party's decoder of section 0x08, written from the document's
    field list alone, reads the read the batch holds."""
    start, end = _spans(made.data)[Section.READ]
    value = made.data[start + 5 : end]
    index, record, pos = int.from_bytes(value[:4], "big"), value[4:], 0
    out: dict[str, Any] = {}

    def chunk() -> bytes:
        nonlocal pos
        n, pos = _varint(record, pos)
        pos += n
        return record[pos - n : pos]

    def long() -> int:
        nonlocal pos
        v, pos = _varint(record, pos)
        return v

    out["key_hash"] = chunk()
    out["namespace"], out["contract"] = chunk().decode(), chunk().decode()
    out["outcome"] = ["HIT", "MISS", "UNKNOWN"][long()]
    out["reason"] = chunk().decode()
    out["fingerprint"] = chunk() if long() == 1 else None
    out["version"] = long() if long() == 1 else None
    names = ("age_ms", "max_staleness_ms", "headroom_ms", "view_lag_ms")
    out["freshness"] = {n: long() for n in names} if long() == 1 else None
    out["reader_role"], out["node_id"] = chunk().decode(), chunk().decode()
    assert pos == len(record)
    assert index == READ
    assert out == made.sealed.events[BATCH_LEAF].payload["reads"][READ]
