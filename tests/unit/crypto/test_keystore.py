"""The encrypted keystore and KEK loading."""

from __future__ import annotations

import base64
import json
import stat
from pathlib import Path

import pytest

from cachet.crypto.aead import DataKey
from cachet.crypto.keystore import Keystore, KeystoreError, load_kek
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet, SealHeader, sign_header, verify_header

KEK = bytes(range(32))


@pytest.fixture()
def store(tmp_path: Path, producer_keys: PrivateKeySet, anchor_keys: PrivateKeySet) -> Keystore:
    ks = Keystore.create(tmp_path / "keys.json", KEK)
    ks.add_key_set("orders", producer_keys)
    ks.set_anchor(anchor_keys)
    ks.set_identifier_secret(b"i" * 32)
    ks.put_data_key(DataKey("subject-1", b"d" * 32))
    return ks


def test_round_trip(store: Keystore, producer_keys: PrivateKeySet, anchor_keys) -> None:
    reopened = Keystore.open(store.path, KEK)
    loaded = reopened.key_set("orders")
    assert loaded == producer_keys
    assert reopened.anchor() == anchor_keys
    assert reopened.identifier_secret() == b"i" * 32
    assert reopened.data_key("subject-1") == DataKey("subject-1", b"d" * 32)
    assert stat.S_IMODE(store.path.stat().st_mode) == 0o600
    assert list(store.path.parent.iterdir()) == [store.path]  # no temp files left
    # Keys loaded back still sign seals that verify.
    header = SealHeader("orders", 0, 1, 0, b"r" * 32, bytes(32), loaded.key_set_id, 5)
    assert verify_header(
        header, sign_header(header, loaded), producer_keys.public(), tuple(SignatureScheme)
    ).ok


def test_nothing_secret_in_the_clear(store: Keystore, producer_keys: PrivateKeySet) -> None:
    raw = store.path.read_bytes()
    ml = producer_keys.keys[SignatureScheme.ML_DSA_65]
    assert base64.b64encode(ml.private) not in raw
    assert base64.b64encode(ml.public) not in raw
    assert b"orders" not in raw


def test_latest_and_retire(store: Keystore, other_keys: PrivateKeySet) -> None:
    newer = PrivateKeySet("ks-producer-2", dict(other_keys.keys))
    first_nonce = json.loads(store.path.read_bytes())["nonce"]
    store.add_key_set("orders", newer)
    assert json.loads(store.path.read_bytes())["nonce"] != first_nonce  # fresh per write
    assert store.key_set("orders").key_set_id == "ks-producer-2"
    assert store.key_set("orders", "ks-producer-1").key_set_id == "ks-producer-1"
    store.retire("orders", "ks-producer-2")
    assert store.key_set("orders").key_set_id == "ks-producer-1"
    reopened = Keystore.open(store.path, KEK)
    with pytest.raises(KeystoreError, match="retired"):
        reopened.key_set("orders", "ks-producer-2")
    assert [(s.key_set.key_set_id, s.retired) for s in reopened.key_sets("orders")] == [
        ("ks-producer-1", False),
        ("ks-producer-2", True),
    ]
    with pytest.raises(KeystoreError):
        store.add_key_set("orders", newer)
    with pytest.raises(KeystoreError):
        store.key_set("payments")


def test_destroy_data_key(store: Keystore) -> None:
    store.destroy_data_key("subject-1")
    with pytest.raises(KeystoreError, match="destroyed"):
        Keystore.open(store.path, KEK).data_key("subject-1")


@pytest.mark.tamper
def test_wrong_kek(store: Keystore) -> None:
    with pytest.raises(KeystoreError, match="wrong key-encryption key"):
        Keystore.open(store.path, bytes(32))


@pytest.mark.tamper
@pytest.mark.parametrize("field", ["ciphertext", "nonce", "keystore_id"])
def test_tampered_file(store: Keystore, field: str) -> None:
    outer = json.loads(store.path.read_bytes())
    if field == "keystore_id":
        outer[field] = "0" * 32
    else:
        raw = bytearray(base64.b64decode(outer[field]))
        raw[len(raw) // 2] ^= 1
        outer[field] = base64.b64encode(bytes(raw)).decode()
    store.path.write_text(json.dumps(outer))
    with pytest.raises(KeystoreError, match="tampered|wrong key"):
        Keystore.open(store.path, KEK)


@pytest.mark.tamper
def test_garbage_and_missing_files(tmp_path: Path, store: Keystore) -> None:
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(KeystoreError, match="not JSON"):
        Keystore.open(bad, KEK)
    bad.write_text(json.dumps({"format": "cachet.keystore/v1"}))
    with pytest.raises(KeystoreError, match="malformed"):
        Keystore.open(bad, KEK)
    with pytest.raises(KeystoreError, match="does not exist"):
        Keystore.open(tmp_path / "nope.json", KEK)
    with pytest.raises(KeystoreError, match="already exists"):
        Keystore.create(store.path, KEK)


def test_load_kek(tmp_path: Path) -> None:
    assert load_kek(None, KEK.hex()) == KEK
    assert load_kek(None, base64.b64encode(KEK).decode() + "\n") == KEK
    kek_file = tmp_path / "kek"
    kek_file.write_text(KEK.hex() + "\n")
    kek_file.chmod(0o600)
    assert load_kek(kek_file, None) == KEK
    with pytest.raises(KeystoreError, match="environment value is 32 hex characters"):
        load_kek(None, KEK[:16].hex())
    with pytest.raises(KeystoreError, match="environment value decodes to 16 bytes"):
        load_kek(None, base64.b64encode(KEK[:16]).decode())
    with pytest.raises(KeystoreError, match="environment value is neither"):
        load_kek(None, "not a key!")
    with pytest.raises(KeystoreError, match=f"KEK file {tmp_path}/missing"):
        load_kek(tmp_path / "missing", None)
    kek_file.write_text("   ")
    with pytest.raises(KeystoreError, match="KEK file .* is empty"):
        load_kek(kek_file, None)
    with pytest.raises(KeystoreError, match="both"):
        load_kek(kek_file, KEK.hex())
    with pytest.raises(KeystoreError, match="no KEK"):
        load_kek(None, None)


@pytest.mark.tamper
def test_ciphertext_is_bound_to_its_keystore_id(tmp_path: Path, store: Keystore) -> None:
    """Two keystores under one KEK: A's nonce and ciphertext pasted into B's
    file (B's id and B's valid KEK check kept) must not open. Only the AAD
    (which frames the keystore id) tells the two apart."""
    other = Keystore.create(tmp_path / "other.json", KEK)
    other.set_identifier_secret(b"o" * 32)
    a = json.loads(store.path.read_bytes())
    b = json.loads(other.path.read_bytes())
    assert a["keystore_id"] != b["keystore_id"]
    Keystore.open(other.path, KEK)  # B as written opens
    b["nonce"], b["ciphertext"] = a["nonce"], a["ciphertext"]
    other.path.write_text(json.dumps(b))
    with pytest.raises(KeystoreError, match="failed authentication"):
        Keystore.open(other.path, KEK)
