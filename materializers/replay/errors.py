"""Typed errors of the point-in-time replay."""

from __future__ import annotations

from pathlib import Path

from cachet.errors import CachetError

__all__ = [
    "ReplayError",
    "ReplaySourceError",
    "ReplayWorkDirError",
]


class ReplayError(CachetError):
    """A replay could not be carried out (its source, its work dir, its query)."""


class ReplaySourceError(ReplayError):
    """A replay source cannot deliver the log: no archive there, an archive
    whose chain is broken, a broker that does not answer. Names the source."""

    def __init__(self, source: str, message: str) -> None:
        super().__init__(f"{source}: {message}")
        self.source = source


class ReplayWorkDirError(ReplayError):
    """The replay's work dir holds something it cannot continue from (another
    deployment's replay, a newer format). Names the dir and what was found."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path
