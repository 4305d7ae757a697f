"""``cachet archive verify``: the archive checks itself, byte for byte.

Three passes over the segments, in chain order:

1. structure: every file is a readable segment of this format; names and
   headers number segments 0, 1, 2, ... of one archive id; each header
   holds the previous file's SHA3-256; the backup set holds the same bytes;
   every record comes from one of the deployment's topics, and per
   partition offsets run on with no gap and no duplicate (across segments:
   each header's start offsets are where the previous segment ended);
2. registry: the key registrations, rotations, revocations and schema sets
   archived from ``control`` are checked against the pinned trust anchor
   (:class:`~cachet.crypto.registry.KeyRegistry`, the one the live
   consumers use);
3. ledger: every seal and every sealed record goes through the same
   :class:`~cachet.ledger.verifier.SealVerifier` a live node runs (all three
   signatures, root, chain, key validity at seal time, each record's leaf
   hash, leaf position and sealed topic, duplicates); the verified
   ArchiveSegmentSealed events are then compared with the segments they
   anchor (hash, previous hash, name, count, ranges, timestamps).

The report names the first inconsistency in archive order with its raw
evidence; nothing at or after it counts as verified.
"""

from __future__ import annotations

import hmac
import logging
import math
from collections.abc import Collection, Iterator, Sequence
from pathlib import Path

from cachet.crypto.registry import KeyRegistry, RegistrationRejected
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.errors import CachetError
from cachet.kafka.verifying import apply_registry_event, learn_schema_set
from cachet.ledger.verifier import Applied, IntegrityStatus, Outcome, Rejected, SealVerifier
from cachet.materializers.archive.anchor_check import Anchoring, check_anchors
from cachet.materializers.archive.errors import ArchiveFormatError
from cachet.materializers.archive.report import (
    ArchiveCheck,
    ArchiveReport,
    SegmentStatus,
    SegmentVerdict,
)
from cachet.materializers.archive.segment import (
    ZERO_HASH,
    ArchivedRecord,
    SegmentHeader,
    iter_segment_records,
    read_header,
    segment_files,
    segment_hash,
    seq_of_name,
    summarize,
)
from cachet.materializers.archive.verify_state import Pos, Run, Segment
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import EventType
from cachet.schemas.payloads import ArchiveSegmentSealed
from cachet.topics import Topic, TopicNames

__all__ = ["verify_archive"]

log = logging.getLogger(__name__)

_REGISTRY_EVENTS = frozenset(
    {
        EventType.SIGNING_KEY_REGISTERED,
        EventType.SIGNING_KEY_ROTATED,
        EventType.SIGNING_KEY_REVOKED,
        EventType.SCHEMA_SET_PUBLISHED,
    }
)
_ORDER_STATUSES = frozenset(
    {
        IntegrityStatus.DUPLICATE_EVENT,
        IntegrityStatus.EVENT_REORDERED,
        IntegrityStatus.OFFSET_REGRESSED,
    }
)


# -- pass 1: structure ------------------------------------------------------


def _first_difference(a: bytes, b: bytes) -> int:
    n = min(len(a), len(b))
    for i in range(n):
        if a[i] != b[i]:
            return i
    return n


def _check_backup(run: Run, seg: Segment, data: bytes, backup_dir: Path) -> None:
    copy = backup_dir / seg.path.name
    pos = Pos(seg.index, seg.path.name, -1)
    if not copy.is_file():
        run.find(
            ArchiveCheck.BACKUP,
            "the backup set lacks this segment",
            pos,
            expected=copy.name,
            found="no file",
        )
        return
    other = copy.read_bytes()
    if not hmac.compare_digest(other, data):
        at = _first_difference(data, other)
        run.find(
            ArchiveCheck.BACKUP,
            f"the backup copy differs from byte {at} on (sizes {len(data)} and {len(other)})",
            pos,
            expected=segment_hash(data).hex(),
            found=segment_hash(other).hex(),
        )


def _check_chain(run: Run, seg: Segment, header: SegmentHeader, chain: dict) -> None:
    pos = Pos(seg.index, seg.path.name, -1)
    named = seq_of_name(seg.path.name)
    if named != header.segment_seq:
        run.find(ArchiveCheck.SEQUENCE, "file name and header disagree on the segment number (renamed or reordered)", pos, expected=str(named), found=str(header.segment_seq))  # fmt: skip
    if chain["archive_id"] is not None and header.archive_id != chain["archive_id"]:
        run.find(ArchiveCheck.ARCHIVE_ID, "segment of another archive (foreign)", pos, expected=chain["archive_id"], found=header.archive_id)  # fmt: skip
    if header.segment_seq != chain["next_seq"]:
        what = "missing" if header.segment_seq > chain["next_seq"] else "out of place"
        run.find(ArchiveCheck.SEQUENCE, f"segment sequence is not contiguous: a segment is {what}", pos, expected=str(chain["next_seq"]), found=str(header.segment_seq))  # fmt: skip
    if not hmac.compare_digest(header.prev_segment_hash, chain["prev_hash"]):
        run.find(ArchiveCheck.CHAIN, "previous-segment hash is not the SHA3-256 of the previous segment file", pos, expected=chain["prev_hash"].hex(), found=header.prev_segment_hash.hex())  # fmt: skip


def _check_records(
    run: Run, seg: Segment, data: bytes, header: SegmentHeader, positions: dict
) -> list[ArchivedRecord]:
    topics = set(run.names.all().values())
    pos0 = Pos(seg.index, seg.path.name, -1)
    for part, start in sorted(header.start_offsets.items()):
        known = positions.get(part)
        if known is not None and known != start:
            run.find(ArchiveCheck.OFFSETS, f"{part[0]}[{part[1]}] starts where the previous segment did not end", pos0, expected=str(known), found=str(start))  # fmt: skip
        positions.setdefault(part, start)
    records: list[ArchivedRecord] = []
    try:
        for rec in iter_segment_records(data, seg.path):
            pos = Pos(seg.index, seg.path.name, len(records))
            records.append(rec)
            if rec.topic not in topics:
                run.find(ArchiveCheck.TOPIC, "record of a topic outside this deployment", pos, rec, expected=f"one of the {run.names.prefix}* topics", found=rec.topic)  # fmt: skip
            part = (rec.topic, rec.partition)
            want = positions.get(part)
            if want is None:
                run.find(ArchiveCheck.OFFSETS, "partition absent from the segment's start offsets", pos, rec, expected="a start offset", found="none")  # fmt: skip
            elif rec.offset != want:
                what = "duplicate or out of order" if rec.offset < want else "gap: records missing"
                run.find(ArchiveCheck.OFFSETS, f"offsets not contiguous ({what})", pos, rec, expected=str(want), found=str(rec.offset))  # fmt: skip
            positions[part] = max(positions.get(part, 0), rec.offset + 1)
            if rec.topic == run.names(Topic.CONTROL):
                run.control.append((pos, rec))
    except ArchiveFormatError as exc:
        run.find(ArchiveCheck.READABLE, f"truncated or corrupt: {exc}", Pos(seg.index, seg.path.name, len(records)), expected=f"a readable block after record {len(records)}", found=f"{len(data)}-byte file")  # fmt: skip
    return records


def _structure(run: Run, directory: Path, backup_dir: Path | None) -> Iterator[tuple[Segment, list[ArchivedRecord]]]:  # fmt: skip
    chain: dict = {"archive_id": None, "next_seq": 0, "prev_hash": ZERO_HASH}
    positions: dict[tuple[str, int], int] = {}
    paths = segment_files(directory)
    for index, path in enumerate(paths):
        data = path.read_bytes()
        seg = Segment(index, path, segment_hash(data))
        run.segments.append(seg)
        if backup_dir is not None:
            _check_backup(run, seg, data, backup_dir)
        try:
            header = read_header(data, path)
        except ArchiveFormatError as exc:
            run.find(ArchiveCheck.READABLE, str(exc), Pos(index, path.name, -1), expected="an archive segment header", found=f"{len(data)}-byte file")  # fmt: skip
            chain.update(next_seq=chain["next_seq"] + 1, prev_hash=seg.data_hash)
            continue
        seg.header = header
        _check_chain(run, seg, header, chain)
        records = _check_records(run, seg, data, header, positions)
        seg.info = summarize(path, data, header, records)
        chain.update(archive_id=chain["archive_id"] or header.archive_id, next_seq=header.segment_seq + 1, prev_hash=seg.data_hash)  # fmt: skip
        yield seg, records
    if backup_dir is not None and backup_dir.is_dir():
        extra = sorted({p.name for p in segment_files(backup_dir)} - {p.name for p in paths})
        for name in extra:
            run.find(ArchiveCheck.BACKUP, "the backup set holds a segment the archive lacks", Pos(len(paths), name, -1), expected="no such segment", found=name)  # fmt: skip


# -- pass 2: registry -------------------------------------------------------


def _registry(run: Run, codec: EventCodec, anchor: KeySet, required: Collection[SignatureScheme]) -> KeyRegistry:  # fmt: skip
    registry = KeyRegistry(anchor, required)
    for pos, rec in run.control:
        try:
            event = codec.decode(rec.value or b"")
        except DecodeError:
            continue  # judged (and reported) in the ledger pass
        if event.type not in _REGISTRY_EVENTS:
            continue
        try:
            # The same functions the live verifying consumer uses: the archive
            # trusts exactly the key sets and schema sets a live node trusts.
            if event.type is EventType.SCHEMA_SET_PUBLISHED:
                learn_schema_set(registry, codec, event.payload)
            else:
                apply_registry_event(registry, event)
        except (RegistrationRejected, CachetError, ValueError, KeyError) as exc:
            run.find(ArchiveCheck.REGISTRY, f"{event.type.value} not signed by the pinned anchor: {exc}", pos, rec, expected=f"anchor {anchor.key_set_id}", found="refused")  # fmt: skip
            continue
        run.verified[pos.index] = run.verified.get(pos.index, 0) + 1
    return registry


# -- pass 3: ledger ---------------------------------------------------------


class _Ledger:
    """Feeds records to the live verifier and files its outcomes."""

    def __init__(self, run: Run, codec: EventCodec, verifier: SealVerifier, archive_identity: str | None) -> None:  # fmt: skip
        self.run = run
        self.codec = codec
        self.verifier = verifier
        self.identity = archive_identity
        # Keyed by the identity of the origin fed: outcomes carry that very object
        # (two records may claim the same coordinates: a duplicate).
        self.where: dict[int, tuple[Pos, ArchivedRecord, object]] = {}
        self.refused_seals: set[tuple[str, int]] = set()

    def feed(self, pos: Pos, rec: ArchivedRecord) -> None:
        run = self.run
        if rec.topic == run.names(Topic.DEADLETTER):
            run.unsigned[pos.index] = run.unsigned.get(pos.index, 0) + 1
            return
        try:
            event = self.codec.decode(rec.value or b"")
        except DecodeError as exc:
            run.find(ArchiveCheck.ENVELOPE, f"record on a signed topic does not decode: {exc}", pos, rec, expected="a Cachet event", found=(rec.value or b"")[:16].hex())  # fmt: skip
            return
        if rec.topic == run.names(Topic.CONTROL) and event.seal_ref is None and event.type in _REGISTRY_EVENTS:  # fmt: skip
            return  # anchor-signed: judged in the registry pass
        ref = event.seal_ref
        claimed = None if ref is None or event.type is EventType.SEAL else (event.producer_id, ref.seal_seq, ref.leaf_index)  # fmt: skip
        if rec.seal is not None and (rec.seal.producer_id, rec.seal.seal_seq, rec.seal.leaf_index) != claimed:  # fmt: skip
            run.find(ArchiveCheck.SEAL_REF, "the archived seal field is not the one the envelope names", pos, rec, expected=str(claimed), found=str(rec.seal))  # fmt: skip
        origin = rec.origin()
        self.where[id(origin)] = (pos, rec, origin)
        if rec.topic == run.names(Topic.SEALS):
            self.file(self.verifier.on_seal(event, origin, 0.0))
            # A refused seal was filed (and left ``where``); one still there
            # either verified or waits for its key's registration (parked).
            key = id(origin)
            if key in self.where and self.verifier.seal_for(event.producer_id, event.payload.get("seal_seq", -1)) is not None:  # fmt: skip
                self.where.pop(key)
                run.seals[pos.index] = run.seals.get(pos.index, 0) + 1
                run.verified[pos.index] = run.verified.get(pos.index, 0) + 1
        else:
            self.file(self.verifier.on_event(event, origin, 0.0))

    def _locate(self, origin: object) -> tuple[Pos, ArchivedRecord] | None:
        found = self.where.pop(id(origin), None) if origin is not None else None
        return None if found is None else (found[0], found[1])

    def file(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            origin = outcome.origin
            located = self._locate(origin)
            if isinstance(outcome, Applied):
                assert located is not None
                pos, _ = located
                self.run.verified[pos.index] = self.run.verified.get(pos.index, 0) + 1
                if outcome.event.type is EventType.ARCHIVE_SEGMENT_SEALED:
                    self.run.anchors.append((pos, ArchiveSegmentSealed.from_avro(outcome.event.payload), outcome.event.producer_id))  # fmt: skip
                continue
            self.reject(outcome, located)

    def reject(self, r: Rejected, located: tuple[Pos, ArchivedRecord] | None) -> None:
        is_seal = located is not None and located[1].topic == self.run.names(Topic.SEALS)
        if is_seal and r.producer_id is not None and r.seal_seq is not None:
            self.refused_seals.add((r.producer_id, r.seal_seq))
        if r.status in (IntegrityStatus.UNSEALED_TIMEOUT, IntegrityStatus.EVENT_MISSING):
            # At the end of the archive: the seal (or the leaves) may simply
            # not be archived yet. Not verified, not an inconsistency, unless
            # the seal was refused (then the seal is the finding).
            self.run.pending += 1
            return
        if located is None:
            log.warning("archive verify: outcome without a record: %s", r.detail)
            return
        pos, rec = located
        if r.status is IntegrityStatus.LEAF_MISMATCH:
            check = ArchiveCheck.LEAF
        elif r.status in _ORDER_STATUSES:
            check = ArchiveCheck.OFFSETS
        else:
            check = ArchiveCheck.SEAL
        statuses = ",".join(s.value for s in r.statuses)
        self.run.find(
            check, f"{statuses}: {r.detail}", pos, rec, expected="verified", found=statuses
        )

    def finish(self) -> None:
        for r in self.verifier.expire(math.inf):
            located = self._locate(r.origin)
            if isinstance(r, Rejected) and r.status is IntegrityStatus.UNSEALED_TIMEOUT:
                ref = (r.producer_id, r.seal_seq)
                if ref in self.refused_seals:
                    continue  # its seal was refused: that is the finding
            if isinstance(r, Rejected):
                self.reject(r, located)


def verify_archive(
    directory: Path,
    *,
    anchor: KeySet,
    names: TopicNames,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
    backup_dir: Path | None = None,
    archive_identity: str | None = None,
    codec: EventCodec | None = None,
    broker_anchors: Sequence[tuple[ArchiveSegmentSealed, str]] = (),
) -> ArchiveReport:
    """Verifies the archive in ``directory`` (see the module docstring).

    ``anchor`` is the pinned trust anchor: only key sets it registered can
    make a seal verify. ``archive_identity``, when given, is the only
    identity whose ArchiveSegmentSealed anchors count. ``broker_anchors``
    (verified anchors read from the broker, :mod:`.broker_anchors`) anchor
    segments whose anchor is not archived yet. Never raises for bad
    archive content: every problem is an :class:`Inconsistency`.
    """
    codec = codec or EventCodec()
    run = Run(names)
    held: list[tuple[Segment, list[ArchivedRecord]]] = list(_structure(run, directory, backup_dir))
    registry = _registry(run, codec, anchor, required)
    suffixes = {t.value for t in Topic if t not in (Topic.SEALS, Topic.DEADLETTER)}
    verifier = SealVerifier(registry, required, suffixes, topic_prefix=names.prefix)
    ledger = _Ledger(run, codec, verifier, archive_identity)
    for seg, records in held:
        for i, rec in enumerate(records):
            ledger.feed(Pos(seg.index, seg.path.name, i), rec)
    ledger.finish()
    archive_id = next((s.header.archive_id for s in run.segments if s.header), None)
    anchored = check_anchors(run, archive_id, archive_identity, broker_anchors)
    return _report(run, archive_id, anchored)


def _report(run: Run, archive_id: str | None, anchored: dict[int, Anchoring]) -> ArchiveReport:
    first = min(run.findings, key=lambda f: f.position, default=None)
    broken_at = first.segment_index if first else len(run.segments)
    verdicts = []
    for seg in run.segments:
        if seg.index < broken_at:
            status = {
                Anchoring.ARCHIVE: SegmentStatus.VERIFIED,
                Anchoring.BROKER: SegmentStatus.ANCHORED_IN_BROKER,
            }.get(anchored.get(seg.index, Anchoring.NONE), SegmentStatus.UNANCHORED)
        elif seg.index == broken_at:
            status = SegmentStatus.BROKEN
        else:
            status = SegmentStatus.NOT_VERIFIED
        verdicts.append(
            SegmentVerdict(
                seg.path.name,
                seg.header.segment_seq if seg.header else None,
                status,
                seg.info.record_count if seg.info else 0,
                seg.data_hash.hex(),
            )
        )
    before = range(broken_at)
    return ArchiveReport(
        archive_id=archive_id,
        segments=tuple(verdicts),
        first=first,
        records_verified=sum(run.verified.get(i, 0) for i in before),
        seals_verified=sum(run.seals.get(i, 0) for i in before),
        unsealed_pending=run.pending,
        unsigned=sum(run.unsigned.get(i, 0) for i in before),
    )
