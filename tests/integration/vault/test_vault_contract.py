"""The KeyVault contract, run against both backends (SQLite file, PostgreSQL)."""

from __future__ import annotations

import threading

import pytest

from cachet.crypto.vault import (
    KeyDestroyed,
    KeyNotFound,
    KeyTombstone,
    KeyUnwrapFailed,
    KeyVault,
    VaultUnavailable,
)
from tests.integration.vault.conftest import VaultSite

pytestmark = pytest.mark.integration

NAME = "subj:5ab1e7/ns:claims"


def test_first_use_creates_a_random_key_and_returns_it_again(site: VaultSite) -> None:
    vault = site.open()
    key = vault.current_key(NAME)
    assert key.key_id == f"{NAME}#1" and len(key.key) == 32
    assert vault.current_key(NAME) == key
    assert vault.key(key.key_id) == key
    # Another node on the same storage sees the same key.
    assert site.open().current_key(NAME) == key
    other = vault.current_key("ns:claims")
    assert other.key_id == "ns:claims#1" and other.key != key.key


def test_destroy_tombstones_and_the_key_is_gone(site: VaultSite) -> None:
    vault = site.open()
    key = vault.current_key(NAME)
    keep = vault.current_key("ns:claims")
    at = site.clock.now_us()
    assert vault.destroy(NAME, reason="erasure req-1") == (key.key_id,)
    expected = KeyTombstone(key.key_id, NAME, at, "erasure req-1")
    with pytest.raises(KeyDestroyed) as raised:
        vault.key(key.key_id)
    assert raised.value.tombstone == expected
    assert "erasure req-1" in str(raised.value)
    assert vault.tombstone(key.key_id) == expected
    # Another node learns it from the storage, not from its own memory.
    with pytest.raises(KeyDestroyed):
        site.open().key(key.key_id)
    assert vault.key(keep.key_id) == keep  # other names untouched


def test_destroy_is_idempotent(site: VaultSite) -> None:
    vault = site.open()
    key = vault.current_key(NAME)
    first = vault.destroy(NAME, reason="erasure req-1")
    site.clock.advance(60)
    assert vault.destroy(NAME, reason="erasure req-1 (retried)") == ()
    tomb = vault.tombstone(key.key_id)
    assert first == (key.key_id,)
    assert tomb is not None and tomb.reason == "erasure req-1"  # unchanged by the retry
    assert vault.destroy("ns:never-used", reason="nothing there") == ()


def test_after_destroy_a_new_key_has_a_new_id_and_new_bytes(site: VaultSite) -> None:
    vault = site.open()
    old = vault.current_key(NAME)
    vault.destroy(NAME, reason="erasure")
    new = vault.current_key(NAME)
    assert new.key_id == f"{NAME}#2" != old.key_id
    assert new.key != old.key
    with pytest.raises(KeyDestroyed):
        vault.key(old.key_id)  # the old id never comes back
    assert site.open().current_key(NAME) == new


def test_unknown_key_and_tombstone(site: VaultSite) -> None:
    vault = site.open()
    with pytest.raises(KeyNotFound, match="ns:nope#1"):
        vault.key("ns:nope#1")
    assert vault.tombstone("ns:nope#1") is None


@pytest.mark.parametrize("bad", ["", "has space", "a#b", "x" * 513, "caf\u00e9"])
def test_bad_names_are_refused(site: VaultSite, bad: str) -> None:
    vault = site.open()
    with pytest.raises(ValueError, match="key name"):
        vault.current_key(bad)
    with pytest.raises(ValueError, match="key name"):
        vault.destroy(bad, reason="x")


def test_destroy_needs_a_reason(site: VaultSite) -> None:
    with pytest.raises(ValueError, match="reason"):
        site.open().destroy(NAME, reason="")


def test_closed_vault_is_unavailable(site: VaultSite) -> None:
    vault = site.open()
    vault.close()
    with pytest.raises(VaultUnavailable, match="closed"):
        vault.current_key(NAME)


def _race(vaults: list[KeyVault], name: str, threads: int = 8) -> set[tuple[str, bytes]]:
    got: list[tuple[str, bytes]] = []
    barrier = threading.Barrier(threads)

    def one(i: int) -> None:
        barrier.wait()
        key = vaults[i % len(vaults)].current_key(name)
        got.append((key.key_id, key.key))

    workers = [threading.Thread(target=one, args=(i,)) for i in range(threads)]
    for t in workers:
        t.start()
    for t in workers:
        t.join()
    assert len(got) == threads
    return set(got)


def test_threads_on_several_instances_race_to_one_key(site: VaultSite) -> None:
    vaults = [site.open() for _ in range(4)]
    first = _race(vaults, NAME)
    assert len(first) == 1 and next(iter(first))[0] == f"{NAME}#1"
    # Re-creation after a destroy races on an existing name's counter.
    vaults[0].destroy(NAME, reason="erasure")
    second = _race(vaults, NAME)
    assert len(second) == 1 and next(iter(second))[0] == f"{NAME}#2"
    assert site.sql("SELECT count(*) FROM " + _keys(site))[0][0] == 1


# -- attacks on the storage ---------------------------------------------------


def _keys(site: VaultSite) -> str:
    return "keys" if site.backend == "file" else "cachet_vault_keys"


def _meta(site: VaultSite) -> str:
    return "meta" if site.backend == "file" else "cachet_vault_meta"


def _wrapped(site: VaultSite, key_id: str) -> bytes:
    rows = site.sql(f"SELECT wrapped FROM {_keys(site)} WHERE key_id = {{p}}", key_id)
    return bytes(rows[0][0])


@pytest.mark.tamper
@pytest.mark.parametrize("offset", [0, 12, 43, 59])  # nonce, ciphertext, tag
def test_tampered_wrapped_key_fails_to_unwrap(site: VaultSite, offset: int) -> None:
    vault = site.open()
    key = vault.current_key(NAME)
    wrapped = bytearray(_wrapped(site, key.key_id))
    wrapped[offset] ^= 0x01
    site.sql(
        f"UPDATE {_keys(site)} SET wrapped = {{p}} WHERE key_id = {{p}}", bytes(wrapped), key.key_id
    )
    with pytest.raises(KeyUnwrapFailed, match=key.key_id):
        site.open().key(key.key_id)
    with pytest.raises(KeyUnwrapFailed):
        site.open().current_key(NAME)


@pytest.mark.tamper
def test_wrapped_key_moved_to_another_id_fails(site: VaultSite) -> None:
    vault = site.open()
    victim = vault.current_key(NAME)
    mine = vault.current_key("ns:attacker")
    # The attacker holds ns:attacker's plaintext key; pasting the victim's
    # wrapped key into their own row must not hand them the victim's key.
    site.sql(
        f"UPDATE {_keys(site)} SET wrapped = {{p}} WHERE key_id = {{p}}",
        _wrapped(site, victim.key_id),
        mine.key_id,
    )
    with pytest.raises(KeyUnwrapFailed, match="ns:attacker#1"):
        site.open().key(mine.key_id)


@pytest.mark.tamper
def test_wrong_kek_is_refused_at_open(site: VaultSite) -> None:
    site.open().current_key(NAME)
    with pytest.raises(VaultUnavailable, match="another KEK"):
        site.open(kek=bytes(32))


@pytest.mark.tamper
def test_wrong_kek_fails_per_key_even_with_a_forged_kek_check(site: VaultSite) -> None:
    from cachet.crypto.vault.base import kek_check

    key = site.open().current_key(NAME)
    wrong = bytes(range(32))
    vault_id = bytes(site.sql(f"SELECT v FROM {_meta(site)} WHERE k = 'vault_id'")[0][0]).decode()
    # Whoever can write the storage can make the open-time check pass: the
    # per-key GCM tag is what actually refuses a wrong KEK.
    site.sql(
        f"UPDATE {_meta(site)} SET v = {{p}} WHERE k = 'kek_check'", kek_check(wrong, vault_id)
    )
    with pytest.raises(KeyUnwrapFailed, match=key.key_id):
        site.open(kek=wrong).key(key.key_id)
