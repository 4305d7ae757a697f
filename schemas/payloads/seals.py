"""Payloads that anchor the log: the signed Merkle root over each batch of a
producer's events, and each archive segment sealed into the ledger."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

from cachet.schemas.payloads.wire import SignatureLine, _signatures

__all__ = [
    "ArchiveRange",
    "ArchiveSegmentSealed",
    "Seal",
]

# ---------------------------------------------------------------------- seals


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """A signed Merkle root over a batch of one producer's events (topic seals)."""

    producer_id: str  # identity@epoch
    seal_seq: int
    prev_seal_hash: bytes
    merkle_root: bytes
    tree_size: int
    first_producer_seq: int
    leaf_hashes: tuple[bytes, ...]
    leaf_topics: tuple[str, ...] = ()
    key_set_id: str
    signatures: tuple[SignatureLine, ...]
    sealed_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "seal_seq": self.seal_seq,
            "prev_seal_hash": self.prev_seal_hash,
            "merkle_root": self.merkle_root,
            "tree_size": self.tree_size,
            "first_producer_seq": self.first_producer_seq,
            "leaf_hashes": list(self.leaf_hashes),
            "leaf_topics": list(self.leaf_topics),
            "key_set_id": self.key_set_id,
            "signatures": [s.to_avro() for s in self.signatures],
            "sealed_at_us": self.sealed_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            seal_seq=d["seal_seq"],
            prev_seal_hash=d["prev_seal_hash"],
            merkle_root=d["merkle_root"],
            tree_size=d["tree_size"],
            first_producer_seq=d["first_producer_seq"],
            leaf_hashes=tuple(d["leaf_hashes"]),
            leaf_topics=tuple(d.get("leaf_topics", ())),
            key_set_id=d["key_set_id"],
            signatures=_signatures(d["signatures"]),
            sealed_at_us=d["sealed_at_us"],
        )


# -------------------------------------------------------------------- archive


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveRange:
    """The offsets (inclusive) of one topic partition an archive segment holds."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            topic=d["topic"],
            partition=d["partition"],
            first_offset=d["first_offset"],
            last_offset=d["last_offset"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveSegmentSealed:
    """An archive segment was closed (topic archive): its hash, chained to the
    previous segment's, anchored in the signed ledger."""

    archive_id: str
    segment_seq: int
    file_name: str
    segment_hash: bytes
    prev_segment_hash: bytes
    record_count: int
    ranges: tuple[ArchiveRange, ...]
    first_timestamp_us: int
    last_timestamp_us: int
    closed_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "archive_id": self.archive_id,
            "segment_seq": self.segment_seq,
            "file_name": self.file_name,
            "segment_hash": self.segment_hash,
            "prev_segment_hash": self.prev_segment_hash,
            "record_count": self.record_count,
            "ranges": [r.to_avro() for r in self.ranges],
            "first_timestamp_us": self.first_timestamp_us,
            "last_timestamp_us": self.last_timestamp_us,
            "closed_at_us": self.closed_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            archive_id=d["archive_id"],
            segment_seq=d["segment_seq"],
            file_name=d["file_name"],
            segment_hash=d["segment_hash"],
            prev_segment_hash=d["prev_segment_hash"],
            record_count=d["record_count"],
            ranges=tuple(ArchiveRange.from_avro(r) for r in d["ranges"]),
            first_timestamp_us=d["first_timestamp_us"],
            last_timestamp_us=d["last_timestamp_us"],
            closed_at_us=d["closed_at_us"],
        )
