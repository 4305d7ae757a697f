"""What every payload shares: the wire-only enums, the nested records, and
``_member``, the UNKNOWN fallback of every Avro enum symbol a reader does
not know."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self, TypeVar

from cachet.config.enums import Role
from cachet.freshness import FreshnessProof as ComputedFreshness

__all__ = [
    "AuthorityKind",
    "EncryptedValue",
    "ErasureScope",
    "FreshnessProof",
    "PublicKeyRecord",
    "ReadOutcome",
    "ScrubTrigger",
    "SignatureLine",
    "TransitionAuthority",
]

E = TypeVar("E", bound=enum.Enum)


def _member(cls: type[E], symbol: str) -> E:
    """The member of ``cls`` an Avro symbol names; UNKNOWN for one it does not."""
    try:
        return cls[symbol]
    except KeyError:
        return cls["UNKNOWN"]


# ------------------------------------------------------------------ wire enums
# Enums only the wire knows. EntryState (cachet.verdict), Role,
# InvalidationMode and ScrubMethod (cachet.config.enums) live in the kernel,
# which needs them too and cannot import this package.


class ReadOutcome(enum.Enum):
    """Result of a read (Avro ``ReadOutcome``)."""

    HIT = "HIT"
    MISS = "MISS"
    UNKNOWN = "UNKNOWN"


class AuthorityKind(enum.Enum):
    """Who made a state change (Avro ``AuthorityKind``): KEY is a client acting
    through a node's signing keys; SYSTEM_* a Cachet processor under a rule."""

    KEY = "KEY"
    SYSTEM_CONTRACT = "SYSTEM_CONTRACT"
    SYSTEM_VERIFICATION = "SYSTEM_VERIFICATION"
    SYSTEM_EXPIRY = "SYSTEM_EXPIRY"
    SYSTEM_ERASURE = "SYSTEM_ERASURE"
    UNKNOWN = "UNKNOWN"


class ErasureScope(enum.Enum):
    """What an erasure covers (Avro ``ErasureScope``); UNKNOWN: do not act."""

    SUBJECT = "SUBJECT"
    TENANT = "TENANT"
    UNKNOWN = "UNKNOWN"


class ScrubTrigger(enum.Enum):
    """Why KV-cache blocks are scrubbed (Avro ``ScrubTrigger``)."""

    REQUEST_FINISHED = "REQUEST_FINISHED"
    TTL_EXPIRED = "TTL_EXPIRED"
    MAX_REUSE = "MAX_REUSE"
    REVOCATION = "REVOCATION"
    ERASURE = "ERASURE"
    UNKNOWN = "UNKNOWN"


# ------------------------------------------------------------- nested records


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedValue:
    """A cache value as AES-256-GCM ciphertext (Avro ``EncryptedValue``)."""

    ciphertext: bytes
    nonce: bytes
    data_key_id: str
    commitment: bytes
    aad_version: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "ciphertext": self.ciphertext,
            "nonce": self.nonce,
            "data_key_id": self.data_key_id,
            "commitment": self.commitment,
            "aad_version": self.aad_version,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            ciphertext=d["ciphertext"],
            nonce=d["nonce"],
            data_key_id=d["data_key_id"],
            commitment=d["commitment"],
            aad_version=d["aad_version"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionAuthority:
    """Who or what made a state change (Avro ``TransitionAuthority``).

    ``key_id`` and ``role`` are set only for kind KEY: the acting node's key
    set id and the client's role in its config spelling (``Role.value``).
    """

    kind: AuthorityKind
    key_id: str | None = None
    role: str | None = None

    @classmethod
    def by_key(cls, key_set_id: str, role: Role) -> Self:
        """A client in ``role`` acting through the node keys ``key_set_id`` (kind KEY)."""
        return cls(kind=AuthorityKind.KEY, key_id=key_set_id, role=role.value)

    def text(self) -> str:
        """One line as the live view stores it: ``KEY:<key_id>:<role>``, or the kind."""
        if self.kind is AuthorityKind.KEY:
            return f"KEY:{self.key_id or ''}:{self.role or ''}"
        return self.kind.name

    def to_avro(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "key_id": self.key_id, "role": self.role}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            kind=_member(AuthorityKind, d["kind"]),
            key_id=d.get("key_id"),
            role=d.get("role"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FreshnessProof:
    """A freshness proof as CacheRead carries it (Avro ``FreshnessProof``).

    The proof a read computes is :class:`cachet.freshness.FreshnessProof`
    (which also holds the clock skew it saw); :meth:`of` converts it.
    """

    age_ms: int
    max_staleness_ms: int
    headroom_ms: int
    view_lag_ms: int

    @classmethod
    def of(cls, proof: ComputedFreshness) -> Self:
        """The wire record of a computed proof."""
        return cls(
            age_ms=proof.age_ms,
            max_staleness_ms=proof.max_staleness_ms,
            headroom_ms=proof.headroom_ms,
            view_lag_ms=proof.view_lag_ms,
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "age_ms": self.age_ms,
            "max_staleness_ms": self.max_staleness_ms,
            "headroom_ms": self.headroom_ms,
            "view_lag_ms": self.view_lag_ms,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            age_ms=d["age_ms"],
            max_staleness_ms=d["max_staleness_ms"],
            headroom_ms=d["headroom_ms"],
            view_lag_ms=d["view_lag_ms"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureLine:
    """One signature, one scheme (Avro ``SignatureLine``); ``algorithm`` is the
    lowercase scheme id (``SignatureScheme.value``, e.g. ``ml-dsa-65``)."""

    algorithm: str
    key_id: str
    signature: bytes

    def to_avro(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "signature": self.signature}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(algorithm=d["algorithm"], key_id=d["key_id"], signature=d["signature"])


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeyRecord:
    """A public key of a producer's key set (Avro ``PublicKeyRecord``)."""

    algorithm: str
    key_id: str
    public_key: bytes

    def to_avro(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "public_key": self.public_key}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(algorithm=d["algorithm"], key_id=d["key_id"], public_key=d["public_key"])


def _signatures(lines: Any) -> tuple[SignatureLine, ...]:
    return tuple(SignatureLine.from_avro(line) for line in lines)


def _keys(records: Any) -> tuple[PublicKeyRecord, ...]:
    return tuple(PublicKeyRecord.from_avro(record) for record in records)
