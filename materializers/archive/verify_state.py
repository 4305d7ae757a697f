"""What one archive verification collects (shared by its passes)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cachet.materializers.archive.report import ArchiveCheck, Inconsistency
from cachet.materializers.archive.segment import ArchivedRecord, SegmentHeader, SegmentInfo
from cachet.schemas.payloads import ArchiveSegmentSealed
from cachet.topics import TopicNames

__all__ = ["Pos", "Run", "Segment"]


@dataclass(frozen=True, slots=True)
class Pos:
    """Where a record (or a finding) is: segment file index and name, record index."""

    index: int  # segment file index
    name: str
    record: int


@dataclass
class Segment:
    """One segment file as the structure pass read it."""

    index: int
    path: Path
    data_hash: bytes
    header: SegmentHeader | None = None
    info: SegmentInfo | None = None


@dataclass
class Run:
    """Everything one verification collects."""

    names: TopicNames
    findings: list[Inconsistency] = field(default_factory=list)
    segments: list[Segment] = field(default_factory=list)
    control: list[tuple[Pos, ArchivedRecord]] = field(default_factory=list)
    verified: dict[int, int] = field(default_factory=dict)  # per segment index
    seals: dict[int, int] = field(default_factory=dict)
    unsigned: dict[int, int] = field(default_factory=dict)
    anchors: list[tuple[Pos, ArchiveSegmentSealed, str]] = field(default_factory=list)
    pending: int = 0

    def find(self, check: ArchiveCheck, detail: str, pos: Pos, rec: ArchivedRecord | None = None, *, expected: str = "", found: str = "") -> None:  # fmt: skip
        self.findings.append(
            Inconsistency(
                check,
                detail,
                pos.index,
                pos.name,
                pos.record,
                rec.topic if rec else None,
                rec.partition if rec else None,
                rec.offset if rec else None,
                expected,
                found,
            )
        )
