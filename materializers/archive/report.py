"""What ``cachet archive verify`` finds: typed checks, evidence, a report.

Every inconsistency carries its raw evidence (segment file, record index,
topic/partition/offset, expected vs found) and a position in the archive;
the report names the first one and presents nothing after it as verified.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AFTER_RECORDS",
    "ArchiveCheck",
    "ArchiveReport",
    "Inconsistency",
    "SegmentStatus",
    "SegmentVerdict",
]

# Record index of a finding about a segment as a whole that is found after
# its records were read (its anchor): it sorts after every record of the
# segment. Findings about the file itself (header, chain, backup) use -1.
AFTER_RECORDS = 1 << 62


class ArchiveCheck(enum.StrEnum):
    """Every check verify runs; the value names it in reports and alerts."""

    READABLE = "segment-readable"  # an OCF file of this format, to its last byte
    SEQUENCE = "segment-sequence"  # names and headers number segments 0, 1, 2, ...
    ARCHIVE_ID = "archive-id"  # every segment belongs to one archive
    CHAIN = "chain"  # each header holds the previous file's SHA3-256
    BACKUP = "backup"  # the backup set holds the same bytes
    TOPIC = "topic"  # records come from this deployment's topics
    OFFSETS = "offsets"  # per partition: contiguous, no gap, no duplicate
    SEAL_REF = "seal-ref"  # the archived seal field is what the envelope says
    REGISTRY = "registry"  # key registrations and schema sets are anchor-signed
    ENVELOPE = "envelope"  # a record on a signed topic decodes as an event
    SEAL = "seal"  # every seal: three signatures, root, chain, registered key
    LEAF = "leaf"  # every sealed record: its leaf hash, position and topic
    ANCHOR = "anchor"  # each segment's ArchiveSegmentSealed matches it


class SegmentStatus(enum.StrEnum):
    VERIFIED = "verified"
    # Every check passed but its ledger anchor is not in the archive yet
    # (the newest segments: their anchors are archived in later segments).
    UNANCHORED = "unanchored"
    # Every check passed; its anchor is not archived yet but the broker's verified.
    ANCHORED_IN_BROKER = "anchored-in-broker"
    BROKEN = "broken"  # holds the first inconsistency
    NOT_VERIFIED = "not-verified"  # after the first inconsistency


@dataclass(frozen=True, slots=True)
class Inconsistency:
    """One failed check with its raw evidence."""

    check: ArchiveCheck
    detail: str
    segment_index: int  # position of the segment file in chain order
    segment: str | None = None  # file name
    record_index: int = -1  # -1: the file itself; AFTER_RECORDS: after its records
    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    expected: str = ""
    found: str = ""

    @property
    def position(self) -> tuple[int, int]:
        return (self.segment_index, self.record_index)

    def describe(self) -> str:
        where = [self.segment or f"segment #{self.segment_index}"]
        if 0 <= self.record_index < AFTER_RECORDS:
            where.append(f"record {self.record_index}")
        if self.topic is not None:
            where.append(f"{self.topic}[{self.partition}]@{self.offset}")
        text = f"{self.check.value}: {' '.join(where)}: {self.detail}"
        if self.expected or self.found:
            text += f" (expected {self.expected or '-'}, found {self.found or '-'})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {
            "check": self.check.value,
            "detail": self.detail,
            "segment": self.segment,
            "record_index": self.record_index if 0 <= self.record_index < AFTER_RECORDS else None,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "expected": self.expected,
            "found": self.found,
        }


@dataclass(frozen=True, slots=True)
class SegmentVerdict:
    name: str
    seq: int | None
    status: SegmentStatus
    records: int
    sha3_256: str


@dataclass(frozen=True, slots=True)
class ArchiveReport:
    """The verdict on one archive. ``ok`` only when nothing failed.

    Counts cover only the segments before the first inconsistency:
    ``records_verified`` (covered by a verified seal or anchor-signed),
    ``seals_verified``; ``unsealed_pending`` are records whose seal is not
    in the archive (yet): not verified, not an inconsistency.
    """

    archive_id: str | None
    segments: tuple[SegmentVerdict, ...]
    first: Inconsistency | None
    records_verified: int
    seals_verified: int
    unsealed_pending: int
    unsigned: int  # dead letters: byte copies of refused records, signed by no one

    @property
    def ok(self) -> bool:
        return self.first is None

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "archive_id": self.archive_id,
            "first_inconsistency": None if self.first is None else self.first.to_json(),
            "records_verified": self.records_verified,
            "seals_verified": self.seals_verified,
            "unsealed_pending": self.unsealed_pending,
            "unsigned": self.unsigned,
            "segments": [
                {
                    "name": s.name,
                    "seq": s.seq,
                    "status": s.status.value,
                    "records": s.records,
                    "sha3_256": s.sha3_256,
                }
                for s in self.segments
            ],
        }
