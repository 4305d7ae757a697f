"""Backends from wheels that carry their own native code.

* ``cryptography`` — ML-DSA-65; the private key is the 32-byte FIPS 204 seed.
* ``pqcrypto`` — ML-DSA-65 (4032-byte expanded private key) and
  SLH-DSA-SHA2-128f (64-byte private key).
* ``py-fn-dsa`` — FN-DSA-512; the private key is py-fn-dsa's encoding.

Every ``verify`` checks exact key and signature lengths first and turns any
library error on malformed input into False: a verifier never raises on
attacker-controlled bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import py_fn_dsa
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric import mldsa
from pqcrypto.sign import ml_dsa_65 as pq_ml_dsa_65
from pqcrypto.sign import slh_dsa_sha2_128f as pq_slh_dsa_sha2_128f

from cachet.crypto.schemes import KeyPair, SignatureScheme, SigningBackend, SigningError

__all__ = [
    "CryptographyMlDsa65",
    "PqcryptoMlDsa65",
    "PqcryptoSlhDsaSha2128f",
    "PyFnDsa512",
    "backends",
]

_ML_DSA_SEED_BYTES = 32
_FN_DSA_LOGN = py_fn_dsa.LOGN_512


def _well_formed(scheme: SignatureScheme, public: bytes, signature: bytes) -> bool:
    return (
        isinstance(public, bytes)
        and isinstance(signature, bytes)
        and len(public) == scheme.public_key_size
        and len(signature) == scheme.signature_size
    )


@dataclass(frozen=True, slots=True)
class CryptographyMlDsa65:
    """ML-DSA-65 via ``cryptography`` (OpenSSL / aws-lc)."""

    name: str = "cryptography"
    scheme: SignatureScheme = SignatureScheme.ML_DSA_65

    def generate(self) -> KeyPair:
        key = mldsa.MLDSA65PrivateKey.generate()
        return KeyPair(public=key.public_key().public_bytes_raw(), private=key.private_bytes_raw())

    def sign(self, private: bytes, message: bytes) -> bytes:
        if len(private) != _ML_DSA_SEED_BYTES:
            raise SigningError(
                f"{self.name} ML-DSA-65 private key must be a {_ML_DSA_SEED_BYTES}-byte seed, "
                f"got {len(private)} bytes"
            )
        return mldsa.MLDSA65PrivateKey.from_seed_bytes(private).sign(message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        if not _well_formed(self.scheme, public, signature):
            return False
        try:
            mldsa.MLDSA65PublicKey.from_public_bytes(public).verify(signature, message)
        except (InvalidSignature, ValueError, TypeError):
            return False
        return True


class _PqcryptoModule(Protocol):
    """The shape every ``pqcrypto.sign.*`` module has."""

    def keygen(self) -> tuple[bytes, bytes]: ...

    def sign(self, secret_key: bytes, message: bytes) -> bytes: ...

    def verify(self, public_key: bytes, message: bytes, signature: bytes) -> None: ...


def _pq_generate(module: _PqcryptoModule) -> KeyPair:
    public, private = module.keygen()
    return KeyPair(public=bytes(public), private=bytes(private))


def _pq_sign(
    module: _PqcryptoModule, scheme: SignatureScheme, private: bytes, message: bytes
) -> bytes:
    try:
        return bytes(module.sign(private, message))
    except (ValueError, TypeError) as exc:
        raise SigningError(f"pqcrypto {scheme.value} signing failed: {exc}") from exc


def _pq_verify(
    module: _PqcryptoModule,
    scheme: SignatureScheme,
    public: bytes,
    message: bytes,
    signature: bytes,
) -> bool:
    if not _well_formed(scheme, public, signature):
        return False
    try:
        # Returns None on success; raises pqcrypto.InvalidSignatureError (a
        # ValueError) on a bad signature and ValueError on bad lengths.
        module.verify(public, message, signature)
    except (ValueError, TypeError):
        return False
    return True


@dataclass(frozen=True, slots=True)
class PqcryptoMlDsa65:
    """ML-DSA-65 via ``pqcrypto`` (PQClean); private key is the 4032-byte expanded key."""

    name: str = "pqcrypto"
    scheme: SignatureScheme = SignatureScheme.ML_DSA_65

    def generate(self) -> KeyPair:
        return _pq_generate(pq_ml_dsa_65)

    def sign(self, private: bytes, message: bytes) -> bytes:
        return _pq_sign(pq_ml_dsa_65, self.scheme, private, message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        return _pq_verify(pq_ml_dsa_65, self.scheme, public, message, signature)


@dataclass(frozen=True, slots=True)
class PqcryptoSlhDsaSha2128f:
    """SLH-DSA-SHA2-128f via ``pqcrypto`` (PQClean); private key 64 bytes."""

    name: str = "pqcrypto"
    scheme: SignatureScheme = SignatureScheme.SLH_DSA_SHA2_128F

    def generate(self) -> KeyPair:
        return _pq_generate(pq_slh_dsa_sha2_128f)

    def sign(self, private: bytes, message: bytes) -> bytes:
        return _pq_sign(pq_slh_dsa_sha2_128f, self.scheme, private, message)

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        return _pq_verify(pq_slh_dsa_sha2_128f, self.scheme, public, message, signature)


@dataclass(frozen=True, slots=True)
class PyFnDsa512:
    """FN-DSA-512 via ``py-fn-dsa`` (Pornin's fn-dsa), empty context, raw message."""

    name: str = "py-fn-dsa"
    scheme: SignatureScheme = SignatureScheme.FN_DSA_512

    def generate(self) -> KeyPair:
        verify_key, signing_key = py_fn_dsa.keygen(_FN_DSA_LOGN)
        return KeyPair(public=bytes(verify_key.key_data), private=bytes(signing_key.key_data))

    def sign(self, private: bytes, message: bytes) -> bytes:
        try:
            return bytes(py_fn_dsa.sign(py_fn_dsa.SigningKey(_FN_DSA_LOGN, private), message))
        except (ValueError, TypeError, RuntimeError) as exc:
            raise SigningError(f"{self.name} fn-dsa-512 signing failed: {exc}") from exc

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        if not _well_formed(self.scheme, public, signature):
            return False
        try:
            # Note py-fn-dsa's argument order: (key, signature, message).
            ok = py_fn_dsa.verify(py_fn_dsa.VerifyKey(_FN_DSA_LOGN, public), signature, message)
        except (ValueError, TypeError, RuntimeError):
            return False
        return ok is True


def backends(scheme: SignatureScheme) -> list[SigningBackend]:
    """The wheel backends for ``scheme``, preferred first."""
    if scheme is SignatureScheme.ML_DSA_65:
        return [CryptographyMlDsa65(), PqcryptoMlDsa65()]
    if scheme is SignatureScheme.SLH_DSA_SHA2_128F:
        return [PqcryptoSlhDsaSha2128f()]
    if scheme is SignatureScheme.FN_DSA_512:
        return [PyFnDsa512()]
    raise ValueError(f"unknown signature scheme {scheme!r}")
