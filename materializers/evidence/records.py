"""What an evidence export reads: verified records with their provenance.

Every row of every exported table comes from one :class:`EvidenceRecord`:
an event that was verified on its way in (a verified seal covers it, or,
for key-registry statements, the trust anchor's signatures verify), with
its exact log bytes and where it sat in the log. Exports never see an
unverified event: what a source refused is counted in its
:class:`VerificationSummary`, which the report and the manifest carry.

The point-in-time replay (``materializers/replay``) yields the same facts
as its ``VerifiedEvent``; :mod:`.replay_source` adapts it.
"""

from __future__ import annotations

import enum
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Protocol

from cachet.crypto.merkle import leaf_hash
from cachet.materializers.evidence.errors import WindowError
from cachet.schemas.events import Event
from cachet.topics import Topic

__all__ = [
    "Attestation",
    "EvidenceRecord",
    "EvidenceSource",
    "UNSEALED_STATUSES",
    "ReadRecord",
    "RefusedRecord",
    "SealProof",
    "VerificationSummary",
    "Window",
    "parse_time_us",
]


class Attestation(enum.Enum):
    """Why a record may be trusted."""

    SEALED = "sealed"  # a verified seal (triple signature, Merkle leaf) covers it
    ANCHOR_SIGNED = "anchor_signed"  # a key-registry statement the trust anchor signed


@dataclass(frozen=True, slots=True)
class SealProof:
    """The verified seal that covers an event: enough to fetch its CAB later."""

    producer_id: str
    seal_seq: int
    leaf_index: int
    key_set_id: str
    sealed_at_us: int
    merkle_root: bytes


@dataclass(frozen=True, slots=True)
class EvidenceRecord:
    """One verified event, its exact log bytes and its place in the log.

    ``seal`` is set exactly when ``attestation`` is SEALED.
    """

    event: Event
    topic: Topic
    partition: int
    offset: int
    raw: bytes
    attestation: Attestation
    seal: SealProof | None = None

    def __post_init__(self) -> None:
        # An export row claims its provenance: a "sealed" row without a seal
        # (or an anchor-signed one with one) would be a claim nobody checked.
        if (self.attestation is Attestation.SEALED) != (self.seal is not None):
            raise ValueError(
                f"event {self.event.event_id}: attestation {self.attestation.value} "
                f"{'needs' if self.seal is None else 'takes no'} seal proof"
            )

    @property
    def leaf_hash(self) -> bytes:
        """SHA3-256(0x00 || raw): the Merkle leaf the seal signed."""
        return leaf_hash(self.raw)


@dataclass(frozen=True, slots=True)
class ReadRecord:
    """One audited read and the verified record that holds it: a CacheRead
    event (``index`` None: the event is the read) or a CacheReadBatch
    (``index``: the read's position in its ``reads``). ``payload`` is the
    read's CacheRead record; the record's provenance (event id, offset, seal,
    leaf hash) plus ``index`` is what a read bundle is exported from."""

    record: EvidenceRecord
    index: int | None
    payload: Mapping[str, Any]

    @property
    def event(self) -> Event:
        return self.record.event


# Statuses of a record no verified seal covered (the verifier's and the replay's names).
UNSEALED_STATUSES = frozenset({"unsealed_timeout", "unsealed"})


@dataclass(frozen=True, slots=True)
class RefusedRecord:
    """A record a source did not accept, and why (never exported as evidence)."""

    status: str
    detail: str
    topic: str
    partition: int
    offset: int


@dataclass(slots=True)
class VerificationSummary:
    """What a source verified and refused while it was read."""

    source: str
    verified: int = 0
    refused: list[RefusedRecord] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the source refused nothing."""
        return not self.refused

    @property
    def unsealed(self) -> list[RefusedRecord]:
        """Records no verified seal covered by the end of the source: on a
        live log, usually its tail whose seal was not written yet."""
        return [r for r in self.refused if r.status in UNSEALED_STATUSES]

    @property
    def intact(self) -> bool:
        """True when nothing was refused but unsealed records: no forged,
        tampered, replayed or out-of-order record, no missing leaf."""
        return len(self.unsealed) == len(self.refused)

    def refused_by_status(self) -> dict[str, int]:
        return dict(sorted(Counter(r.status for r in self.refused).items()))

    def as_json(self) -> dict[str, object]:
        return {
            "source": self.source,
            "verified_events": self.verified,
            "refused_records": len(self.refused),
            "unsealed_records": len(self.unsealed),
            "intact": self.intact,
            "refused_by_status": self.refused_by_status(),
        }


class EvidenceSource(Protocol):
    """Verified records in log order per partition; ``summary`` is complete
    once :meth:`records` was iterated to its end."""

    @property
    def summary(self) -> VerificationSummary: ...

    def records(self) -> Iterator[EvidenceRecord]: ...


@dataclass(frozen=True, slots=True)
class Window:
    """An export window over event time: ``from_us <= occurred_at_us < to_us``."""

    from_us: int
    to_us: int

    def __post_init__(self) -> None:
        if self.from_us >= self.to_us:
            raise WindowError(
                f"the window is empty: from {iso(self.from_us)} is not before to {iso(self.to_us)}"
            )

    def __contains__(self, occurred_at_us: object) -> bool:
        return isinstance(occurred_at_us, int) and self.from_us <= occurred_at_us < self.to_us

    def as_json(self) -> dict[str, object]:
        return {
            "from_us": self.from_us,
            "to_us": self.to_us,
            "from": iso(self.from_us),
            "to": iso(self.to_us),
        }


def iso(us: int) -> str:
    """Microseconds since the epoch as ISO 8601 UTC with microseconds."""
    return datetime.fromtimestamp(us / 1_000_000, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_time_us(text: str) -> int:
    """``text`` as microseconds since the epoch: an integer (microseconds) or
    ISO 8601 (``2026-12-01T14:32:00Z``; no zone means UTC). Raises
    :class:`WindowError` naming the text otherwise."""
    stripped = text.strip()
    if stripped.lstrip("-").isdigit():
        return int(stripped)
    try:
        moment = datetime.fromisoformat(stripped.replace("Z", "+00:00"))
    except ValueError as exc:
        raise WindowError(
            f"time {text!r} is neither ISO 8601 (2026-12-01T14:32:00Z) nor microseconds"
        ) from exc
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    delta = moment - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds
