"""The archive consumer in process against the real broker: a segment closed
just before a crash (its anchor never produced) is anchored on the next start."""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest

from cachet.errors import CachetError
from cachet.ledger.identity import epoch_producer_id
from cachet.materializers.archive.archiver import Archiver, ArchiveSettings, anchored_seqs
from cachet.materializers.archive.broker_anchors import anchored_segments
from cachet.materializers.archive.report import SegmentStatus
from cachet.materializers.archive.segment import list_segments
from cachet.materializers.archive.verify import verify_archive
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, SealRef, new_event
from cachet.schemas.payloads import ArchiveSegmentSealed
from cachet.topics import Topic
from tests.integration.cache.logtools import produce_raw
from tests.integration.ledger_support import REQUIRED

pytestmark = pytest.mark.integration

IDENTITY = "archive-x"


def poll_until(archiver: Archiver, cond, timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        archiver.poll(0.1)
        if cond():
            return True
    return False


def test_segment_closed_without_its_anchor_is_anchored_on_restart(tmp_path: Path, ledger, producer_keys) -> None:  # fmt: skip
    ledger.register("writer-x", producer_keys)
    ledger.register(IDENTITY, producer_keys)
    writer = ledger.sealing_producer("writer-x", producer_keys)
    for i in range(6):
        payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
        payload["key_hash"] = i.to_bytes(32, "big")
        writer.emit_with_receipt(EventType.CACHE_WRITTEN, payload, key=b"k%d" % i).wait(10)
    writer.flush(10)
    settings = ArchiveSettings(tmp_path / "archive", tmp_path / "backup", segment_max_age_s=0.3)

    def lost(anchor: ArchiveSegmentSealed) -> None:
        raise CachetError("broker away")  # the crash came before the anchor was produced

    first = Archiver(ledger.servers, ledger.names, settings, emit_anchor=lost, archive_id="f" * 32)
    assert poll_until(first, lambda: first.health.segments_closed >= 1)
    assert first.health.unanchored == [0] and not first.health.ok
    first.consumer.close()  # dies without a clean stop
    assert anchored_seqs(ledger.servers, ledger.names, ledger.codec, "f" * 32) == set()

    producer = ledger.sealing_producer(IDENTITY, producer_keys)

    def emit(anchor: ArchiveSegmentSealed) -> None:
        producer.emit_with_receipt(EventType.ARCHIVE_SEGMENT_SEALED, anchor.to_avro(), key=anchor.archive_id.encode(), topic=Topic.ARCHIVE).wait(10)  # fmt: skip

    second = Archiver(ledger.servers, ledger.names, settings, emit_anchor=emit)
    assert second.archive_id == "f" * 32  # from the segments on disk
    assert second.health.unanchored == []
    assert 0 in anchored_seqs(ledger.servers, ledger.names, ledger.codec, "f" * 32)
    # The anchor (and its seal) reach the archive; a clean stop closes the segment.
    producer.flush(10)
    assert poll_until(second, lambda: second.health.segments_closed >= 1 and second.health.records_archived >= 2)  # fmt: skip
    second.close()
    producer.close(10)
    writer.close(10)
    report = verify_archive(settings.directory, anchor=ledger.anchor.public(), names=ledger.names, backup_dir=settings.backup_dir, archive_identity=IDENTITY)  # fmt: skip
    assert report.ok, report.first and report.first.describe()
    assert report.segments[0].status is SegmentStatus.VERIFIED
    assert len(list_segments(settings.directory)) >= 2


def test_an_anchor_without_a_verified_seal_does_not_count_and_the_segment_is_anchored_again(tmp_path: Path, ledger, producer_keys) -> None:  # fmt: skip
    # The archiver's anchor reached the topic but its seal did not (SIGKILL
    # between the two), or an attacker wrote one in its name: either way no
    # verified anchor exists, and a restart must anchor the segment again.
    ledger.register("writer-y", producer_keys)
    ledger.register(IDENTITY, producer_keys)
    writer = ledger.sealing_producer("writer-y", producer_keys)
    for i in range(4):
        payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
        payload["key_hash"] = i.to_bytes(32, "big")
        writer.emit_with_receipt(EventType.CACHE_WRITTEN, payload, key=b"k%d" % i).wait(10)
    writer.flush(10)
    settings = ArchiveSettings(tmp_path / "archive", tmp_path / "backup", segment_max_age_s=0.3)
    unsealed: list[ArchiveSegmentSealed] = []
    first = Archiver(ledger.servers, ledger.names, settings, emit_anchor=unsealed.append, archive_id="e" * 32)  # fmt: skip
    assert poll_until(first, lambda: first.health.segments_closed >= 1 and bool(unsealed))
    first.consumer.close()  # dies without a clean stop
    # Its anchor, under its identity and an epoch whose seal never comes.
    epoch = epoch_producer_id(IDENTITY, os.urandom(8).hex())
    event = new_event(EventType.ARCHIVE_SEGMENT_SEALED, unsealed[0].to_avro(), producer_id=epoch, producer_seq=0, seal_ref=SealRef(0, 0))  # fmt: skip
    produce_raw(ledger.servers, ledger.names(Topic.ARCHIVE), [(b"e" * 32, ledger.codec.encode(event), (), None)])  # fmt: skip
    assert 0 in anchored_seqs(ledger.servers, ledger.names, ledger.codec, "e" * 32)

    def verified(archive_id: str) -> set[int]:
        return anchored_segments(ledger.servers, ledger.names, ledger.anchor.public(), REQUIRED, archive_id=archive_id, identity=IDENTITY, timeout_s=20)  # fmt: skip

    assert verified("e" * 32) == set()  # the unsealed anchor does not count
    anchors: list[ArchiveSegmentSealed] = []
    second = Archiver(ledger.servers, ledger.names, settings, emit_anchor=anchors.append, anchored=verified)  # fmt: skip
    assert second.archive_id == "e" * 32
    assert [a.segment_seq for a in anchors] == [0]  # anchored again
    second.close()
    writer.close(10)
