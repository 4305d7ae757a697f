"""The embedded key vault: one SQLite file shared by the nodes of one host.

Storage, and why each setting:

* ``PRAGMA secure_delete = ON`` on every connection: SQLite overwrites
  deleted content with zeros, so a destroyed wrapped key does not linger in
  a free page or a page's free space.
* A rollback journal in ``TRUNCATE`` mode (not WAL): the journal holds the
  pages a transaction changes, including the destroyed rows, only until the
  transaction commits; then it is cut to zero bytes. WAL would keep copies of
  every page written until a checkpoint. After :meth:`FileVault.destroy`
  returns, no file of the vault holds the destroyed wrapped key. (Blocks the
  filesystem freed may still hold old bytes until reused: that is what the
  KEK is for, and why the vault file should live on an encrypted volume.)
* ``synchronous = FULL`` and transactions: a crash (SIGKILL, power loss)
  leaves either the old or the new state, never a torn one; the next
  opener rolls a hot journal back.
* ``BEGIN IMMEDIATE`` for every change: the write lock is taken before the
  "is there a key already?" read, so two processes racing to create the
  key of a new name get the same key (the second sees the first's row).
* A busy timeout: a process waits for another's short transaction rather
  than failing.

The file is created with mode 0600: it holds only wrapped keys, but they
are still the keys to every subject's data.
"""

from __future__ import annotations

import hmac
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cachet.crypto.aead import DataKey, Rng, generate_data_key, wrap_key
from cachet.crypto.vault.base import (
    KeyTombstone,
    SystemWallClock,
    WallClock,
    check_kek,
    check_name,
    kek_check,
    key_id_for,
    new_vault_id,
    open_wrapped,
)
from cachet.crypto.vault.errors import KeyDestroyed, KeyNotFound, VaultError, VaultUnavailable

__all__ = ["FORMAT", "FileVault"]

log = logging.getLogger(__name__)

FORMAT = "cachet.vault/v1"

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS meta (k TEXT PRIMARY KEY, v BLOB NOT NULL)",
    # One row per live key. generation is per name; key_id = name#generation.
    "CREATE TABLE IF NOT EXISTS keys ("
    " key_id TEXT PRIMARY KEY, name TEXT NOT NULL, generation INTEGER NOT NULL,"
    " wrapped BLOB NOT NULL, created_at_us INTEGER NOT NULL, UNIQUE (name, generation))",
    # The highest generation ever used per name: survives destroy, so a
    # destroyed key's id is never handed out again.
    "CREATE TABLE IF NOT EXISTS names (name TEXT PRIMARY KEY, generation INTEGER NOT NULL)",
    "CREATE TABLE IF NOT EXISTS tombstones ("
    " key_id TEXT PRIMARY KEY, name TEXT NOT NULL, destroyed_at_us INTEGER NOT NULL,"
    " reason TEXT NOT NULL)",
)


class FileVault:
    """A :class:`~cachet.crypto.vault.base.KeyVault` in one SQLite file.

    Safe for several threads (one connection behind a lock) and several
    processes (SQLite's file locks). ``busy_timeout_s`` bounds how long a
    call waits for another process's transaction.
    """

    def __init__(
        self,
        path: Path,
        kek: bytes,
        *,
        clock: WallClock | None = None,
        busy_timeout_s: float = 30.0,
        rng: Rng = os.urandom,
    ) -> None:
        self._path = Path(path)
        self._kek = check_kek(kek)
        self._clock = clock or SystemWallClock()
        self._rng = rng
        self._lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        try:
            self._path.parent.mkdir(parents=True, exist_ok=True)
            if not self._path.exists():
                # 0600 before SQLite writes anything into it.
                os.close(os.open(self._path, os.O_CREAT | os.O_WRONLY, 0o600))
            conn = sqlite3.connect(
                self._path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
            )
        except (OSError, sqlite3.Error) as exc:
            raise VaultUnavailable(f"key vault {self._path}: cannot open: {exc}") from exc
        self._conn = conn
        try:
            with self._sql():
                conn.execute("PRAGMA secure_delete = ON")
                mode = conn.execute("PRAGMA journal_mode = TRUNCATE").fetchone()[0]
                if str(mode).lower() != "truncate":
                    raise VaultUnavailable(
                        f"key vault {self._path}: journal mode is {mode}, not truncate "
                        "(a WAL would keep copies of destroyed keys)"
                    )
                conn.execute("PRAGMA synchronous = FULL")
                with self._write():
                    for statement in _SCHEMA:
                        conn.execute(statement)
                    self._check_or_set_kek()
        except BaseException:
            self.close()
            raise

    def __repr__(self) -> str:
        return f"FileVault(path={str(self._path)!r})"

    @property
    def path(self) -> Path:
        return self._path

    # -- KeyVault ------------------------------------------------------------

    def current_key(self, name: str) -> DataKey:
        check_name(name)
        with self._lock, self._sql():
            found = self._live(name)
            if found is not None:
                return found
            with self._write():
                # Under the write lock now: another process may have created it.
                found = self._live(name)
                if found is not None:
                    return found
                conn = self._connection()
                row = conn.execute(
                    "SELECT generation FROM names WHERE name = ?", (name,)
                ).fetchone()
                generation = (row[0] if row else 0) + 1
                key = generate_data_key(key_id_for(name, generation), self._rng)
                conn.execute(
                    "INSERT INTO keys (key_id, name, generation, wrapped, created_at_us)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (
                        key.key_id,
                        name,
                        generation,
                        wrap_key(self._kek, key, self._rng),
                        self._clock.now_us(),
                    ),
                )
                conn.execute(
                    "INSERT INTO names (name, generation) VALUES (?, ?)"
                    " ON CONFLICT (name) DO UPDATE SET generation = excluded.generation",
                    (name, generation),
                )
            log.info("key vault %s: created data key %s", self._path, key.key_id)
            return key

    def key(self, key_id: str) -> DataKey:
        with self._lock, self._sql():
            row = (
                self._connection()
                .execute("SELECT wrapped FROM keys WHERE key_id = ?", (key_id,))
                .fetchone()
            )
            if row is not None:
                return open_wrapped(self._kek, key_id, row[0])
            tomb = self._tombstone(key_id)
        if tomb is not None:
            raise KeyDestroyed(tomb)
        raise KeyNotFound(key_id)

    def destroy(self, name: str, *, reason: str) -> tuple[str, ...]:
        check_name(name)
        if not reason:
            raise ValueError("a key is destroyed for a reason: reason must not be empty")
        with self._lock, self._sql(), self._write():
            conn = self._connection()
            ids = tuple(
                r[0]
                for r in conn.execute(
                    "SELECT key_id FROM keys WHERE name = ? ORDER BY generation", (name,)
                )
            )
            if not ids:
                return ()
            now = self._clock.now_us()
            # secure_delete zeroes the rows in the file; the journal that held
            # them during this transaction is truncated at COMMIT.
            conn.execute("DELETE FROM keys WHERE name = ?", (name,))
            conn.executemany(
                "INSERT INTO tombstones (key_id, name, destroyed_at_us, reason) VALUES (?, ?, ?, ?)",
                [(key_id, name, now, reason) for key_id in ids],
            )
        log.info("key vault %s: destroyed %s (%s)", self._path, ", ".join(ids), reason)
        return ids

    def tombstone(self, key_id: str) -> KeyTombstone | None:
        with self._lock, self._sql():
            return self._tombstone(key_id)

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> FileVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside -----------------------------------------------------------------

    def _connection(self) -> sqlite3.Connection:
        if self._conn is None:
            raise VaultUnavailable(f"key vault {self._path} is closed")
        return self._conn

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """Turn SQLite's errors into VaultUnavailable naming the file."""
        try:
            yield
        except VaultError:
            raise
        except sqlite3.Error as exc:
            raise VaultUnavailable(f"key vault {self._path}: {exc}") from exc

    @contextmanager
    def _write(self) -> Iterator[None]:
        """One write transaction, the lock taken before its first read."""
        conn = self._connection()
        conn.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _live(self, name: str) -> DataKey | None:
        row = (
            self._connection()
            .execute(
                "SELECT key_id, wrapped FROM keys WHERE name = ? ORDER BY generation DESC LIMIT 1",
                (name,),
            )
            .fetchone()
        )
        return None if row is None else open_wrapped(self._kek, row[0], row[1])

    def _tombstone(self, key_id: str) -> KeyTombstone | None:
        row = (
            self._connection()
            .execute(
                "SELECT name, destroyed_at_us, reason FROM tombstones WHERE key_id = ?", (key_id,)
            )
            .fetchone()
        )
        return None if row is None else KeyTombstone(key_id, row[0], row[1], row[2])

    def _check_or_set_kek(self) -> None:
        conn = self._connection()
        meta = dict(conn.execute("SELECT k, v FROM meta").fetchall())
        if not meta:
            vault_id = new_vault_id()
            conn.executemany(
                "INSERT INTO meta (k, v) VALUES (?, ?)",
                [
                    ("format", FORMAT.encode()),
                    ("vault_id", vault_id.encode()),
                    ("kek_check", kek_check(self._kek, vault_id)),
                ],
            )
            log.info("key vault %s: created (id %s)", self._path, vault_id)
            return
        if meta.get("format") != FORMAT.encode():
            raise VaultUnavailable(
                f"key vault {self._path}: format {meta.get('format')!r}, expected {FORMAT}"
            )
        vault_id = bytes(meta["vault_id"]).decode()
        if not hmac.compare_digest(bytes(meta["kek_check"]), kek_check(self._kek, vault_id)):
            raise VaultUnavailable(
                f"key vault {self._path} (id {vault_id}) was created under another KEK: "
                "this keystore's cachet:vault-kek is not the one its keys are wrapped under"
            )
