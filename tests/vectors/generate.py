"""Write the golden vectors of this folder. Run by hand, from the repository root:

    .venv/bin/python -m tests.vectors.generate

It rewrites ``seal.json``, ``bundle.cab`` and ``bundle.json`` (the formats are
in ``README.md`` here). Post-quantum signing is randomized and the keys are
fresh, so every run writes new keys, signatures and bundle bytes; everything
else (events, hashes, cases, expected results) comes out the same. Run it
only when a format or a verifier's contract changes on purpose, read the
diff of the expectations, commit the files, and run
``tests/unit/ledger/test_vectors.py``.

The expected results are what Cachet's own verifiers return, and this script
refuses to write a case whose result is not the one the case is about (a
tampered seal that verified would be a bug, not a vector).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import (
    KeyRegistry,
    RevocationReason,
    registration_statement,
    revocation_statement,
    rotation_statement,
    sign_statement,
)
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    PrivateKeySet,
    SealHeader,
    SignatureLine,
    b64,
    leaf_topics_digest,
    seal_hash,
    sign_header,
    verify_seal_batch,
)
from cachet.crypto.signing import key_id
from cachet.ledger.cab import CabCheck, anchor_fingerprint, build_bundle
from cachet.ledger.cab_format import CAB_MAGIC, CAB_VERSION, Section, sections_of
from cachet.ledger.identity import GENESIS_SEAL_HASH, epoch_producer_id, identity_of
from cachet.ledger.verifier import Applied, IntegrityStatus, Outcome
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, SealRef, new_event
from tests.vectors.replay import (
    BUNDLE_CAB,
    BUNDLE_JSON,
    SEAL_JSON,
    bundle_outcomes,
    key_set,
    load_json,
    registry_for,
    run_case,
    signature_lines,
    verify_bundle_variant,
)

IDENTITY = "vector-node"
PRODUCER_ID = epoch_producer_id(IDENTITY, "0a1b2c")
PREFIX = "t."
T0 = 1_700_000_000_000_000  # event time of the first event, microseconds
SEALED_AT = (T0 + 1_000, T0 + 2_000)  # seals 0 and 1
CHANGE_AT = T0 + 1_500  # the revocation's / rotation's time: between the two seals
TIMEOUT_S = 5.0
AFTER_TIMEOUT = 10.0
FOREIGN_PREV = bytes(range(32))


def _key_set_json(ks: KeySet) -> dict[str, Any]:
    return {
        "key_set_id": ks.key_set_id,
        "keys": [
            {
                "scheme": s.value,
                "key_id": key_id(s, ks.public_keys[s]),
                "public_key_b64": b64(ks.public_keys[s]),
            }
            for s in SignatureScheme
            if s in ks.public_keys
        ],
    }


def _lines(lines: Sequence[SignatureLine]) -> list[str]:
    return [line.text() for line in lines]


# --- events ----------------------------------------------------------------------


def _event(
    codec: EventCodec,
    index: int,
    type_: EventType,
    seq: int,
    seal_ref: SealRef | None,
    topic: str,
    offset: int,
) -> dict[str, Any]:
    """One event with a fixed id and time (so its bytes are the same every run)."""
    payload = dict(SAMPLE_PAYLOADS[type_])
    payload["key_hash"] = hashlib.sha3_256(f"vector key {index}".encode()).digest()
    at = T0 + index
    event = new_event(
        type_,
        payload,
        producer_id=PRODUCER_ID,
        producer_seq=seq,
        seal_ref=seal_ref,
        occurred_at_us=at,
        clock=lambda: at,
        rand=lambda n: bytes([index + 1]) * n,
    )
    raw = codec.encode(event)
    return {
        "event_type": type_.value,
        "event_id": event.event_id,
        "producer_id": PRODUCER_ID,
        "producer_seq": seq,
        "seal_ref": None
        if seal_ref is None
        else {"seal_seq": seal_ref.seal_seq, "leaf_index": seal_ref.leaf_index},
        "origin": {"topic": PREFIX + topic, "partition": 0, "offset": offset},
        "bytes_hex": raw.hex(),
        "leaf_hash_hex": leaf_hash(raw).hex(),
    }


def _seal(
    keys: PrivateKeySet,
    events: dict[str, dict[str, Any]],
    leaves: Sequence[str],
    seal_seq: int,
    prev: bytes,
    sealed_at: int,
    offset: int,
) -> dict[str, Any]:
    hashes = [bytes.fromhex(events[name]["leaf_hash_hex"]) for name in leaves]
    topics = [events[name]["origin"]["topic"][len(PREFIX) :] for name in leaves]
    header = SealHeader(
        producer_id=PRODUCER_ID,
        seal_seq=seal_seq,
        tree_size=len(hashes),
        first_producer_seq=events[leaves[0]]["producer_seq"],
        merkle_root=root_from_leaf_hashes(hashes),
        prev_seal_hash=prev,
        key_set_id=keys.key_set_id,
        sealed_at_us=sealed_at,
        leaf_topics_digest=leaf_topics_digest(topics),
    )
    lines = sign_header(header, keys)
    assert header.leaf_topics_digest is not None
    return {
        "leaves": list(leaves),
        "producer_id": header.producer_id,
        "seal_seq": header.seal_seq,
        "tree_size": header.tree_size,
        "first_producer_seq": header.first_producer_seq,
        "merkle_root_hex": header.merkle_root.hex(),
        "prev_seal_hash_hex": header.prev_seal_hash.hex(),
        "key_set_id": header.key_set_id,
        "sealed_at_us": header.sealed_at_us,
        "leaf_hashes_hex": [h.hex() for h in hashes],
        "leaf_topics": topics,
        "leaf_topics_digest_hex": header.leaf_topics_digest.hex(),
        "header_text": header.canonical_bytes().decode("ascii"),
        "signature_lines": _lines(lines),
        "seal_hash_hex": seal_hash(header, lines).hex(),
        "origin": {"topic": PREFIX + "seals", "partition": 0, "offset": offset},
    }


# --- cases -----------------------------------------------------------------------

REG = ["registration"]
GENUINE = [{"seal": "s0"}, {"event": "e0"}, {"event": "e1"}, {"event": "e2"}]
GENUINE += [{"seal": "s1"}, {"event": "e3"}, {"expire_at": AFTER_TIMEOUT}]
S0_EVENTS = [{"event": "e0"}, {"event": "e1"}, {"event": "e2"}]
EXPIRE = {"expire_at": AFTER_TIMEOUT}


def _cases(
    events: dict[str, dict[str, Any]], seals: dict[str, dict[str, Any]]
) -> list[dict[str, Any]]:
    """Each case: registry statements, steps, and the status it is about."""
    bad_leaves = list(seals["s0"]["leaf_hashes_hex"])
    bad_leaves[1] = ("ff" if bad_leaves[1][:2] != "ff" else "00") + bad_leaves[1][2:]
    e0 = bytes.fromhex(events["e0"]["bytes_hex"])
    # The last byte of e0 lies in its payload: the event still decodes, its leaf differs.
    e0_tampered = (e0[:-1] + bytes([e0[-1] ^ 0x01])).hex()
    cases: list[dict[str, Any]] = [
        {
            "name": "genuine",
            "description": "both seals and all four events, seals first: every event applies",
            "registry": REG,
            "steps": GENUINE,
        },
        {
            "name": "genuine-events-first",
            "description": "events read before their seal wait for it, then apply in log order",
            "registry": REG,
            "steps": [*S0_EVENTS, {"seal": "s0"}, {"event": "e3"}, {"seal": "s1"}, EXPIRE],
        },
    ]
    for scheme in SignatureScheme:
        cases.append(
            {
                "name": f"signature_invalid.{scheme.value}",
                "description": f"one bit of s0's {scheme.value} signature flipped",
                "registry": REG,
                "steps": [
                    {
                        "seal": "s0",
                        "tamper": {
                            "xor_signature": {"algorithm": scheme.value, "byte": 100, "mask": 1}
                        },
                    },
                    *S0_EVENTS,
                    EXPIRE,
                ],
                "expect_status": f"signature_invalid.{scheme.value}",
            }
        )
    cases += [
        {
            "name": "signature_missing",
            "description": "s0 without its slh-dsa-sha2-128f line (every scheme is required)",
            "registry": REG,
            "steps": [
                {"seal": "s0", "tamper": {"drop_signature": "slh-dsa-sha2-128f"}},
                *S0_EVENTS,
                EXPIRE,
            ],
            "expect_status": "signature_missing",
        },
        {
            "name": "seal_malformed",
            "description": "s0 whose merkle_root is 31 bytes",
            "registry": REG,
            "steps": [
                {
                    "seal": "s0",
                    "tamper": {"replace": {"merkle_root_hex": seals["s0"]["merkle_root_hex"][2:]}},
                }
            ],
            "expect_status": "seal_malformed",
        },
        {
            "name": "root_mismatch",
            "description": "s0 with leaf hash 1 changed: the signed root no longer recomputes",
            "registry": REG,
            "steps": [
                {"seal": "s0", "tamper": {"replace": {"leaf_hashes_hex": bad_leaves}}},
                *S0_EVENTS,
            ],
            "expect_status": "root_mismatch",
        },
        {
            "name": "unknown_key",
            "description": "no registration: s0 waits for its key set, then times out",
            "registry": [],
            "steps": [{"seal": "s0"}, {"event": "e0"}, EXPIRE],
            "expect_status": "unknown_key",
        },
        {
            "name": "revoked_key",
            "description": "the key set is revoked from between the seals on: s1 is refused",
            "registry": ["registration", "revocation"],
            "steps": GENUINE,
            "expect_status": "revoked_key",
        },
        {
            "name": "retired_key",
            "description": "the key set is rotated out between the seals: s1 is refused",
            "registry": ["registration", "rotation"],
            "steps": GENUINE,
            "expect_status": "retired_key",
        },
        {
            "name": "chain_broken",
            "description": "a validly signed seal 1 whose prev is not s0's seal hash",
            "registry": REG,
            "steps": [{"seal": "s0"}, *S0_EVENTS, {"seal": "s1-foreign-prev"}, {"event": "e3"}],
            "expect_status": "chain_broken",
        },
        {
            "name": "sequence_gap",
            "description": "s1 read with no s0 before it",
            "registry": REG,
            "steps": [{"seal": "s1"}, {"event": "e3"}],
            "expect_status": "sequence_gap",
        },
        {
            "name": "seal_replayed",
            "description": "s0 read a second time, at a later offset",
            "registry": REG,
            "steps": [{"seal": "s0"}, *S0_EVENTS, {"seal": "s0", "offset": 5}],
            "expect_status": "seal_replayed",
        },
        {
            "name": "not_sealed",
            "description": "an event with no seal reference",
            "registry": REG,
            "steps": [{"event": "e-unsealed"}],
            "expect_status": "not_sealed",
        },
        {
            "name": "leaf_mismatch",
            "description": "e0 with one bit of its last byte flipped",
            "registry": REG,
            "steps": [{"seal": "s0"}, {"event": "e0", "bytes_hex": e0_tampered}],
            "expect_status": "leaf_mismatch",
        },
        {
            "name": "leaf_mismatch.topic",
            "description": "e1, sealed for reads, found on entries",
            "registry": REG,
            "steps": [{"seal": "s0"}, {"event": "e1", "topic": PREFIX + "entries", "offset": 0}],
            "expect_status": "leaf_mismatch",
        },
        {
            "name": "duplicate_event",
            "description": "e0 read again at a later offset after it applied",
            "registry": REG,
            "steps": [{"seal": "s0"}, *S0_EVENTS, {"event": "e0", "offset": 5}],
            "expect_status": "duplicate_event",
        },
        {
            "name": "event_reordered",
            "description": "e2 before e0 in their partition",
            "registry": REG,
            "steps": [
                {"seal": "s0"},
                {"event": "e2", "offset": 0},
                {"event": "e0", "offset": 1},
            ],
            "expect_status": "event_reordered",
        },
        {
            "name": "event_missing",
            "description": "e2 of s0 never arrives",
            "registry": REG,
            "steps": [{"seal": "s0"}, {"event": "e0"}, {"event": "e1"}, EXPIRE],
            "expect_status": "event_missing",
        },
        {
            "name": "offset_regressed",
            "description": "e0 read again at an offset before the last one of its partition",
            "registry": REG,
            "steps": [{"seal": "s0"}, *S0_EVENTS, {"event": "e0", "offset": 0}],
            "expect_status": "offset_regressed",
        },
        {
            "name": "unsealed_timeout",
            "description": "e3's seal never comes",
            "registry": REG,
            "steps": [{"seal": "s0"}, *S0_EVENTS, {"event": "e3"}, EXPIRE],
            "expect_status": "unsealed_timeout",
        },
    ]
    return cases


def _seal_check(registry: KeyRegistry, seal: dict[str, Any]) -> dict[str, Any]:
    """What a verifier's seal check says (without the chain, which needs the
    seal before): the key lookup for the producer's identity at ``sealed_at``,
    then every signature, the root, the size and the leaf topics."""
    header = SealHeader(
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
    lookup = registry.lookup(
        identity_of(header.producer_id), header.key_set_id, header.sealed_at_us
    )
    assert lookup.key_set is not None, lookup
    verdict = verify_seal_batch(
        header,
        signature_lines(seal["signature_lines"]),
        [bytes.fromhex(h) for h in seal["leaf_hashes_hex"]],
        lookup.key_set,
        registry.required_schemes,
        leaf_topics=seal["leaf_topics"],
    )
    return {
        "key_status": lookup.status.value,
        "failures": [f.value for f in verdict.failures],
        "schemes": {s.value: st.value for s, st in verdict.statuses.items()},
    }


def sign_seal_vectors(
    codec: EventCodec, anchor: PrivateKeySet, producer: PrivateKeySet, rotated: PrivateKeySet
) -> dict[str, Any]:
    """Events, seals and anchor statements, signed with the given keys."""
    events = {
        "e0": _event(codec, 0, EventType.CACHE_WRITTEN, 0, SealRef(0, 0), "entries", 0),
        "e1": _event(codec, 1, EventType.CACHE_READ, 1, SealRef(0, 1), "reads", 0),
        "e2": _event(codec, 2, EventType.CACHE_WRITTEN, 2, SealRef(0, 2), "entries", 1),
        "e3": _event(codec, 3, EventType.CACHE_WRITTEN, 3, SealRef(1, 0), "entries", 2),
        "e-unsealed": _event(codec, 4, EventType.CACHE_WRITTEN, 4, None, "entries", 3),
    }
    s0 = _seal(producer, events, ["e0", "e1", "e2"], 0, GENESIS_SEAL_HASH, SEALED_AT[0], 0)
    s0_hash = bytes.fromhex(s0["seal_hash_hex"])
    seals = {
        "s0": s0,
        "s1": _seal(producer, events, ["e3"], 1, s0_hash, SEALED_AT[1], 1),
        "s1-foreign-prev": _seal(producer, events, ["e3"], 1, FOREIGN_PREV, SEALED_AT[1], 1),
    }
    registration = registration_statement(IDENTITY, producer.public(), T0)
    revocation = revocation_statement(
        IDENTITY, producer.key_set_id, CHANGE_AT, RevocationReason.KEY_COMPROMISE
    )
    rotation = rotation_statement(IDENTITY, producer.key_set_id, rotated.public(), CHANGE_AT)
    vectors: dict[str, Any] = {
        "format": "cachet.vectors.seal/v1",
        "generated_by": "tests/vectors/generate.py",
        "required_schemes": [s.value for s in SignatureScheme],
        "verifier": {
            "topic_prefix": PREFIX,
            "topics": ["entries", "reads"],
            "unsealed_timeout_s": TIMEOUT_S,
        },
        "key_sets": {
            "anchor": _key_set_json(anchor.public()),
            "producer": _key_set_json(producer.public()),
            "rotated": _key_set_json(rotated.public()),
        },
        "producer": {"identity": IDENTITY, "producer_id": PRODUCER_ID, "key_set": "producer"},
        "statements": {
            "registration": {
                "kind": "registration",
                "producer": IDENTITY,
                "key_set": "producer",
                "valid_from_us": T0,
                "text": registration.decode("ascii"),
                "signature_lines": _lines(sign_statement(registration, anchor)),
            },
            "revocation": {
                "kind": "revocation",
                "producer": IDENTITY,
                "key_set_id": producer.key_set_id,
                "compromised_at_us": CHANGE_AT,
                "reason": RevocationReason.KEY_COMPROMISE.value,
                "text": revocation.decode("ascii"),
                "signature_lines": _lines(sign_statement(revocation, anchor)),
            },
            "rotation": {
                "kind": "rotation",
                "producer": IDENTITY,
                "from": producer.key_set_id,
                "to": "rotated",
                "rotated_at_us": CHANGE_AT,
                "text": rotation.decode("ascii"),
                "signature_lines": _lines(sign_statement(rotation, anchor)),
            },
        },
        "events": events,
        "seals": seals,
    }
    return vectors


def add_expectations(vectors: dict[str, Any], codec: EventCodec) -> None:
    """Each seal's check and each case with its expected outcomes, from the
    public material alone (so ``--expectations-only`` needs no private key)."""
    seals, events = vectors["seals"], vectors["events"]
    registry = registry_for(vectors, REG)
    for seal in seals.values():
        seal["check"] = _seal_check(registry, seal)
        assert seal["check"]["failures"] == [] and seal["check"]["key_status"] == "valid"
    cases = _cases(events, seals)
    for case in cases:
        case["expect"] = run_case(vectors, case, codec)
        statuses = {s for o in case["expect"] if o["outcome"] == "rejected" for s in o["statuses"]}
        wanted = case.get("expect_status")
        if wanted is None:
            assert not statuses and len(case["expect"]) == 4, case
        else:
            assert wanted in statuses, (case["name"], case["expect"])
    covered = {c["expect_status"] for c in cases if "expect_status" in c}
    everything = {s.value for s in IntegrityStatus}
    assert covered == everything, f"statuses without a case: {everything - covered}"
    vectors["cases"] = cases


# --- the bundle ------------------------------------------------------------------


def _sections(data: bytes) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    pos = len(CAB_MAGIC) + 2
    for section in sections_of(CAB_VERSION):  # an event bundle
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        out.append(
            {"tag": int(section), "name": section.name.lower(), "offset": pos + 5, "length": length}
        )
        pos += 5 + length
    assert pos == len(data)
    return out


def _replace(data: bytes, offset: int, new: int) -> dict[str, int]:
    assert data[offset] != new
    return {"offset": offset, "was": data[offset], "byte": new}


def _other_b64_char(value: int) -> int:
    return ord("B") if value == ord("A") else ord("A")


def _in_section(data: bytes, sections: list[dict[str, Any]], section: Section) -> tuple[int, bytes]:
    s = sections[list(Section).index(section)]
    return s["offset"], data[s["offset"] : s["offset"] + s["length"]]


def _mid_signature(data: bytes, sections: list[dict[str, Any]], section: Section, alg: str) -> int:
    """Offset of a base64 character in the middle of ``alg``'s signature line."""
    start, value = _in_section(data, sections, section)
    line_at = value.index(("\u2014 " + alg + " ").encode("utf-8"))
    line_end = value.index(b"\n", line_at)
    return start + (line_at + line_end) // 2


def _last_digit(
    data: bytes, sections: list[dict[str, Any]], section: Section, prefix: bytes
) -> int:
    start, value = _in_section(data, sections, section)
    line_at = value.index(prefix)
    return start + value.index(b"\n", line_at) - 1


def bundle_bytes(codec: EventCodec, vectors: dict[str, Any]) -> bytes:
    """The bundle of e1 exactly as ``cachet cab export`` builds it: from the
    verifier's Applied outcome of the genuine case. Deterministic: it signs nothing."""
    applied: list[Applied] = []

    def keep(outcome: Outcome) -> None:
        if isinstance(outcome, Applied) and outcome.event.producer_seq == 1:
            applied.append(outcome)

    genuine = next(c for c in vectors["cases"] if c["name"] == "genuine")
    run_case(vectors, genuine, codec, keep=keep)
    statement = vectors["statements"]["registration"]
    return build_bundle(
        applied[0],
        statement["text"].encode("ascii"),
        signature_lines(statement["signature_lines"]),
        key_set(vectors["key_sets"]["anchor"]),
    )


def describe_bundle(codec: EventCodec, vectors: dict[str, Any], data: bytes) -> dict[str, Any]:
    """``bundle.json``: the layout, what the bundle attests, and the variants
    with their expected reports."""
    anchor_public = key_set(vectors["key_sets"]["anchor"])
    sections = _sections(data)
    inclusion, _ = _in_section(data, sections, Section.INCLUSION)
    event_at, event = _in_section(data, sections, Section.EVENT)
    sig = _mid_signature(data, sections, Section.SEAL_NOTE, "slh-dsa-sha2-128f")
    reg_sig = _mid_signature(data, sections, Section.REGISTRATION_SIGNATURES, "ml-dsa-65")
    at_digit = _last_digit(data, sections, Section.SEAL_NOTE, b"\nat ")
    valid_digit = _last_digit(data, sections, Section.REGISTRATION, b"valid-from ")
    fingerprint = anchor_fingerprint(anchor_public)
    pinned = {"anchor": "anchor"}
    variants: list[dict[str, Any]] = [
        {"name": "pinned-by-key-set", "description": "the genuine bundle", "pin": pinned},
        {
            "name": "pinned-by-fingerprint",
            "description": "the genuine bundle, the anchor pinned by fingerprint only",
            "pin": {"fingerprint": fingerprint},
        },
        {
            "name": "unpinned",
            "description": "no anchor pinned",
            "pin": {},
            "fails": "anchor-pinned",
        },
        {
            "name": "pinned-to-another-anchor",
            "description": "the verifier trusts another anchor's fingerprint",
            "pin": {"fingerprint": "ks-" + "00" * 16},
            "fails": "anchor-pinned",
        },
        {
            "name": "event-byte-changed",
            "description": "one bit of the event's middle byte flipped",
            "pin": pinned,
            "mutations": [
                _replace(data, event_at + len(event) // 2, event[len(event) // 2] ^ 0x01)
            ],
            "fails": "inclusion",
        },
        {
            "name": "proof-hash-changed",
            "description": "one bit of the first audit-path hash flipped",
            "pin": pinned,
            "mutations": [_replace(data, inclusion + 16, data[inclusion + 16] ^ 0x01)],
            "fails": "inclusion",
        },
        {
            "name": "tree-size-changed",
            "description": "the inclusion section claims a tree of 4 leaves",
            "pin": pinned,
            "mutations": [_replace(data, inclusion + 15, 4)],
            "fails": "inclusion",
        },
        {
            "name": "leaf-index-changed",
            "description": "the inclusion section claims leaf 0",
            "pin": pinned,
            "mutations": [_replace(data, inclusion + 7, 0)],
            "fails": "inclusion",
        },
        {
            "name": "seal-signature-changed",
            "description": "one base64 character of the seal's slh-dsa-sha2-128f signature",
            "pin": pinned,
            "mutations": [_replace(data, sig, _other_b64_char(data[sig]))],
            "fails": "seal-signed",
        },
        {
            "name": "seal-header-changed",
            "description": "the last digit of the seal note's `at` line",
            "pin": pinned,
            "mutations": [
                _replace(data, at_digit, ord("1") if data[at_digit] != ord("1") else ord("2"))
            ],
            "fails": "seal-signed",
        },
        {
            "name": "registration-signature-changed",
            "description": "one base64 character of the registration's ml-dsa-65 signature",
            "pin": pinned,
            "mutations": [_replace(data, reg_sig, _other_b64_char(data[reg_sig]))],
            "fails": "registration-signed-by-anchor",
        },
        {
            "name": "registration-changed",
            "description": "the last digit of the registration's valid-from",
            "pin": pinned,
            "mutations": [
                _replace(data, valid_digit, ord("1") if data[valid_digit] != ord("1") else ord("2"))
            ],
            "fails": "registration-signed-by-anchor",
        },
        {
            "name": "bad-magic",
            "description": "the first byte is X",
            "pin": pinned,
            "mutations": [_replace(data, 0, ord("X"))],
            "fails": "parse",
        },
        {
            "name": "truncated",
            "description": "the last byte cut off",
            "pin": pinned,
            "truncate_to": len(data) - 1,
            "fails": "parse",
        },
    ]
    for variant in variants:
        report = verify_bundle_variant(data, variant, anchor_public, codec)
        variant["expect"] = bundle_outcomes(report)
        wanted = variant.pop("fails", None)
        if wanted is None:
            assert report.ok, (variant["name"], report.failures)
        else:
            assert not report.ok and variant["expect"]["checks"][CabCheck(wanted).value] == "failed"
            variant["expect_failed"] = wanted
    genuine_report = verify_bundle_variant(data, variants[0], anchor_public, codec).to_json()
    attests = {k: v for k, v in genuine_report.items() if k not in ("ok", "checks")}
    description = {
        "format": "cachet.vectors.bundle/v1",
        "generated_by": "tests/vectors/generate.py",
        "file": BUNDLE_CAB.name,
        "size": len(data),
        "sha3_256_hex": hashlib.sha3_256(data).hexdigest(),
        "of": {"event": "e1", "seal": "s0", "statement": "registration", "vectors": SEAL_JSON.name},
        "anchor_fingerprint": fingerprint,
        "sections": sections,
        "attests": attests,
        "variants": variants,
    }
    return description


def _write_json(path: Path, data: dict[str, Any]) -> None:
    path.write_text(json.dumps(data, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument(
        "--expectations-only",
        action="store_true",
        help="keep the committed keys and signatures; recompute the cases, the bundle "
        "(which signs nothing) and every expected result",
    )
    args = parser.parse_args(argv)
    codec = EventCodec()
    if args.expectations_only:
        vectors = load_json(SEAL_JSON)
    else:
        vectors = sign_seal_vectors(
            codec,
            PrivateKeySet.generate(),  # ids derived from the keys, as `cachet keys init` makes
            PrivateKeySet.generate(),
            PrivateKeySet.generate(),
        )
    add_expectations(vectors, codec)
    data = bundle_bytes(codec, vectors)
    description = describe_bundle(codec, vectors, data)
    _write_json(SEAL_JSON, vectors)
    BUNDLE_CAB.write_bytes(data)
    _write_json(BUNDLE_JSON, description)
    for path in (SEAL_JSON, BUNDLE_CAB, BUNDLE_JSON):
        print(f"wrote {path} ({path.stat().st_size} bytes)")


if __name__ == "__main__":
    logging.basicConfig(level=logging.ERROR)  # the verifiers log every refusal they make
    main()
