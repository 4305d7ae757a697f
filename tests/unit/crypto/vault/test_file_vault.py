"""The SQLite vault's storage promises: no copy of a destroyed key in any file, 0600, TRUNCATE."""

from __future__ import annotations

import os
import sqlite3
import stat
from pathlib import Path

import pytest

from cachet.crypto.vault import FileVault, KeyDestroyed, VaultUnavailable


def _wrapped(path: Path) -> dict[str, bytes]:
    conn = sqlite3.connect(path)
    try:
        return {k: bytes(w) for k, w in conn.execute("SELECT key_id, wrapped FROM keys")}
    finally:
        conn.close()


def _every_byte(directory: Path) -> bytes:
    return b"".join(f.read_bytes() for f in sorted(directory.rglob("*")) if f.is_file())


@pytest.mark.tamper
def test_no_file_of_the_vault_holds_a_destroyed_wrapped_key(tmp_path: Path) -> None:
    directory = tmp_path / "keys"
    kek = os.urandom(32)
    vault = FileVault(directory / "vault.sqlite", kek)
    names = [f"subj:{i:04x}/ns:claims" for i in range(300)]
    for name in names:
        vault.current_key(name)
    wrapped = _wrapped(directory / "vault.sqlite")
    # First, last and every third: rows at the ends of pages and in the middle.
    doomed = {names[0], names[-1], *names[::3]}
    destroyed = [key_id for name in sorted(doomed) for key_id in vault.destroy(name, reason="t")]
    assert len(destroyed) == len(doomed)
    everything = _every_byte(directory)
    assert [k for k in destroyed if wrapped[k] in everything] == []
    # The search itself works: every live wrapped key is found.
    live = [k for k in wrapped if k not in destroyed]
    assert all(wrapped[k] in everything for k in live)
    # ... and nothing else can bring a destroyed key back.
    vault.close()
    reopened = FileVault(directory / "vault.sqlite", kek)
    with pytest.raises(KeyDestroyed):
        reopened.key(destroyed[0])
    reopened.close()


def test_file_is_private_and_journal_is_truncate(tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite"
    vault = FileVault(path, os.urandom(32))
    vault.current_key("ns:a")
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    conn = sqlite3.connect(path)
    try:
        # journal_mode is per connection in rollback modes; a persistent WAL
        # would show here as "wal".
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        conn.close()
    journal = path.with_name(path.name + "-journal")
    assert not journal.exists() or journal.stat().st_size == 0
    assert not path.with_name(path.name + "-wal").exists()
    vault.close()


def test_a_vault_left_in_wal_mode_is_switched_back(tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite"
    FileVault(path, (kek := os.urandom(32))).close()
    conn = sqlite3.connect(path)
    assert conn.execute("PRAGMA journal_mode = WAL").fetchone()[0] == "wal"
    conn.close()
    vault = FileVault(path, kek)
    key = vault.current_key("ns:a")
    vault.destroy("ns:a", reason="t")
    with pytest.raises(KeyDestroyed):
        vault.key(key.key_id)
    assert not path.with_name(path.name + "-wal").exists()
    vault.close()


def test_not_a_vault_file_is_unavailable(tmp_path: Path) -> None:
    path = tmp_path / "vault.sqlite"
    path.write_bytes(b"this is not a database" * 100)
    with pytest.raises(VaultUnavailable, match=str(path)):
        FileVault(path, os.urandom(32))


def test_kek_must_be_256_bits(tmp_path: Path) -> None:
    with pytest.raises(VaultUnavailable, match="32 bytes"):
        FileVault(tmp_path / "v.sqlite", b"short")
