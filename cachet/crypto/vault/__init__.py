"""The key vault: random per-subject data keys, wrapped under a KEK, where deletion is real.

Import from here::

    from cachet.crypto.vault import KeyVault, KeyCache, open_vault

Backends: :class:`FileVault` (SQLite, one host) and
:class:`~cachet.crypto.vault.postgres.PostgresVault` (several hosts; import
it from its module, it needs the ``postgres`` extra). ``docs/key-vault.md``
describes both and how a cloud KMS plugs in.
"""

from __future__ import annotations

from cachet.crypto.aead import DataKey
from cachet.crypto.vault.base import KeyTombstone, KeyVault, WallClock, key_id_for, name_of
from cachet.crypto.vault.cache import KeyCache
from cachet.crypto.vault.config import DEFAULT_KEY_CACHE_ENTRIES, VaultBackend, VaultConfig
from cachet.crypto.vault.errors import (
    KeyDestroyed,
    KeyNotFound,
    KeyUnwrapFailed,
    VaultError,
    VaultUnavailable,
)
from cachet.crypto.vault.file import FileVault
from cachet.crypto.vault.open import VAULT_KEK_ID, open_vault, vault_kek

__all__ = [
    "DEFAULT_KEY_CACHE_ENTRIES",
    "VAULT_KEK_ID",
    "DataKey",
    "FileVault",
    "KeyCache",
    "KeyDestroyed",
    "KeyNotFound",
    "KeyTombstone",
    "KeyUnwrapFailed",
    "KeyVault",
    "VaultBackend",
    "VaultConfig",
    "VaultError",
    "VaultUnavailable",
    "WallClock",
    "key_id_for",
    "name_of",
    "open_vault",
    "vault_kek",
]
