"""AES-256-GCM for values at rest, key wrapping, and value commitments.

Formats (byte for byte):

* A sealed value is ``(nonce, ciphertext)``: a random 96-bit nonce and the
  GCM ciphertext with its 16-byte tag appended. The associated data comes
  from :func:`associated_data` and binds the ciphertext to its cache key
  hash, fingerprint and version: a ciphertext moved to another entry or
  version fails to open.
* A wrapped data key is ``nonce (12) || GCM(kek, key (32), aad)`` with
  ``aad = framed("cachet/wrap/v1", key_id)``: a wrapped key cannot be
  unwrapped under another key id.
* A value commitment is ``HMAC-SHA3-256(commitment_key,
  framed("cachet/value-commitment/v1", plaintext))`` with the commitment
  key derived from the value's data key
  (:func:`cachet.producers.data_keys.commitment_key`), so destroying the data
  key in an erasure also makes the commitment unlinkable to any guess. Hiding: without the key, the commitment is a
  PRF output and says nothing about the plaintext (a low-entropy value
  cannot be brute-forced). Binding: opening to another plaintext needs an
  HMAC-SHA3-256 collision; the key length is fixed at 32 bytes because HMAC
  pads shorter keys with zeros (``k`` and ``k || 00`` collide), which would
  otherwise be a free second opening. An Auditor checks a commitment given
  (plaintext, key) from the Owner, or checks inclusion against it blind.

Randomness comes in through ``rng`` (``os.urandom`` by default) so tests and
replay can be deterministic; production callers never pass one.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from collections.abc import Callable
from dataclasses import dataclass, field

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from cachet.crypto.identifiers import framed, keyed_hash
from cachet.errors import CachetError

__all__ = [
    "KEY_BYTES",
    "NONCE_BYTES",
    "AeadError",
    "Committer",
    "DataKey",
    "Rng",
    "associated_data",
    "generate_data_key",
    "new_commitment_key",
    "open_value",
    "seal_value",
    "unwrap_key",
    "value_commitment",
    "verify_commitment",
    "wrap_key",
]

KEY_BYTES = 32
NONCE_BYTES = 12
TAG_BYTES = 16
WRAP_DOMAIN = b"cachet/wrap/v1"
VALUE_AAD_DOMAIN = b"cachet/value-aad/v1"
COMMITMENT_DOMAIN = b"cachet/value-commitment/v1"

Rng = Callable[[int], bytes]


class AeadError(CachetError):
    """Decryption or unwrapping failed: wrong key, or tampered data."""

    def __init__(self, message: str, key_id: str) -> None:
        super().__init__(message)
        self.key_id = key_id


@dataclass(frozen=True, slots=True)
class DataKey:
    """A 256-bit data key (per data subject, or per namespace) and its id."""

    key_id: str
    key: bytes = field(repr=False)
    # The AES-GCM context of ``key``, made on its first use (see _cipher):
    # one per key instead of one per value, and gone with this object, so a
    # cache that forgets the key (an erasure) forgets it too.
    _aesgcm: AESGCM | None = field(default=None, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        if not self.key_id:
            raise ValueError("data key id must not be empty")
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"data key {self.key_id} must be {KEY_BYTES} bytes")


def _cipher(data_key: DataKey) -> AESGCM:
    cipher = data_key._aesgcm
    if cipher is None:
        # A race makes two equal contexts, one of which is kept: harmless.
        cipher = AESGCM(data_key.key)
        object.__setattr__(data_key, "_aesgcm", cipher)
    return cipher


def _check_kek(kek: bytes) -> None:
    if len(kek) != KEY_BYTES:
        raise ValueError(f"key-encryption key must be {KEY_BYTES} bytes, got {len(kek)}")


def _nonce(rng: Rng) -> bytes:
    nonce = rng(NONCE_BYTES)
    if len(nonce) != NONCE_BYTES:
        raise ValueError(f"rng returned {len(nonce)} bytes for a {NONCE_BYTES}-byte nonce")
    return nonce


def generate_data_key(key_id: str, rng: Rng = os.urandom) -> DataKey:
    """A fresh random data key."""
    return DataKey(key_id, rng(KEY_BYTES))


def associated_data(key_hash: bytes, fingerprint: bytes, version: int) -> bytes:
    """The AAD binding a value to its (keyed) cache key hash, fingerprint and version."""
    if version < 0:
        raise ValueError(f"version must be non-negative, got {version}")
    return framed(VALUE_AAD_DOMAIN, key_hash, fingerprint, version.to_bytes(8, "big"))


def seal_value(
    data_key: DataKey, plaintext: bytes, aad: bytes, rng: Rng = os.urandom
) -> tuple[bytes, bytes]:
    """Encrypt ``plaintext``; returns ``(nonce, ciphertext_with_tag)``.

    Random 96-bit nonces: safe up to about 2^32 messages per key (NIST SP
    800-38D); a per-subject key never comes near that.
    """
    nonce = _nonce(rng)
    return nonce, _cipher(data_key).encrypt(nonce, plaintext, aad)


def open_value(data_key: DataKey, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
    """Decrypt and authenticate; raises :class:`AeadError` naming the key id."""
    if len(nonce) != NONCE_BYTES or len(ciphertext) < TAG_BYTES:
        raise AeadError(
            f"value under data key {data_key.key_id}: malformed nonce or ciphertext",
            data_key.key_id,
        )
    try:
        return _cipher(data_key).decrypt(nonce, ciphertext, aad)
    except InvalidTag as exc:
        raise AeadError(
            f"value under data key {data_key.key_id} failed authentication "
            "(wrong key, tampered ciphertext, nonce or associated data)",
            data_key.key_id,
        ) from exc


def wrap_key(kek: bytes, data_key: DataKey, rng: Rng = os.urandom) -> bytes:
    """Encrypt a data key under the KEK, bound to its key id."""
    _check_kek(kek)
    nonce = _nonce(rng)
    aad = framed(WRAP_DOMAIN, data_key.key_id.encode("utf-8"))
    return nonce + AESGCM(kek).encrypt(nonce, data_key.key, aad)


def unwrap_key(kek: bytes, key_id: str, wrapped: bytes) -> DataKey:
    """Inverse of :func:`wrap_key`; raises :class:`AeadError` naming the key id."""
    _check_kek(kek)
    if len(wrapped) != NONCE_BYTES + KEY_BYTES + TAG_BYTES:
        raise AeadError(f"wrapped data key {key_id} has the wrong length", key_id)
    aad = framed(WRAP_DOMAIN, key_id.encode("utf-8"))
    try:
        key = AESGCM(kek).decrypt(wrapped[:NONCE_BYTES], wrapped[NONCE_BYTES:], aad)
    except InvalidTag as exc:
        raise AeadError(
            f"wrapped data key {key_id} failed to unwrap (wrong KEK, wrong key id, or tampered)",
            key_id,
        ) from exc
    return DataKey(key_id, key)


def new_commitment_key(rng: Rng = os.urandom) -> bytes:
    """A fresh 32-byte commitment key (the commitment's opening secret)."""
    return rng(KEY_BYTES)


def value_commitment(commitment_key: bytes, plaintext: bytes) -> bytes:
    """A hiding, binding commitment to ``plaintext`` (see module docstring)."""
    if len(commitment_key) != KEY_BYTES:
        # Fixed length is what makes the commitment binding.
        raise ValueError(f"commitment key must be {KEY_BYTES} bytes, got {len(commitment_key)}")
    return keyed_hash(commitment_key, COMMITMENT_DOMAIN, plaintext)


class Committer:
    """One commitment key, keyed into HMAC-SHA3-256 once: :meth:`commit` is
    :func:`value_commitment` byte for byte, without keying a new HMAC for
    every value (a put commits one). Secret like the key it holds."""

    __slots__ = ("key", "_mac")

    def __init__(self, commitment_key: bytes) -> None:
        if len(commitment_key) != KEY_BYTES:
            # Fixed length is what makes the commitment binding.
            raise ValueError(f"commitment key must be {KEY_BYTES} bytes, got {len(commitment_key)}")
        self.key = commitment_key
        # Keyed, with the framed domain absorbed: a commit adds the value.
        self._mac = hmac.new(commitment_key, framed(COMMITMENT_DOMAIN), hashlib.sha3_256)

    def __repr__(self) -> str:
        return "Committer(key=<redacted>)"

    def commit(self, plaintext: bytes) -> bytes:
        """``value_commitment(self.key, plaintext)``."""
        mac = self._mac.copy()
        mac.update(framed(plaintext))
        return mac.digest()

    def verify(self, commitment: bytes, plaintext: bytes) -> bool:
        """``verify_commitment(commitment, self.key, plaintext)``."""
        return hmac.compare_digest(self.commit(plaintext), commitment)


def verify_commitment(commitment: bytes, commitment_key: bytes, plaintext: bytes) -> bool:
    """True iff (commitment_key, plaintext) opens ``commitment``."""
    if len(commitment_key) != KEY_BYTES:
        return False
    return hmac.compare_digest(value_commitment(commitment_key, plaintext), commitment)
