"""Data key names, per-key commitments and a node's data keys over a real file vault."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.crypto.aead import DataKey, value_commitment, verify_commitment
from cachet.crypto.vault import FileVault, KeyCache, name_of
from cachet.producers.data_keys import (
    DataKeys,
    DataKeyStatus,
    commitment_key,
    data_key_name,
)

SUBJECT = bytes(range(32))
OTHER = bytes(range(1, 33))


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[FileVault]:
    v = FileVault(tmp_path / "vault.sqlite", os.urandom(32))
    yield v
    v.close()


def test_names_are_per_subject_namespace_and_contract() -> None:
    assert data_key_name("orders", "quotes") == "ns:orders/c:quotes"
    assert data_key_name("orders", "quotes", SUBJECT) == f"subj:{SUBJECT.hex()}/ns:orders/c:quotes"
    names = {
        data_key_name(ns, c, s)
        for ns in ("a", "b")
        for c in ("quotes", "records")
        for s in (None, SUBJECT, OTHER)
    }
    assert len(names) == 12


@pytest.mark.parametrize(
    ("left", "right"),
    [
        (("a/c:b", "x"), ("a", "b")),  # a namespace cannot forge a contract part
        (("a#1", "x"), ("a%231", "x")),  # escaping is itself escaped
        (("ns x", "x"), ("ns%20x", "x")),
        (("é", "x"), ("e", "x")),
    ],
)
def test_names_are_injective_for_awkward_namespaces(
    left: tuple[str, str], right: tuple[str, str]
) -> None:
    a, b = data_key_name(*left, SUBJECT), data_key_name(*right, SUBJECT)
    assert a != b
    # The vault refuses '#' and spaces in names; these are all accepted.
    for name in (a, b):
        assert "#" not in name and " " not in name and name.isascii()


def test_a_long_namespace_is_named_by_its_hash() -> None:
    long_a, long_b = "n" * 400, "n" * 399 + "m"
    a, b = data_key_name(long_a, "quotes", SUBJECT), data_key_name(long_b, "quotes", SUBJECT)
    assert a != b and "%sha3:" in a and len(a) <= 512
    # Short enough namespaces keep their readable form.
    assert data_key_name("n" * 200, "quotes").startswith("ns:" + "n" * 200)


@pytest.mark.parametrize(
    ("namespace", "contract", "subject", "match"),
    [
        ("", "quotes", None, "namespace"),
        ("a", "", None, "contract"),
        ("a", "x/y", None, "contract"),
        ("a", "quotes", b"short", "32 bytes"),
    ],
)
def test_bad_name_parts_are_refused(
    namespace: str, contract: str, subject: bytes | None, match: str
) -> None:
    with pytest.raises(ValueError, match=match):
        data_key_name(namespace, contract, subject)


def test_commitment_key_is_per_data_key_and_bound_to_its_id() -> None:
    k1, k2 = DataKey("ns:a/c:q#1", os.urandom(32)), DataKey("ns:a/c:q#2", os.urandom(32))
    same_bytes_other_id = DataKey("ns:b/c:q#1", k1.key)
    assert len(commitment_key(k1)) == 32
    assert commitment_key(k1) == commitment_key(DataKey(k1.key_id, k1.key))
    assert len({commitment_key(k) for k in (k1, k2, same_bytes_other_id)}) == 3
    # Domain-separated from the AES key itself.
    assert commitment_key(k1) != k1.key
    c = value_commitment(commitment_key(k1), b"diagnosis: J45")
    assert verify_commitment(c, commitment_key(k1), b"diagnosis: J45")
    assert not verify_commitment(c, commitment_key(k2), b"diagnosis: J45")


def test_write_key_is_cached_and_read_finds_it(vault: FileVault) -> None:
    keys = DataKeys(vault, KeyCache(16))
    name = data_key_name("a", "quotes", SUBJECT)
    key = keys.for_write(name)
    assert name_of(key.key_id) == name
    assert keys.for_write(name) == key
    found = keys.for_read(key.key_id)
    assert found.key == key and found.status is None
    # Another node of the host (its own cache, the same vault) reads it too.
    assert DataKeys(vault, KeyCache(16)).for_read(key.key_id).key == key


def test_destroyed_key_reads_as_erased_once_dropped(vault: FileVault) -> None:
    keys = DataKeys(vault, KeyCache(16))
    name = data_key_name("a", "quotes", SUBJECT)
    key = keys.for_write(name)
    destroyed = vault.destroy(name, reason="test erasure")
    assert destroyed == (key.key_id,)
    keys.drop(destroyed)
    found = keys.for_read(key.key_id)
    assert found.key is None and found.status is DataKeyStatus.ERASED
    assert "destroyed" in found.detail
    # The next write of the name gets a new key, never the destroyed one.
    fresh = keys.for_write(name)
    assert fresh.key_id != key.key_id and fresh.key != key.key


def test_drop_names_forgets_every_cached_key_of_the_names(vault: FileVault) -> None:
    cache = KeyCache(16)
    keys = DataKeys(vault, cache)
    a, b = data_key_name("a", "quotes", SUBJECT), data_key_name("b", "quotes", SUBJECT)
    other = data_key_name("a", "quotes", OTHER)
    ka, kb, ko = keys.for_write(a), keys.for_write(b), keys.for_write(other)
    keys.drop_names({a, b})
    assert ka.key_id not in cache and kb.key_id not in cache and ko.key_id in cache
    assert len(keys) == 1
    # Not destroyed: the vault still gives them (a drop only forgets).
    assert keys.for_read(ka.key_id).key == ka


def test_unknown_and_unavailable_keys_are_reported_not_raised(tmp_path: Path) -> None:
    vault = FileVault(tmp_path / "v.sqlite", os.urandom(32))
    keys = DataKeys(vault, KeyCache(4))
    unknown = keys.for_read("ns:nowhere/c:quotes#1")
    assert unknown.key is None and unknown.status is DataKeyStatus.UNKNOWN
    vault.close()
    gone = keys.for_read("ns:a/c:quotes#1")
    assert gone.key is None and gone.status is DataKeyStatus.UNAVAILABLE


def test_the_cache_is_bounded(vault: FileVault) -> None:
    cache = KeyCache(2)
    keys = DataKeys(vault, cache, max_names=2)
    for ns in ("a", "b", "c", "d"):
        keys.for_write(data_key_name(ns, "quotes"))
    assert len(cache) == 2 and len(keys) == 2


def test_commitment_keys_are_derived_once_and_forgotten_with_their_key(
    vault: FileVault,
) -> None:
    keys = DataKeys(vault, KeyCache(16))
    a, b = data_key_name("a", "quotes", SUBJECT), data_key_name("a", "quotes", OTHER)
    ka, kb = keys.for_write(a), keys.for_write(b)
    first = keys.commitment_key(ka)
    assert first == commitment_key(ka) and keys.commitment_key(ka) is first
    assert keys.commitment_key(kb) == commitment_key(kb)
    keys.drop_names({a})
    assert keys.commitment_key(ka) is not first  # derived again: it was forgotten
    assert keys.commitment_key(kb) == commitment_key(kb)
    kept = keys.commitment_key(kb)
    keys.drop([kb.key_id])
    assert keys.commitment_key(kb) is not kept


def test_the_commitment_key_cache_is_bounded(vault: FileVault) -> None:
    keys = DataKeys(vault, KeyCache(8), max_names=2)
    made = [keys.for_write(data_key_name(ns, "quotes")) for ns in ("a", "b", "c")]
    firsts = [keys.commitment_key(k) for k in made]
    # "a" was the least recently used of three: derived again, the others not.
    assert keys.commitment_key(made[2]) is firsts[2]
    assert keys.commitment_key(made[0]) is not firsts[0]


def test_the_committer_is_remembered_and_forgotten_with_its_key(vault: FileVault) -> None:
    keys = DataKeys(vault, KeyCache())
    key = keys.for_write(data_key_name("orders", "quotes", SUBJECT))
    committer = keys.committer(key)
    assert keys.committer(key) is committer  # keyed once, not per write
    assert committer.key == keys.commitment_key(key) == commitment_key(key)
    assert committer.commit(b"v") == value_commitment(commitment_key(key), b"v")
    keys.drop([key.key_id])
    # Dropped with the data key: nothing keyed by it stays behind.
    assert keys.committer(key) is not committer
    keys.drop_names([name_of(key.key_id)])
    assert not keys._commitment
