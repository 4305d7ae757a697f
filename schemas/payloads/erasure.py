"""Payloads of erasure: the request, its completion in stages, and legal holds."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from cachet.schemas.payloads.wire import ErasureScope, _member

__all__ = [
    "ErasureCompleted",
    "ErasureRequested",
    "ErasureStage",
    "ErasureStep",
    "HeldEntry",
    "LegalHoldAction",
    "LegalHoldChanged",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureRequested:
    """A GDPR erasure was requested (topic erasure); ``namespace`` None: all."""

    request_id: str
    subject_hash: bytes
    scope: ErasureScope
    requested_by: str
    legal_basis: str
    namespace: str | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
            "scope": self.scope.name,
            "requested_by": self.requested_by,
            "legal_basis": self.legal_basis,
            "namespace": self.namespace,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            request_id=d["request_id"],
            subject_hash=d["subject_hash"],
            scope=_member(ErasureScope, d["scope"]),
            requested_by=d["requested_by"],
            legal_basis=d["legal_basis"],
            namespace=d.get("namespace"),
        )


class ErasureStage(enum.Enum):
    """Which part of an erasure an ErasureCompleted reports (its ``stage``)."""

    IMMEDIATE = "immediate"  # the request itself
    RETENTION_END = "retention_end"  # entries held by a retention obligation, when it ended
    HOLD_LIFTED = "hold_lifted"  # entries held by a legal hold, when it was lifted


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureStep:
    """One step of an erasure (revoke, destroy_keys, evict, kv_scrub) and when it ran."""

    name: str
    started_at_us: int
    finished_at_us: int
    count: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at_us": self.started_at_us,
            "finished_at_us": self.finished_at_us,
            "count": self.count,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            name=d["name"],
            started_at_us=d["started_at_us"],
            finished_at_us=d["finished_at_us"],
            count=d["count"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldEntry:
    """An entry an erasure did not erase yet, the legal ground, and until when
    (``held_until_us`` None: until a legal hold is lifted)."""

    key_hash: bytes
    namespace: str
    contract: str
    ground: str
    held_until_us: int | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "ground": self.ground,
            "held_until_us": self.held_until_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            ground=d["ground"],
            held_until_us=d.get("held_until_us"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureCompleted:
    """An erasure stage was carried out (topic erasure); one per (request_id, stage).

    ``stage`` is an :class:`ErasureStage` value; a symbol this reader does not
    know is kept as text (the field is a string on the wire).
    """

    request_id: str
    subject_hash: bytes
    entries_revoked: int
    data_keys_destroyed: int
    l1_evictions: int
    kv_blocks_scrubbed: int
    proof_hash: bytes
    namespace: str | None = None
    stage: str = ErasureStage.IMMEDIATE.value
    destroyed_key_ids: tuple[str, ...] = ()
    steps: tuple[ErasureStep, ...] = ()
    failures: tuple[str, ...] = ()
    held: tuple[HeldEntry, ...] = ()

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
            "entries_revoked": self.entries_revoked,
            "data_keys_destroyed": self.data_keys_destroyed,
            "l1_evictions": self.l1_evictions,
            "kv_blocks_scrubbed": self.kv_blocks_scrubbed,
            "proof_hash": self.proof_hash,
            "namespace": self.namespace,
            "stage": self.stage,
            "destroyed_key_ids": list(self.destroyed_key_ids),
            "steps": [step.to_avro() for step in self.steps],
            "failures": list(self.failures),
            "held": [entry.to_avro() for entry in self.held],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        # The v3 fields have defaults: a v1/v2 event decodes with them.
        return cls(
            request_id=d["request_id"],
            subject_hash=d["subject_hash"],
            entries_revoked=d["entries_revoked"],
            data_keys_destroyed=d["data_keys_destroyed"],
            l1_evictions=d["l1_evictions"],
            kv_blocks_scrubbed=d["kv_blocks_scrubbed"],
            proof_hash=d["proof_hash"],
            namespace=d.get("namespace"),
            stage=d.get("stage", ErasureStage.IMMEDIATE.value),
            destroyed_key_ids=tuple(d.get("destroyed_key_ids", ())),
            steps=tuple(ErasureStep.from_avro(x) for x in d.get("steps", ())),
            failures=tuple(d.get("failures", ())),
            held=tuple(HeldEntry.from_avro(x) for x in d.get("held", ())),
        )


class LegalHoldAction(enum.Enum):
    """What happened to a legal hold (Avro ``LegalHoldAction``); UNKNOWN: do not act."""

    SET = "SET"
    LIFTED = "LIFTED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegalHoldChanged:
    """A legal hold on a subject and/or a namespace was set or lifted (topic erasure)."""

    hold_id: str
    action: LegalHoldAction
    subject_hash: bytes | None = None
    namespace: str | None = None
    reason: str
    changed_by: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "action": self.action.name,
            "subject_hash": self.subject_hash,
            "namespace": self.namespace,
            "reason": self.reason,
            "changed_by": self.changed_by,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            hold_id=d["hold_id"],
            action=_member(LegalHoldAction, d["action"]),
            subject_hash=d.get("subject_hash"),
            namespace=d.get("namespace"),
            reason=d["reason"],
            changed_by=d["changed_by"],
        )
