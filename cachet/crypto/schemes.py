"""Signature schemes and the contract every signing backend keeps.

The shared vocabulary of :mod:`cachet.crypto.signing` (which picks a backend)
and :mod:`cachet.crypto.backends` (which implement one): the scheme enum with
its exact key and signature sizes, the key pair a backend generates, the
:class:`SigningBackend` protocol and :class:`SigningError`. It imports no
backend, so both sides depend on it and not on each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol, runtime_checkable

from cachet.errors import CachetError

__all__ = [
    "KeyPair",
    "SignatureScheme",
    "SigningBackend",
    "SigningError",
]


class SignatureScheme(StrEnum):
    """A signature algorithm; the value is its wire id in signature lines."""

    ML_DSA_65 = "ml-dsa-65"
    FN_DSA_512 = "fn-dsa-512"
    SLH_DSA_SHA2_128F = "slh-dsa-sha2-128f"

    @property
    def public_key_size(self) -> int:
        return _PUBLIC_KEY_SIZE[self]

    @property
    def signature_size(self) -> int:
        return _SIGNATURE_SIZE[self]


# Exact sizes: a verifier refuses any other length before touching native
# code (truncated or padded inputs are a malleability and parser-bug surface).
# FN-DSA signatures are the fixed-size ("padded") encoding.
_PUBLIC_KEY_SIZE = {
    SignatureScheme.ML_DSA_65: 1952,
    SignatureScheme.FN_DSA_512: 897,
    SignatureScheme.SLH_DSA_SHA2_128F: 32,
}
_SIGNATURE_SIZE = {
    SignatureScheme.ML_DSA_65: 3309,
    SignatureScheme.FN_DSA_512: 666,
    SignatureScheme.SLH_DSA_SHA2_128F: 17088,
}


class SigningError(CachetError):
    """Signing failed (malformed private key, backend failure)."""


@dataclass(frozen=True, slots=True)
class KeyPair:
    """A public key and the backend-specific private key that goes with it."""

    public: bytes
    private: bytes = field(repr=False)


@runtime_checkable
class SigningBackend(Protocol):
    """One implementation of one scheme.

    ``verify`` never raises on malformed input (wrong lengths, garbage,
    truncation): it returns False. ``sign`` raises :class:`SigningError`.
    """

    @property
    def name(self) -> str: ...

    @property
    def scheme(self) -> SignatureScheme: ...

    def generate(self) -> KeyPair: ...

    def sign(self, private: bytes, message: bytes) -> bytes: ...

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool: ...
