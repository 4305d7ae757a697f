"""AES-256-GCM values, key wrapping, commitments, keyed identifiers."""

from __future__ import annotations

import random

import pytest

from cachet.crypto.aead import (
    AeadError,
    DataKey,
    associated_data,
    generate_data_key,
    new_commitment_key,
    open_value,
    seal_value,
    unwrap_key,
    value_commitment,
    verify_commitment,
    wrap_key,
)
from cachet.crypto.identifiers import IdentifierHasher, framed

KEY = DataKey("subject-7f3a", bytes(range(32)))
AAD = associated_data(b"k" * 32, b"f" * 32, 3)


def _flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x80
    return bytes(out)


def test_round_trip_with_injected_rng() -> None:
    rng = random.Random(7).randbytes
    nonce, ct = seal_value(KEY, b"quote 101.25", AAD, rng=rng)
    assert len(nonce) == 12 and len(ct) == len(b"quote 101.25") + 16
    assert open_value(KEY, nonce, ct, AAD) == b"quote 101.25"
    assert seal_value(KEY, b"quote 101.25", AAD, rng=random.Random(7).randbytes) == (nonce, ct)
    assert "00010203" not in repr(KEY)


@pytest.mark.tamper
def test_tampering_is_detected_and_names_the_key() -> None:
    nonce, ct = seal_value(KEY, b"secret", AAD)
    attacks = [
        (KEY, nonce, _flip(ct, 0), AAD),
        (KEY, nonce, _flip(ct, len(ct) - 1), AAD),  # the tag
        (KEY, _flip(nonce, 3), ct, AAD),
        (KEY, nonce, ct, associated_data(b"k" * 32, b"f" * 32, 4)),  # other version
        (KEY, nonce, ct, associated_data(b"K" * 32, b"f" * 32, 3)),  # other key hash
        (DataKey("subject-7f3a", bytes(32)), nonce, ct, AAD),  # wrong key
        (KEY, nonce[:-1], ct, AAD),
        (KEY, nonce, ct[:10], AAD),
    ]
    for key, n, c, a in attacks:
        with pytest.raises(AeadError, match="subject-7f3a") as info:
            open_value(key, n, c, a)
        assert info.value.key_id == "subject-7f3a"


def test_associated_data_is_unambiguous() -> None:
    assert associated_data(b"ab", b"c", 1) != associated_data(b"a", b"bc", 1)
    assert framed(b"ab", b"c") != framed(b"a", b"bc")
    with pytest.raises(ValueError):
        associated_data(b"", b"", -1)


@pytest.mark.tamper
def test_wrap_unwrap_and_tamper() -> None:
    kek = bytes([9]) * 32
    wrapped = wrap_key(kek, KEY)
    assert unwrap_key(kek, KEY.key_id, wrapped) == KEY
    with pytest.raises(AeadError, match="subject-other"):
        unwrap_key(kek, "subject-other", wrapped)  # key id is bound
    with pytest.raises(AeadError):
        unwrap_key(bytes(32), KEY.key_id, wrapped)  # wrong KEK
    with pytest.raises(AeadError):
        unwrap_key(kek, KEY.key_id, _flip(wrapped, 20))
    with pytest.raises(AeadError):
        unwrap_key(kek, KEY.key_id, wrapped[:-1])
    assert wrap_key(kek, KEY) != wrapped  # fresh nonce every time


def test_commitment_hides_and_binds() -> None:
    k1, k2 = new_commitment_key(), new_commitment_key()
    c = value_commitment(k1, b"diagnosis: J45")
    assert len(c) == 32
    assert verify_commitment(c, k1, b"diagnosis: J45")
    assert not verify_commitment(c, k1, b"diagnosis: J46")
    assert not verify_commitment(c, k2, b"diagnosis: J45")
    assert value_commitment(k2, b"diagnosis: J45") != c  # hiding: keyed
    # HMAC zero-pads short keys; fixed-length keys close that second opening.
    assert not verify_commitment(c, k1 + b"\x00", b"diagnosis: J45")
    with pytest.raises(ValueError):
        value_commitment(k1[:16], b"x")


def test_data_key_validation() -> None:
    with pytest.raises(ValueError):
        DataKey("k", bytes(16))
    with pytest.raises(ValueError):
        DataKey("", bytes(32))
    assert generate_data_key("ns-orders").key != generate_data_key("ns-orders").key


def test_identifier_hasher_domains() -> None:
    hasher = IdentifierHasher(b"s" * 32)
    assert hasher.key("ns", "user-1") == hasher.key("ns", b"user-1")
    assert hasher.key("ns", "user-1") != hasher.subject("user-1")
    assert hasher.key("a", "b:c") != hasher.key("a:b", "c")
    assert IdentifierHasher(b"t" * 32).subject("user-1") != hasher.subject("user-1")
    assert "sss" not in repr(hasher)
    with pytest.raises(ValueError):
        IdentifierHasher(b"short")
