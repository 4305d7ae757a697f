"""The RocksDB store under the live view (see ``store`` for the exactly-once rule).

``codec`` specifies the on-disk layout byte by byte; ``entry`` the values.
"""

from __future__ import annotations

from cachet.materializers.view.batch import ViewBatch
from cachet.materializers.view.entry import EntryState, ViewEntry
from cachet.materializers.view.errors import (
    ViewBatchError,
    ViewCorruptError,
    ViewDatabaseError,
    ViewFailedError,
    ViewFormatError,
    ViewMissingError,
    ViewStoreError,
)
from cachet.materializers.view.store import STATE_HASH_DOMAIN, VIEW_FORMAT_VERSION, ViewStore

__all__ = [
    "STATE_HASH_DOMAIN",
    "VIEW_FORMAT_VERSION",
    "EntryState",
    "ViewBatch",
    "ViewBatchError",
    "ViewCorruptError",
    "ViewDatabaseError",
    "ViewEntry",
    "ViewFailedError",
    "ViewFormatError",
    "ViewMissingError",
    "ViewStore",
    "ViewStoreError",
]
