"""The local keystore: private key sets and secrets, encrypted under a KEK.

File format (JSON, UTF-8), version ``cachet.keystore/v1``::

    {"format": "cachet.keystore/v1", "keystore_id": "<32 hex>",
     "kek_check": "<base64 16 bytes>", "nonce": "<base64 12 bytes>",
     "ciphertext": "<base64 AES-256-GCM(kek, nonce, body, aad)>"}

``aad = framed("cachet.keystore/v1", keystore_id)``: a ciphertext cannot be
moved into another keystore's file. ``kek_check`` is the first 16 bytes of
HMAC-SHA3-256(kek, framed("cachet/keystore/kek-check/v1", keystore_id)); it
only lets the error say "wrong KEK" rather than "tampered": GCM is what
protects the content, and nothing is returned unless it authenticates.

The body holds every producer's key sets (retired ones keep only their
public keys: retiring destroys the private keys), the trust-anchor private
key set, the identifier-hash secret, and data keys. Every write uses a
fresh nonce and is atomic: temporary file (mode 0600), fsync, rename, fsync
of the directory. One process owns a keystore file at a time.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import logging
import os
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cachet.crypto.aead import KEY_BYTES, NONCE_BYTES, DataKey, Rng
from cachet.crypto.identifiers import framed, keyed_hash
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    NoteFormatError,
    PrivateKey,
    PrivateKeySet,
    b64,
    check_id,
    unb64,
)
from cachet.errors import CachetError

__all__ = [
    "KEYSTORE_FORMAT",
    "Keystore",
    "KeystoreError",
    "StoredKeySet",
    "load_kek",
    "open_keystore",
]

logger = logging.getLogger(__name__)

KEYSTORE_FORMAT = "cachet.keystore/v1"
_KEK_CHECK_DOMAIN = b"cachet/keystore/kek-check/v1"


class KeystoreError(CachetError):
    """The keystore or KEK cannot be used; the message says which and why."""


@dataclass(frozen=True, slots=True)
class StoredKeySet:
    """A key set as the keystore lists it: public keys and whether retired."""

    producer_id: str
    key_set: KeySet
    retired: bool


def _kek_check(kek: bytes, keystore_id: str) -> bytes:
    return keyed_hash(kek, _KEK_CHECK_DOMAIN, keystore_id.encode("ascii"))[:16]


def _aad(keystore_id: str) -> bytes:
    return framed(KEYSTORE_FORMAT.encode("ascii"), keystore_id.encode("ascii"))


def _encode_key_set(pks: PrivateKeySet, retired: bool) -> dict[str, Any]:
    return {
        "key_set_id": pks.key_set_id,
        "retired": retired,
        "keys": {
            scheme.value: {
                "backend": key.backend,
                "public": b64(key.public),
                # Retiring destroys the private key; only the public half stays.
                "private": None if retired else b64(key.private),
            }
            for scheme, key in pks.keys.items()
        },
    }


def _decode_key_set(entry: dict[str, Any]) -> PrivateKeySet:
    keys = {}
    for scheme_id, key in entry["keys"].items():
        scheme = SignatureScheme(scheme_id)
        private = b"" if key["private"] is None else unb64("private key", key["private"])
        keys[scheme] = PrivateKey(
            scheme, key["backend"], unb64("public key", key["public"]), private
        )
    return PrivateKeySet(entry["key_set_id"], keys)


class Keystore:
    """Private key sets and secrets for one node, encrypted at rest.

    Every mutating method writes the whole file before it returns.
    """

    def __init__(
        self, path: Path, kek: bytes, keystore_id: str, body: dict[str, Any], rng: Rng
    ) -> None:
        self._path = path
        self._kek = kek
        self._keystore_id = keystore_id
        self._body = body
        self._rng = rng

    def __repr__(self) -> str:
        return f"Keystore(path={str(self._path)!r}, id={self._keystore_id})"

    @property
    def path(self) -> Path:
        return self._path

    # -- lifecycle ---------------------------------------------------------

    @classmethod
    def create(cls, path: Path, kek: bytes, rng: Rng = os.urandom) -> Keystore:
        """A new, empty keystore at ``path`` (which must not exist)."""
        _check_kek_length(kek)
        if path.exists():
            raise KeystoreError(f"keystore {path} already exists; refusing to overwrite it")
        body: dict[str, Any] = {
            "key_sets": {},
            "anchor": None,
            "identifier_secret": None,
            "data_keys": {},
        }
        store = cls(path, bytes(kek), secrets.token_hex(16), body, rng)
        store._save()
        return store

    @classmethod
    def open(cls, path: Path, kek: bytes, rng: Rng = os.urandom) -> Keystore:
        """Open and decrypt ``path``. Wrong KEK or any tampering -> KeystoreError;
        nothing is read from a file that does not authenticate."""
        _check_kek_length(kek)
        try:
            outer = json.loads(path.read_bytes())
        except FileNotFoundError as exc:
            raise KeystoreError(f"keystore {path} does not exist") from exc
        except (OSError, ValueError) as exc:
            raise KeystoreError(f"keystore {path} is unreadable or not JSON: {exc}") from exc
        try:
            if outer["format"] != KEYSTORE_FORMAT:
                raise KeystoreError(
                    f"keystore {path} has format {outer['format']!r}, expected {KEYSTORE_FORMAT}"
                )
            keystore_id = str(outer["keystore_id"])
            check = unb64("kek_check", outer["kek_check"])
            nonce = unb64("nonce", outer["nonce"])
            ciphertext = unb64("ciphertext", outer["ciphertext"])
            keystore_id.encode("ascii")
        except (KeyError, TypeError, NoteFormatError, UnicodeEncodeError) as exc:
            raise KeystoreError(f"keystore {path} is malformed (tampered?): {exc!r}") from exc
        if len(nonce) != NONCE_BYTES:
            raise KeystoreError(f"keystore {path} is malformed (tampered?): bad nonce length")
        if not hmac.compare_digest(check, _kek_check(kek, keystore_id)):
            raise KeystoreError(
                f"keystore {path}: wrong key-encryption key (or tampered key check)"
            )
        try:
            plaintext = AESGCM(kek).decrypt(nonce, ciphertext, _aad(keystore_id))
        except InvalidTag as exc:
            raise KeystoreError(
                f"keystore {path} failed authentication: the file was tampered with"
            ) from exc
        try:
            body = json.loads(plaintext)
        except ValueError as exc:  # authenticated but undecodable: a writer bug
            raise KeystoreError(f"keystore {path} body is not JSON") from exc
        return cls(path, bytes(kek), keystore_id, body, rng)

    def _save(self) -> None:
        nonce = self._rng(NONCE_BYTES)  # fresh per write: GCM nonce reuse is fatal
        plaintext = json.dumps(self._body, sort_keys=True).encode("utf-8")
        outer = {
            "format": KEYSTORE_FORMAT,
            "keystore_id": self._keystore_id,
            "kek_check": b64(_kek_check(self._kek, self._keystore_id)),
            "nonce": b64(nonce),
            "ciphertext": b64(AESGCM(self._kek).encrypt(nonce, plaintext, _aad(self._keystore_id))),
        }
        _atomic_write(self._path, json.dumps(outer, indent=1).encode("utf-8"))

    # -- signing key sets --------------------------------------------------

    def add_key_set(self, producer_id: str, key_set: PrivateKeySet) -> None:
        """Store a new key set for ``producer_id``; it becomes the latest."""
        check_id("producer id", producer_id)
        entries = self._body["key_sets"].setdefault(producer_id, [])
        if any(e["key_set_id"] == key_set.key_set_id for e in entries):
            raise KeystoreError(f"producer {producer_id} already has key set {key_set.key_set_id}")
        entries.append(_encode_key_set(key_set, retired=False))
        self._save()

    def key_set(self, producer_id: str, key_set_id: str | None = None) -> PrivateKeySet:
        """The named key set, or the latest unretired one. Retired sets have no
        private keys and are refused."""
        entries = self._body["key_sets"].get(producer_id, [])
        if key_set_id is None:
            live = [e for e in entries if not e["retired"]]
            if not live:
                raise KeystoreError(f"producer {producer_id} has no unretired key set")
            return _decode_key_set(live[-1])
        for entry in entries:
            if entry["key_set_id"] == key_set_id:
                if entry["retired"]:
                    raise KeystoreError(
                        f"key set {key_set_id} of producer {producer_id} is retired"
                    )
                return _decode_key_set(entry)
        raise KeystoreError(f"producer {producer_id} has no key set {key_set_id}")

    def producer_ids(self) -> list[str]:
        """Every producer identity with at least one key set."""
        return sorted(self._body["key_sets"])

    def key_sets(self, producer_id: str) -> list[StoredKeySet]:
        """Every key set of ``producer_id`` (public halves), oldest first."""
        return [
            StoredKeySet(producer_id, _decode_key_set(e).public(), bool(e["retired"]))
            for e in self._body["key_sets"].get(producer_id, [])
        ]

    def retire(self, producer_id: str, key_set_id: str) -> None:
        """Mark a key set retired and destroy its private keys."""
        for i, entry in enumerate(self._body["key_sets"].get(producer_id, [])):
            if entry["key_set_id"] == key_set_id:
                pks = _decode_key_set(entry)
                self._body["key_sets"][producer_id][i] = _encode_key_set(pks, retired=True)
                self._save()
                return
        raise KeystoreError(f"producer {producer_id} has no key set {key_set_id}")

    # -- trust anchor, identifier secret, data keys ------------------------

    def set_anchor(self, anchor: PrivateKeySet) -> None:
        """Store the trust-anchor private key set (only on the anchor's host)."""
        self._body["anchor"] = _encode_key_set(anchor, retired=False)
        self._save()

    def anchor(self) -> PrivateKeySet:
        if self._body["anchor"] is None:
            raise KeystoreError(f"keystore {self._path} holds no trust-anchor key set")
        return _decode_key_set(self._body["anchor"])

    def set_identifier_secret(self, secret: bytes) -> None:
        if len(secret) < KEY_BYTES:
            raise KeystoreError(f"identifier secret must be at least {KEY_BYTES} bytes")
        self._body["identifier_secret"] = b64(secret)
        self._save()

    def identifier_secret(self) -> bytes:
        if self._body["identifier_secret"] is None:
            raise KeystoreError(f"keystore {self._path} holds no identifier secret")
        return unb64("identifier secret", self._body["identifier_secret"])

    def put_data_key(self, data_key: DataKey) -> None:
        if data_key.key_id in self._body["data_keys"]:
            raise KeystoreError(f"data key {data_key.key_id} already exists")
        self._body["data_keys"][data_key.key_id] = b64(data_key.key)
        self._save()

    def data_key(self, key_id: str) -> DataKey:
        encoded = self._body["data_keys"].get(key_id)
        if encoded is None:
            raise KeystoreError(f"data key {key_id} does not exist (never created, or destroyed)")
        return DataKey(key_id, unb64(f"data key {key_id}", encoded))

    def destroy_data_key(self, key_id: str) -> None:
        """Crypto-shred: drop the key and rewrite the file without it.

        The old file is replaced by rename; on copy-on-write or journaling
        filesystems old blocks may survive, which is why the whole file is
        encrypted under the KEK (destroying the key also needs the KEK rotated
        for backups that still hold it).
        """
        if self._body["data_keys"].pop(key_id, None) is None:
            raise KeystoreError(f"data key {key_id} does not exist")
        self._save()


def _check_kek_length(kek: bytes) -> None:
    if len(kek) != KEY_BYTES:
        raise KeystoreError(f"key-encryption key must be {KEY_BYTES} bytes, got {len(kek)}")


def _atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` so a crash leaves the old or the new file, whole."""
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def _parse_kek(source: str, text: str) -> bytes:
    text = text.strip()
    if not text:
        raise KeystoreError(f"{source} is empty")
    # All-hex text is hex (44-character base64 of 32 bytes always ends in "=").
    if all(c in "0123456789abcdefABCDEF" for c in text):
        if len(text) != 2 * KEY_BYTES:
            raise KeystoreError(
                f"{source} is {len(text)} hex characters; a KEK is {2 * KEY_BYTES} "
                f"hex characters ({KEY_BYTES} bytes)"
            )
        return bytes.fromhex(text)
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error as exc:
        raise KeystoreError(f"{source} is neither hex nor base64") from exc
    if len(key) != KEY_BYTES:
        raise KeystoreError(
            f"{source} decodes to {len(key)} bytes; a KEK is {KEY_BYTES} bytes "
            f"(64 hex characters or 44 base64 characters)"
        )
    return key


def load_kek(file: Path | None, env_value: str | None) -> bytes:
    """The 32-byte KEK from a file or from an environment value the caller read.

    Exactly one source must be given. Either holds 64 hex characters or the
    base64 of 32 bytes (surrounding whitespace ignored).
    """
    if file is not None and env_value is not None:
        raise KeystoreError("KEK given both as a file and an environment value; give one")
    if file is not None:
        source = f"KEK file {file}"
        try:
            text = file.read_text("ascii")
            mode = file.stat().st_mode
        except (OSError, UnicodeDecodeError) as exc:
            raise KeystoreError(f"{source} cannot be read: {exc}") from exc
        if mode & 0o077:
            logger.warning(
                "KEK file %s is readable by group or others (mode %o)", file, mode & 0o777
            )
        return _parse_kek(source, text)
    if env_value is not None:
        return _parse_kek("KEK environment value", env_value)
    raise KeystoreError("no KEK given: set a KEK file or the KEK environment variable")


def open_keystore(
    path: Path, kek_file: Path | None, kek_env: str, environ: Mapping[str, str]
) -> Keystore:
    """The keystore at ``path``, unlocked with the KEK from ``kek_file`` or,
    when no file is named, from the environment variable ``kek_env`` (the
    CLI and ``cachet.open`` both come here)."""
    value = None if kek_file is not None else environ.get(kek_env)
    if kek_file is None and value is None:
        raise KeystoreError(
            f"no key-encryption key for keystore {path}: name a KEK file "
            f"(--kek-file / keys.kek_file) or set the environment variable {kek_env}"
        )
    return Keystore.open(path, load_kek(kek_file, value))
