"""Which data key a value is encrypted under, and the node's cache of them.

One place names data keys, so the erasure processor destroys exactly the
keys the nodes encrypt under (:func:`data_key_name`):

* ``subj:<subject hash hex>/ns:<namespace>/c:<contract>`` for an entry with
  a data subject: one key per subject, namespace and contract, so an erasure
  can destroy what is not under a retention obligation and keep the groups
  that are held (a held contract's key is another key);
* ``ns:<namespace>/c:<contract>`` for an entry without one.

``<namespace>`` is percent-encoded (UTF-8, every byte outside ``A-Za-z0-9_.~-``
escaped), so a name is printable ASCII without ``#`` or ``/`` inside its
parts, as the vault requires; a namespace whose encoding is over
:data:`_MAX_NAMESPACE_CHARS` characters is named ``%sha3:<hex>`` of its
UTF-8 bytes instead (no encoding starts with ``%s``). The name is
injective: the subject hash is fixed-length hex, the encoded namespace has
no ``/`` and a contract name never has one (``CONTRACT_NAME_PATTERN``).

Keys are random and live in the key vault (:mod:`cachet.crypto.vault`);
nothing here derives a key from a secret that outlives an erasure. A node
holds unwrapped keys only in memory, bounded (:class:`DataKeys`), and drops
them when a verified erasure event tells it to.

Value commitments are keyed per data key (:func:`commitment_key`): an HMAC
key derived from the data key under its own domain, bound to the key id. So
destroying the data key also makes every commitment made under it
unlinkable: nobody can test a guessed value against it any more.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import threading
import urllib.parse
from dataclasses import dataclass

from cachetools import LRUCache

from cachet.crypto.aead import Committer, DataKey
from cachet.crypto.identifiers import keyed_hash
from cachet.crypto.vault import KeyCache, KeyDestroyed, KeyNotFound, KeyVault, VaultError, name_of
from cachet.crypto.vault.base import check_name

__all__ = [
    "COMMITMENT_KEY_DOMAIN",
    "DataKeyLookup",
    "DataKeyStatus",
    "DataKeys",
    "commitment_key",
    "data_key_name",
]

COMMITMENT_KEY_DOMAIN = b"cachet/commitment-key/v1"
_SUBJECT_HASH_BYTES = 32
# Keeps every name within the vault's 512 characters: 5 + 64 + 4 + 3 + 128
# for the rest of the longest name, and this for the namespace.
_MAX_NAMESPACE_CHARS = 256


def _namespace_part(namespace: str) -> str:
    encoded = urllib.parse.quote(namespace, safe="")
    if len(encoded) <= _MAX_NAMESPACE_CHARS:
        return encoded
    return "%sha3:" + hashlib.sha3_256(namespace.encode("utf-8")).hexdigest()


# Every write names its data key (twice: the size check and the encryption):
# remembered for the recent (namespace, contract, subject) triples.
@functools.lru_cache(maxsize=4096)
def data_key_name(namespace: str, contract: str, subject_hash: bytes | None = None) -> str:
    """The vault name of the data key for (subject, namespace, contract).

    The one function that names data keys: nodes encrypt under
    ``vault.current_key(data_key_name(...))`` and the erasure processor
    destroys exactly these names. Raises ValueError for an empty namespace
    or contract, a contract containing ``/``, or a subject hash that is not
    32 bytes.
    """
    if not namespace:
        raise ValueError("data key name: namespace must not be empty")
    if not contract or "/" in contract:
        raise ValueError(f"data key name: contract {contract!r} must be non-empty without '/'")
    base = f"ns:{_namespace_part(namespace)}/c:{contract}"
    if subject_hash is None:
        return check_name(base)
    if len(subject_hash) != _SUBJECT_HASH_BYTES:
        raise ValueError(
            f"data key name: subject hash must be {_SUBJECT_HASH_BYTES} bytes, "
            f"got {len(subject_hash)}"
        )
    return check_name(f"subj:{subject_hash.hex()}/{base}")


def commitment_key(data_key: DataKey) -> bytes:
    """The 32-byte HMAC key of the value commitments made under ``data_key``.

    ``HMAC-SHA3-256(data_key, framed("cachet/commitment-key/v1", key_id))``:
    domain-separated from the AES use of the key, bound to its id, and gone
    with the data key.
    """
    return keyed_hash(data_key.key, COMMITMENT_KEY_DOMAIN, data_key.key_id.encode("utf-8"))


class DataKeyStatus(enum.StrEnum):
    """Why a data key could not be had for a read (the ``erased`` miss and its kin)."""

    ERASED = "erased"  # destroyed in the vault: crypto-shredded
    UNKNOWN = "unknown"  # the vault never held it (another deployment's vault?)
    UNAVAILABLE = "unavailable"  # the vault could not be asked


@dataclass(frozen=True, slots=True)
class DataKeyLookup:
    """A data key for a read, or why there is none (``status`` and ``detail``)."""

    key: DataKey | None
    status: DataKeyStatus | None = None
    detail: str = ""


class DataKeys:
    """A node's data keys: the vault behind a bounded in-memory cache.

    Thread-safe. ``for_write`` returns the current key of a name (from the
    cache when known, else from the vault, which creates it on first use);
    ``for_read`` returns the key of an id, or a :class:`DataKeyLookup`
    saying it was erased, never raising to the reader. ``drop`` and
    ``drop_names`` forget unwrapped keys for good (a later use asks the
    vault again, which knows whether they were destroyed).

    A write between an erasure destroying a key in the vault and this node
    dropping it (on the verified ErasureRequested or ErasureCompleted) still
    encrypts under the destroyed key: that value is unreadable from the
    start (it reads as erased), never readable under a key that survived.
    """

    def __init__(self, vault: KeyVault, cache: KeyCache, max_names: int = 10_000) -> None:
        self.vault = vault
        self.cache = cache
        self._lock = threading.Lock()
        # name -> its current key, so a write asks the vault once per name.
        self._current: LRUCache[str, DataKey] = LRUCache(max(1, max_names))
        # key id -> its commitment key (keyed into its HMAC): derived once
        # per key, not per write or read. Secret like the data key, and
        # forgotten with it.
        self._commitment: LRUCache[str, Committer] = LRUCache(max(1, max_names))

    def for_write(self, name: str) -> DataKey:
        """The live key of ``name``. Raises :class:`VaultError` when the vault
        cannot give one (a write must not go out unencrypted or under a guess)."""
        with self._lock:
            known = self._current.get(name)
        if known is not None:
            return known
        key = self.vault.current_key(name)
        with self._lock:
            self._current[name] = key
        self.cache.put(key)
        return key

    def for_read(self, key_id: str) -> DataKeyLookup:
        """The key ``key_id`` names, or why not; never raises a vault error."""
        cached = self.cache.get(key_id)
        if cached is not None:
            return DataKeyLookup(cached)
        try:
            key = self.vault.key(key_id)
        except KeyDestroyed as exc:
            return DataKeyLookup(None, DataKeyStatus.ERASED, str(exc))
        except KeyNotFound as exc:
            return DataKeyLookup(None, DataKeyStatus.UNKNOWN, str(exc))
        except VaultError as exc:
            return DataKeyLookup(None, DataKeyStatus.UNAVAILABLE, str(exc))
        self.cache.put(key)
        return DataKeyLookup(key)

    def commitment_key(self, data_key: DataKey) -> bytes:
        """:func:`commitment_key` of ``data_key``, remembered (bounded) until
        the key is dropped."""
        return self.committer(data_key).key

    def committer(self, data_key: DataKey) -> Committer:
        """The :class:`~cachet.crypto.aead.Committer` of ``data_key``'s
        commitment key (what a write commits its value with), remembered
        like :meth:`commitment_key`."""
        with self._lock:
            known = self._commitment.get(data_key.key_id)
        if known is not None:
            return known
        derived = Committer(commitment_key(data_key))
        with self._lock:
            self._commitment[data_key.key_id] = derived
        return derived

    def drop(self, key_ids: tuple[str, ...] | list[str]) -> None:
        """Forget the unwrapped keys ``key_ids`` (destroyed by an erasure)."""
        ids = set(key_ids)
        if not ids:
            return
        self.cache.drop(list(ids))
        with self._lock:
            for name in [n for n, k in self._current.items() if k.key_id in ids]:
                self._current.pop(name, None)
            for key_id in ids:
                self._commitment.pop(key_id, None)

    def drop_names(self, names: list[str] | tuple[str, ...] | set[str]) -> None:
        """Forget every unwrapped key of ``names`` (a subject being erased)."""
        doomed = set(names)
        for name in doomed:
            self.cache.drop_name(name)
        with self._lock:
            for name in doomed:
                self._current.pop(name, None)
            for key_id in [i for i in self._commitment if name_of(i) in doomed]:
                del self._commitment[key_id]

    def __len__(self) -> int:
        with self._lock:
            return len(self._current)
