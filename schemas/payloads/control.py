"""Payloads of the control topic: contracts, signing keys, roles and schema sets."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from cachet.config.enums import Role
from cachet.schemas.payloads.wire import (
    PublicKeyRecord,
    SignatureLine,
    _keys,
    _member,
    _signatures,
)

__all__ = [
    "ContractDefined",
    "RoleGranted",
    "SchemaSetPublished",
    "SigningKeyRegistered",
    "SigningKeyRevoked",
    "SigningKeyRotated",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractDefined:
    """A contract in force from this event on (topic control)."""

    name: str
    definition_json: str
    definition_hash: bytes

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition_json": self.definition_json,
            "definition_hash": self.definition_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            name=d["name"],
            definition_json=d["definition_json"],
            definition_hash=d["definition_hash"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRegistered:
    """A producer identity's key set, registered under the trust anchor."""

    producer_id: str  # the identity, no @epoch
    key_set_id: str
    keys: tuple[PublicKeyRecord, ...]
    valid_from_us: int
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "key_set_id": self.key_set_id,
            "keys": [k.to_avro() for k in self.keys],
            "valid_from_us": self.valid_from_us,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            key_set_id=d["key_set_id"],
            keys=_keys(d["keys"]),
            valid_from_us=d["valid_from_us"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRotated:
    """A producer identity moved to a new key set."""

    producer_id: str  # the identity, no @epoch
    old_key_set_id: str
    new_key_set_id: str
    keys: tuple[PublicKeyRecord, ...]
    rotated_at_us: int
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "old_key_set_id": self.old_key_set_id,
            "new_key_set_id": self.new_key_set_id,
            "keys": [k.to_avro() for k in self.keys],
            "rotated_at_us": self.rotated_at_us,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            old_key_set_id=d["old_key_set_id"],
            new_key_set_id=d["new_key_set_id"],
            keys=_keys(d["keys"]),
            rotated_at_us=d["rotated_at_us"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRevoked:
    """A key set was revoked from ``compromised_at_us`` on. ``reason`` is a
    :class:`cachet.crypto.registry.RevocationReason` value; the registry
    refuses any other."""

    producer_id: str  # the identity, no @epoch
    key_set_id: str
    compromised_at_us: int
    reason: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "key_set_id": self.key_set_id,
            "compromised_at_us": self.compromised_at_us,
            "reason": self.reason,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            key_set_id=d["key_set_id"],
            compromised_at_us=d["compromised_at_us"],
            reason=d["reason"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleGranted:
    """A principal was granted a role (topic control); ``namespace`` None: all.
    Role UNKNOWN (a symbol this reader does not know) grants nothing."""

    principal: str
    role: Role
    namespace: str | None = None
    granted_by: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "role": self.role.name,
            "namespace": self.namespace,
            "granted_by": self.granted_by,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            principal=d["principal"],
            role=_member(Role, d["role"]),
            namespace=d.get("namespace"),
            granted_by=d["granted_by"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaSetPublished:
    """A schema set announced under the trust anchor before producers use it
    (topic control, record key ``fingerprint``). ``schema_json`` is the
    self-contained envelope; readers learn it only after ``anchor_signatures``
    verify (:func:`cachet.crypto.registry.schema_set_statement`)."""

    release: str  # its folder name in schemas/history/, e.g. "v2"
    fingerprint: bytes  # 8 bytes, as in bytes 2-9 of the set's records
    schema_json: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "fingerprint": self.fingerprint,
            "schema_json": self.schema_json,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            release=d["release"],
            fingerprint=d["fingerprint"],
            schema_json=d["schema_json"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )
