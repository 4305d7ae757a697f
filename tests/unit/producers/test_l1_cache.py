"""L1Cache: bounded, least recently used first out, and a verified mark that
belongs to one cached object only."""

from __future__ import annotations

from cachet.producers.cache_node import L1Cache, L1Entry
from tests.unit.producers.test_l1_race import cached_version


def _key(i: int) -> bytes:
    return bytes([i]) * 32


def _put(l1: L1Cache, cached: L1Entry) -> None:
    assert l1.put(cached, l1.generation(cached.entry.key_hash))


def test_bounded_and_least_recently_used_out_first() -> None:
    l1 = L1Cache(3)
    for i in range(3):
        _put(l1, cached_version(1, _key(i)))
    assert l1.lookup(_key(0))[0] is not None  # 0 is now the most recent
    _put(l1, cached_version(1, _key(3)))
    assert len(l1) == 3
    assert l1.get(_key(1)) is None  # the least recently used went
    assert all(l1.get(_key(i)) is not None for i in (0, 2, 3))


def test_mark_verified_replaces_only_the_object_still_cached() -> None:
    l1 = L1Cache(4)
    first = cached_version(1)
    assert not first.commitment_verified
    _put(l1, first)
    assert l1.mark_verified(first)
    marked = l1.get(first.entry.key_hash)
    assert marked is not None and marked.commitment_verified
    assert (marked.entry, marked.plaintext, marked.facts) == (
        first.entry,
        first.plaintext,
        first.facts,
    )
    # Evicted in between: nothing to mark.
    l1.evict(first.entry.key_hash)
    assert not l1.mark_verified(marked)
    assert l1.get(first.entry.key_hash) is None
    # Another object cached since (even with the same content): the mark of
    # the old one does not carry over to it.
    second = cached_version(1)
    _put(l1, second)
    assert not l1.mark_verified(first)
    now = l1.get(second.entry.key_hash)
    assert now is second and not now.commitment_verified
