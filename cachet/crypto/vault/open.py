"""Opening the configured vault with the deployment's KEK from the keystore."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping

from cachet.crypto.aead import DataKey
from cachet.crypto.keystore import Keystore, KeystoreError
from cachet.crypto.vault.base import KeyVault, WallClock
from cachet.crypto.vault.config import VaultBackend, VaultConfig
from cachet.crypto.vault.errors import VaultUnavailable
from cachet.crypto.vault.file import FileVault

__all__ = ["VAULT_KEK_ID", "open_vault", "vault_kek"]

log = logging.getLogger(__name__)

VAULT_KEK_ID = "cachet:vault-kek"


def vault_kek(keystore: Keystore) -> bytes:
    """The deployment's vault KEK: the keystore's ``cachet:vault-kek``, created on first use.

    Every node sharing a vault must hold the same KEK (copy the keystore, as
    for ``cachet:commitment``); a vault opened under another KEK is refused
    with :class:`VaultUnavailable` rather than failing key by key.
    """
    try:
        return keystore.data_key(VAULT_KEK_ID).key
    except KeystoreError:
        log.warning("keystore %s: creating shared data key %s", keystore.path, VAULT_KEK_ID)
        created = DataKey(VAULT_KEK_ID, os.urandom(32))
        keystore.put_data_key(created)
        return created.key


def open_vault(
    config: VaultConfig,
    keystore: Keystore,
    *,
    environ: Mapping[str, str] | None = None,
    clock: WallClock | None = None,
) -> KeyVault:
    """The vault ``config`` names, its keys wrapped under the keystore's vault KEK.

    For PostgreSQL the DSN is ``config.dsn`` or else the environment variable
    ``config.dsn_env`` (from ``environ``, the process environment by default).
    """
    kek = vault_kek(keystore)
    if config.backend is VaultBackend.FILE:
        return FileVault(config.path, kek, clock=clock)
    env = os.environ if environ is None else environ
    dsn = config.dsn or env.get(config.dsn_env)
    if not dsn:
        raise VaultUnavailable(
            f"vault.backend = postgres needs a connection string: set the environment "
            f"variable {config.dsn_env} (vault.dsn_env) or vault.dsn"
        )
    from cachet.crypto.vault.postgres import PostgresVault

    return PostgresVault(dsn, kek, clock=clock, vacuum_full=config.vacuum_full)
