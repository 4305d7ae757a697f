"""What destroy leaves in PostgreSQL, and how the PostgreSQL vault fails."""

from __future__ import annotations

import os
import socket
import threading
import time
from pathlib import Path

import psycopg
import pytest

from cachet.crypto.keystore import Keystore
from cachet.crypto.vault import (
    KeyDestroyed,
    KeyVault,
    VaultBackend,
    VaultConfig,
    VaultUnavailable,
    open_vault,
)
from cachet.crypto.vault.postgres import PostgresVault
from tests.integration.vault.conftest import VaultSite
from tests.pg import PgCluster

pytestmark = pytest.mark.integration


def _heap_tuples(dsn: str) -> list[bytes]:
    """Every tuple body still in the keys table's pages (live or dead, not yet vacuumed)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("CREATE EXTENSION IF NOT EXISTS pageinspect SCHEMA public")
        pages = conn.execute(
            "SELECT pg_relation_size('cachet_vault_keys') / current_setting('block_size')::int"
        ).fetchone()
        assert pages is not None
        return [
            bytes(row[0])
            for block in range(int(pages[0]))
            for row in conn.execute(
                "SELECT t_data FROM public.heap_page_items(public.get_raw_page('cachet_vault_keys', %s))"
                " WHERE t_data IS NOT NULL",
                (block,),
            )
        ]


def _wrapped(dsn: str) -> dict[str, bytes]:
    with psycopg.connect(dsn) as conn:
        return {
            k: bytes(w) for k, w in conn.execute("SELECT key_id, wrapped FROM cachet_vault_keys")
        }


@pytest.mark.tamper
def test_destroy_vacuums_the_row_out_of_the_table(pg_site: VaultSite) -> None:
    vault = pg_site.open()
    for i in range(40):
        vault.current_key(f"subj:{i:02x}/ns:pg")
    wrapped = _wrapped(pg_site.where)
    victim = "subj:27/ns:pg#1"  # the newest row: the one page compaction leaves in place
    assert any(wrapped[victim] in t for t in _heap_tuples(pg_site.where))
    assert vault.destroy("subj:27/ns:pg", reason="erasure") == (victim,)
    rows = pg_site.sql(
        "SELECT count(*) FROM cachet_vault_keys WHERE wrapped = {p}", wrapped[victim]
    )
    assert rows == [(0,)]
    # Not merely invisible: VACUUM removed the dead row version from the page.
    assert not any(wrapped[victim] in t for t in _heap_tuples(pg_site.where))
    assert sum(any(w in t for t in _heap_tuples(pg_site.where)) for w in wrapped.values()) == 39


@pytest.mark.tamper
def test_vacuum_full_leaves_no_copy_in_the_table_files(
    postgres_cluster: PgCluster, pg_site: VaultSite
) -> None:
    vault = pg_site.open(vacuum_full=True)
    names = [f"subj:{i:02x}/ns:full" for i in range(40)]
    for name in names:
        vault.current_key(name)
    wrapped = _wrapped(pg_site.where)
    doomed = [names[0], names[17], names[-1]]
    destroyed = [k for name in doomed for k in vault.destroy(name, reason="erasure")]
    pg_site.sql("CHECKPOINT")  # every page on disk, as a copy of the data directory would see it
    table_files = b"".join(
        f.read_bytes() for f in (postgres_cluster.data_dir / "base").rglob("*") if f.is_file()
    )
    assert [k for k in destroyed if wrapped[k] in table_files] == []
    assert all(wrapped[k] in table_files for k in wrapped if k not in destroyed)


def test_unreachable_database_is_unavailable_without_leaking_the_password() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    dsn = f"host=127.0.0.1 port={port} user=u password=hunter2-secret dbname=d"
    with pytest.raises(VaultUnavailable) as raised:
        PostgresVault(dsn, os.urandom(32), connect_timeout_s=2)
    assert f"127.0.0.1:{port}/d" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_open_vault_takes_the_dsn_from_the_named_environment_variable(
    tmp_path: Path, postgres_dsn: str
) -> None:
    keystore = Keystore.create(tmp_path / "keystore.json", os.urandom(32))
    config = VaultConfig(backend=VaultBackend.POSTGRES, dsn_env="TEST_VAULT_DSN")
    with pytest.raises(VaultUnavailable, match="TEST_VAULT_DSN"):
        open_vault(config, keystore, environ={})
    vault = open_vault(config, keystore, environ={"TEST_VAULT_DSN": postgres_dsn})
    key = vault.current_key("ns:env")
    vault.destroy("ns:env", reason="t")
    vault.close()
    again = open_vault(config, keystore, environ={"TEST_VAULT_DSN": postgres_dsn})
    with pytest.raises(KeyDestroyed):
        again.key(key.key_id)
    again.close()


def test_creators_of_one_name_queue_on_its_row_lock(pg_site: VaultSite) -> None:
    """Deterministic version of the race: hold the name's lock, let four creators pile up."""
    vaults = [pg_site.open() for _ in range(4)]
    vaults[0].current_key("ns:queue")
    vaults[0].destroy("ns:queue", reason="t")  # the name's counter row exists now
    got: list[tuple[str, bytes]] = []
    with psycopg.connect(pg_site.where) as holder:
        holder.execute("SELECT 1 FROM cachet_vault_names WHERE name = 'ns:queue' FOR UPDATE")

        def create(vault: KeyVault) -> None:
            key = vault.current_key("ns:queue")
            got.append((key.key_id, key.key))

        workers = [threading.Thread(target=create, args=(v,)) for v in vaults]
        for t in workers:
            t.start()
        deadline = time.monotonic() + 60
        while _waiting_on_locks(pg_site.where) < 4:
            # Without the lock they would not wait: they would race on the
            # counter and all but one would fail on the duplicate key id.
            assert time.monotonic() < deadline, "creators did not wait for the name's lock"
            time.sleep(0.02)
        holder.commit()
    for t in workers:
        t.join(60)
    assert len(got) == 4 and set(got) == {(got[0][0], got[0][1])}
    assert got[0][0] == "ns:queue#2"


def _waiting_on_locks(dsn: str) -> int:
    with psycopg.connect(dsn, autocommit=True) as conn:
        row = conn.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0
