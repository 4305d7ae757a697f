"""Typed errors of the live view store."""

from __future__ import annotations

from pathlib import Path

from cachet.errors import StateFailure

__all__ = [
    "ViewBatchError",
    "ViewCorruptError",
    "ViewDatabaseError",
    "ViewFailedError",
    "ViewFormatError",
    "ViewMissingError",
    "ViewStoreError",
]


class ViewStoreError(StateFailure):
    """A failure of the RocksDB live view store (the view's own state, never
    the fault of a record it was handling)."""


class ViewDatabaseError(ViewStoreError):
    """RocksDB itself failed under the view: an I/O error, a closed database,
    or one closed by another thread while this one used it."""

    def __init__(self, operation: str, cause: BaseException) -> None:
        super().__init__(f"RocksDB {operation} failed: {type(cause).__name__}: {cause}")
        self.operation = operation


class ViewFormatError(ViewStoreError):
    """The database on disk was written with another view format version.

    A view is derived state: the fix is to rebuild it from the log (offset 0)
    into an empty directory, never to read bytes we do not understand.
    """

    def __init__(self, path: Path, found: int | None, expected: int) -> None:
        shown = "no format version" if found is None else f"format version {found}"
        super().__init__(
            f"live view at {path} has {shown}, this Cachet reads format version "
            f"{expected}; rebuild the view from the log into an empty directory"
        )
        self.path = path
        self.found = found
        self.expected = expected


class ViewMissingError(ViewStoreError):
    """``ViewStore.open(create=False)`` found no view at the path."""

    def __init__(self, path: Path) -> None:
        super().__init__(f"no live view at {path} (and create=False)")
        self.path = path


class ViewCorruptError(ViewStoreError):
    """A stored record could not be decoded: the bytes on disk are not ours."""

    def __init__(self, key: bytes, detail: str) -> None:
        super().__init__(f"live view record {key!r} is corrupt: {detail}")
        self.key = key
        self.detail = detail


class ViewBatchError(ViewStoreError):
    """A batch was misused: committed twice, used after commit, or stale.

    A stale batch is one begun before another batch committed: its reads may
    not reflect that commit, so writing it could lose an update.
    """


class ViewFailedError(ViewStoreError):
    """The view stopped earlier (its store failed, or an error left its state
    not whole); open it again."""

    def __init__(self, failure: str) -> None:
        super().__init__(
            f"the live view stopped earlier ({failure}); "
            "it serves nothing until opened again (restart the node)"
        )
        self.failure = failure
