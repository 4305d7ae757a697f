"""LiveView.subject_entries: the subject index as the erasure reads it.

The view is built over its real RocksDB store; no broker is reached (the
consumer is created but never polled).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.materializers.live_view import LiveView
from cachet.materializers.view import EntryState, ViewEntry
from cachet.topics import TopicNames
from tests.unit.materializers.test_view_store import _h, expire, make_entry


@pytest.fixture
def view(tmp_path: Path) -> Iterator[LiveView]:
    anchor = PrivateKeySet.generate("anchor").public()
    v = LiveView.open(
        tmp_path / "view",
        bootstrap_servers="127.0.0.1:9",  # never polled: nothing connects
        names=TopicNames("unit."),
        anchor=anchor,
        required=(SignatureScheme.ML_DSA_65,),
        alert=lambda *_: None,
        partitions=1,
    )
    yield v
    v.close()


def _commit(view: LiveView, *entries: ViewEntry, depth: int = 3) -> None:
    batch = view.store.begin()
    for e in entries:
        batch.put(e, history_depth=depth)
    view.store.commit(batch)


def _in(namespace: str, entry: ViewEntry) -> ViewEntry:
    return dataclasses.replace(entry, namespace=namespace)


def test_every_key_of_the_subject_in_any_state_and_namespace(view: LiveView) -> None:
    alice_a = make_entry("a1", subject="alice")
    alice_b = _in("other", make_entry("b1", subject="alice"))
    bob = make_entry("c1", subject="bob")
    nobody = make_entry("d1")
    _commit(view, alice_a, alice_b, bob, nobody)
    batch = view.store.begin()
    expire(batch, alice_a.key_hash, 1)
    view.store.commit(batch)

    found = view.subject_entries(_h("subject:alice"))
    assert {e.key_hash for e in found} == {alice_a.key_hash, alice_b.key_hash}
    # Any state: the expired one is listed with its state.
    assert {e.key_hash: e.state for e in found}[alice_a.key_hash] is EntryState.EXPIRED
    assert [e.key_hash for e in view.subject_entries(_h("subject:alice"), "other")] == [
        alice_b.key_hash
    ]
    assert view.subject_entries(_h("subject:alice"), "absent") == []
    assert view.subject_entries(_h("subject:nobody")) == []


def test_a_key_whose_old_version_has_the_subject_is_found(view: LiveView) -> None:
    # Erasure must find every ciphertext of the subject, old versions too.
    _commit(view, make_entry("k", 1, subject="alice"))
    _commit(view, make_entry("k", 2, subject="bob"))
    found = view.subject_entries(_h("subject:alice"))
    assert [e.version for e in found] == [2]  # the key's current version


def test_index_rows_are_part_of_the_state_hash(view: LiveView, tmp_path: Path) -> None:
    # Replay reproduces the index (it is derived in the same batch as the
    # entries), so the state hash covers it: a view whose index lost a row
    # hashes differently from one built from the same events.
    entry = make_entry("k", subject="alice")
    _commit(view, entry)
    before = view.store.state_hash()
    batch = view.store.begin()
    batch.delete_subject_index(_h("subject:alice"))
    view.store.commit(batch)
    assert view.store.state_hash() != before
    assert view.subject_entries(_h("subject:alice")) == []
