"""The archive's segment files: Avro Object Container Files, hash-chained.

One segment is one OCF file ``segment-<seq:012d>.avro`` whose records are
:data:`RECORD_SCHEMA` (``cachet.archive.ArchivedRecord``): a record exactly
as the log held it (topic, partition, offset, broker timestamp, key, value
bytes, headers) plus the seal the record's envelope names, when it has one.
The header metadata chains the segments (``docs/archive-format.md`` is the
byte-level specification)::

    cachet.format             "1"
    cachet.archive_id         the archive (one chain per archive)
    cachet.segment_seq        decimal, from 0, dense
    cachet.prev_segment_hash  hex SHA3-256 of the previous segment file
                              (64 zeros for segment 0)
    cachet.start_offsets      JSON [[topic, partition, next offset], ...]:
                              where every partition stood when the segment
                              opened (its first record there must be at it)

The hash of a segment is SHA3-256 over the closed file's bytes. Readers here
(:func:`iter_archive`, :func:`list_segments`) check the chain as they go; the
full verification (seals, leaves, anchors, backup) is
:mod:`cachet.materializers.archive.verify`.
"""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import re
import uuid
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

import fastavro

from cachet.ledger.record import RecordOrigin
from cachet.materializers.archive.errors import ArchiveChainError, ArchiveError, ArchiveFormatError

__all__ = [
    "FORMAT_VERSION",
    "META_ARCHIVE_ID",
    "META_FORMAT",
    "META_PREV_SEGMENT_HASH",
    "META_SEGMENT_SEQ",
    "META_START_OFFSETS",
    "PARSED_RECORD_SCHEMA",
    "RECORD_SCHEMA",
    "ZERO_HASH",
    "ArchivedHeader",
    "ArchivedRecord",
    "ArchivedSealRef",
    "PartitionRange",
    "SegmentHeader",
    "SegmentInfo",
    "encode_start_offsets",
    "iter_archive",
    "iter_segment_records",
    "list_segments",
    "read_header",
    "read_segment",
    "segment_files",
    "segment_hash",
    "segment_name",
    "seq_of_name",
    "summarize",
    "uuid_archive_id",
]

FORMAT_VERSION = "1"
META_FORMAT = "cachet.format"
META_ARCHIVE_ID = "cachet.archive_id"
META_SEGMENT_SEQ = "cachet.segment_seq"
META_PREV_SEGMENT_HASH = "cachet.prev_segment_hash"
META_START_OFFSETS = "cachet.start_offsets"
# The previous-segment hash of segment 0.
ZERO_HASH = bytes(32)

_NAME = re.compile(r"^segment-(\d{12})\.avro$")

RECORD_SCHEMA: dict[str, Any] = {
    "type": "record",
    "name": "ArchivedRecord",
    "namespace": "cachet.archive",
    "fields": [
        {"name": "topic", "type": "string"},
        {"name": "partition", "type": "int"},
        {"name": "offset", "type": "long"},
        {"name": "timestamp_ms", "type": "long"},
        {"name": "key", "type": ["null", "bytes"]},
        {"name": "value", "type": ["null", "bytes"]},
        {
            "name": "headers",
            "type": {
                "type": "array",
                "items": {
                    "type": "record",
                    "name": "ArchivedHeader",
                    "fields": [
                        {"name": "key", "type": "string"},
                        {"name": "value", "type": ["null", "bytes"]},
                    ],
                },
            },
        },
        {
            "name": "seal",
            "type": [
                "null",
                {
                    "type": "record",
                    "name": "ArchivedSealRef",
                    "fields": [
                        {"name": "producer_id", "type": "string"},
                        {"name": "seal_seq", "type": "long"},
                        {"name": "leaf_index", "type": "int"},
                    ],
                },
            ],
        },
    ],
}
PARSED_RECORD_SCHEMA = fastavro.parse_schema(RECORD_SCHEMA)


@dataclass(frozen=True, slots=True)
class ArchivedHeader:
    """One Kafka record header, exactly as the log held it."""

    key: str
    value: bytes | None


@dataclass(frozen=True, slots=True)
class ArchivedSealRef:
    """The seal a record's envelope names (an index, never trusted by verify:
    the verifier reads the envelope from ``value`` itself)."""

    producer_id: str
    seal_seq: int
    leaf_index: int


@dataclass(frozen=True, slots=True)
class ArchivedRecord:
    """One log record as archived: its coordinates and its exact bytes."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int  # the broker's record timestamp
    key: bytes | None
    value: bytes | None  # the exact log bytes: what a seal's leaf hash covers
    headers: tuple[ArchivedHeader, ...] = ()
    seal: ArchivedSealRef | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "key": self.key,
            "value": self.value,
            "headers": [{"key": h.key, "value": h.value} for h in self.headers],
            "seal": None
            if self.seal is None
            else {
                "producer_id": self.seal.producer_id,
                "seal_seq": self.seal.seal_seq,
                "leaf_index": self.seal.leaf_index,
            },
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> ArchivedRecord:
        seal = d["seal"]
        return cls(
            topic=d["topic"],
            partition=d["partition"],
            offset=d["offset"],
            timestamp_ms=d["timestamp_ms"],
            key=d["key"],
            value=d["value"],
            headers=tuple(ArchivedHeader(h["key"], h["value"]) for h in d["headers"]),
            seal=None
            if seal is None
            else ArchivedSealRef(seal["producer_id"], seal["seal_seq"], seal["leaf_index"]),
        )

    def origin(self) -> RecordOrigin:
        """The record as the verifier and the consumers of the log see it
        (a null key, header value or value reads as empty bytes there)."""
        return RecordOrigin(
            self.topic,
            self.partition,
            self.offset,
            self.key or b"",
            self.timestamp_ms,
            tuple((h.key, h.value or b"") for h in self.headers),
            self.value or b"",
        )


@dataclass(frozen=True, slots=True)
class PartitionRange:
    """The offsets (inclusive) of one topic partition a segment holds."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int


@dataclass(frozen=True, slots=True)
class SegmentHeader:
    """A segment's chain metadata, read from its OCF header."""

    archive_id: str
    segment_seq: int
    prev_segment_hash: bytes
    start_offsets: Mapping[tuple[str, int], int]
    format: str = FORMAT_VERSION


@dataclass(frozen=True, slots=True)
class SegmentInfo:
    """One closed segment: its chain links and what it holds."""

    seq: int
    name: str
    path: Path
    hash: bytes
    prev_hash: bytes
    archive_id: str
    record_count: int
    first_timestamp_ms: int | None
    last_timestamp_ms: int | None
    ranges: tuple[PartitionRange, ...]
    start_offsets: Mapping[tuple[str, int], int] = field(
        default_factory=lambda: MappingProxyType({})
    )

    @property
    def end_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition, the next offset after this segment (where the next
        segment starts): the start offsets moved past this segment's ranges."""
        out = dict(self.start_offsets)
        for r in self.ranges:
            out[(r.topic, r.partition)] = r.last_offset + 1
        return out


def segment_name(seq: int) -> str:
    """The file name of segment ``seq`` (names sort in chain order)."""
    if not 0 <= seq < 10**12:
        raise ValueError(f"segment sequence {seq} out of range")
    return f"segment-{seq:012d}.avro"


def uuid_archive_id() -> str:
    """A new archive id: 32 lowercase hex digits (random UUID)."""
    return uuid.uuid4().hex


def seq_of_name(name: str) -> int | None:
    """The sequence number a segment file name claims (None: not a segment name)."""
    m = _NAME.match(name)
    return int(m.group(1)) if m else None


def segment_hash(data: bytes) -> bytes:
    """SHA3-256 of a closed segment file's bytes: the chain's link."""
    return hashlib.sha3_256(data).digest()


def encode_start_offsets(offsets: Mapping[tuple[str, int], int]) -> str:
    """The ``cachet.start_offsets`` value: canonical JSON, sorted, no spaces."""
    rows = sorted([t, p, o] for (t, p), o in offsets.items())
    return json.dumps(rows, separators=(",", ":"))


def _decode_start_offsets(path: Path, text: str) -> Mapping[tuple[str, int], int]:
    try:
        rows = json.loads(text)
        out = {(str(t), int(p)): int(o) for t, p, o in rows}
    except (ValueError, TypeError) as exc:
        raise ArchiveFormatError(
            path, f"{META_START_OFFSETS} is not [[topic, partition, offset]]"
        ) from exc
    return MappingProxyType(out)


def _meta_text(meta: Mapping[str, Any], key: str, path: Path) -> str:
    value = meta.get(key)
    if value is None:
        raise ArchiveFormatError(path, f"header metadata has no {key!r}")
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _open_reader(data: bytes, path: Path) -> Any:
    try:
        return fastavro.reader(io.BytesIO(data))
    except Exception as exc:  # noqa: BLE001 - fastavro raises many types on bad headers
        raise ArchiveFormatError(path, f"not an Avro object container file: {exc}") from exc


def read_header(data: bytes, path: Path) -> SegmentHeader:
    """The chain metadata of the segment file ``data`` (read from ``path``)."""
    meta = _open_reader(data, path).metadata
    fmt = _meta_text(meta, META_FORMAT, path)
    if fmt != FORMAT_VERSION:
        raise ArchiveFormatError(
            path, f"archive format {fmt!r}, this code reads {FORMAT_VERSION!r}"
        )
    seq_text = _meta_text(meta, META_SEGMENT_SEQ, path)
    prev_text = _meta_text(meta, META_PREV_SEGMENT_HASH, path)
    if not seq_text.isdigit():
        raise ArchiveFormatError(path, f"{META_SEGMENT_SEQ} {seq_text!r} is not a decimal number")
    if not re.fullmatch(r"[0-9a-f]{64}", prev_text):
        raise ArchiveFormatError(
            path, f"{META_PREV_SEGMENT_HASH} {prev_text!r} is not 64 hex digits"
        )
    return SegmentHeader(
        archive_id=_meta_text(meta, META_ARCHIVE_ID, path),
        segment_seq=int(seq_text),
        prev_segment_hash=bytes.fromhex(prev_text),
        start_offsets=_decode_start_offsets(path, _meta_text(meta, META_START_OFFSETS, path)),
        format=fmt,
    )


def iter_segment_records(data: bytes, path: Path) -> Iterator[ArchivedRecord]:
    """The records of one segment file, in order. Raises
    :class:`ArchiveFormatError` where the file stops being readable (after
    yielding every record before that point)."""
    reader = _open_reader(data, path)
    index = 0
    try:
        for raw in reader:
            yield ArchivedRecord.from_avro(raw)  # type: ignore[arg-type]
            index += 1
    except ArchiveFormatError:
        raise
    except Exception as exc:  # noqa: BLE001 - a truncated or corrupt block, any type
        raise ArchiveFormatError(
            path, f"unreadable after record {index} ({type(exc).__name__}: {exc})"
        ) from exc


def summarize(
    path: Path, data: bytes, header: SegmentHeader, records: Iterable[ArchivedRecord]
) -> SegmentInfo:
    """The :class:`SegmentInfo` of a segment from its bytes, header and records."""
    count = 0
    first_ts: int | None = None
    last_ts: int | None = None
    ranges: dict[tuple[str, int], list[int]] = {}
    for r in records:
        count += 1
        first_ts = r.timestamp_ms if first_ts is None else min(first_ts, r.timestamp_ms)
        last_ts = r.timestamp_ms if last_ts is None else max(last_ts, r.timestamp_ms)
        span = ranges.setdefault((r.topic, r.partition), [r.offset, r.offset])
        span[0] = min(span[0], r.offset)
        span[1] = max(span[1], r.offset)
    return SegmentInfo(
        seq=header.segment_seq,
        name=path.name,
        path=path,
        hash=segment_hash(data),
        prev_hash=header.prev_segment_hash,
        archive_id=header.archive_id,
        record_count=count,
        first_timestamp_ms=first_ts,
        last_timestamp_ms=last_ts,
        ranges=tuple(PartitionRange(t, p, lo, hi) for (t, p), (lo, hi) in sorted(ranges.items())),
        start_offsets=header.start_offsets,
    )


def read_segment(path: Path) -> tuple[SegmentInfo, list[ArchivedRecord]]:
    """One segment file: its info and all its records."""
    data = path.read_bytes()
    header = read_header(data, path)
    records = list(iter_segment_records(data, path))
    return summarize(path, data, header, records), records


def segment_files(directory: Path) -> list[Path]:
    """The segment files of ``directory`` in name (= chain) order. Temporary
    files of a segment being written (``.segment-*.tmp``) are not segments."""
    if not directory.is_dir():
        raise ArchiveError(f"{directory}: archive directory does not exist")
    return sorted(p for p in directory.iterdir() if p.name.startswith("segment-"))


class _Chain:
    """Checks segments, in file order, as links of one chain."""

    def __init__(self) -> None:
        self.archive_id: str | None = None
        self.prev_hash = ZERO_HASH
        self.next_seq = 0

    def check(self, path: Path, header: SegmentHeader) -> None:
        named = seq_of_name(path.name)
        if named is None:
            raise ArchiveChainError(
                path,
                "not a segment file name",
                expected="segment-<12 digits>.avro",
                found=path.name,
            )
        if named != header.segment_seq:
            raise ArchiveChainError(
                path,
                "file name and header disagree on the segment number (renamed or reordered)",
                expected=str(named),
                found=str(header.segment_seq),
            )
        if self.archive_id is not None and header.archive_id != self.archive_id:
            raise ArchiveChainError(
                path,
                "segment of another archive",
                expected=self.archive_id,
                found=header.archive_id,
            )
        if header.segment_seq != self.next_seq:
            raise ArchiveChainError(
                path,
                "segment sequence is not contiguous (a segment is missing or out of place)",
                expected=str(self.next_seq),
                found=str(header.segment_seq),
            )
        if not hmac.compare_digest(header.prev_segment_hash, self.prev_hash):
            raise ArchiveChainError(
                path,
                "previous-segment hash is not the previous segment's SHA3-256",
                expected=self.prev_hash.hex(),
                found=header.prev_segment_hash.hex(),
            )

    def advance(self, header: SegmentHeader, data: bytes) -> None:
        self.archive_id = header.archive_id
        self.prev_hash = segment_hash(data)
        self.next_seq = header.segment_seq + 1


def list_segments(directory: Path, *, verify_chain: bool = True) -> list[SegmentInfo]:
    """Every segment of the archive in ``directory``, in chain order.

    With ``verify_chain`` (default) raises :class:`ArchiveChainError` at the
    first segment that is not the next link (sequence, archive id, previous
    hash); every file must be readable to the end either way.
    """
    chain = _Chain()
    out: list[SegmentInfo] = []
    for path in segment_files(directory):
        data = path.read_bytes()
        header = read_header(data, path)
        if verify_chain:
            chain.check(path, header)
        out.append(summarize(path, data, header, iter_segment_records(data, path)))
        chain.advance(header, data)
    return out


def iter_archive(directory: Path, *, verify_chain: bool = True) -> Iterator[ArchivedRecord]:
    """Every archived record, segment after segment, in archive order (log
    order within each partition).

    With ``verify_chain`` (default) each segment's chain links are checked
    before any of its records is yielded; a broken link raises
    :class:`ArchiveChainError` naming the segment. This checks the chain,
    not the seals: run :func:`cachet.materializers.archive.verify.verify_archive`
    for that.
    """
    chain = _Chain()
    for path in segment_files(directory):
        data = path.read_bytes()
        header = read_header(data, path)
        if verify_chain:
            chain.check(path, header)
        yield from iter_segment_records(data, path)
        chain.advance(header, data)
