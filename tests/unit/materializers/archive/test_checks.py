"""The checks of ``verify_archive`` the tamper tests do not reach: each test
here goes red when its one check is removed."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from cachet.materializers.archive.archiver import anchor_of
from cachet.materializers.archive.report import ArchiveCheck, SegmentStatus
from cachet.materializers.archive.segment import ArchivedSealRef, read_segment, segment_files

from .conftest import NAMES, NODE, build_archive
from .tampering import rewrite, seg, verify

pytestmark = pytest.mark.tamper


def _index(records, topic: str) -> int:
    return next(i for i, r in enumerate(records) if r.topic == NAMES.prefix + topic)


def test_record_of_a_foreign_topic(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    i = _index(records, "entries")
    rewrite(path, lambda rs: [dataclasses.replace(r, topic="other.entries") if k == i else r for k, r in enumerate(rs)])  # fmt: skip
    f = verify(archive / "primary", anchor_keys).first
    assert (f.check, f.segment, f.record_index, f.found) == (ArchiveCheck.TOPIC, path.name, i, "other.entries")  # fmt: skip


def test_seal_field_that_is_not_the_envelopes(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    i = _index(records, "entries")
    forged = ArchivedSealRef(records[i].seal.producer_id, records[i].seal.seal_seq + 1, 0)
    rewrite(path, lambda rs: [dataclasses.replace(r, seal=forged) if k == i else r for k, r in enumerate(rs)])  # fmt: skip
    f = verify(archive / "primary", anchor_keys).first
    assert (f.check, f.segment, f.record_index) == (ArchiveCheck.SEAL_REF, path.name, i)


def test_record_that_does_not_decode(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    i = _index(records, "entries")
    rewrite(path, lambda rs: [dataclasses.replace(r, value=b"\x00garbage") if k == i else r for k, r in enumerate(rs)])  # fmt: skip
    f = verify(archive / "primary", anchor_keys).first
    assert (f.check, f.segment, f.record_index) == (ArchiveCheck.ENVELOPE, path.name, i)


def test_start_offsets_that_skip_records(archive: Path, anchor_keys) -> None:
    path = seg(archive, 2)
    info, _ = read_segment(path)
    starts = dict(info.start_offsets)
    part = (NAMES.prefix + "entries", 0)
    starts[part] += 1  # claims the partition starts one record later: a hidden gap
    rows = json.dumps(sorted([t, p, o] for (t, p), o in starts.items()), separators=(",", ":"))
    rewrite(path, lambda rs: rs, meta={"cachet.start_offsets": rows})
    f = verify(archive / "primary", anchor_keys).first
    assert (f.check, f.segment, f.record_index) == (ArchiveCheck.OFFSETS, path.name, -1)
    assert (f.expected, f.found) == (str(info.start_offsets[part]), str(starts[part]))


def test_segment_without_an_anchor_before_anchored_ones(tmp_path: Path, codec, anchor_keys, node_keys, archiver_keys) -> None:  # fmt: skip
    build_archive(tmp_path, codec, anchor_keys, node_keys, archiver_keys, unanchored=frozenset({1}))
    report = verify(tmp_path, anchor_keys)
    f = report.first
    assert (f.check, f.segment) == (ArchiveCheck.ANCHOR, segment_files(tmp_path)[1].name)
    assert [s.status for s in report.segments][:2] == [SegmentStatus.VERIFIED, SegmentStatus.BROKEN]


def test_anchor_signed_by_another_identity_does_not_count(tmp_path: Path, codec, anchor_keys, node_keys, archiver_keys) -> None:  # fmt: skip
    # A registered producer (a cache node) is not the archive: its anchors are refused.
    build_archive(tmp_path, codec, anchor_keys, node_keys, archiver_keys, anchor_signer=NODE)
    f = verify(tmp_path, anchor_keys).first
    assert f.check is ArchiveCheck.ANCHOR
    assert (f.expected, f.found) == ("archiver-1", NODE)


def test_backup_set_lacking_a_segment(archive: Path, anchor_keys) -> None:
    (archive / "backup" / seg(archive, 2).name).unlink()
    f = verify(archive / "primary", anchor_keys, backup_dir=archive / "backup").first
    assert (f.check, f.segment, f.found) == (ArchiveCheck.BACKUP, seg(archive, 2).name, "no file")


def test_backup_set_holding_a_segment_the_archive_lacks(archive: Path, anchor_keys) -> None:
    last = seg(archive, 3)
    last.unlink()  # the newest segment: no later segment or anchor names it
    report = verify(archive / "primary", anchor_keys, backup_dir=archive / "backup")
    assert (report.first.check, report.first.found) == (ArchiveCheck.BACKUP, last.name)


def test_renamed_segment(archive: Path, anchor_keys) -> None:
    # The newest segment under another number: its header still says 3.
    last = seg(archive, 3)
    moved = last.with_name("segment-000000000007.avro")
    last.rename(moved)
    f = verify(archive / "primary", anchor_keys).first
    assert (f.check, f.segment, f.expected, f.found) == (ArchiveCheck.SEQUENCE, moved.name, "7", "3")  # fmt: skip


def test_broker_anchor_of_the_newest_segment(archive: Path, anchor_keys) -> None:
    last = seg(archive, 3)
    info, _ = read_segment(last)
    good = (anchor_of(info, 0), "archiver-1@01")
    report = verify(archive / "primary", anchor_keys, broker_anchors=[good])
    assert report.ok and report.segments[3].status is SegmentStatus.ANCHORED_IN_BROKER
    # The broker's anchor disagrees with the file: named, with both hashes.
    bad = (dataclasses.replace(good[0], segment_hash=bytes(32)), "archiver-1@01")
    f = verify(archive / "primary", anchor_keys, broker_anchors=[bad]).first
    assert (f.check, f.segment, f.expected, f.found) == (ArchiveCheck.ANCHOR, last.name, "00" * 32, info.hash.hex())  # fmt: skip
    assert "in the broker" in f.detail


@pytest.mark.tamper
def test_deleted_newest_segment_is_caught_by_its_broker_anchor(archive: Path, anchor_keys) -> None:
    last = seg(archive, 3)
    info, _ = read_segment(last)
    last.unlink()
    f = verify(archive / "primary", anchor_keys, broker_anchors=[(anchor_of(info, 0), "archiver-1@01")]).first  # fmt: skip
    assert (f.check, f.expected) == (ArchiveCheck.ANCHOR, "segment 3")
    assert "lacks" in f.detail
