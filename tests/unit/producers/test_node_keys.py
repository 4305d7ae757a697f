"""NodeKeys.from_keystore: no data secret in the keystore, the vault beside it."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from cachet.crypto.keystore import Keystore, KeystoreError
from cachet.crypto.seal import PrivateKeySet
from cachet.crypto.vault import FileVault, VaultConfig
from cachet.producers.cache_node import NodeKeys


@pytest.fixture
def keystore(tmp_path: Path) -> Keystore:
    (tmp_path / "keys").mkdir()
    store = Keystore.create(tmp_path / "keys" / "keystore.json", os.urandom(32))
    store.set_anchor(PrivateKeySet.generate("anchor"))
    store.set_identifier_secret(os.urandom(32))
    store.add_key_set("node-1", PrivateKeySet.generate())
    return store


def test_the_default_file_vault_lives_beside_the_keystore(keystore: Keystore) -> None:
    for config in (None, VaultConfig()):
        keys = NodeKeys.from_keystore(keystore, "node-1", config)
        try:
            assert isinstance(keys.vault, FileVault)
            assert keys.vault.path == keystore.path.parent / "vault.sqlite"
            # Data keys are random vault keys, not derived from a keystore secret.
            key = keys.vault.current_key("ns:a/c:quotes")
            assert keys.vault.key(key.key_id) == key
        finally:
            keys.vault.close()


def test_a_configured_vault_path_is_used(keystore: Keystore, tmp_path: Path) -> None:
    keys = NodeKeys.from_keystore(keystore, "node-1", VaultConfig(path=tmp_path / "v" / "x.sqlite"))
    try:
        assert isinstance(keys.vault, FileVault) and keys.vault.path == tmp_path / "v" / "x.sqlite"
    finally:
        keys.vault.close()


def test_a_missing_key_set_opens_no_vault(keystore: Keystore) -> None:
    with pytest.raises(KeystoreError, match="cachet keys register --identity nobody"):
        NodeKeys.from_keystore(keystore, "nobody")
    assert not (keystore.path.parent / "vault.sqlite").exists()
