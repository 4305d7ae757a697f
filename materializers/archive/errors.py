"""Typed errors of the archive."""

from __future__ import annotations

from pathlib import Path

from cachet.errors import CachetError

__all__ = [
    "ArchiveChainError",
    "ArchiveError",
    "ArchiveFormatError",
    "ArchiveStateError",
]


class ArchiveError(CachetError):
    """A failure of the archive (reading, writing or resuming it)."""


class ArchiveFormatError(ArchiveError):
    """A segment file is not a segment of this format: unreadable, truncated,
    missing or wrong metadata. Names the file."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path.name}: {message}")
        self.path = path


class ArchiveChainError(ArchiveError):
    """Segments do not form one hash chain: a sequence gap, a reordered or
    foreign segment, or a previous-segment hash that is not the previous
    segment's. Names the file and what was expected and found."""

    def __init__(self, path: Path, message: str, *, expected: str, found: str) -> None:
        super().__init__(f"{path.name}: {message} (expected {expected}, found {found})")
        self.path = path
        self.expected = expected
        self.found = found


class ArchiveStateError(ArchiveError):
    """The archive cannot resume or run: e.g. the primary and backup sets
    disagree, or the broker no longer holds the offsets the archive ends at."""
