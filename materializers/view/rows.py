"""The live view's rows in RocksDB: the one door through which the view
touches the database.

rocksdict reports a failure of the database itself (an I/O error, a closed
database, a database being closed by another thread) as a bare
``Exception`` or ``RuntimeError``, indistinguishable by type from a bug in
handling a record. A consume loop that cannot tell the two apart would
dead-letter a genuine record and go on with half of it applied. Here every
such failure becomes a :class:`~cachet.materializers.view.errors.ViewDatabaseError`
naming the operation, which the live view treats as its own failure: it stops,
commits nothing more and serves nothing until it is opened again.
"""

from __future__ import annotations

from collections.abc import Iterator

from rocksdict import Rdict, WriteBatch, WriteOptions

from cachet.materializers.view.errors import ViewDatabaseError

__all__ = ["ViewRows"]


class ViewRows:
    """Raw rows of one RocksDB database (keys and values are bytes)."""

    __slots__ = ("_closed", "_db")

    def __init__(self, db: Rdict) -> None:
        self._db = db
        self._closed = False

    def get(self, key: bytes) -> bytes | None:
        try:
            value: bytes | None = self._db.get(key)
        except Exception as exc:  # noqa: BLE001 - rocksdict raises bare Exception
            raise ViewDatabaseError("get", exc) from exc
        return value

    def scan(self, prefix: bytes) -> Iterator[tuple[bytes, bytes]]:
        """Committed rows under ``prefix``, in key order."""
        try:
            it = self._db.iter()
            it.seek(prefix)
            while it.valid():
                key: bytes = it.key()
                if not key.startswith(prefix):
                    return
                value: bytes = it.value()
                yield key, value
                it.next()
        except Exception as exc:  # noqa: BLE001 - see get
            raise ViewDatabaseError("scan", exc) from exc

    def write(self, batch: WriteBatch, options: WriteOptions) -> None:
        try:
            self._db.write(batch, options)
        except Exception as exc:  # noqa: BLE001 - see get
            raise ViewDatabaseError("write", exc) from exc

    def sequence(self) -> int:
        """The sequence number of the latest write."""
        try:
            seq: int = self._db.latest_sequence_number()
        except Exception as exc:  # noqa: BLE001 - see get
            raise ViewDatabaseError("latest_sequence_number", exc) from exc
        return seq

    def close(self) -> None:
        """Flush and close; closing again does nothing. The database is let
        go even when the flush fails (then this raises): every commit was
        already synced to its log."""
        if self._closed:
            return
        self._closed = True
        try:
            self._db.close()
        except Exception as exc:  # noqa: BLE001 - see get
            raise ViewDatabaseError("close", exc) from exc
