"""Key registry events: anchor-signed SigningKeyRegistered / Rotated / Revoked.

These control events are not sealed by a producer: each carries the trust
anchor's signatures over its registry statement (see
:mod:`cachet.crypto.registry`), so it authenticates itself and a verifying
consumer refuses any the anchor did not sign.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cachet.crypto.registry import (
    RevocationReason,
    registration_statement,
    revocation_statement,
    rotation_statement,
    sign_statement,
)
from cachet.crypto.seal import KeySet, PrivateKeySet, SignatureLine

__all__ = [
    "registration_payload",
    "revocation_payload",
    "rotation_payload",
]


def _keys(key_set: KeySet) -> list[dict[str, Any]]:
    return [
        {"algorithm": s.value, "key_id": key_set.key_id(s), "public_key": pk}
        for s, pk in key_set.public_keys.items()
    ]


def _lines(lines: Sequence[SignatureLine]) -> list[dict[str, Any]]:
    return [{"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature} for s in lines]


def registration_payload(
    identity: str, key_set: KeySet, valid_from_us: int, anchor: PrivateKeySet
) -> dict[str, Any]:
    statement = registration_statement(identity, key_set, valid_from_us)
    return {
        "producer_id": identity,
        "key_set_id": key_set.key_set_id,
        "keys": _keys(key_set),
        "valid_from_us": valid_from_us,
        "anchor_signatures": _lines(sign_statement(statement, anchor)),
    }


def revocation_payload(
    identity: str,
    key_set_id: str,
    compromised_at_us: int,
    reason: RevocationReason | str,
    anchor: PrivateKeySet,
) -> dict[str, Any]:
    statement = revocation_statement(identity, key_set_id, compromised_at_us, reason)
    return {
        "producer_id": identity,
        "key_set_id": key_set_id,
        "compromised_at_us": compromised_at_us,
        "reason": RevocationReason(reason).value,
        "anchor_signatures": _lines(sign_statement(statement, anchor)),
    }


def rotation_payload(
    identity: str,
    old_key_set_id: str,
    new_key_set: KeySet,
    rotated_at_us: int,
    anchor: PrivateKeySet,
) -> dict[str, Any]:
    statement = rotation_statement(identity, old_key_set_id, new_key_set, rotated_at_us)
    return {
        "producer_id": identity,
        "old_key_set_id": old_key_set_id,
        "new_key_set_id": new_key_set.key_set_id,
        "keys": _keys(new_key_set),
        "rotated_at_us": rotated_at_us,
        "anchor_signatures": _lines(sign_statement(statement, anchor)),
    }
