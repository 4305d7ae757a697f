"""The archive: every log record in hash-chained Avro segments that outlive Kafka.

* :mod:`.segment`: the file format, :func:`iter_archive` and :func:`list_segments`.
* :mod:`.writer`: closing segments durably (fsync, atomic rename, read-only).
* :mod:`.archiver`: the archive consumer (``cachet archive run``).
* :mod:`.verify`: ``cachet archive verify`` as a library function.

``docs/archive-format.md`` specifies the format byte by byte.
"""

from cachet.materializers.archive.errors import (
    ArchiveChainError,
    ArchiveError,
    ArchiveFormatError,
    ArchiveStateError,
)
from cachet.materializers.archive.segment import (
    ArchivedHeader,
    ArchivedRecord,
    ArchivedSealRef,
    PartitionRange,
    SegmentInfo,
    iter_archive,
    list_segments,
)

__all__ = [
    "ArchiveChainError",
    "ArchiveError",
    "ArchiveFormatError",
    "ArchiveStateError",
    "ArchivedHeader",
    "ArchivedRecord",
    "ArchivedSealRef",
    "PartitionRange",
    "SegmentInfo",
    "iter_archive",
    "list_segments",
]
