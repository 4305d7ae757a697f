"""The archive consumer: every record of every Cachet topic, into segments.

It reads all partitions of every topic of the deployment with ``assign()``
(never a group: no rebalance can hand a partition to someone else) and
appends each record, exactly as the log holds it, to the open segment. A
segment closes at a size or an age (:class:`ArchiveSettings`), durably
(:mod:`cachet.materializers.archive.writer`), and is then announced by a
sealed ArchiveSegmentSealed event on the ``archive`` topic, which anchors
the archive's hash chain in the signed ledger.

Where to resume is the archive's own business, never Kafka's committed
offsets: the last closed segment's header and ranges say, per partition,
the next offset (:func:`resume_point`). Records of a segment that was open
when the process died are read again (its temporary file is discarded), so
a SIGKILL at any moment leaves no gap and no duplicate. A closed segment
whose anchor never reached the log, or reached it without a verified
seal, is anchored on the next start.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, TopicPartition

from cachet.config import CachetConfig
from cachet.crypto.registry import KeyRegistry, schema_set_statement
from cachet.crypto.seal import SignatureLine
from cachet.errors import CachetError
from cachet.kafka.settings import consumer_settings
from cachet.materializers.archive.errors import ArchiveStateError
from cachet.materializers.archive.segment import (
    ZERO_HASH,
    ArchivedHeader,
    ArchivedRecord,
    ArchivedSealRef,
    SegmentInfo,
    read_segment,
    segment_files,
    uuid_archive_id,
)
from cachet.materializers.archive.writer import SegmentWriter, discard_temporaries, publish_bytes
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import EventType
from cachet.schemas.payloads import ArchiveRange, ArchiveSegmentSealed, SchemaSetPublished
from cachet.topics import Topic, TopicNames

__all__ = [
    "AnchorEmitter",
    "ArchiveSettings",
    "Archiver",
    "ResumePoint",
    "anchor_of",
    "anchored_seqs",
    "resume_point",
]

log = logging.getLogger(__name__)

# Called with an ArchiveSegmentSealed payload; returns once it is acknowledged.
AnchorEmitter = Callable[[ArchiveSegmentSealed], None]


@dataclass(frozen=True, slots=True)
class ArchiveSettings:
    """Segmenting and where the copies go (``[archive]``, ``[audit] archive_dir``)."""

    directory: Path
    backup_dir: Path | None = None
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_s: float = 60.0
    codec: str = "null"

    @classmethod
    def from_config(cls, config: CachetConfig) -> ArchiveSettings:
        a = config.archive
        return cls(
            directory=config.audit.archive_dir,
            backup_dir=a.backup_dir,
            segment_max_bytes=a.segment_max_bytes,
            segment_max_age_s=a.segment_max_age_ms / 1000,
            codec=a.codec,
        )


@dataclass(frozen=True, slots=True)
class ResumePoint:
    """Where the archive in a directory ends, and so where writing resumes."""

    archive_id: str | None  # None: an empty archive
    next_seq: int
    prev_hash: bytes
    positions: Mapping[tuple[str, int], int]  # next offset per partition
    segment_paths: tuple[Path, ...] = ()


def resume_point(directory: Path, backup_dir: Path | None = None) -> ResumePoint:
    """Discards what a crash left half-written, repairs a backup copy the
    crash kept from being written, and reads where the archive ends (from
    the last closed segment alone)."""
    directory.mkdir(parents=True, exist_ok=True)
    discard_temporaries(directory)
    if backup_dir is not None:
        discard_temporaries(backup_dir)
    paths = tuple(segment_files(directory))
    if backup_dir is not None:
        backup_dir.mkdir(parents=True, exist_ok=True)
        for path in paths:
            copy = backup_dir / path.name
            if not copy.exists():
                # The crash fell between closing the segment and its backup copy.
                log.warning("archive: backup set lacks %s; copying it", path.name)
                publish_bytes(backup_dir, path.name, path.read_bytes())
    if not paths:
        return ResumePoint(None, 0, ZERO_HASH, {}, ())
    last, _ = read_segment(paths[-1])
    return ResumePoint(last.archive_id, last.seq + 1, last.hash, last.end_offsets, paths)


def anchor_of(info: SegmentInfo, closed_at_us: int) -> ArchiveSegmentSealed:
    """The ArchiveSegmentSealed event that anchors a closed segment."""
    return ArchiveSegmentSealed(
        archive_id=info.archive_id,
        segment_seq=info.seq,
        file_name=info.name,
        segment_hash=info.hash,
        prev_segment_hash=info.prev_hash,
        record_count=info.record_count,
        ranges=tuple(
            ArchiveRange(
                topic=r.topic,
                partition=r.partition,
                first_offset=r.first_offset,
                last_offset=r.last_offset,
            )
            for r in info.ranges
        ),
        first_timestamp_us=(info.first_timestamp_ms or 0) * 1000,
        last_timestamp_us=(info.last_timestamp_ms or 0) * 1000,
        closed_at_us=closed_at_us,
    )


def _closed_at_us(path: Path) -> int:
    return os.stat(path).st_mtime_ns // 1000


def anchored_seqs(
    bootstrap_servers: str,
    names: TopicNames,
    codec: EventCodec,
    archive_id: str,
    *,
    overrides: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> set[int]:
    """Segment numbers of ``archive_id`` the ``archive`` topic holds anchors for."""
    reader = Consumer(consumer_settings(bootstrap_servers, overrides=overrides))
    topic = names(Topic.ARCHIVE)
    found: set[int] = set()
    try:
        meta = reader.list_topics(topic, timeout=timeout_s).topics.get(topic)
        if meta is None or meta.error is not None:
            return found
        ends: dict[int, int] = {}
        for p in meta.partitions:
            low, high = reader.get_watermark_offsets(TopicPartition(topic, p), timeout=timeout_s)
            if high > low:
                ends[p] = high
        reader.assign([TopicPartition(topic, p, 0) for p in ends])
        deadline = time.monotonic() + timeout_s
        while ends and time.monotonic() < deadline:
            for msg in reader.consume(500, 0.2):
                p = msg.partition() or 0
                err = msg.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        ends.pop(p, None)
                    continue
                if (msg.offset() or 0) + 1 >= ends.get(p, 0):
                    ends.pop(p, None)
                try:
                    event = codec.decode(msg.value() or b"")
                except DecodeError:
                    continue
                if event.type is EventType.ARCHIVE_SEGMENT_SEALED:
                    anchor = ArchiveSegmentSealed.from_avro(event.payload)
                    if anchor.archive_id == archive_id:
                        found.add(anchor.segment_seq)
        if ends:
            raise ArchiveStateError(f"{topic} not read to its end within {timeout_s}s")
        return found
    finally:
        reader.close()


@dataclass
class ArchiveHealth:
    """What ``/health`` reports; ``problems`` empty means healthy."""

    segments_closed: int = 0
    records_archived: int = 0
    unanchored: list[int] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems and not self.unanchored


class Archiver:
    """Archives every partition of every topic in ``names``; see the module docstring.

    ``emit_anchor`` announces a closed segment (a sealed ArchiveSegmentSealed;
    None = no anchors, for tests of the format alone). ``registry`` (the trust
    anchor's) lets the archiver learn schema sets announced on ``control``, so
    it can read the seal reference of records written with them.
    ``anchored`` tells, at start, which segment numbers of an archive id
    have an anchor in the ledger (default :func:`anchored_seqs`, which reads
    the topic unverified: for tests of the format; ``cachet archive run``
    counts only anchors under a verified seal of its own identity, so an
    anchor whose seal a crash lost, or a forged one, is anchored again).
    """

    def __init__(
        self,
        bootstrap_servers: str,
        names: TopicNames,
        settings: ArchiveSettings,
        *,
        codec: EventCodec | None = None,
        emit_anchor: AnchorEmitter | None = None,
        registry: KeyRegistry | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        archive_id: str | None = None,
        anchored: Callable[[str], set[int]] | None = None,
        monotonic: Callable[[], float] = time.monotonic,
        timeout_s: float = 10.0,
    ) -> None:
        self.settings = settings
        self.names = names
        self.codec = codec or EventCodec()
        self._emit_anchor = emit_anchor
        self._registry = registry
        self._monotonic = monotonic
        self._bootstrap = bootstrap_servers
        self._overrides = consumer_overrides
        self._timeout_s = timeout_s
        self.health = ArchiveHealth()
        # Held while a segment closes (primary and backup copy): a
        # self-verification holding it never sees a segment half-published.
        self.closing = threading.Lock()
        resume = resume_point(settings.directory, settings.backup_dir)
        self.archive_id = resume.archive_id or archive_id or uuid_archive_id()
        self._next_seq = resume.next_seq
        self._prev_hash = resume.prev_hash
        self.positions: dict[tuple[str, int], int] = dict(resume.positions)
        self._writer: SegmentWriter | None = None
        self._opened_at = 0.0
        self._pending_anchors: list[Path] = []
        self.consumer = Consumer(consumer_settings(bootstrap_servers, overrides=consumer_overrides))
        self._assign()
        if emit_anchor is not None and resume.segment_paths:
            if anchored is not None:
                done = anchored(self.archive_id)
            else:
                done = anchored_seqs(
                    bootstrap_servers,
                    names,
                    self.codec,
                    self.archive_id,
                    overrides=consumer_overrides,
                )
            newest = max(done, default=-1)
            # Anchors are emitted in segment order: only segments after the
            # newest anchored one can lack theirs (a crash between close and
            # anchor). Older ones may have aged out of the topic, which is fine.
            self._pending_anchors = [p for p in resume.segment_paths if _seq_of(p) > newest]
            if self._pending_anchors:
                log.warning(
                    "archive: %d closed segment(s) lack an anchor; anchoring them",
                    len(self._pending_anchors),
                )
            self._anchor_pending()

    # -- assignment -------------------------------------------------------

    def _assign(self) -> None:
        metadata = self.consumer.list_topics(timeout=self._timeout_s)
        assignment: list[TopicPartition] = []
        for topic in self.names.all().values():
            meta = metadata.topics.get(topic)
            if meta is None or meta.error is not None:
                log.warning("archive: topic %s does not exist; not archived", topic)
                continue
            for p in sorted(meta.partitions):
                low, high = self.consumer.get_watermark_offsets(
                    TopicPartition(topic, p), timeout=self._timeout_s
                )
                start = self.positions.get((topic, p))
                if start is None:
                    start = low  # a new partition: from the oldest record the log still has
                    self.positions[(topic, p)] = start
                elif start < low:
                    raise ArchiveStateError(
                        f"{topic}[{p}]: the archive ends at offset {start} but the log now "
                        f"starts at {low}: records {start}..{low - 1} were lost before archiving"
                    )
                elif start > high:
                    # Not refused: the embedded broker's end offsets can lag what
                    # a consumer already read. A broker that truly forgot the log
                    # shows up as offsets the archive already holds being reused.
                    log.warning(
                        "archive: %s[%d]: the archive ends at offset %d, the log reports its "
                        "end at %d",
                        topic,
                        p,
                        start,
                        high,
                    )
                assignment.append(TopicPartition(topic, p, start))
        self.consumer.assign(assignment)
        self.assignment = [(tp.topic, tp.partition) for tp in assignment]

    # -- records ----------------------------------------------------------

    def _seal_of(self, value: bytes | None, topic: str) -> ArchivedSealRef | None:
        """The seal the record's envelope names (None: none, or undecodable)."""
        if not value:
            return None
        try:
            event = self.codec.decode(value)
        except DecodeError:
            return None  # archived all the same, byte for byte
        if event.type is EventType.SCHEMA_SET_PUBLISHED and topic == self.names(Topic.CONTROL):
            self._learn(event.payload)
        ref = event.seal_ref
        if ref is None or event.type is EventType.SEAL:
            return None
        return ArchivedSealRef(event.producer_id, ref.seal_seq, ref.leaf_index)

    def _learn(self, payload: dict[str, Any]) -> None:
        if self._registry is None:
            return
        try:
            announced = SchemaSetPublished.from_avro(payload)
            statement = schema_set_statement(
                announced.release, announced.fingerprint, announced.schema_json
            )
            # Verify before learning: a schema set gives sealed bytes their meaning.
            self._registry.check_anchor_statement(
                statement,
                [
                    SignatureLine(s["algorithm"], s["key_id"], s["signature"])
                    for s in payload["anchor_signatures"]
                ],
            )
            self.codec.learn(announced.schema_json, announced.fingerprint, source="archive")
        except (CachetError, ValueError, KeyError) as exc:
            log.warning("archive: schema set announcement not learned: %s", exc)

    def _record_of(self, msg: Message) -> ArchivedRecord:
        topic = msg.topic() or ""
        value = msg.value()
        key = msg.key()
        return ArchivedRecord(
            topic=topic,
            partition=msg.partition() or 0,
            offset=msg.offset() or 0,
            timestamp_ms=msg.timestamp()[1],
            key=key.encode() if isinstance(key, str) else key,
            value=value.encode() if isinstance(value, str) else value,
            headers=tuple(
                ArchivedHeader(str(h[0]), h[1].encode() if isinstance(h[1], str) else h[1])
                for h in (msg.headers() or ())
            ),
            seal=self._seal_of(value if isinstance(value, bytes) else None, topic),
        )

    def _append(self, msg: Message) -> None:
        part = (msg.topic() or "", msg.partition() or 0)
        offset = msg.offset() or 0
        expected = self.positions.get(part, 0)
        if offset < expected:
            return  # already archived: never twice
        if offset > expected:
            # The log itself skipped offsets; archived as found, verify reports it.
            log.error("archive: %s[%d] jumps from offset %d to %d", *part, expected, offset)
        if self._writer is None:
            self._writer = SegmentWriter(
                self.settings.directory,
                archive_id=self.archive_id,
                seq=self._next_seq,
                prev_hash=self._prev_hash,
                start_offsets=self.positions,
                codec=self.settings.codec,
                backup_dir=self.settings.backup_dir,
            )
            self._opened_at = self._monotonic()
        self._writer.append(self._record_of(msg))
        self.positions[part] = offset + 1
        self.health.records_archived += 1

    def poll(self, timeout_s: float = 0.2, max_records: int = 1000) -> int:
        """Reads what is there, appends it, closes the segment when due."""
        taken = 0
        for msg in self.consumer.consume(max_records, timeout_s):
            error = msg.error()
            if error is not None:
                if error.code() != KafkaError._PARTITION_EOF:
                    log.warning("archive: consumer error %s", error)
                continue
            self._append(msg)
            taken += 1
        self._close_if_due()
        if self._pending_anchors:
            self._anchor_pending()
        return taken

    def _close_if_due(self) -> None:
        w = self._writer
        if w is None:
            return
        if (
            w.size_bytes >= self.settings.segment_max_bytes
            or self._monotonic() - self._opened_at >= self.settings.segment_max_age_s
        ):
            self.close_segment()

    def close_segment(self) -> SegmentInfo | None:
        """Closes the open segment now (if it has records) and anchors it."""
        w, self._writer = self._writer, None
        if w is None:
            return None
        with self.closing:
            info = w.close()
        self._next_seq = info.seq + 1
        self._prev_hash = info.hash
        self.health.segments_closed += 1
        self._pending_anchors.append(info.path)
        self._anchor_pending()
        return info

    def _anchor_pending(self) -> None:
        if self._emit_anchor is None:
            self._pending_anchors.clear()
            return
        while self._pending_anchors:
            path = self._pending_anchors[0]
            info, _ = read_segment(path)
            try:
                self._emit_anchor(anchor_of(info, _closed_at_us(path)))
            except CachetError as exc:
                # Kept, in order, and retried on the next poll: anchors go out in segment order.
                log.error("archive: anchor of %s not emitted: %s", path.name, exc)
                self.health.unanchored = [_seq_of(p) for p in self._pending_anchors]
                return
            self._pending_anchors.pop(0)
        self.health.unanchored = []

    def run(self, stop: threading.Event) -> None:
        """Polls until ``stop`` is set, then closes the open segment."""
        while not stop.is_set():
            self.poll()
        self.close()

    def close(self) -> None:
        """A clean stop: the open segment is closed (and anchored), not lost."""
        try:
            self.close_segment()
        finally:
            self.consumer.close()


def _seq_of(path: Path) -> int:
    return int(path.name[len("segment-") : -len(".avro")])
