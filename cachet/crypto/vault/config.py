"""``[vault]`` of ``cachet.toml``: which key vault backend, and where.

Defined here rather than in :mod:`cachet.config.sections` because the vault
(in :mod:`cachet.crypto`) sits below the configuration layer; the sections
module re-exports it as ``CachetConfig.vault``'s type.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path

__all__ = ["DEFAULT_KEY_CACHE_ENTRIES", "VaultBackend", "VaultConfig"]

DEFAULT_KEY_CACHE_ENTRIES = 10_000


class VaultBackend(enum.StrEnum):
    """Where wrapped data keys are held."""

    FILE = "file"  # one SQLite file shared by the nodes of one host
    POSTGRES = "postgres"  # one PostgreSQL database shared by several hosts


@dataclass(frozen=True, slots=True)
class VaultConfig:
    """The key vault of a deployment.

    ``dsn_env`` is the *name* of the environment variable holding the
    PostgreSQL connection string (it carries a password); ``dsn``, when set,
    is used instead and must then hold no secret. ``key_cache_entries``
    bounds each node's in-memory cache of unwrapped keys.

    ``vacuum_full`` (PostgreSQL only): after a destroy, rewrite the keys
    table (``VACUUM FULL``) instead of a plain ``VACUUM``. A plain VACUUM
    makes the destroyed rows unreachable, but their bytes can stay in the
    table's data file until the page is rewritten; VACUUM FULL writes a new
    file without them and removes the old one, at the price of locking the
    table (every host's vault calls wait) for the rewrite.
    """

    backend: VaultBackend = VaultBackend.FILE
    path: Path = Path("./var/keys/vault.sqlite")
    dsn: str | None = None
    dsn_env: str = "CACHET_VAULT_DSN"
    key_cache_entries: int = DEFAULT_KEY_CACHE_ENTRIES
    vacuum_full: bool = False
