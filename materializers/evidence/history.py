"""The verified history an export is made from, sorted by kind of event.

One pass over an :class:`~cachet.materializers.evidence.records.EvidenceSource`
keeps what any export needs: every event up to the window's end (history
before the window says which contract and which keys were in force when it
opened, and which contract a key's later transitions belong to), sorted
into kinds. Events after the window are not kept.

Reads are kept one by one (:class:`~.records.ReadRecord`): a CacheRead event
is one read, a CacheReadBatch event each of its reads, in batch order
(:func:`cachet.ledger.reads.audited_reads`), so every export counts and
lists reads, never read events.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

from cachet.ledger.reads import READ_EVENT_TYPES, audited_reads
from cachet.materializers.evidence.records import EvidenceRecord, ReadRecord, Window
from cachet.schemas.events import Event, EventType

__all__ = ["ALERT_TYPES", "KEY_EVENT_TYPES", "History", "collect"]

KEY_EVENT_TYPES = frozenset(
    {
        EventType.SIGNING_KEY_REGISTERED,
        EventType.SIGNING_KEY_ROTATED,
        EventType.SIGNING_KEY_REVOKED,
    }
)
ALERT_TYPES = frozenset(
    {EventType.INTEGRITY_FAILURE, EventType.UNSEALED_TIMEOUT, EventType.LOG_DISCONTINUITY}
)


class _Timed(Protocol):
    @property
    def event(self) -> Event: ...


_T = TypeVar("_T", bound=_Timed)


@dataclass(slots=True)
class History:
    """Verified events up to ``window.to_us``, by kind, in event-time order."""

    window: Window
    writes: list[EvidenceRecord] = field(default_factory=list)
    transitions: list[EvidenceRecord] = field(default_factory=list)
    invalidations: list[EvidenceRecord] = field(default_factory=list)
    reads: list[ReadRecord] = field(default_factory=list)
    violations: list[EvidenceRecord] = field(default_factory=list)
    alerts: list[EvidenceRecord] = field(default_factory=list)
    key_events: list[EvidenceRecord] = field(default_factory=list)
    contracts: list[EvidenceRecord] = field(default_factory=list)
    role_grants: list[EvidenceRecord] = field(default_factory=list)
    erasures: list[EvidenceRecord] = field(default_factory=list)
    kv_scrubs: list[EvidenceRecord] = field(default_factory=list)
    archive_segments: list[EvidenceRecord] = field(default_factory=list)
    # Every key-registry statement, whenever published (the exporter's own
    # registration may come after the window).
    registry: list[EvidenceRecord] = field(default_factory=list)
    seen: int = 0

    def in_window(self, records: Iterable[_T]) -> list[_T]:
        return [r for r in records if r.event.occurred_at_us in self.window]

    def contract_of_key(self) -> dict[tuple[bytes, int], str]:
        """(key hash, version) -> contract, from every write kept."""
        return {
            (r.event.payload["key_hash"], r.event.payload["version"]): r.event.payload["contract"]
            for r in self.writes
        }

    def latest_contract_of_key(self) -> dict[bytes, str]:
        """key hash -> the contract of its latest write kept."""
        return {r.event.payload["key_hash"]: r.event.payload["contract"] for r in self.writes}


_BUCKET = {
    EventType.CACHE_WRITTEN: "writes",
    EventType.STATE_TRANSITIONED: "transitions",
    EventType.INVALIDATED: "invalidations",
    EventType.CONTRACT_VIOLATION: "violations",
    EventType.CONTRACT_DEFINED: "contracts",
    EventType.ROLE_GRANTED: "role_grants",
    EventType.ERASURE_REQUESTED: "erasures",
    EventType.ERASURE_COMPLETED: "erasures",
    EventType.KV_SCRUB_COMPLETED: "kv_scrubs",
    EventType.KV_BLOCK_QUARANTINED: "kv_scrubs",
    EventType.ARCHIVE_SEGMENT_SEALED: "archive_segments",
    **{t: "alerts" for t in ALERT_TYPES},
    **{t: "key_events" for t in KEY_EVENT_TYPES},
}


def _order(record: EvidenceRecord) -> tuple[int, str, int, int]:
    return (record.event.occurred_at_us, record.topic.value, record.partition, record.offset)


def _read_order(read: ReadRecord) -> tuple[int, str, int, int, int]:
    return (*_order(read.record), -1 if read.index is None else read.index)


def collect(
    records: Iterable[EvidenceRecord],
    window: Window,
    progress: Callable[[int], None] | None = None,
) -> History:
    """Sort ``records`` into a :class:`History` for ``window``."""
    history = History(window)
    for record in records:
        history.seen += 1
        if progress is not None and history.seen % 1000 == 0:
            progress(history.seen)
        if record.event.type in KEY_EVENT_TYPES:
            history.registry.append(record)
        if record.event.occurred_at_us >= window.to_us:
            continue
        if record.event.type in READ_EVENT_TYPES:
            history.reads.extend(
                ReadRecord(record, read.index, read.payload) for read in audited_reads(record.event)
            )
            continue
        bucket = _BUCKET.get(record.event.type)
        if bucket is not None:
            getattr(history, bucket).append(record)
    for name in {*_BUCKET.values(), "registry"}:
        getattr(history, name).sort(key=_order)
    history.reads.sort(key=_read_order)
    if progress is not None:
        progress(history.seen)
    return history
