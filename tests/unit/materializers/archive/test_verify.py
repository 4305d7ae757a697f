"""``verify_archive`` on hand-built archives with real seals: a clean archive
verifies; every tampering is named precisely (``tamper``), and each check
has a test that goes red when that check is removed."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachet.crypto.seal import PrivateKeySet
from cachet.materializers.archive.report import ArchiveCheck, SegmentStatus
from cachet.materializers.archive.segment import (
    read_header,
    read_segment,
    segment_hash,
)

from .conftest import NAMES, build_archive
from .tampering import flip, rewrite, seg, verify


def test_clean_archive_verifies_with_backup(archive: Path, anchor_keys) -> None:
    report = verify(archive / "primary", anchor_keys, backup_dir=archive / "backup")
    assert report.ok, report.first and report.first.describe()
    statuses = [s.status for s in report.segments]
    assert statuses == [SegmentStatus.VERIFIED] * 3 + [SegmentStatus.UNANCHORED]
    # 2 registrations + per segment: 3 writes, 2 seals (+ an anchor and its seal after seg 0)
    assert report.records_verified == 2 + 4 * 5 + 3 * 2
    assert report.seals_verified == 4 * 2 + 3


def test_wrong_trust_anchor_verifies_nothing(archive: Path, node_keys) -> None:
    report = verify(archive / "primary", node_keys)
    assert not report.ok
    assert report.first.check is ArchiveCheck.REGISTRY
    assert report.first.position == (0, 0)
    assert report.records_verified == 0


@pytest.mark.tamper
def test_truncated_segment_is_named(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) - 40])
    report = verify(archive / "primary", anchor_keys)
    assert report.first.check is ArchiveCheck.READABLE
    assert report.first.segment == path.name
    assert [s.status for s in report.segments][:3] == [SegmentStatus.VERIFIED, SegmentStatus.BROKEN, SegmentStatus.NOT_VERIFIED]  # fmt: skip


@pytest.mark.tamper
def test_missing_segment_is_named(archive: Path, anchor_keys) -> None:
    missing = seg(archive, 1)
    missing.unlink()
    report = verify(archive / "primary", anchor_keys)
    assert report.first.check is ArchiveCheck.SEQUENCE
    assert report.first.segment == seg(archive, 1).name  # what now follows segment 0
    assert (report.first.expected, report.first.found) == ("1", "2")


@pytest.mark.tamper
def test_reordered_segments_are_named(archive: Path, anchor_keys) -> None:
    a, b = seg(archive, 1), seg(archive, 2)
    tmp = a.with_name("x")
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    report = verify(archive / "primary", anchor_keys)
    assert report.first.check is ArchiveCheck.SEQUENCE
    assert report.first.segment == a.name
    assert (report.first.expected, report.first.found) == ("1", "2")


@pytest.mark.tamper
def test_segment_of_another_archive_is_foreign(archive: Path, tmp_path: Path, codec, anchor_keys, node_keys, archiver_keys) -> None:  # fmt: skip
    other = tmp_path / "other"
    build_archive(other, codec, anchor_keys, node_keys, archiver_keys, segments=2)
    path = seg(archive, 1)
    data = (other / path.name).read_bytes()
    # Same name, same deployment keys, another archive id.
    data = data.replace(b"a" * 32, b"b" * 32)
    path.write_bytes(data)
    report = verify(archive / "primary", anchor_keys)
    assert report.first.check is ArchiveCheck.ARCHIVE_ID
    assert report.first.segment == path.name
    assert (report.first.expected, report.first.found) == ("a" * 32, "b" * 32)


@pytest.mark.tamper
def test_segment_of_another_deployment_breaks_the_chain(archive: Path, tmp_path: Path, codec, anchor_keys) -> None:  # fmt: skip
    # Same archive id and layout, but another deployment (its own trust
    # anchor and keys): the chain says the segment is not the next link.
    other = tmp_path / "other"
    build_archive(other, codec, PrivateKeySet.generate(), PrivateKeySet.generate(), PrivateKeySet.generate(), segments=2)  # fmt: skip
    path = seg(archive, 1)
    path.write_bytes((other / path.name).read_bytes())
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    assert f.check is ArchiveCheck.CHAIN
    assert f.segment == path.name
    assert f.expected == segment_hash(seg(archive, 0).read_bytes()).hex()
    assert f.found == read_header(path.read_bytes(), path).prev_segment_hash.hex()


@pytest.mark.tamper
def test_flipped_byte_in_a_record_value_is_a_leaf_mismatch(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    index = next(i for i, r in enumerate(records) if r.topic == NAMES.prefix + "entries")
    value = records[index].value
    flip(path, value, at=len(value) - 3)
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    assert f.check is ArchiveCheck.LEAF
    assert (f.segment, f.record_index) == (path.name, index)
    assert (f.topic, f.partition, f.offset) == (records[index].topic, 0, records[index].offset)


@pytest.mark.tamper
def test_flipped_byte_in_a_header_field_breaks_the_anchor(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    flip(path, records[2].headers[0].value, at=6)
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    # Headers are not sealed: the segment's hash no longer matches its anchor.
    assert f.check is ArchiveCheck.ANCHOR
    assert f.segment == path.name
    assert "segment_hash" in f.detail


@pytest.mark.tamper
def test_flipped_byte_in_a_seal_signature_is_named(archive: Path, anchor_keys, codec) -> None:
    path = seg(archive, 2)
    _, records = read_segment(path)
    index = next(i for i, r in enumerate(records) if r.topic == NAMES.prefix + "seals")
    seal = codec.decode(records[index].value)
    signature = seal.payload["signatures"][0]["signature"]
    flip(path, signature[:32], at=5)
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    assert f.check is ArchiveCheck.SEAL
    assert (f.segment, f.record_index) == (path.name, index)
    assert "signature_invalid" in f.found


@pytest.mark.tamper
def test_deleted_record_is_an_offset_gap(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    rewrite(path, lambda rs: rs[:3] + rs[4:])
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    gone = records[3]
    after = next(i for i, r in enumerate(records) if i > 3 and r.topic == gone.topic)
    assert f.check is ArchiveCheck.OFFSETS
    # Found at the next record of the same partition (one index earlier now).
    assert (f.segment, f.record_index) == (path.name, after - 1)
    assert (f.topic, f.expected, f.found) == (gone.topic, str(gone.offset), str(gone.offset + 1))
    assert "gap" in f.detail


@pytest.mark.tamper
def test_duplicated_record_is_named(archive: Path, anchor_keys) -> None:
    path = seg(archive, 1)
    _, records = read_segment(path)
    rewrite(path, lambda rs: rs[:3] + [rs[2]] + rs[3:])
    report = verify(archive / "primary", anchor_keys)
    f = report.first
    assert f.check is ArchiveCheck.OFFSETS
    assert (f.segment, f.record_index, f.offset) == (path.name, 3, records[2].offset)
    assert "duplicate" in f.detail


@pytest.mark.tamper
def test_backup_copy_that_differs_is_named(archive: Path, anchor_keys) -> None:
    path = archive / "backup" / seg(archive, 3).name
    _, records = read_segment(path)
    flip(path, records[0].headers[0].value, at=6)
    report = verify(archive / "primary", anchor_keys, backup_dir=archive / "backup")
    f = report.first
    assert f.check is ArchiveCheck.BACKUP
    assert f.segment == path.name
    assert "differs from byte" in f.detail


@pytest.mark.tamper
def test_rewritten_chain_is_caught_by_the_anchors(archive: Path, anchor_keys) -> None:
    """An attacker who drops a record and recomputes the following headers'
    previous hashes still cannot forge the sealed anchors."""
    path = seg(archive, 0)
    rewrite(path, lambda rs: [r for r in rs if r.topic != NAMES.prefix + "entries" or r.offset != 2] )  # fmt: skip
    report = verify(archive / "primary", anchor_keys)
    assert report.first.check in (ArchiveCheck.OFFSETS, ArchiveCheck.ANCHOR)
    assert report.first.segment == path.name
