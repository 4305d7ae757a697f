"""Keys set up once and reused (an AES-GCM context per data key, HMACs keyed
once): the same bytes as the one-off functions, and nothing kept past the key."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from cachet.crypto.aead import (
    Committer,
    DataKey,
    associated_data,
    open_value,
    seal_value,
    value_commitment,
    verify_commitment,
)
from cachet.crypto.identifiers import (
    CACHE_KEY_DOMAIN,
    SUBJECT_DOMAIN,
    IdentifierHasher,
    keyed_hash,
)

AAD = associated_data(b"k" * 32, b"f" * 32, 1)


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=4096))
def test_committer_commits_as_value_commitment(key: bytes, plaintext: bytes) -> None:
    committer = Committer(key)
    assert committer.commit(plaintext) == value_commitment(key, plaintext)
    # Reusable: the keyed HMAC is copied, never consumed.
    assert committer.commit(plaintext) == value_commitment(key, plaintext)
    assert committer.key == key


@given(st.binary(min_size=32, max_size=32), st.binary(max_size=512), st.integers(0, 31))
def test_committer_verifies_as_verify_commitment(key: bytes, plaintext: bytes, at: int) -> None:
    committer = Committer(key)
    good = value_commitment(key, plaintext)
    assert committer.verify(good, plaintext) and verify_commitment(good, key, plaintext)
    flipped = good[:at] + bytes([good[at] ^ 1]) + good[at + 1 :]
    assert not committer.verify(flipped, plaintext)  # a tampered commitment
    assert not committer.verify(good, plaintext + b"x")  # another value
    assert not committer.verify(good[:-1], plaintext)  # a cut one


def test_committer_refuses_a_key_of_another_length_and_hides_its_key() -> None:
    for bad in (bytes(16), bytes(33)):
        with pytest.raises(ValueError, match="32 bytes"):
            Committer(bad)
    assert "0707" not in repr(Committer(b"\x07" * 32))


@given(st.binary(min_size=32), st.text(max_size=64), st.binary(max_size=256))
def test_identifier_hasher_hashes_as_keyed_hash(secret: bytes, ns: str, key: bytes) -> None:
    hasher = IdentifierHasher(secret)
    assert hasher.key(ns, key) == keyed_hash(secret, CACHE_KEY_DOMAIN, ns.encode(), key)
    assert hasher.subject(key) == keyed_hash(secret, SUBJECT_DOMAIN, key)
    assert hasher.key(ns, key) == hasher.key(ns, key)


def test_a_data_key_reuses_its_cipher_and_compares_by_key_alone() -> None:
    key = DataKey("ns:q/c:x#0001", bytes(range(32)))
    twin = DataKey("ns:q/c:x#0001", bytes(range(32)))
    nonce, ct = seal_value(key, b"v1", AAD)
    # The context made by the first use is what later uses get: no new one per value.
    cipher = key._aesgcm
    assert cipher is not None
    seal_value(key, b"v2", AAD)
    assert key._aesgcm is cipher
    # A key that never encrypted opens what its equal twin sealed.
    assert open_value(twin, nonce, ct, AAD) == b"v1"
    assert key == twin and hash(key) == hash(twin)
    assert "0001020304" not in repr(key)
