"""Reading the golden vectors and replaying their cases through Cachet's verifiers.

One place for what a vector file *means* (``README.md`` in this folder is the
format): :mod:`tests.vectors.generate` writes the files with it and
``tests/unit/ledger/test_vectors.py`` checks them with it. The expected
results are never computed here: they are read from the committed files.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from cachet.crypto.registry import KeyRegistry
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet, SignatureLine
from cachet.ledger.cab import BundleReport, verify_bundle
from cachet.ledger.cab_format import parse_signature_lines
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, Outcome, Rejected, SealVerifier
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType, new_event

__all__ = [
    "BUNDLE_CAB",
    "BUNDLE_JSON",
    "SEAL_JSON",
    "VECTORS_DIR",
    "apply_mutations",
    "bundle_outcomes",
    "key_set",
    "load_json",
    "outcome_json",
    "registry_for",
    "run_case",
    "seal_event",
    "signature_lines",
    "verify_bundle_variant",
]

VECTORS_DIR = Path(__file__).resolve().parent
SEAL_JSON = VECTORS_DIR / "seal.json"
BUNDLE_CAB = VECTORS_DIR / "bundle.cab"
BUNDLE_JSON = VECTORS_DIR / "bundle.json"


def load_json(path: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    return data


def key_set(record: Mapping[str, Any]) -> KeySet:
    """A ``key_set`` object of the vectors as a :class:`KeySet`."""
    return KeySet(
        record["key_set_id"],
        {
            SignatureScheme(k["scheme"]): base64.b64decode(k["public_key_b64"])
            for k in record["keys"]
        },
    )


def signature_lines(texts: Sequence[str]) -> tuple[SignatureLine, ...]:
    """Signature line texts (``\u2014 <alg> <key id> <b64 sig>``) as values."""
    return parse_signature_lines("".join(t + "\n" for t in texts).encode("utf-8"))


def registry_for(vectors: Mapping[str, Any], statement_names: Sequence[str]) -> KeyRegistry:
    """A registry built from the vectors' anchor and the named statements, in order."""
    key_sets = vectors["key_sets"]
    registry = KeyRegistry(
        key_set(key_sets["anchor"]), [SignatureScheme(s) for s in vectors["required_schemes"]]
    )
    for name in statement_names:
        s = vectors["statements"][name]
        lines = signature_lines(s["signature_lines"])
        if s["kind"] == "registration":
            registry.register(
                s["producer"], key_set(key_sets[s["key_set"]]), s["valid_from_us"], lines
            )
        elif s["kind"] == "revocation":
            registry.revoke(
                s["producer"], s["key_set_id"], s["compromised_at_us"], s["reason"], lines
            )
        elif s["kind"] == "rotation":
            registry.rotate(
                s["producer"], s["from"], key_set(key_sets[s["to"]]), s["rotated_at_us"], lines
            )
        else:
            raise ValueError(f"statement {name}: unknown kind {s['kind']!r}")
    return registry


def _xor(data: bytes, index: int, mask: int) -> bytes:
    out = bytearray(data)
    out[index] ^= mask
    return bytes(out)


def seal_event(record: Mapping[str, Any], tamper: Mapping[str, Any] | None = None) -> Event:
    """The Seal event a seal record describes, with a step's tamper applied."""
    tamper = tamper or {}
    fields = {**record, **tamper.get("replace", {})}
    lines = list(signature_lines(fields["signature_lines"]))
    if "drop_signature" in tamper:
        lines = [line for line in lines if line.algorithm != tamper["drop_signature"]]
    if "xor_signature" in tamper:
        x = tamper["xor_signature"]
        lines = [
            SignatureLine(line.algorithm, line.key_id, _xor(line.signature, x["byte"], x["mask"]))
            if line.algorithm == x["algorithm"]
            else line
            for line in lines
        ]
    payload = {
        "producer_id": fields["producer_id"],
        "seal_seq": fields["seal_seq"],
        "prev_seal_hash": bytes.fromhex(fields["prev_seal_hash_hex"]),
        "merkle_root": bytes.fromhex(fields["merkle_root_hex"]),
        "tree_size": fields["tree_size"],
        "first_producer_seq": fields["first_producer_seq"],
        "leaf_hashes": [bytes.fromhex(h) for h in fields["leaf_hashes_hex"]],
        "leaf_topics": list(fields["leaf_topics"]),
        "key_set_id": fields["key_set_id"],
        "signatures": [
            {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature} for s in lines
        ],
        "sealed_at_us": fields["sealed_at_us"],
    }
    at = int(fields["sealed_at_us"])
    return new_event(
        EventType.SEAL,
        payload,
        producer_id=fields["producer_id"],
        producer_seq=fields["seal_seq"],
        occurred_at_us=at,
        clock=lambda: at,
        rand=bytes,  # event id bits: zeros (the id is not part of what is verified)
    )


def _origin(where: Mapping[str, Any], step: Mapping[str, Any], raw: bytes) -> RecordOrigin:
    return RecordOrigin(
        step.get("topic", where["topic"]),
        step.get("partition", where["partition"]),
        step.get("offset", where["offset"]),
        None,
        0,
        (),
        raw,
    )


def outcome_json(outcome: Outcome) -> dict[str, Any]:
    """One verifier outcome as the vectors write it."""
    if isinstance(outcome, Applied):
        return {
            "outcome": "applied",
            "producer_id": outcome.event.producer_id,
            "producer_seq": outcome.event.producer_seq,
        }
    assert isinstance(outcome, Rejected)
    return {
        "outcome": "rejected",
        "statuses": [s.value for s in outcome.statuses],
        "producer_id": outcome.producer_id,
        "seal_seq": outcome.seal_seq,
        "producer_seq": outcome.producer_seq,
    }


def run_case(
    vectors: Mapping[str, Any],
    case: Mapping[str, Any],
    codec: EventCodec,
    *,
    keep: Callable[[Outcome], None] | None = None,
) -> list[dict[str, Any]]:
    """Replay one case's steps through a fresh :class:`SealVerifier`; the
    outcomes in the order the verifier returned them. ``keep`` sees each raw
    outcome (the generator builds the bundle from an :class:`Applied`)."""
    settings = vectors["verifier"]
    verifier = SealVerifier(
        registry_for(vectors, case["registry"]),
        [SignatureScheme(s) for s in vectors["required_schemes"]],
        set(settings["topics"]),
        settings["unsealed_timeout_s"],
        topic_prefix=settings["topic_prefix"],
    )
    outcomes: list[Outcome] = []
    for step in case["steps"]:
        now = float(step.get("now", 0.0))
        if "seal" in step:
            record = vectors["seals"][step["seal"]]
            raw = b""  # a seal's own log bytes are not verified (only kept for checkpoints)
            outcomes += verifier.on_seal(
                seal_event(record, step.get("tamper")), _origin(record["origin"], step, raw), now
            )
        elif "event" in step:
            record = vectors["events"][step["event"]]
            raw = bytes.fromhex(step.get("bytes_hex", record["bytes_hex"]))
            event = codec.decode(raw)
            outcomes += verifier.on_event(event, _origin(record["origin"], step, raw), now)
        elif "expire_at" in step:
            outcomes += verifier.expire(float(step["expire_at"]))
        else:
            raise ValueError(f"case {case['name']}: unknown step {step}")
    if keep is not None:
        for outcome in outcomes:
            keep(outcome)
    return [outcome_json(o) for o in outcomes]


# --- bundles ---------------------------------------------------------------------


def apply_mutations(data: bytes, variant: Mapping[str, Any]) -> bytes:
    """The bundle bytes of a variant: byte replacements, then truncation."""
    out = bytearray(data)
    for m in variant.get("mutations", []):
        if out[m["offset"]] != m["was"]:
            raise ValueError(f"variant {variant['name']}: byte {m['offset']} is not {m['was']}")
        out[m["offset"]] = m["byte"]
    if "truncate_to" in variant:
        del out[variant["truncate_to"] :]
    return bytes(out)


def verify_bundle_variant(
    data: bytes, variant: Mapping[str, Any], anchor: KeySet, codec: EventCodec
) -> BundleReport:
    """:func:`verify_bundle` on a variant's bytes with the variant's pin."""
    pin = variant["pin"]
    return verify_bundle(
        apply_mutations(data, variant),
        pinned_anchor=anchor if pin.get("anchor") else None,
        pinned_fingerprint=pin.get("fingerprint"),
        codec=codec,
    )


def bundle_outcomes(report: BundleReport) -> dict[str, Any]:
    """A report as the vectors write it: ``ok`` and every check's outcome
    (the human-readable details are not part of the vector)."""
    return {"ok": report.ok, "checks": {c.check.value: c.outcome.value for c in report.checks}}
