"""Keyed, domain-separated hashes: how identifiers reach the log.

No plaintext cache key or data-subject id is ever written to Kafka. What the
log carries is an HMAC-SHA3-256 of it under a deployment secret, so equal
identifiers still join (the live view, the subject index, erasure) while a
reader of the log cannot test guesses without the secret.

Encoding (byte for byte, so an auditor can reimplement it): every input is
framed as ``len(part)`` as an 8-byte big-endian unsigned integer followed by
the part's bytes; strings are UTF-8. The first framed part is always a domain
string, so a hash made for one purpose can never be replayed as another.
"""

from __future__ import annotations

import hashlib
import hmac

__all__ = [
    "same_identifier",
    "CACHE_KEY_DOMAIN",
    "SUBJECT_DOMAIN",
    "IdentifierHasher",
    "framed",
    "hash_fields",
    "keyed_hash",
]

CACHE_KEY_DOMAIN = b"cachet/id/cache-key/v1"
SUBJECT_DOMAIN = b"cachet/id/subject/v1"

# A shorter secret would make offline guessing of identifiers cheaper than
# guessing the identifiers themselves.
_MIN_SECRET_BYTES = 32


def framed(*parts: bytes) -> bytes:
    """Length-prefix every part (8-byte big-endian length, then the bytes).

    Framing makes the concatenation injective: ``("ab", "c")`` and
    ``("a", "bc")`` encode differently, which plain concatenation would not.
    """
    return b"".join([len(p).to_bytes(8, "big") + p for p in parts])


def hash_fields(domain: bytes, *parts: bytes) -> bytes:
    """SHA3-256 over ``framed(domain, *parts)``: an unkeyed, domain-separated hash."""
    return hashlib.sha3_256(framed(domain, *parts)).digest()


def keyed_hash(secret: bytes, domain: bytes, *parts: bytes) -> bytes:
    """HMAC-SHA3-256 under ``secret`` over ``framed(domain, *parts)``."""
    return hmac.new(secret, framed(domain, *parts), hashlib.sha3_256).digest()


def _as_bytes(value: str | bytes) -> bytes:
    return value.encode("utf-8") if isinstance(value, str) else bytes(value)


class IdentifierHasher:
    """Turns cache keys and subject ids into the 32-byte values the log stores.

    ``key(namespace, k)`` and ``subject(s)`` use distinct domains, so a cache
    key equal to a subject id still hashes differently; the namespace is a
    separate framed field, so ``("a", "b:c")`` and ``("a:b", "c")`` differ.
    """

    __slots__ = ("_key_mac", "_secret", "_subject_mac")

    def __init__(self, secret: bytes) -> None:
        if len(secret) < _MIN_SECRET_BYTES:
            raise ValueError(
                f"identifier secret must be at least {_MIN_SECRET_BYTES} bytes, got {len(secret)}"
            )
        self._secret = bytes(secret)
        # HMAC-SHA3-256 keyed once per domain, the framed domain already
        # absorbed; each hash copies one (keyed_hash's bytes, without keying
        # an HMAC and framing the domain for every identifier).
        self._key_mac = hmac.new(self._secret, framed(CACHE_KEY_DOMAIN), hashlib.sha3_256)
        self._subject_mac = hmac.new(self._secret, framed(SUBJECT_DOMAIN), hashlib.sha3_256)

    def __repr__(self) -> str:
        # The secret never appears in logs or tracebacks.
        return "IdentifierHasher(secret=<redacted>)"

    def key(self, namespace: str, cache_key: str | bytes) -> bytes:
        """The keyed hash of ``cache_key`` within ``namespace``:
        ``keyed_hash(secret, CACHE_KEY_DOMAIN, namespace, cache_key)``."""
        mac = self._key_mac.copy()
        mac.update(framed(namespace.encode("utf-8"), _as_bytes(cache_key)))
        return mac.digest()

    def subject(self, subject_id: str | bytes) -> bytes:
        """The keyed hash of a data-subject id (the erasure and subject-index
        key): ``keyed_hash(secret, SUBJECT_DOMAIN, subject_id)``."""
        mac = self._subject_mac.copy()
        mac.update(framed(_as_bytes(subject_id)))
        return mac.digest()


def same_identifier(a: bytes | None, b: bytes | None) -> bool:
    """Whether two keyed identifiers (e.g. subject hashes, either possibly
    None for "unscoped") are the same, compared in constant time.

    A keyed hash is secret-shaped: ``==`` stops at the first differing byte,
    and timing then tells how much of a guessed identifier was right.
    """
    if a is None or b is None:
        return a is None and b is None
    return hmac.compare_digest(a, b)
