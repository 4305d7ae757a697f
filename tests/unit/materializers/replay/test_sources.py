"""The archive source over real segment files, the time index, and what the
replay does with a broken archive."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.ledger.record import RecordOrigin
from cachet.materializers.archive import ArchivedHeader, ArchivedRecord
from cachet.materializers.archive.segment import ZERO_HASH, segment_files
from cachet.materializers.archive.writer import SegmentWriter
from cachet.materializers.replay import (
    ArchiveSource,
    PartitionEnd,
    ReplaySourceError,
    ReplayTrust,
    iter_verified,
)
from cachet.materializers.replay.time_index import TimeIndex
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from tests.unit.materializers.replay.memlog import NAMES, T0, ListSource, MemoryLog, written

S = 1_000_000


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="module")
def log(anchor) -> MemoryLog:
    log = MemoryLog(EventCodec(), anchor, PrivateKeySet.generate())
    log.register()
    for step in range(6):
        written(log, step, T0 + step * S, partition=step % 2)
        log.emit(EventType.CACHE_READ, T0 + step * S + 1, step % 3)
        log.seal(T0 + step * S + 2)
    return log


@pytest.fixture
def trust(anchor) -> ReplayTrust:
    return ReplayTrust(anchor.public(), frozenset(SignatureScheme))


def write_archive(directory: Path, records: list[RecordOrigin], per_segment: int) -> None:
    """Segments of ``per_segment`` records each, chained as the archive writes them."""
    prev, start = ZERO_HASH, {}
    for seq, i in enumerate(range(0, len(records), per_segment)):
        w = SegmentWriter(
            directory, archive_id="a" * 32, seq=seq, prev_hash=prev, start_offsets=start
        )
        for r in records[i : i + per_segment]:
            w.append(
                ArchivedRecord(
                    r.topic,
                    r.partition,
                    r.offset,
                    r.timestamp_ms,
                    r.key or None,
                    r.raw,
                    tuple(ArchivedHeader(k, v) for k, v in r.headers),
                )
            )
        info = w.close()
        prev, start = info.hash, info.end_offsets


def verified_coords(source, trust, **kw) -> list[tuple[str, int, int]]:
    return sorted(
        (e.topic, e.partition, e.offset) for e in iter_verified(source, trust=trust, **kw)
    )


def test_the_archive_gives_what_the_log_gives(log, trust, tmp_path) -> None:
    write_archive(tmp_path, log.records, per_segment=5)
    assert len(segment_files(tmp_path)) > 3
    archive = ArchiveSource(tmp_path, NAMES)
    assert verified_coords(archive, trust) == verified_coords(ListSource(log.records), trust)
    assert len(verified_coords(archive, trust)) == 13  # the registration and 12 sealed events
    until = T0 + 2 * S + 5
    assert verified_coords(archive, trust, until_us=until) == verified_coords(
        ListSource(log.records), trust, until_us=until
    )


def test_the_indexed_read_skips_nothing_it_needs_and_ends_every_partition(log, tmp_path) -> None:
    write_archive(tmp_path, log.records, per_segment=4)
    archive = ArchiveSource(tmp_path, NAMES)
    items = list(archive.read(start={("t.entries", 0): 2}))
    records = [i for i in items if isinstance(i, RecordOrigin)]
    ends = {(i.topic, i.partition): i.next_offset for i in items if isinstance(i, PartitionEnd)}
    assert ends == archive.ends()
    assert all(r.offset >= 2 for r in records if (r.topic, r.partition) == ("t.entries", 0))
    assert len(records) == len(log.records) - 2


def test_a_flipped_byte_in_a_segment_stops_the_replay(log, trust, tmp_path) -> None:
    write_archive(tmp_path, log.records, per_segment=5)
    second = segment_files(tmp_path)[1]
    second.chmod(0o644)
    data = bytearray(second.read_bytes())
    data[-40] ^= 0x01
    second.write_bytes(bytes(data))
    with pytest.raises(ReplaySourceError):
        list(iter_verified(ArchiveSource(tmp_path, NAMES), trust=trust))


def test_a_missing_segment_stops_the_replay(log, trust, tmp_path) -> None:
    write_archive(tmp_path, log.records, per_segment=5)
    middle = segment_files(tmp_path)[2]
    middle.chmod(0o644)
    middle.unlink()
    with pytest.raises(ReplaySourceError, match="segment"):
        list(iter_verified(ArchiveSource(tmp_path, NAMES), trust=trust))


def test_no_archive_directory_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(ReplaySourceError, match="no such directory"):
        ArchiveSource(tmp_path / "nowhere", NAMES)


def test_time_index_never_stops_before_the_cut(tmp_path) -> None:
    index = TimeIndex(every=2)
    times = [10, 30, 20, 40, 50, 60]  # one event out of order
    for offset, t in enumerate(times):
        index.observe("t.entries", 0, offset, t)
    # Cut at 25: the first event after it is offset 1, and reading stops at
    # a sampled offset no earlier than that.
    assert index.stop_offsets(25) == {("t.entries", 0): 2}
    assert index.stop_offsets(100) == {}
    index.save(tmp_path / "index.json")
    assert TimeIndex.load(tmp_path / "index.json").samples == index.samples
    (tmp_path / "bad.json").write_text("{not json")
    assert TimeIndex.load(tmp_path / "bad.json").samples == {}
