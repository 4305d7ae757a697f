"""The key vault for several hosts: one PostgreSQL database.

Tables (created on first open, under an advisory lock so that several
processes opening a new database at once do not collide):

* ``cachet_vault_keys``: one row per live key, ``wrapped`` = the data key
  under the KEK (``cachet.crypto.aead.wrap_key``, bound to its key id);
* ``cachet_vault_names``: the highest generation each name ever had, kept
  after destroy so a key id is never handed out twice;
* ``cachet_vault_tombstones``: key id, name, when, why; never key material;
* ``cachet_vault_meta``: format, vault id and the KEK check.

Creation races: the name's row in ``cachet_vault_names`` is locked
(``SELECT ... FOR UPDATE``) before "is there a key already?" is asked, so
concurrent callers on any host get the same key.

What destroy can and cannot do. ``destroy`` deletes the rows and then runs
``VACUUM`` on the keys table (autocommit; VACUUM cannot run in a
transaction), which makes the dead row versions' space free: the table no
longer returns them, but their bytes can stay in the table's data file
until the page is rewritten (measured: they do, for rows that were not
moved by the page compaction). With ``vacuum_full`` it runs ``VACUUM
FULL`` instead, which writes the table into a new file and deletes the old
one, so no data file of the table holds them. Neither can reach copies
PostgreSQL keeps elsewhere: the write-ahead log holds the inserted row until
its segments are recycled (``max_wal_size`` / ``wal_keep_size``), WAL
archives and base backups hold it for as long as they are retained, a
replica holds what it replayed, and a transaction with an older snapshot
open anywhere in the cluster keeps VACUUM from removing the row version at
all. Those copies are *wrapped*: without the KEK (which lives in the nodes'
keystores, never in the database) they are 60 random-looking bytes. That is
why keys are wrapped, and why backups of the vault database must age out
within the erasure deadline you promise. ``docs/key-vault.md`` says this
for operators.
"""

from __future__ import annotations

import hmac
import logging
import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

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

if TYPE_CHECKING:
    import psycopg

__all__ = ["FORMAT", "KEYS_TABLE", "PostgresVault"]

log = logging.getLogger(__name__)

FORMAT = "cachet.vault/v1"
KEYS_TABLE = "cachet_vault_keys"
# Any constant: serializes schema creation across every process of the cluster.
_SCHEMA_LOCK = 0x63616368_65740001

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS cachet_vault_meta (k text PRIMARY KEY, v bytea NOT NULL)",
    f"CREATE TABLE IF NOT EXISTS {KEYS_TABLE} ("
    " key_id text PRIMARY KEY, name text NOT NULL, generation bigint NOT NULL,"
    " wrapped bytea NOT NULL, created_at_us bigint NOT NULL, UNIQUE (name, generation))",
    "CREATE TABLE IF NOT EXISTS cachet_vault_names ("
    " name text PRIMARY KEY, generation bigint NOT NULL)",
    "CREATE TABLE IF NOT EXISTS cachet_vault_tombstones ("
    " key_id text PRIMARY KEY, name text NOT NULL, destroyed_at_us bigint NOT NULL,"
    " reason text NOT NULL)",
)


def _psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:  # the `postgres` extra is not installed
        raise VaultUnavailable(
            "the PostgreSQL key vault needs the 'postgres' extra: "
            "pip install 'cachet-ledger[postgres]'"
        ) from exc
    return psycopg


class PostgresVault:
    """A :class:`~cachet.crypto.vault.base.KeyVault` in a PostgreSQL database.

    ``vacuum_full``: see :class:`~cachet.crypto.vault.config.VaultConfig`.
    One connection per instance, behind a lock (safe for several threads);
    any number of processes and hosts may share the database. A broken
    connection is reopened on the next call.
    """

    def __init__(
        self,
        dsn: str,
        kek: bytes,
        *,
        clock: WallClock | None = None,
        connect_timeout_s: int = 10,
        vacuum_full: bool = False,
        rng: Rng = os.urandom,
    ) -> None:
        self._psycopg = _psycopg()
        self._dsn = dsn
        self._kek = check_kek(kek)
        self._clock = clock or SystemWallClock()
        self._rng = rng
        self._connect_timeout_s = connect_timeout_s
        self._vacuum = f"VACUUM FULL {KEYS_TABLE}" if vacuum_full else f"VACUUM {KEYS_TABLE}"
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[Any] | None = None
        self._closed = False
        self._where = self._describe(dsn)
        with self._lock, self._sql():
            conn = self._connection()
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (_SCHEMA_LOCK,))
                for statement in _SCHEMA:
                    conn.execute(statement)
                self._check_or_set_kek(conn)

    def __repr__(self) -> str:
        return f"PostgresVault({self._where})"

    # -- KeyVault ------------------------------------------------------------

    def current_key(self, name: str) -> DataKey:
        check_name(name)
        with self._lock, self._sql():
            conn = self._connection()
            found = self._live(conn, name)
            if found is not None:
                return found
            with conn.transaction():
                conn.execute(
                    "INSERT INTO cachet_vault_names (name, generation) VALUES (%s, 0)"
                    " ON CONFLICT (name) DO NOTHING",
                    (name,),
                )
                # The name's row lock: concurrent creators queue here, and the
                # one that waited sees the winner's key (READ COMMITTED reads
                # the latest committed rows in every statement).
                row = conn.execute(
                    "SELECT generation FROM cachet_vault_names WHERE name = %s FOR UPDATE",
                    (name,),
                ).fetchone()
                found = self._live(conn, name)
                if found is not None:
                    return found
                generation = int(row[0]) + 1 if row else 1
                key = generate_data_key(key_id_for(name, generation), self._rng)
                conn.execute(
                    f"INSERT INTO {KEYS_TABLE} (key_id, name, generation, wrapped, created_at_us)"
                    " VALUES (%s, %s, %s, %s, %s)",
                    (
                        key.key_id,
                        name,
                        generation,
                        wrap_key(self._kek, key, self._rng),
                        self._clock.now_us(),
                    ),
                )
                conn.execute(
                    "UPDATE cachet_vault_names SET generation = %s WHERE name = %s",
                    (generation, name),
                )
            log.info("key vault %s: created data key %s", self._where, key.key_id)
            return key

    def key(self, key_id: str) -> DataKey:
        with self._lock, self._sql():
            conn = self._connection()
            row = conn.execute(
                f"SELECT wrapped FROM {KEYS_TABLE} WHERE key_id = %s", (key_id,)
            ).fetchone()
            if row is not None:
                return open_wrapped(self._kek, key_id, row[0])
            tomb = self._tombstone(conn, key_id)
        if tomb is not None:
            raise KeyDestroyed(tomb)
        raise KeyNotFound(key_id)

    def destroy(self, name: str, *, reason: str) -> tuple[str, ...]:
        check_name(name)
        if not reason:
            raise ValueError("a key is destroyed for a reason: reason must not be empty")
        with self._lock, self._sql():
            conn = self._connection()
            with conn.transaction():
                # Same row lock as creation: a destroy and a create of one
                # name never interleave.
                conn.execute(
                    "SELECT generation FROM cachet_vault_names WHERE name = %s FOR UPDATE",
                    (name,),
                )
                ids = tuple(
                    r[0]
                    for r in conn.execute(
                        f"DELETE FROM {KEYS_TABLE} WHERE name = %s RETURNING key_id", (name,)
                    ).fetchall()
                )
                now = self._clock.now_us()
                for key_id in ids:
                    conn.execute(
                        "INSERT INTO cachet_vault_tombstones"
                        " (key_id, name, destroyed_at_us, reason) VALUES (%s, %s, %s, %s)",
                        (key_id, name, now, reason),
                    )
            if not ids:
                return ()
            try:
                # Autocommit (outside any transaction): frees the dead row
                # versions so the table no longer holds them; FULL also
                # rewrites the data file so their bytes leave it.
                conn.execute(self._vacuum)
            except self._psycopg.Error as exc:
                raise VaultUnavailable(
                    f"key vault {self._where}: {', '.join(ids)} destroyed (deleted, tombstoned) "
                    f"but {self._vacuum} failed, so the dead rows may remain until "
                    f"autovacuum: {exc}"
                ) from exc
        log.info("key vault %s: destroyed %s (%s)", self._where, ", ".join(ids), reason)
        return ids

    def tombstone(self, key_id: str) -> KeyTombstone | None:
        with self._lock, self._sql():
            return self._tombstone(self._connection(), key_id)

    def close(self) -> None:
        self._closed = True
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def __enter__(self) -> PostgresVault:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- inside -----------------------------------------------------------------

    @staticmethod
    def _describe(dsn: str) -> str:
        """Host, port and database of ``dsn``, never its password."""
        try:
            from psycopg.conninfo import conninfo_to_dict

            parts = conninfo_to_dict(dsn)
        except Exception:  # noqa: BLE001 - only for naming the vault in messages
            return "postgresql"
        return f"postgresql://{parts.get('host', '')}:{parts.get('port', '')}/{parts.get('dbname', '')}"

    def _connection(self) -> psycopg.Connection[Any]:
        if self._closed:
            raise VaultUnavailable(f"key vault {self._where} is closed")
        conn = self._conn
        if conn is None or conn.closed or conn.broken:
            conn = self._conn = self._psycopg.connect(
                self._dsn, autocommit=True, connect_timeout=self._connect_timeout_s
            )
        return conn

    @contextmanager
    def _sql(self) -> Iterator[None]:
        """Turn the driver's errors into VaultUnavailable naming the database (never the DSN)."""
        try:
            yield
        except VaultError:
            raise
        except self._psycopg.Error as exc:
            raise VaultUnavailable(f"key vault {self._where}: {exc}") from exc

    def _live(self, conn: psycopg.Connection[Any], name: str) -> DataKey | None:
        row = conn.execute(
            f"SELECT key_id, wrapped FROM {KEYS_TABLE} WHERE name = %s"
            " ORDER BY generation DESC LIMIT 1",
            (name,),
        ).fetchone()
        return None if row is None else open_wrapped(self._kek, row[0], row[1])

    @staticmethod
    def _tombstone(conn: psycopg.Connection[Any], key_id: str) -> KeyTombstone | None:
        row = conn.execute(
            "SELECT name, destroyed_at_us, reason FROM cachet_vault_tombstones WHERE key_id = %s",
            (key_id,),
        ).fetchone()
        return None if row is None else KeyTombstone(key_id, row[0], int(row[1]), row[2])

    def _check_or_set_kek(self, conn: psycopg.Connection[Any]) -> None:
        meta = {k: bytes(v) for k, v in conn.execute("SELECT k, v FROM cachet_vault_meta")}
        if not meta:
            vault_id = new_vault_id()
            for k, v in (
                ("format", FORMAT.encode()),
                ("vault_id", vault_id.encode()),
                ("kek_check", kek_check(self._kek, vault_id)),
            ):
                conn.execute("INSERT INTO cachet_vault_meta (k, v) VALUES (%s, %s)", (k, v))
            log.info("key vault %s: created (id %s)", self._where, vault_id)
            return
        if meta.get("format") != FORMAT.encode():
            raise VaultUnavailable(
                f"key vault {self._where}: format {meta.get('format')!r}, expected {FORMAT}"
            )
        vault_id = meta["vault_id"].decode()
        if not hmac.compare_digest(meta["kek_check"], kek_check(self._kek, vault_id)):
            raise VaultUnavailable(
                f"key vault {self._where} (id {vault_id}) was created under another KEK: "
                "this keystore's cachet:vault-kek is not the one its keys are wrapped under"
            )
