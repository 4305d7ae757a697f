"""Payloads of a cache entry's life: writes and state transitions, reads,
invalidations and watermark ticks."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Self

from cachet.config.enums import InvalidationMode
from cachet.schemas.payloads.wire import (
    EncryptedValue,
    FreshnessProof,
    ReadOutcome,
    TransitionAuthority,
    _member,
)
from cachet.verdict import EntryState

__all__ = [
    "FRESHNESS_CONFIRMED",
    "CacheRead",
    "CacheReadBatch",
    "CacheWritten",
    "Invalidated",
    "StateTransitioned",
    "WatermarkTick",
]

# StateTransitioned.reason of a source's freshness confirmation: ACTIVE ->
# ACTIVE with exactly this reason (contractual invalidation mode).
FRESHNESS_CONFIRMED: Final = "freshness_confirmed"


# -------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheWritten:
    """A new version of a cache entry (topic entries)."""

    key_hash: bytes
    namespace: str
    contract: str
    fingerprint: bytes
    version: int
    value: EncryptedValue
    subject_hash: bytes | None = None
    classification: str
    ttl_ms: int | None = None
    prev_event_hash: bytes | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "value": self.value.to_avro(),
            "subject_hash": self.subject_hash,
            "classification": self.classification,
            "ttl_ms": self.ttl_ms,
            "prev_event_hash": self.prev_event_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            fingerprint=d["fingerprint"],
            version=d["version"],
            value=EncryptedValue.from_avro(d["value"]),
            subject_hash=d.get("subject_hash"),
            classification=d["classification"],
            ttl_ms=d.get("ttl_ms"),
            prev_event_hash=d.get("prev_event_hash"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StateTransitioned:
    """A cache entry version changed lifecycle state (topic entries).

    ``reason`` is :data:`FRESHNESS_CONFIRMED` exactly for a source's
    freshness confirmation (ACTIVE -> ACTIVE); otherwise text for people.
    """

    key_hash: bytes
    namespace: str
    version: int
    from_state: EntryState
    to_state: EntryState
    authority: TransitionAuthority
    reason: str
    prev_event_hash: bytes

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "version": self.version,
            "from_state": self.from_state.name,
            "to_state": self.to_state.name,
            "authority": self.authority.to_avro(),
            "reason": self.reason,
            "prev_event_hash": self.prev_event_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            version=d["version"],
            from_state=_member(EntryState, d["from_state"]),
            to_state=_member(EntryState, d["to_state"]),
            authority=TransitionAuthority.from_avro(d["authority"]),
            reason=d["reason"],
            prev_event_hash=d["prev_event_hash"],
        )


# ---------------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheRead:
    """A read was served or missed (topic reads). ``reason`` is ``served`` on a
    hit, else a :class:`cachet.verdict.MissReason` value; ``reader_role`` a
    :class:`Role` value (lowercase)."""

    key_hash: bytes
    namespace: str
    contract: str
    outcome: ReadOutcome
    reason: str
    fingerprint: bytes | None = None
    version: int | None = None
    freshness: FreshnessProof | None = None
    reader_role: str
    node_id: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "outcome": self.outcome.name,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "freshness": None if self.freshness is None else self.freshness.to_avro(),
            "reader_role": self.reader_role,
            "node_id": self.node_id,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        freshness = d.get("freshness")
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            outcome=_member(ReadOutcome, d["outcome"]),
            reason=d["reason"],
            fingerprint=d.get("fingerprint"),
            version=d.get("version"),
            freshness=None if freshness is None else FreshnessProof.from_avro(freshness),
            reader_role=d["reader_role"],
            node_id=d["node_id"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheReadBatch:
    """Reads of one node, many to a record (topic reads, record key
    ``node_id``): each item is exactly a :class:`CacheRead`, so read ``i`` is
    proven by (this event, ``i``) plus the event's inclusion proof."""

    node_id: str
    reads: tuple[CacheRead, ...]

    def to_avro(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "reads": [r.to_avro() for r in self.reads]}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            node_id=d["node_id"],
            reads=tuple(CacheRead.from_avro(r) for r in d["reads"]),
        )


# -------------------------------------------------------------- invalidations


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalidated:
    """A version of a key was invalidated (topic invalidations); ``version``
    None: every version. Cachet emits mode EAGER (a revoke)."""

    key_hash: bytes
    namespace: str
    mode: InvalidationMode
    version: int | None = None
    authority: TransitionAuthority
    reason: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "mode": self.mode.name,
            "version": self.version,
            "authority": self.authority.to_avro(),
            "reason": self.reason,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            mode=_member(InvalidationMode, d["mode"]),
            version=d.get("version"),
            authority=TransitionAuthority.from_avro(d["authority"]),
            reason=d["reason"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatermarkTick:
    """A periodic tick into one partition of invalidations."""

    ticker_id: str
    partition: int
    tick_seq: int
    emitted_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "ticker_id": self.ticker_id,
            "partition": self.partition,
            "tick_seq": self.tick_seq,
            "emitted_at_us": self.emitted_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            ticker_id=d["ticker_id"],
            partition=d["partition"],
            tick_seq=d["tick_seq"],
            emitted_at_us=d["emitted_at_us"],
        )
