"""Segment writer and reader: the format, durable closing, the chain readers,
resuming after a crash."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from cachet.materializers.archive.archiver import resume_point
from cachet.materializers.archive.errors import ArchiveChainError, ArchiveStateError
from cachet.materializers.archive.segment import (
    ZERO_HASH,
    ArchivedHeader,
    ArchivedRecord,
    ArchivedSealRef,
    iter_archive,
    list_segments,
    read_header,
    segment_hash,
    segment_name,
)
from cachet.materializers.archive.writer import SegmentWriter, temporary_name


def rec(offset: int, topic: str = "t.entries", partition: int = 0) -> ArchivedRecord:
    return ArchivedRecord(
        topic, partition, offset, 1_000 + offset, None if offset % 2 else b"k",
        b"value-%d" % offset, (ArchivedHeader("h", None), ArchivedHeader("g", b"")),
        ArchivedSealRef("p@1", offset // 3, offset % 3) if offset % 4 else None,
    )  # fmt: skip


def write(directory: Path, seq: int, prev: bytes, starts: dict, offsets, backup: Path | None = None):  # fmt: skip
    w = SegmentWriter(directory, archive_id="arch", seq=seq, prev_hash=prev, start_offsets=starts, backup_dir=backup)  # fmt: skip
    for o in offsets:
        w.append(rec(o))
    return w.close()


def test_records_round_trip_exactly_and_segments_chain(tmp_path: Path) -> None:
    a = write(tmp_path, 0, ZERO_HASH, {("t.entries", 0): 0}, range(0, 5))
    b = write(tmp_path, 1, a.hash, a.end_offsets, range(5, 9))
    assert list(iter_archive(tmp_path)) == [rec(o) for o in range(9)]
    infos = list_segments(tmp_path)
    assert [i.name for i in infos] == [segment_name(0), segment_name(1)]
    assert infos[1].prev_hash == a.hash == segment_hash((tmp_path / segment_name(0)).read_bytes())
    assert (infos[1].record_count, infos[1].first_timestamp_ms, infos[1].last_timestamp_ms) == (4, 1005, 1008)  # fmt: skip
    assert [(r.first_offset, r.last_offset) for r in b.ranges] == [(5, 8)]
    assert b.start_offsets == {("t.entries", 0): 5}
    assert b.end_offsets == {("t.entries", 0): 9}


def test_closed_segment_is_read_only_and_backed_up_byte_for_byte(tmp_path: Path) -> None:
    info = write(tmp_path / "a", 0, ZERO_HASH, {}, range(3), backup=tmp_path / "b")
    assert not os.stat(info.path).st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH)
    assert (tmp_path / "b" / info.name).read_bytes() == info.path.read_bytes()
    assert not list((tmp_path / "a").glob(".*.tmp"))


def test_a_closed_segment_is_never_overwritten(tmp_path: Path) -> None:
    write(tmp_path, 0, ZERO_HASH, {}, range(2))
    with pytest.raises(ArchiveStateError, match="refusing to overwrite"):
        write(tmp_path, 0, ZERO_HASH, {}, range(2, 4))


def test_header_metadata(tmp_path: Path) -> None:
    info = write(tmp_path, 0, ZERO_HASH, {("t.entries", 0): 0, ("t.seals", 2): 7}, range(2))
    header = read_header(info.path.read_bytes(), info.path)
    assert (header.archive_id, header.segment_seq, header.prev_segment_hash, header.format) == ("arch", 0, ZERO_HASH, "1")  # fmt: skip
    assert dict(header.start_offsets) == {("t.entries", 0): 0, ("t.seals", 2): 7}


@pytest.mark.tamper
def test_iter_archive_refuses_a_broken_chain(tmp_path: Path) -> None:
    a = write(tmp_path, 0, ZERO_HASH, {}, range(2))
    write(tmp_path, 1, bytes(32), a.end_offsets, range(2, 4))  # wrong previous hash
    with pytest.raises(ArchiveChainError, match="previous-segment hash") as exc:
        list(iter_archive(tmp_path))
    assert exc.value.expected == a.hash.hex()
    assert len(list(iter_archive(tmp_path, verify_chain=False))) == 4


@pytest.mark.tamper
def test_iter_archive_refuses_a_missing_segment(tmp_path: Path) -> None:
    a = write(tmp_path, 0, ZERO_HASH, {}, range(2))
    b = write(tmp_path, 1, a.hash, a.end_offsets, range(2, 4))
    write(tmp_path, 2, b.hash, b.end_offsets, range(4, 6))
    os.remove(b.path)
    with pytest.raises(ArchiveChainError, match="not contiguous"):
        list_segments(tmp_path)


def test_resume_discards_the_open_segment_and_repairs_the_backup(tmp_path: Path) -> None:
    primary, backup = tmp_path / "a", tmp_path / "b"
    a = write(primary, 0, ZERO_HASH, {("t.entries", 0): 0}, range(3), backup=backup)
    # A crash after segment 1 was closed but before its backup copy...
    b = write(primary, 1, a.hash, a.end_offsets, range(3, 6))
    # ...and a crash while segment 2 was being written.
    w = SegmentWriter(primary, archive_id="arch", seq=2, prev_hash=b.hash, start_offsets=b.end_offsets)  # fmt: skip
    w.append(rec(6))
    assert (primary / temporary_name(2)).exists()
    point = resume_point(primary, backup)
    assert not (primary / temporary_name(2)).exists()
    assert (backup / b.name).read_bytes() == b.path.read_bytes()
    assert (point.archive_id, point.next_seq, point.prev_hash) == ("arch", 2, b.hash)
    assert point.positions == {("t.entries", 0): 6}


def test_resume_of_an_empty_archive(tmp_path: Path) -> None:
    point = resume_point(tmp_path / "new")
    assert (point.archive_id, point.next_seq, point.prev_hash, dict(point.positions)) == (None, 0, ZERO_HASH, {})  # fmt: skip


def test_deflate_segments_read_back_the_same(tmp_path: Path) -> None:
    w = SegmentWriter(tmp_path, archive_id="arch", seq=0, prev_hash=ZERO_HASH, start_offsets={}, codec="deflate")  # fmt: skip
    for o in range(20):
        w.append(rec(o))
    w.close()
    assert list(iter_archive(tmp_path)) == [rec(o) for o in range(20)]


def test_unknown_codec_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="archive codec 'zstd'"):
        SegmentWriter(tmp_path, archive_id="a", seq=0, prev_hash=ZERO_HASH, start_offsets={}, codec="zstd")  # fmt: skip
