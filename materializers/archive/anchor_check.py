"""The anchor check: each segment against the ArchiveSegmentSealed that anchors it.

Anchors come from the archive itself (verified by the ledger pass) and,
optionally, from the broker (:mod:`.broker_anchors`): the newest segments'
anchors are there before they are in any segment.
"""

from __future__ import annotations

import enum
from collections.abc import Sequence

from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.materializers.archive.report import AFTER_RECORDS, ArchiveCheck
from cachet.materializers.archive.segment import SegmentInfo
from cachet.materializers.archive.verify_state import Pos, Run, Segment
from cachet.schemas.payloads import ArchiveSegmentSealed

__all__ = ["Anchoring", "check_anchors"]


class Anchoring(enum.Enum):
    NONE = "none"
    ARCHIVE = "archive"
    BROKER = "broker"


def _fields(a: ArchiveSegmentSealed | None, seg: Segment, info: SegmentInfo) -> dict[str, str]:
    """The fields an anchor states, from the anchor (``a``) or from the file."""
    if a is not None:
        ranges = sorted((r.topic, r.partition, r.first_offset, r.last_offset) for r in a.ranges)
        return {
            "segment_hash": a.segment_hash.hex(),
            "prev_segment_hash": a.prev_segment_hash.hex(),
            "file_name": a.file_name,
            "record_count": str(a.record_count),
            "ranges": str(ranges),
            "first_timestamp_us": str(a.first_timestamp_us),
            "last_timestamp_us": str(a.last_timestamp_us),
        }
    ranges = sorted((r.topic, r.partition, r.first_offset, r.last_offset) for r in info.ranges)
    return {
        "segment_hash": seg.data_hash.hex(),
        "prev_segment_hash": info.prev_hash.hex(),
        "file_name": seg.path.name,
        "record_count": str(info.record_count),
        "ranges": str(ranges),
        "first_timestamp_us": str((info.first_timestamp_ms or 0) * 1000),
        "last_timestamp_us": str((info.last_timestamp_ms or 0) * 1000),
    }


def _compare(
    run: Run, seg: Segment, info: SegmentInfo, a: ArchiveSegmentSealed, where: str
) -> None:
    want, have = _fields(a, seg, info), _fields(None, seg, info)
    for name in want:
        if want[name] != have[name]:
            pos = Pos(seg.index, seg.path.name, AFTER_RECORDS)
            run.find(ArchiveCheck.ANCHOR, f"the segment's {name} is not what its ledger anchor ({where}) says", pos, expected=want[name], found=have[name])  # fmt: skip
            return


def check_anchors(
    run: Run,
    archive_id: str | None,
    identity: str | None,
    broker: Sequence[tuple[ArchiveSegmentSealed, str]] = (),
) -> dict[int, Anchoring]:
    """Files every anchor inconsistency; per segment index, where its anchor was found."""
    # An anchor read from a segment that is not this archive's next link (foreign,
    # out of place, unreadable) is no witness for the segments it names.
    untrusted = {
        f.segment_index
        for f in run.findings
        if f.record_index == -1
        and f.check in (ArchiveCheck.ARCHIVE_ID, ArchiveCheck.SEQUENCE, ArchiveCheck.READABLE)
    }

    def signer_ok(producer_id: str, seq: int, pos: Pos) -> bool:
        try:
            who = identity_of(producer_id)
        except ProducerIdError:
            who = producer_id
        if identity is not None and who != identity:
            run.find(ArchiveCheck.ANCHOR, f"anchor of segment {seq} signed by {who!r}, not the archive's identity", pos, expected=identity, found=who)  # fmt: skip
            return False
        return True

    archived: dict[int, list[tuple[str, ArchiveSegmentSealed]]] = {}
    for pos, a, producer_id in run.anchors:
        if a.archive_id != archive_id or pos.index in untrusted:
            continue  # another archive of the same deployment, or no witness
        if signer_ok(producer_id, a.segment_seq, pos):
            archived.setdefault(a.segment_seq, []).append(
                (f"in {pos.name}, record {pos.record}", a)
            )
    end = Pos(len(run.segments), "broker", -1)
    in_broker: dict[int, list[tuple[str, ArchiveSegmentSealed]]] = {}
    for a, producer_id in broker:
        if a.archive_id == archive_id and signer_ok(producer_id, a.segment_seq, end):
            in_broker.setdefault(a.segment_seq, []).append(("in the broker", a))
    newest = max(archived, default=-1)
    out: dict[int, Anchoring] = {}
    seen: set[int] = set()
    for seg in run.segments:
        info = seg.info
        if info is None:
            continue
        seen.add(info.seq)
        found = archived.get(info.seq)
        how = Anchoring.ARCHIVE
        if not found:
            found, how = in_broker.get(info.seq), Anchoring.BROKER
        if not found:
            if info.seq <= newest:
                pos = Pos(seg.index, seg.path.name, AFTER_RECORDS)
                run.find(ArchiveCheck.ANCHOR, "no ledger anchor for this segment, though later segments have theirs", pos, expected="an ArchiveSegmentSealed", found="none")  # fmt: skip
            out[seg.index] = Anchoring.NONE
            continue
        out[seg.index] = how
        for where, a in found:
            _compare(run, seg, info, a, where)
    for seq in sorted((set(archived) | set(in_broker)) - seen):
        where = (archived.get(seq) or in_broker[seq])[0][0]
        run.find(ArchiveCheck.ANCHOR, f"the ledger anchors segment {seq}, which the archive lacks", Pos(len(run.segments), f"segment {seq}", -1), expected=f"segment {seq}", found=f"anchor only ({where})")  # fmt: skip
    return out
