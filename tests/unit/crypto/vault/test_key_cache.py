"""KeyCache: bounded LRU of unwrapped keys, emptied per key id or per name."""

from __future__ import annotations

import os
import threading

import pytest

from cachet.crypto.aead import DataKey
from cachet.crypto.vault import KeyCache


def _key(key_id: str) -> DataKey:
    return DataKey(key_id, os.urandom(32))


def test_get_put_and_miss() -> None:
    cache = KeyCache(4)
    key = _key("subj:aa/ns:x#1")
    assert cache.get(key.key_id) is None
    cache.put(key)
    assert cache.get(key.key_id) == key
    assert key.key_id in cache and len(cache) == 1


def test_bound_evicts_least_recently_used() -> None:
    cache = KeyCache(3)
    keys = [_key(f"ns:n{i}#1") for i in range(3)]
    for k in keys:
        cache.put(k)
    assert cache.get(keys[0].key_id) == keys[0]  # now most recently used
    cache.put(_key("ns:n3#1"))
    assert len(cache) == 3 == cache.max_entries
    assert cache.get(keys[1].key_id) is None  # the least recently used went
    assert cache.get(keys[0].key_id) is not None


def test_drop_key_ids() -> None:
    cache = KeyCache(10)
    for k in ("ns:a#1", "ns:b#1", "ns:c#1"):
        cache.put(_key(k))
    assert cache.drop(["ns:a#1", "ns:zz#1", "ns:b#1"]) == 2
    assert cache.get("ns:a#1") is None and cache.get("ns:b#1") is None
    assert cache.get("ns:c#1") is not None


def test_drop_name_drops_every_generation_and_only_that_name() -> None:
    cache = KeyCache(10)
    for k in ("subj:aa/ns:x#1", "subj:aa/ns:x#2", "subj:aa/ns:xy#1", "subj:aa/ns:x2#1"):
        cache.put(_key(k))
    assert cache.drop_name("subj:aa/ns:x") == 2
    assert sorted(k for k in ("subj:aa/ns:xy#1", "subj:aa/ns:x2#1") if k in cache) == [
        "subj:aa/ns:x2#1",
        "subj:aa/ns:xy#1",
    ]
    assert "subj:aa/ns:x#1" not in cache and "subj:aa/ns:x#2" not in cache
    assert cache.drop_name("subj:aa/ns:x") == 0


def test_bound_must_be_positive() -> None:
    with pytest.raises(ValueError, match="at least 1"):
        KeyCache(0)


def test_threads_never_exceed_the_bound() -> None:
    cache = KeyCache(50)

    def work(t: int) -> None:
        for i in range(500):
            cache.put(_key(f"ns:t{t}-{i}#1"))
            cache.get(f"ns:t{t}-{i // 2}#1")
            if i % 7 == 0:
                cache.drop_name(f"ns:t{t}-{i}")

    threads = [threading.Thread(target=work, args=(t,)) for t in range(4)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert 0 < len(cache) <= 50
