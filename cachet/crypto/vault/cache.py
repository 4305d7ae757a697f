"""A node's in-memory cache of unwrapped data keys: bounded, and emptied on erasure."""

from __future__ import annotations

import threading
from collections.abc import Iterable

from cachetools import LRUCache

from cachet.crypto.aead import DataKey
from cachet.crypto.vault.base import name_of
from cachet.crypto.vault.config import DEFAULT_KEY_CACHE_ENTRIES

__all__ = ["KeyCache"]


class KeyCache:
    """Unwrapped data keys by key id, least recently used evicted first.

    Memory only, never written anywhere. At most ``max_entries`` keys: a
    node does not accumulate every subject's key it ever saw. An erasure
    calls :meth:`drop_name` (or :meth:`drop`) so the destroyed key no longer
    lives in this process either. Thread-safe.
    """

    def __init__(self, max_entries: int = DEFAULT_KEY_CACHE_ENTRIES) -> None:
        if max_entries < 1:
            raise ValueError(f"key cache needs at least 1 entry, got {max_entries}")
        self._keys: LRUCache[str, DataKey] = LRUCache(maxsize=max_entries)
        self._lock = threading.Lock()

    def __len__(self) -> int:
        with self._lock:
            return len(self._keys)

    def __contains__(self, key_id: object) -> bool:
        with self._lock:
            return key_id in self._keys

    @property
    def max_entries(self) -> int:
        return int(self._keys.maxsize)

    def get(self, key_id: str) -> DataKey | None:
        """The cached key ``key_id`` (now the most recently used), or None."""
        with self._lock:
            return self._keys.get(key_id)

    def put(self, key: DataKey) -> None:
        """Cache ``key``; evicts the least recently used key when full."""
        with self._lock:
            self._keys[key.key_id] = key

    def drop(self, key_ids: Iterable[str]) -> int:
        """Forget these key ids; how many were cached."""
        with self._lock:
            return sum(self._keys.pop(key_id, None) is not None for key_id in key_ids)

    def drop_name(self, name: str) -> int:
        """Forget every key of ``name`` (all generations); how many were cached."""
        with self._lock:
            doomed = [key_id for key_id in self._keys if name_of(key_id) == name]
            for key_id in doomed:
                del self._keys[key_id]
            return len(doomed)

    def clear(self) -> None:
        """Forget every key."""
        with self._lock:
            self._keys.clear()
