"""The golden vectors under ``tests/vectors/`` still mean what they say.

The committed files are what a third-party verifier tests itself against
(``tests/vectors/README.md``), so here Cachet's own verifiers must give
exactly the committed results: every byte-level value recomputes from its
inputs, every case replayed through the pure :class:`SealVerifier` gives its
committed outcomes, and :func:`verify_bundle` gives each bundle variant's
committed report. A failure means a format or a verifier changed: fix the
code, or (on purpose) regenerate with ``python -m tests.vectors.generate``.
"""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from cachet.crypto.merkle import inclusion_proof, leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import registration_statement, revocation_statement, rotation_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import SealHeader, derive_key_set_id, leaf_topics_digest, seal_hash
from cachet.crypto.signing import key_id
from cachet.ledger.cab import CabCheck, anchor_fingerprint
from cachet.ledger.cab_format import CAB_VERSION, decode_bundle, sections_of
from cachet.ledger.identity import GENESIS_SEAL_HASH
from cachet.ledger.verifier import IntegrityStatus
from cachet.schemas.codec import EventCodec
from tests.vectors.replay import (
    BUNDLE_CAB,
    BUNDLE_JSON,
    SEAL_JSON,
    bundle_outcomes,
    key_set,
    load_json,
    run_case,
    signature_lines,
    verify_bundle_variant,
)

VECTORS = load_json(SEAL_JSON)
BUNDLE = load_json(BUNDLE_JSON)


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


def _header(seal: dict[str, Any]) -> SealHeader:
    return SealHeader(
        producer_id=seal["producer_id"],
        seal_seq=seal["seal_seq"],
        tree_size=seal["tree_size"],
        first_producer_seq=seal["first_producer_seq"],
        merkle_root=bytes.fromhex(seal["merkle_root_hex"]),
        prev_seal_hash=bytes.fromhex(seal["prev_seal_hash_hex"]),
        key_set_id=seal["key_set_id"],
        sealed_at_us=seal["sealed_at_us"],
        leaf_topics_digest=bytes.fromhex(seal["leaf_topics_digest_hex"]),
    )


# --- seal vectors: every derived value recomputes ---------------------------------


def test_key_ids_and_key_set_ids_derive_from_the_public_keys() -> None:
    for name, record in VECTORS["key_sets"].items():
        ks = key_set(record)
        assert [k["scheme"] for k in record["keys"]] == [s.value for s in SignatureScheme], name
        for k in record["keys"]:
            scheme = SignatureScheme(k["scheme"])
            assert k["key_id"] == key_id(scheme, ks.public_keys[scheme]), (name, scheme)
        assert ks.key_set_id == derive_key_set_id(dict(ks.public_keys)), name
    anchor = key_set(VECTORS["key_sets"]["anchor"])
    assert BUNDLE["anchor_fingerprint"] == anchor_fingerprint(anchor)


def test_statement_texts_are_the_bytes_the_anchor_signed() -> None:
    s = VECTORS["statements"]
    sets = VECTORS["key_sets"]
    reg = s["registration"]
    assert reg["text"].encode() == registration_statement(
        reg["producer"], key_set(sets[reg["key_set"]]), reg["valid_from_us"]
    )
    rev = s["revocation"]
    assert rev["text"].encode() == revocation_statement(
        rev["producer"], rev["key_set_id"], rev["compromised_at_us"], rev["reason"]
    )
    rot = s["rotation"]
    assert rot["text"].encode() == rotation_statement(
        rot["producer"], rot["from"], key_set(sets[rot["to"]]), rot["rotated_at_us"]
    )


def test_event_bytes_decode_to_what_the_vector_says(codec: EventCodec) -> None:
    for name, record in VECTORS["events"].items():
        raw = bytes.fromhex(record["bytes_hex"])
        assert leaf_hash(raw).hex() == record["leaf_hash_hex"], name
        event = codec.decode(raw)
        ref = event.seal_ref
        assert (event.type.value, event.event_id) == (record["event_type"], record["event_id"])
        assert (event.producer_id, event.producer_seq) == (
            record["producer_id"],
            record["producer_seq"],
        )
        assert (
            None if ref is None else {"seal_seq": ref.seal_seq, "leaf_index": ref.leaf_index}
        ) == (record["seal_ref"]), name


def test_seal_headers_roots_and_hashes_recompute() -> None:
    events = VECTORS["events"]
    for name, seal in VECTORS["seals"].items():
        leaves = [bytes.fromhex(events[e]["leaf_hash_hex"]) for e in seal["leaves"]]
        assert [h.hex() for h in leaves] == seal["leaf_hashes_hex"], name
        assert root_from_leaf_hashes(leaves).hex() == seal["merkle_root_hex"], name
        topics = [events[e]["origin"]["topic"].removeprefix("t.") for e in seal["leaves"]]
        assert topics == seal["leaf_topics"], name
        digest = leaf_topics_digest(topics)
        assert digest is not None and digest.hex() == seal["leaf_topics_digest_hex"], name
        header = _header(seal)
        assert header.canonical_bytes() == seal["header_text"].encode("ascii"), name
        lines = signature_lines(seal["signature_lines"])
        assert seal_hash(header, lines).hex() == seal["seal_hash_hex"], name
    seals = VECTORS["seals"]
    assert bytes.fromhex(seals["s0"]["prev_seal_hash_hex"]) == GENESIS_SEAL_HASH
    assert seals["s1"]["prev_seal_hash_hex"] == seals["s0"]["seal_hash_hex"]
    assert seals["s1-foreign-prev"]["prev_seal_hash_hex"] != seals["s0"]["seal_hash_hex"]


# --- seal vectors: the verifier gives the committed outcomes ------------------------


@pytest.mark.parametrize("case", VECTORS["cases"], ids=[c["name"] for c in VECTORS["cases"]])
def test_case_replays_to_its_committed_outcomes(case: dict[str, Any], codec: EventCodec) -> None:
    outcomes = run_case(VECTORS, case, codec)
    assert outcomes == case["expect"]
    rejected = [o for o in outcomes if o["outcome"] == "rejected"]
    if "expect_status" in case:
        assert case["expect_status"] in {s for o in rejected for s in o["statuses"]}
    else:
        assert not rejected and len(outcomes) == 4


def test_every_integrity_status_has_a_case() -> None:
    covered = {c["expect_status"] for c in VECTORS["cases"] if "expect_status" in c}
    assert covered == {s.value for s in IntegrityStatus}


def test_a_flipped_signature_bit_changes_the_outcome(codec: EventCodec) -> None:
    """The replay really verifies: the genuine steps with one signature bit
    of s0 flipped do not give the genuine outcomes."""
    genuine = next(c for c in VECTORS["cases"] if c["name"] == "genuine")
    steps = [dict(step) for step in genuine["steps"]]
    steps[0]["tamper"] = {"xor_signature": {"algorithm": "ml-dsa-65", "byte": 7, "mask": 0x80}}
    outcomes = run_case(VECTORS, {**genuine, "steps": steps}, codec)
    assert outcomes != genuine["expect"]
    assert outcomes[0]["statuses"][0] == IntegrityStatus.SIGNATURE_INVALID_ML_DSA_65.value


# --- the bundle ---------------------------------------------------------------------


def test_bundle_file_is_the_one_described_and_carries_the_seal_vectors() -> None:
    data = BUNDLE_CAB.read_bytes()
    assert (len(data), hashlib.sha3_256(data).hexdigest()) == (
        BUNDLE["size"],
        BUNDLE["sha3_256_hex"],
    )
    assert [(s["tag"], s["name"]) for s in BUNDLE["sections"]] == [
        (int(s), s.name.lower()) for s in sections_of(CAB_VERSION)
    ]
    bundle = decode_bundle(data)
    of = BUNDLE["of"]
    event = VECTORS["events"][of["event"]]
    seal = VECTORS["seals"][of["seal"]]
    statement = VECTORS["statements"][of["statement"]]
    assert bundle.event_bytes.hex() == event["bytes_hex"]
    index = event["seal_ref"]["leaf_index"]
    leaves = [bytes.fromhex(h) for h in seal["leaf_hashes_hex"]]
    assert (bundle.leaf_index, bundle.tree_size) == (index, seal["tree_size"])
    assert list(bundle.proof) == inclusion_proof(index, leaves)
    assert bundle.seal_note.startswith(seal["header_text"].encode("ascii") + b"\n")
    assert bundle.registration == statement["text"].encode("ascii")
    assert bundle.anchor == key_set(VECTORS["key_sets"]["anchor"])
    assert bundle.producer_key_set == key_set(VECTORS["key_sets"]["producer"])


@pytest.mark.parametrize("variant", BUNDLE["variants"], ids=[v["name"] for v in BUNDLE["variants"]])
def test_bundle_variant_gives_its_committed_report(
    variant: dict[str, Any], codec: EventCodec
) -> None:
    anchor = key_set(VECTORS["key_sets"]["anchor"])
    report = verify_bundle_variant(BUNDLE_CAB.read_bytes(), variant, anchor, codec)
    assert bundle_outcomes(report) == variant["expect"]
    if "expect_failed" in variant:
        assert CabCheck(variant["expect_failed"]) in {c.check for c in report.failures}
    else:
        assert report.ok


def test_genuine_bundle_attests_what_the_vector_says(codec: EventCodec) -> None:
    anchor = key_set(VECTORS["key_sets"]["anchor"])
    genuine = BUNDLE["variants"][0]
    report = verify_bundle_variant(BUNDLE_CAB.read_bytes(), genuine, anchor, codec).to_json()
    assert {k: v for k, v in report.items() if k not in ("ok", "checks")} == BUNDLE["attests"]
    event = VECTORS["events"][BUNDLE["of"]["event"]]
    assert (report["event_id"], report["producer_seq"]) == (
        event["event_id"],
        event["producer_seq"],
    )
