"""Payloads of the alerts topic: contract violations, integrity failures,
unsealed timeouts and log discontinuities."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

__all__ = [
    "ContractViolation",
    "IntegrityFailure",
    "LogDiscontinuity",
    "UnsealedTimeout",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractViolation:
    """A read broke its contract; ``reason`` is its MissReason value."""

    key_hash: bytes
    namespace: str
    contract: str
    reason: str
    detail: str
    node_id: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "reason": self.reason,
            "detail": self.detail,
            "node_id": self.node_id,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            reason=d["reason"],
            detail=d["detail"],
            node_id=d["node_id"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityFailure:
    """A verification failed or a record was refused; ``status`` holds
    comma-separated IntegrityStatus values (or a dead-letter/intake reason)."""

    status: str
    producer_id: str | None = None
    seal_seq: int | None = None
    producer_seq: int | None = None
    topic: str
    partition: int
    offset: int
    detail: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "producer_id": self.producer_id,
            "seal_seq": self.seal_seq,
            "producer_seq": self.producer_seq,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "detail": self.detail,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            status=d["status"],
            producer_id=d.get("producer_id"),
            seal_seq=d.get("seal_seq"),
            producer_seq=d.get("producer_seq"),
            topic=d["topic"],
            partition=d["partition"],
            offset=d["offset"],
            detail=d["detail"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsealedTimeout:
    """An event stayed unsealed past the timeout."""

    producer_id: str
    producer_seq: int
    waited_ms: int
    topic: str
    partition: int
    offset: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "producer_seq": self.producer_seq,
            "waited_ms": self.waited_ms,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            producer_seq=d["producer_seq"],
            waited_ms=d["waited_ms"],
            topic=d["topic"],
            partition=d["partition"],
            offset=d["offset"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogDiscontinuity:
    """A gap, regression or broken chain in the log, or a log that vanished;
    offsets are -1 when not known."""

    kind: str
    topic: str
    partition: int
    expected_offset: int
    found_offset: int
    producer_id: str | None = None
    detail: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "expected_offset": self.expected_offset,
            "found_offset": self.found_offset,
            "producer_id": self.producer_id,
            "detail": self.detail,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            kind=d["kind"],
            topic=d["topic"],
            partition=d["partition"],
            expected_offset=d["expected_offset"],
            found_offset=d["found_offset"],
            producer_id=d.get("producer_id"),
            detail=d["detail"],
        )
