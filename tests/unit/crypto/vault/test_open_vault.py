"""open_vault: the KEK comes from the keystore (created once), and [vault] is parsed strictly."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachet.config import ConfigError, parse_config
from cachet.crypto.keystore import Keystore
from cachet.crypto.vault import (
    VAULT_KEK_ID,
    FileVault,
    VaultBackend,
    VaultConfig,
    VaultUnavailable,
    open_vault,
    vault_kek,
)


def _keystore(tmp_path: Path, name: str = "keystore.json") -> Keystore:
    return Keystore.create(tmp_path / name, os.urandom(32))


def test_kek_is_created_once_and_persisted(tmp_path: Path) -> None:
    store = _keystore(tmp_path)
    kek = vault_kek(store)
    assert len(kek) == 32 and vault_kek(store) == kek
    assert store.data_key(VAULT_KEK_ID).key == kek


def test_nodes_sharing_the_keystore_share_the_vault(tmp_path: Path) -> None:
    store = _keystore(tmp_path)
    config = VaultConfig(path=tmp_path / "keys" / "vault.sqlite")
    first = open_vault(config, store)
    assert isinstance(first, FileVault)
    key = first.current_key("ns:shared")
    second = open_vault(config, store)
    assert second.key(key.key_id) == key
    first.close()
    second.close()


def test_a_keystore_with_another_kek_is_refused(tmp_path: Path) -> None:
    config = VaultConfig(path=tmp_path / "vault.sqlite")
    open_vault(config, _keystore(tmp_path, "a.json")).close()
    with pytest.raises(VaultUnavailable, match="another KEK"):
        open_vault(config, _keystore(tmp_path, "b.json"))


def test_postgres_without_a_dsn_names_the_variable(tmp_path: Path) -> None:
    config = VaultConfig(backend=VaultBackend.POSTGRES, dsn_env="MY_VAULT_DSN")
    with pytest.raises(VaultUnavailable, match="MY_VAULT_DSN"):
        open_vault(config, _keystore(tmp_path), environ={})


def test_vault_section_defaults_and_values() -> None:
    assert parse_config({}).vault == VaultConfig()
    got = parse_config(
        {
            "vault": {
                "backend": "postgres",
                "dsn_env": "PG_VAULT",
                "key_cache_entries": 500,
                "vacuum_full": True,
            }
        }
    ).vault
    assert got == VaultConfig(
        backend=VaultBackend.POSTGRES, dsn_env="PG_VAULT", key_cache_entries=500, vacuum_full=True
    )
    assert parse_config({"vault": {"path": "/srv/keys/v.sqlite"}}).vault.path == Path(
        "/srv/keys/v.sqlite"
    )


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({"backend": "redis"}, "vault.backend"),
        ({"key_cache_entries": 0}, "vault.key_cache_entries"),
        ({"dsn_env": "not a name"}, "vault.dsn_env"),
        ({"dsn": "host=db"}, "vault.dsn"),  # a DSN for the file backend is a mistake
        ({"vacuum_full": "yes"}, "vault.vacuum_full"),
        ({"passwd": "x"}, "vault.passwd"),
    ],
)
def test_vault_section_mistakes_name_the_key(section: dict[str, object], key: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_config({"vault": section})
    assert raised.value.key == key
