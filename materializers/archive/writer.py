"""Writing segments: append to a temporary file, close durably, chain on.

A segment is written to ``.segment-<seq>.avro.tmp`` in the archive
directory. Closing it is the only way it becomes part of the archive, and
the steps run in an order a crash at any point cannot corrupt:

1. flush the Avro writer, ``fsync`` the file (the bytes are on disk);
2. rename the temporary file to ``segment-<seq>.avro`` (atomic: a reader
   sees no file or the whole file, never part of one);
3. ``fsync`` the directory (the rename itself is on disk);
4. make the file read-only (closed segments are never written again);
5. write the same bytes to the backup set the same way (when configured).

A crash before step 2 leaves only a temporary file, which the next start
deletes (:func:`discard_temporaries`): the records it held are read again
from the log, since the archive resumes where its last closed segment ends.
"""

from __future__ import annotations

import logging
import os
import stat
from collections.abc import Mapping
from pathlib import Path

from fastavro.write import Writer

from cachet.materializers.archive.errors import ArchiveStateError
from cachet.materializers.archive.segment import (
    FORMAT_VERSION,
    META_ARCHIVE_ID,
    META_FORMAT,
    META_PREV_SEGMENT_HASH,
    META_SEGMENT_SEQ,
    META_START_OFFSETS,
    PARSED_RECORD_SCHEMA,
    ArchivedRecord,
    SegmentHeader,
    SegmentInfo,
    encode_start_offsets,
    iter_segment_records,
    read_header,
    segment_hash,
    segment_name,
    summarize,
)

__all__ = [
    "SegmentWriter",
    "discard_temporaries",
    "publish_bytes",
    "temporary_name",
]

log = logging.getLogger(__name__)

_READ_ONLY = stat.S_IRUSR | stat.S_IRGRP | stat.S_IROTH
_CODECS = ("null", "deflate")


def temporary_name(seq: int) -> str:
    """The name a segment has while it is written (never a segment name)."""
    return f".{segment_name(seq)}.tmp"


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _seal_file(tmp: Path, final: Path) -> None:
    """Steps 2-4: rename into place, fsync the directory, make read-only."""
    if final.exists():
        # A closed segment is never replaced: two writers, or a resume that
        # computed the wrong sequence number, would otherwise fork the chain.
        raise ArchiveStateError(f"{final} already exists; refusing to overwrite a closed segment")
    os.rename(tmp, final)
    _fsync_dir(final.parent)
    os.chmod(final, _READ_ONLY)


def publish_bytes(directory: Path, name: str, data: bytes) -> Path:
    """Writes ``data`` as the closed file ``directory/name`` with the whole
    discipline (temporary name, fsync, rename, fsync directory, read-only)."""
    directory.mkdir(parents=True, exist_ok=True)
    tmp = directory / f".{name}.tmp"
    with open(tmp, "wb") as fo:
        fo.write(data)
        fo.flush()
        os.fsync(fo.fileno())
    final = directory / name
    _seal_file(tmp, final)
    return final


def discard_temporaries(directory: Path) -> list[Path]:
    """Deletes what a crash left of segments being written; returns them."""
    if not directory.is_dir():
        return []
    gone = [
        p for p in directory.iterdir() if p.name.startswith(".segment-") and p.name.endswith(".tmp")
    ]
    for path in gone:
        log.warning("archive: discarding %s left by an interrupted segment", path)
        path.unlink()
    if gone:
        _fsync_dir(directory)
    return gone


class SegmentWriter:
    """One segment being written; :meth:`close` makes it part of the archive.

    ``start_offsets`` is, per partition, the offset the segment's first
    record of that partition must have (the previous segment's end).
    """

    def __init__(
        self,
        directory: Path,
        *,
        archive_id: str,
        seq: int,
        prev_hash: bytes,
        start_offsets: Mapping[tuple[str, int], int],
        codec: str = "null",
        backup_dir: Path | None = None,
    ) -> None:
        if codec not in _CODECS:
            raise ValueError(f"archive codec {codec!r}: one of {', '.join(_CODECS)}")
        if len(prev_hash) != 32:
            raise ValueError(f"previous segment hash is {len(prev_hash)} bytes, not 32")
        directory.mkdir(parents=True, exist_ok=True)
        self.directory = directory
        self.backup_dir = backup_dir
        self.seq = seq
        self.name = segment_name(seq)
        self.header = SegmentHeader(archive_id, seq, prev_hash, dict(start_offsets))
        self._tmp = directory / temporary_name(seq)
        self._file = open(self._tmp, "xb")  # noqa: SIM115 - lives as long as the segment
        self._writer = Writer(
            self._file,
            PARSED_RECORD_SCHEMA,
            codec=codec,
            metadata={
                META_FORMAT: FORMAT_VERSION,
                META_ARCHIVE_ID: archive_id,
                META_SEGMENT_SEQ: str(seq),
                META_PREV_SEGMENT_HASH: prev_hash.hex(),
                META_START_OFFSETS: encode_start_offsets(start_offsets),
            },
        )
        self._header_bytes = self._file.tell()
        self._record_bytes = 0
        self.record_count = 0

    @property
    def size_bytes(self) -> int:
        """The segment's size so far, estimated from what was appended (the
        Avro writer buffers a block before it reaches the file)."""
        return self._header_bytes + self._record_bytes

    def append(self, record: ArchivedRecord) -> None:
        self._writer.write(record.to_avro())
        self.record_count += 1
        # Avro framing per record is a few varints: 24 bytes overestimates it.
        self._record_bytes += (
            24
            + len(record.topic)
            + len(record.value or b"")
            + len(record.key or b"")
            + sum(len(h.key) + len(h.value or b"") + 4 for h in record.headers)
            + (len(record.seal.producer_id) + 12 if record.seal else 0)
        )

    def close(self) -> SegmentInfo:
        """Closes the segment durably (see the module docstring); returns its info."""
        self._writer.flush()
        self._file.flush()
        os.fsync(self._file.fileno())
        self._file.close()
        data = self._tmp.read_bytes()
        final = self.directory / self.name
        _seal_file(self._tmp, final)
        if self.backup_dir is not None:
            publish_bytes(self.backup_dir, self.name, data)
        info = summarize(final, data, read_header(data, final), iter_segment_records(data, final))
        log.info(
            "archive: closed %s (%d records, sha3-256 %s)",
            self.name,
            info.record_count,
            segment_hash(data).hex()[:16],
        )
        return info

    def abandon(self) -> None:
        """Drops the segment being written (its records stay in the log)."""
        try:
            self._file.close()
        finally:
            self._tmp.unlink(missing_ok=True)
