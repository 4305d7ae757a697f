"""The key vault's typed errors: what went wrong, with which key."""

from __future__ import annotations

from cachet.crypto.vault.tombstone import KeyTombstone
from cachet.errors import CachetError

__all__ = [
    "KeyDestroyed",
    "KeyNotFound",
    "KeyUnwrapFailed",
    "VaultError",
    "VaultUnavailable",
]


class VaultError(CachetError):
    """Any failure of the key vault; the message names the key or the vault."""


class KeyNotFound(VaultError):
    """No key with this id was ever held by this vault."""

    def __init__(self, key_id: str) -> None:
        super().__init__(f"data key {key_id} is not in the vault (never created here)")
        self.key_id = key_id


class KeyDestroyed(VaultError):
    """The key was destroyed (crypto-shredded): when and why are in ``tombstone``."""

    def __init__(self, tombstone: KeyTombstone) -> None:
        super().__init__(
            f"data key {tombstone.key_id} was destroyed at {tombstone.destroyed_at_us} us "
            f"({tombstone.reason}); what it encrypted cannot be read any more"
        )
        self.key_id = tombstone.key_id
        self.tombstone = tombstone


class KeyUnwrapFailed(VaultError):
    """A wrapped key did not authenticate: wrong KEK, moved to another id, or tampered."""

    def __init__(self, key_id: str, detail: str) -> None:
        super().__init__(f"data key {key_id}: {detail}")
        self.key_id = key_id


class VaultUnavailable(VaultError):
    """The vault's storage cannot be used (file, database, driver or configuration)."""
