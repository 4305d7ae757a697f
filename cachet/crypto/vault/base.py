"""The key vault interface, its values, and what every backend shares.

A vault holds random AES-256 data keys, one live key per *name* (``"subj:<hex>/ns:<ns>"``
for a data subject in a namespace, ``"ns:<ns>"`` for a namespace without a
subject), each stored only wrapped under the key-encryption key (KEK). Key
ids are ``"<name>#<generation>"``: the generation counter of a name never
goes back, so a key created after :meth:`KeyVault.destroy` always has a new
id, and an old ciphertext can never meet a new key under its old id.

Destroying a name deletes its wrapped keys for real (the backend's promise
of what "deleted" means is in its module) and leaves a tombstone per key id:
when and why, never key material.
"""

from __future__ import annotations

import re
import secrets
import time
from typing import Protocol

from cachet.crypto.aead import KEY_BYTES, AeadError, DataKey, unwrap_key
from cachet.crypto.identifiers import keyed_hash
from cachet.crypto.vault.errors import KeyUnwrapFailed, VaultUnavailable
from cachet.crypto.vault.tombstone import KeyTombstone

__all__ = [
    "KEK_CHECK_BYTES",
    "KeyTombstone",
    "KeyVault",
    "WallClock",
    "check_kek",
    "check_name",
    "kek_check",
    "key_id_for",
    "name_of",
    "new_vault_id",
    "open_wrapped",
]

# Names are printable, without '#' (the key id separator) and bounded: they
# end up in key ids, tombstones, logs and SQL parameters.
_NAME = re.compile(r"[\x21-\x22\x24-\x7e]{1,512}")
_KEK_CHECK_DOMAIN = b"cachet/vault/kek-check/v1"
KEK_CHECK_BYTES = 16


class WallClock(Protocol):
    """Anything with ``now_us()`` (a :class:`cachet.clock.Clock` fits)."""

    def now_us(self) -> int: ...


class SystemWallClock:
    """The system's wall clock in microseconds (the default for tombstones)."""

    def now_us(self) -> int:
        return time.time_ns() // 1000


class KeyVault(Protocol):
    """Random data keys, wrapped under a KEK, where deletion is real.

    Every method is safe to call from several threads; the backends also
    promise safety across processes (and, for PostgreSQL, hosts).
    """

    def current_key(self, name: str) -> DataKey:
        """The live key of ``name``, created at random on first use.

        Two callers racing on a new name get the same key. After
        :meth:`destroy`, a new key with a new id (never the old one back).
        """
        ...

    def key(self, key_id: str) -> DataKey:
        """The key ``key_id``; raises ``KeyDestroyed`` (with its tombstone) or ``KeyNotFound``."""
        ...

    def destroy(self, name: str, *, reason: str) -> tuple[str, ...]:
        """Destroy every live key of ``name``; their ids, or ``()`` when none was live.

        Idempotent: a second call returns ``()`` and changes nothing. Records
        one tombstone per destroyed key id.
        """
        ...

    def tombstone(self, key_id: str) -> KeyTombstone | None:
        """The tombstone of ``key_id``, or None when it was never destroyed."""
        ...

    def close(self) -> None:
        """Release the storage; further calls raise ``VaultUnavailable``."""
        ...


def check_name(name: str) -> str:
    """``name`` if it can name keys; ValueError naming what is wrong otherwise."""
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise ValueError(
            f"key name {name!r} must be 1-512 printable ASCII characters without spaces or '#'"
        )
    return name


def key_id_for(name: str, generation: int) -> str:
    """The id of generation ``generation`` (1, 2, ...) of ``name``'s key."""
    return f"{name}#{generation}"


def name_of(key_id: str) -> str:
    """The name part of a key id (``"subj:ab/ns:x#3"`` -> ``"subj:ab/ns:x"``)."""
    return key_id.rpartition("#")[0]


def new_vault_id() -> str:
    """A random id for a new vault; the KEK check is bound to it."""
    return secrets.token_hex(16)


def check_kek(kek: bytes) -> bytes:
    """``kek`` if it is an AES-256 key; VaultUnavailable otherwise."""
    if len(kek) != KEY_BYTES:
        raise VaultUnavailable(f"the vault KEK must be {KEY_BYTES} bytes, got {len(kek)}")
    return kek


def kek_check(kek: bytes, vault_id: str) -> bytes:
    """The value a vault stores to tell "wrong KEK" apart from "tampered key".

    A truncated HMAC: it reveals nothing of the KEK, and it only improves the
    error message; GCM on each wrapped key is what protects the keys.
    """
    return keyed_hash(kek, _KEK_CHECK_DOMAIN, vault_id.encode("ascii"))[:KEK_CHECK_BYTES]


def open_wrapped(kek: bytes, key_id: str, wrapped: bytes) -> DataKey:
    """Unwrap ``wrapped`` as ``key_id``; KeyUnwrapFailed when it does not authenticate.

    The wrap binds the key id as associated data (``cachet.crypto.aead``): a
    wrapped key copied to another id's row fails here, as does a flipped byte.
    """
    try:
        return unwrap_key(kek, key_id, bytes(wrapped))
    except AeadError as exc:
        raise KeyUnwrapFailed(key_id, str(exc)) from exc
