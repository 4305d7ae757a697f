"""Payloads of KV-cache scrubbing on inference workers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from cachet.config.enums import ScrubMethod
from cachet.schemas.payloads.wire import ScrubTrigger, _member

__all__ = [
    "KvBlockQuarantined",
    "KvScrubCompleted",
    "KvScrubRequested",
]

# ``tenant`` is always the lowercase hex of the tenant's keyed hash, never
# the tenant id itself.


@dataclass(frozen=True, slots=True, kw_only=True)
class KvScrubRequested:
    """KV-cache blocks must be scrubbed; ``worker_id`` None: every worker."""

    worker_id: str | None = None
    trigger: ScrubTrigger
    tenant: str
    request_id: str | None = None
    subject_hash: bytes | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "trigger": self.trigger.name,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d.get("worker_id"),
            trigger=_member(ScrubTrigger, d["trigger"]),
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            subject_hash=d.get("subject_hash"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KvScrubCompleted:
    """A worker scrubbed KV-cache blocks; ``coverage`` 0..1 of their bytes verified zero."""

    worker_id: str
    tenant: str
    request_id: str | None = None
    trigger: ScrubTrigger
    blocks: int
    bytes: int
    coverage: float
    method: ScrubMethod
    passes: int
    duration_us: int
    device: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "trigger": self.trigger.name,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "coverage": self.coverage,
            "method": self.method.name,
            "passes": self.passes,
            "duration_us": self.duration_us,
            "device": self.device,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d["worker_id"],
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            trigger=_member(ScrubTrigger, d["trigger"]),
            blocks=d["blocks"],
            bytes=d["bytes"],
            coverage=d["coverage"],
            method=_member(ScrubMethod, d["method"]),
            passes=d["passes"],
            duration_us=d["duration_us"],
            device=d["device"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KvBlockQuarantined:
    """KV-cache blocks that failed scrub verification were quarantined;
    ``reason`` is a ``processors.kvscrub`` QuarantineReason value."""

    worker_id: str
    tenant: str
    request_id: str | None = None
    blocks: int
    bytes: int
    reason: str
    coverage: float

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "reason": self.reason,
            "coverage": self.coverage,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d["worker_id"],
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            blocks=d["blocks"],
            bytes=d["bytes"],
            reason=d["reason"],
            coverage=d["coverage"],
        )
