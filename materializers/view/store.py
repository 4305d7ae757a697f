"""The RocksDB store under the live view: entries, history, subjects, offsets.

Exactly-once rests on one rule: every change a consumer makes for a run of
records (entries, history, subject index) *and* the next offsets to read are
written by :meth:`ViewStore.commit` as one RocksDB WriteBatch with
``sync=True``. RocksDB applies a WriteBatch atomically and the WAL is
fsynced before ``commit`` returns, so after a crash at any point the view on
disk is exactly "batches 0..n-1 applied, resume at offset n". A
:class:`ViewBatch` keeps its changes in memory until then: nothing of an
uncommitted batch ever reaches RocksDB (the separate offset ``put`` that
Faust did is the anti-pattern this avoids).

The view is single-writer: a batch begun before another batch committed is
refused at commit, since its reads may predate that commit.
"""

from __future__ import annotations

import hashlib
import logging
import struct
from collections.abc import Iterator
from pathlib import Path
from types import TracebackType

from rocksdict import DBRecoveryMode, Options, Rdict, WriteBatch, WriteOptions

from cachet.materializers.view import codec
from cachet.materializers.view.batch import FORMAT_META, ViewBatch, decode_current, decode_history
from cachet.materializers.view.entry import ViewEntry
from cachet.materializers.view.errors import ViewBatchError, ViewFormatError, ViewMissingError
from cachet.materializers.view.rows import ViewRows

__all__ = ["STATE_HASH_DOMAIN", "VIEW_FORMAT_VERSION", "ViewStore"]

log = logging.getLogger(__name__)

# 2: the verifier checkpoint (cachet.ledger.checkpoint) is stored with the offsets.
VIEW_FORMAT_VERSION = 2
STATE_HASH_DOMAIN = b"cachet.view.state.v1\0"

_U32 = struct.Struct(">I")


class ViewStore:
    """The live view on disk: open with :meth:`open`, change with batches."""

    __slots__ = ("_path", "_rows", "_write_opts")

    def __init__(self, db: Rdict, path: Path) -> None:
        self._rows = ViewRows(db)
        self._path = path
        self._write_opts = WriteOptions()
        # Exactly-once needs the batch on stable storage before commit
        # returns; the WAL stays on (disable_wal is never set).
        self._write_opts.sync = True

    @classmethod
    def open(cls, path: Path, *, create: bool = True) -> ViewStore:
        """Open (or create) the view at ``path``; refuse another format version."""
        path = Path(path)
        if not (path / "CURRENT").exists() and not create:
            raise ViewMissingError(path)
        opts = Options(raw_mode=True)
        opts.create_if_missing(create)
        opts.set_paranoid_checks(True)
        # A torn tail write after a crash belongs to a batch that never
        # returned from commit: drop it, keep everything before it.
        opts.set_wal_recovery_mode(DBRecoveryMode.point_in_time())
        path.mkdir(parents=True, exist_ok=True)
        store = cls(Rdict(str(path), opts), path)
        try:
            store._check_format()
        except BaseException:
            store.close()
            raise
        return store

    def _check_format(self) -> None:
        key = codec.meta_key(FORMAT_META)
        raw = self._rows.get(key)
        if raw is None:
            if next(iter(self._rows.scan(b"")), None) is not None:
                raise ViewFormatError(self._path, None, VIEW_FORMAT_VERSION)
            batch = WriteBatch(raw_mode=True)
            batch.put(key, _U32.pack(VIEW_FORMAT_VERSION))
            self._rows.write(batch, self._write_opts)
            log.info("created live view at %s (format %d)", self._path, VIEW_FORMAT_VERSION)
            return
        found = _U32.unpack(raw)[0] if len(raw) == _U32.size else None
        if found != VIEW_FORMAT_VERSION:
            log.error("refusing live view at %s: format %s", self._path, found)
            raise ViewFormatError(self._path, found, VIEW_FORMAT_VERSION)

    @property
    def path(self) -> Path:
        return self._path

    # ----------------------------------------------------------------- reads

    def current(self, key_hash: bytes) -> ViewEntry | None:
        """The latest version of a key (in any state), or None."""
        key = codec.current_key(key_hash)
        raw = self._rows.get(key)
        return None if raw is None else decode_current(key, raw)

    def history(self, key_hash: bytes) -> list[ViewEntry]:
        """Older versions of a key, newest first."""
        return [decode_history(k, v) for k, v in self._rows.scan(codec.history_prefix(key_hash))]

    def keys_of_subject(self, subject_hash: bytes) -> list[bytes]:
        """Key hashes with a stored version carrying ``subject_hash``, in key order."""
        prefix = codec.subject_prefix(subject_hash)
        return [codec.parse_subject_key(k, prefix) for k, _ in self._rows.scan(prefix)]

    def offsets(self) -> dict[tuple[str, int], int]:
        """(topic, partition) -> the NEXT offset to read, as last committed."""
        return {
            codec.parse_offset_key(k): codec.decode_offset(k, v)
            for k, v in self._rows.scan(codec.OFFSET_PREFIX)
        }

    def entries(self) -> Iterator[ViewEntry]:
        """Every current entry, in key order."""
        for key, value in self._rows.scan(codec.CURRENT_PREFIX):
            yield decode_current(key, value)

    def get_meta(self, name: str) -> bytes | None:
        return self._rows.get(codec.meta_key(name))

    def meta_rows(self, prefix: str) -> dict[str, bytes]:
        """Committed meta rows whose name starts with ``prefix`` (name -> value)."""
        start = codec.META_PREFIX + prefix.encode("ascii")
        return {k[len(codec.META_PREFIX) :].decode("ascii"): v for k, v in self._rows.scan(start)}

    def state_hash(self) -> bytes:
        """SHA3-256 of the view's state, equal for a live and a rebuilt view.

        Covers the ``e/``, ``h/`` and ``s/`` rows (entries, history, subject
        index) in key order, not offsets or metadata (they depend on where a
        log was read, not on what it said). The hashed stream is
        ``STATE_HASH_DOMAIN`` then, per row, ``u32 len(key) || key || u32
        len(value) || value`` with the layout of :mod:`cachet.materializers.view.codec`.
        """
        h = hashlib.sha3_256(STATE_HASH_DOMAIN)
        for prefix in (codec.CURRENT_PREFIX, codec.HISTORY_PREFIX, codec.SUBJECT_PREFIX):
            for key, value in self._rows.scan(prefix):
                h.update(_U32.pack(len(key)))
                h.update(key)
                h.update(_U32.pack(len(value)))
                h.update(value)
        return h.digest()

    # ---------------------------------------------------------------- writes

    def begin(self) -> ViewBatch:
        """A new, empty batch over the currently committed view."""
        return ViewBatch(self._rows, self._rows.sequence(), self)

    def commit(self, batch: ViewBatch) -> None:
        """Write all of ``batch`` as one synced WriteBatch, or nothing."""
        if batch._owner is not self:
            raise ViewBatchError("batch belongs to another view store")
        batch._check_open()
        if batch._base_seq != self._rows.sequence():
            raise ViewBatchError(
                "batch is stale: another batch committed after it began; "
                "re-apply its records in a new batch"
            )
        wb = batch._seal()
        if wb is not None:
            self._rows.write(wb, self._write_opts)
        batch._mark_committed()

    def put_meta(self, batch: ViewBatch, name: str, value: bytes) -> None:
        """Store node metadata in ``batch`` (same as ``batch.put_meta``)."""
        batch.put_meta(name, value)

    def close(self) -> None:
        self._rows.close()

    def __enter__(self) -> ViewStore:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
