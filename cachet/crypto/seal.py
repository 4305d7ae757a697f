"""Seal headers and their triple signatures, in the C2SP signed-note shape.

A seal commits to one batch of a producer's events. Its header text, byte
for byte (every line ends with ``\\n``; integers are decimal without
leading zeros; base64 is standard with padding)::

    cachet.seal/v1
    <producer_id>
    seal <seal_seq>
    size <tree_size>
    first <first_producer_seq>
    root <base64 merkle_root>
    prev <base64 prev_seal_hash>
    keyset <key_set_id>
    at <sealed_at_us>
    topics <base64 leaf_topics_digest>      (only when the seal lists leaf topics)

``leaf_topics_digest`` is SHA3-256 over the framed domain
``cachet/leaf-topics/v1`` and each leaf's topic suffix in leaf order (see
:func:`leaf_topics_digest`): signing it tells a verifier which leaves must
arrive on the topics it reads, so a dropped event is detected, not missed.

Each signature is over exactly those bytes. The full note appends a blank
line and one line per signature: ``\\u2014 <scheme> <key_id> <base64 sig>``,
written in scheme order (:func:`sign_message`). The live verifier ignores
lines of algorithms it does not know (crypto-agility: a producer may add a
scheme before every consumer knows it) and refuses everything else that is
not exactly right. Offline evidence (attestation bundles) is stricter: it
calls :func:`require_canonical_lines`, which refuses unknown algorithms and
any order but scheme order, so its text has one form only.

``seal_hash`` (the per-producer chain link) is SHA3-256 over the framed
domain ``cachet/seal-hash/v1``, the header text and the signature lines in
canonical order (sorted), so re-ordering lines in transit does not break
the chain.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import re
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType

from cachet.crypto.identifiers import hash_fields
from cachet.crypto.merkle import HASH_SIZE, root_from_leaf_hashes
from cachet.crypto.schemes import SignatureScheme, SigningBackend, SigningError
from cachet.crypto.signing import BACKEND_AUTO, backend_for, key_id
from cachet.errors import CachetError

__all__ = [
    "GENESIS_PREV_SEAL_HASH",
    "SEAL_FORMAT",
    "KeySet",
    "NoteFormatError",
    "PrivateKey",
    "PrivateKeySet",
    "SchemeStatus",
    "SealFailure",
    "SealHeader",
    "SealVerdict",
    "SignatureLine",
    "b64",
    "check_id",
    "check_signatures",
    "check_uint",
    "derive_key_set_id",
    "leaf_topics_digest",
    "note_bytes",
    "parse_note",
    "parse_uint",
    "require_canonical_lines",
    "seal_hash",
    "sign_header",
    "sign_message",
    "unb64",
    "verify_header",
    "verify_seal_batch",
]

SEAL_FORMAT = "cachet.seal/v1"
SEAL_HASH_DOMAIN = b"cachet/seal-hash/v1"
LEAF_TOPICS_DOMAIN = b"cachet/leaf-topics/v1"
KEY_SET_ID_DOMAIN = b"cachet/key-set-id/v1"
SIGNATURE_PREFIX = "\u2014 "
# The first seal of a producer links to 32 zero bytes.
GENESIS_PREV_SEAL_HASH = bytes(HASH_SIZE)
# Ids appear inside space-separated lines: no whitespace, no control bytes,
# nothing outside ASCII, so the text parses one way only.
_ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:@/+=-]{0,127}")
_TOKEN_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._+-]{0,63}")
_MAX_UINT = 2**63 - 1  # fits an Avro long
_MAX_UINT_DIGITS = len(str(_MAX_UINT))


class NoteFormatError(CachetError):
    """A seal note or header field that is not in canonical form."""


def check_id(kind: str, value: str) -> str:
    """Return ``value`` if it is a valid producer or key-set id, else raise."""
    if not isinstance(value, str) or _ID_RE.fullmatch(value) is None:
        raise NoteFormatError(
            f"{kind} {value!r} must be 1-128 ASCII letters, digits or ._:@/+=- "
            "(no spaces or newlines)"
        )
    return value


def check_uint(kind: str, value: int) -> int:
    """Return ``value`` if it is an int in [0, 2^63) (what every integer of
    Cachet's signed text formats must be), else raise NoteFormatError."""
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_UINT:
        raise NoteFormatError(f"{kind} must be an integer in [0, 2^63), got {value!r}")
    return value


def b64(data: bytes) -> str:
    """Standard base64 with padding, as every Cachet text format writes it."""
    return base64.b64encode(data).decode("ascii")


def unb64(kind: str, text: str) -> bytes:
    """Decode base64, accepting only the canonical text of a value."""
    try:
        data = base64.b64decode(text.encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError) as exc:
        raise NoteFormatError(f"{kind} is not valid base64") from exc
    # Only the canonical encoding is accepted: one value, one text.
    if b64(data) != text:
        raise NoteFormatError(f"{kind} is not canonical base64")
    return data


# --- keys -----------------------------------------------------------------


def derive_key_set_id(public_keys: Mapping[SignatureScheme, bytes]) -> str:
    """A key-set id derived from its public keys: ``ks-`` + 16 hex bytes."""
    parts: list[bytes] = []
    for scheme in sorted(public_keys, key=lambda s: s.value):
        parts += [scheme.value.encode("ascii"), public_keys[scheme]]
    return "ks-" + hash_fields(KEY_SET_ID_DOMAIN, *parts)[:16].hex()


@dataclass(frozen=True, slots=True)
class KeySet:
    """The public keys of one producer identity, one per scheme."""

    key_set_id: str
    public_keys: Mapping[SignatureScheme, bytes]

    def __post_init__(self) -> None:
        check_id("key set id", self.key_set_id)
        keys = {SignatureScheme(s): bytes(k) for s, k in self.public_keys.items()}
        for scheme, public in keys.items():
            if len(public) != scheme.public_key_size:
                raise ValueError(
                    f"key set {self.key_set_id}: {scheme.value} public key is "
                    f"{len(public)} bytes, expected {scheme.public_key_size}"
                )
        object.__setattr__(self, "public_keys", MappingProxyType(keys))

    def key_id(self, scheme: SignatureScheme) -> str | None:
        """The key id of this set's ``scheme`` key, or None if it has none."""
        public = self.public_keys.get(scheme)
        return None if public is None else key_id(scheme, public)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, KeySet):
            return NotImplemented
        return self.key_set_id == other.key_set_id and dict(self.public_keys) == dict(
            other.public_keys
        )

    def __hash__(self) -> int:
        return hash(
            (self.key_set_id, tuple(sorted((s.value, k) for s, k in self.public_keys.items())))
        )


@dataclass(frozen=True, slots=True)
class PrivateKey:
    """One private key and the backend that can use it (encodings differ)."""

    scheme: SignatureScheme
    backend: str
    public: bytes
    private: bytes = field(repr=False)


@dataclass(frozen=True, slots=True)
class PrivateKeySet:
    """The private half of a :class:`KeySet`."""

    key_set_id: str
    keys: Mapping[SignatureScheme, PrivateKey]

    def __post_init__(self) -> None:
        check_id("key set id", self.key_set_id)
        for scheme, key in self.keys.items():
            if key.scheme is not scheme:
                raise ValueError(f"key for {scheme.value} is a {key.scheme.value} key")
        object.__setattr__(self, "keys", MappingProxyType(dict(self.keys)))

    @classmethod
    def generate(
        cls,
        key_set_id: str | None = None,
        schemes: Iterable[SignatureScheme] = tuple(SignatureScheme),
        prefer: Mapping[SignatureScheme, str] | None = None,
    ) -> PrivateKeySet:
        """Fresh keys for ``schemes``; the id is derived from them unless given."""
        keys: dict[SignatureScheme, PrivateKey] = {}
        for scheme in schemes:
            backend = backend_for(scheme, (prefer or {}).get(scheme, BACKEND_AUTO))
            pair = backend.generate()
            keys[scheme] = PrivateKey(scheme, backend.name, pair.public, pair.private)
        if key_set_id is None:
            key_set_id = derive_key_set_id({s: k.public for s, k in keys.items()})
        return cls(key_set_id, keys)

    def public(self) -> KeySet:
        """The public :class:`KeySet`."""
        return KeySet(self.key_set_id, {s: k.public for s, k in self.keys.items()})


# --- signature lines ------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignatureLine:
    """One signature: algorithm wire id, key id, signature bytes."""

    algorithm: str
    key_id: str
    signature: bytes = field(repr=False)

    def __post_init__(self) -> None:
        # Fields sit in one space-separated line: keep them token-shaped so a
        # crafted line cannot smuggle a second line or field into a note.
        for name in ("algorithm", "key_id"):
            value = getattr(self, name)
            if not isinstance(value, str) or _TOKEN_RE.fullmatch(value) is None:
                raise NoteFormatError(f"signature line {name} {value!r} is not a plain token")
        if not isinstance(self.signature, bytes) or not self.signature:
            raise NoteFormatError("signature line has no signature bytes")

    def text(self) -> str:
        """The note line, without its trailing newline."""
        return f"{SIGNATURE_PREFIX}{self.algorithm} {self.key_id} {b64(self.signature)}"

    @property
    def scheme(self) -> SignatureScheme | None:
        """The scheme, or None for an algorithm this verifier does not know."""
        try:
            return SignatureScheme(self.algorithm)
        except ValueError:
            return None


def sign_message(message: bytes, private_key_set: PrivateKeySet) -> tuple[SignatureLine, ...]:
    """Sign ``message`` with every key of the set, in scheme order."""
    lines: list[SignatureLine] = []
    for scheme in SignatureScheme:
        key = private_key_set.keys.get(scheme)
        if key is None:
            continue
        signature = backend_for(scheme, key.backend).sign(key.private, message)
        lines.append(SignatureLine(scheme.value, key_id(scheme, key.public), signature))
    if not lines:
        raise SigningError(f"key set {private_key_set.key_set_id} holds no keys")
    return tuple(lines)


def require_canonical_lines(kind: str, lines: Sequence[SignatureLine]) -> None:
    """Refuse signature lines that are not exactly what :func:`sign_message`
    writes: every algorithm known, one line per scheme at most, scheme order
    (``ml-dsa-65``, ``fn-dsa-512``, ``slh-dsa-sha2-128f``).

    For formats with one canonical text (attestation bundles): a line a
    verifier would ignore, or lines in another order, would be bytes that
    change without changing the verdict.
    """
    order = list(SignatureScheme)
    last = -1
    for line in lines:
        scheme = line.scheme
        if scheme is None:
            raise NoteFormatError(
                f"{kind}: signature line of unknown algorithm {line.algorithm!r} "
                f"(known: {', '.join(s.value for s in order)})"
            )
        position = order.index(scheme)
        if position <= last:
            raise NoteFormatError(
                f"{kind}: signature line {scheme.value} is a duplicate or out of scheme order "
                f"({', '.join(s.value for s in order)})"
            )
        last = position


# --- verdicts -------------------------------------------------------------


class SchemeStatus(StrEnum):
    """What became of one scheme's signature."""

    VALID = "valid"
    INVALID_SIGNATURE = "invalid-signature"
    MISSING = "missing"
    UNKNOWN_KEY_ID = "unknown-key-id"
    DUPLICATE = "duplicate"


class SealFailure(StrEnum):
    """Why a seal was refused (first one in :attr:`SealVerdict.failures`)."""

    KEY_SET_MISMATCH = "key-set-mismatch"
    MISSING_SIGNATURE = "missing-signature"
    DUPLICATE_SIGNATURE = "duplicate-signature"
    UNKNOWN_KEY_ID = "unknown-key-id"
    INVALID_SIGNATURE = "invalid-signature"
    SIZE_MISMATCH = "size-mismatch"
    ROOT_MISMATCH = "root-mismatch"
    TOPICS_MISMATCH = "topics-mismatch"


_FAILURE_OF_STATUS = {
    SchemeStatus.MISSING: SealFailure.MISSING_SIGNATURE,
    SchemeStatus.DUPLICATE: SealFailure.DUPLICATE_SIGNATURE,
    SchemeStatus.UNKNOWN_KEY_ID: SealFailure.UNKNOWN_KEY_ID,
    SchemeStatus.INVALID_SIGNATURE: SealFailure.INVALID_SIGNATURE,
}


@dataclass(frozen=True, slots=True)
class SealVerdict:
    """The outcome of verifying a seal: every check's result, not just the first."""

    statuses: Mapping[SignatureScheme, SchemeStatus]
    failures: tuple[SealFailure, ...]

    @property
    def ok(self) -> bool:
        return not self.failures

    @property
    def failure(self) -> SealFailure | None:
        return self.failures[0] if self.failures else None


def check_signatures(
    message: bytes,
    signatures: Sequence[SignatureLine],
    key_set: KeySet,
    required: Collection[SignatureScheme],
    backends: Mapping[SignatureScheme, SigningBackend] | None = None,
) -> dict[SignatureScheme, SchemeStatus]:
    """Per-scheme status of ``signatures`` over ``message`` under ``key_set``.

    Covers every required scheme and every known scheme that has a line.
    A status is VALID only when exactly one line names the scheme, its key
    id is the key set's key id for that scheme, and the signature verifies.
    """
    if not required:
        # Requiring nothing would accept an unsigned seal.
        raise ValueError("at least one signature scheme must be required")
    by_scheme: dict[SignatureScheme, list[SignatureLine]] = {}
    for line in signatures:
        scheme = line.scheme
        if scheme is not None:  # unknown algorithms are ignored, never trusted
            by_scheme.setdefault(scheme, []).append(line)
    statuses: dict[SignatureScheme, SchemeStatus] = {}
    for scheme in SignatureScheme:
        lines = by_scheme.get(scheme, [])
        if scheme not in required and not lines:
            continue
        if not lines:
            statuses[scheme] = SchemeStatus.MISSING
            continue
        if len(lines) > 1:
            # Two lines for one scheme is ambiguous; refuse rather than pick.
            statuses[scheme] = SchemeStatus.DUPLICATE
            continue
        line = lines[0]
        expected_id = key_set.key_id(scheme)
        if expected_id is None or not hmac.compare_digest(
            line.key_id.encode("utf-8"), expected_id.encode("ascii")
        ):
            statuses[scheme] = SchemeStatus.UNKNOWN_KEY_ID
            continue
        backend = (backends or {}).get(scheme) or backend_for(scheme)
        valid = backend.verify(key_set.public_keys[scheme], message, line.signature)
        statuses[scheme] = SchemeStatus.VALID if valid else SchemeStatus.INVALID_SIGNATURE
    return statuses


def _verdict(
    statuses: Mapping[SignatureScheme, SchemeStatus], failures: list[SealFailure]
) -> SealVerdict:
    for status in statuses.values():
        if status is not SchemeStatus.VALID:
            failures.append(_FAILURE_OF_STATUS[status])
    order = list(SealFailure)
    unique = sorted(set(failures), key=order.index)
    return SealVerdict(MappingProxyType(dict(statuses)), tuple(unique))


# --- the header -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SealHeader:
    """What a seal's signatures cover; see the module docstring for bytes."""

    producer_id: str
    seal_seq: int
    tree_size: int
    first_producer_seq: int
    merkle_root: bytes
    prev_seal_hash: bytes
    key_set_id: str
    sealed_at_us: int
    leaf_topics_digest: bytes | None = None

    def __post_init__(self) -> None:
        check_id("producer id", self.producer_id)
        check_id("key set id", self.key_set_id)
        for name in ("seal_seq", "tree_size", "first_producer_seq", "sealed_at_us"):
            check_uint(name, getattr(self, name))
        if self.tree_size < 1:
            raise NoteFormatError("a seal covers at least one event (tree_size >= 1)")
        for name in ("merkle_root", "prev_seal_hash", "leaf_topics_digest"):
            value = getattr(self, name)
            if name == "leaf_topics_digest" and value is None:
                continue
            if not isinstance(value, bytes) or len(value) != HASH_SIZE:
                raise NoteFormatError(f"{name} must be {HASH_SIZE} bytes")

    def canonical_bytes(self) -> bytes:
        """The signed text: nine (ten with topics) ``\\n``-terminated lines."""
        lines = [
            SEAL_FORMAT,
            self.producer_id,
            f"seal {self.seal_seq}",
            f"size {self.tree_size}",
            f"first {self.first_producer_seq}",
            f"root {b64(self.merkle_root)}",
            f"prev {b64(self.prev_seal_hash)}",
            f"keyset {self.key_set_id}",
            f"at {self.sealed_at_us}",
        ]
        if self.leaf_topics_digest is not None:
            lines.append(f"topics {b64(self.leaf_topics_digest)}")
        return "".join(line + "\n" for line in lines).encode("ascii")


def leaf_topics_digest(leaf_topics: Sequence[str]) -> bytes | None:
    """The digest a header signs for its leaves' topics; None for no topics."""
    if not leaf_topics:
        return None
    return hash_fields(LEAF_TOPICS_DOMAIN, *(t.encode("utf-8") for t in leaf_topics))


def note_bytes(header: SealHeader, signatures: Sequence[SignatureLine]) -> bytes:
    """The full signed note: header text, blank line, signature lines."""
    sig_text = "".join(line.text() + "\n" for line in signatures)
    return header.canonical_bytes() + b"\n" + sig_text.encode("utf-8")


def _field(line: str, name: str) -> str:
    prefix = name + " "
    if not line.startswith(prefix):
        raise NoteFormatError(f"expected a {name!r} line, got {line[:40]!r}")
    return line[len(prefix) :]


def parse_uint(kind: str, text: str) -> int:
    """Parse the canonical decimal text of an int in [0, 2^63): ASCII digits,
    no sign, no leading zero (one value, one text). Raises NoteFormatError."""
    if not (text.isascii() and text.isdigit()) or (len(text) > 1 and text[0] == "0"):
        raise NoteFormatError(f"{kind} {text[:40]!r} is not a canonical decimal integer")
    # The length check first: int() of a huge digit string is slow (and refused).
    if len(text) > _MAX_UINT_DIGITS or int(text) > _MAX_UINT:
        raise NoteFormatError(
            f"{kind} is out of range: {text[:40]!r} is not a canonical decimal integer below 2^63"
        )
    return int(text)


def parse_note(note: bytes) -> tuple[SealHeader, tuple[SignatureLine, ...]]:
    """Parse a note made by :func:`note_bytes`; anything non-canonical is refused.

    Parsing checks form only; call :func:`verify_header` for the signatures.
    """
    try:
        text = note.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise NoteFormatError("seal note is not UTF-8") from exc
    head, sep, tail = text.partition("\n\n")
    if not sep:
        raise NoteFormatError("seal note has no blank line before its signatures")
    lines = head.split("\n")
    if len(lines) not in (9, 10) or lines[0] != SEAL_FORMAT:
        raise NoteFormatError(f"seal header must be 9 or 10 lines starting {SEAL_FORMAT!r}")
    header = SealHeader(
        producer_id=check_id("producer id", lines[1]),
        seal_seq=parse_uint("seal", _field(lines[2], "seal")),
        tree_size=parse_uint("size", _field(lines[3], "size")),
        first_producer_seq=parse_uint("first", _field(lines[4], "first")),
        merkle_root=unb64("root", _field(lines[5], "root")),
        prev_seal_hash=unb64("prev", _field(lines[6], "prev")),
        key_set_id=check_id("key set id", _field(lines[7], "keyset")),
        sealed_at_us=parse_uint("at", _field(lines[8], "at")),
        leaf_topics_digest=(
            unb64("topics", _field(lines[9], "topics")) if len(lines) == 10 else None
        ),
    )
    if not tail.endswith("\n"):
        raise NoteFormatError("seal note must end with a newline")
    signatures: list[SignatureLine] = []
    for raw in tail[:-1].split("\n"):
        if not raw.startswith(SIGNATURE_PREFIX):
            raise NoteFormatError(f"not a signature line: {raw[:40]!r}")
        parts = raw[len(SIGNATURE_PREFIX) :].split(" ")
        if len(parts) != 3 or not all(parts):
            raise NoteFormatError(f"signature line needs 3 fields: {raw[:40]!r}")
        algorithm, kid, sig = parts
        signatures.append(SignatureLine(algorithm, kid, unb64("signature", sig)))
    # Belt and braces: the parse must round-trip to the exact bytes.
    if not hmac.compare_digest(note_bytes(header, signatures), note):
        raise NoteFormatError("seal note is not in canonical form")
    return header, tuple(signatures)


def seal_hash(header: SealHeader, signatures: Sequence[SignatureLine]) -> bytes:
    """The chain link: what the producer's next seal carries as ``prev``."""
    ordered = sorted(line.text().encode("utf-8") for line in signatures)
    return hash_fields(SEAL_HASH_DOMAIN, header.canonical_bytes(), *ordered)


def sign_header(header: SealHeader, private_key_set: PrivateKeySet) -> tuple[SignatureLine, ...]:
    """Sign the header with every key of ``private_key_set``."""
    if header.key_set_id != private_key_set.key_set_id:
        raise SigningError(
            f"header names key set {header.key_set_id}, "
            f"signing key set is {private_key_set.key_set_id}"
        )
    return sign_message(header.canonical_bytes(), private_key_set)


def verify_header(
    header: SealHeader,
    signatures: Sequence[SignatureLine],
    key_set: KeySet,
    required: Collection[SignatureScheme],
    backends: Mapping[SignatureScheme, SigningBackend] | None = None,
) -> SealVerdict:
    """Check the header's signatures against ``key_set``.

    ``key_set`` is the one the registry returned for (producer, key set id,
    sealed_at); the header must name that same key set. Every signature
    line of a known scheme is checked, required or not.
    """
    failures: list[SealFailure] = []
    if not hmac.compare_digest(header.key_set_id.encode(), key_set.key_set_id.encode()):
        failures.append(SealFailure.KEY_SET_MISMATCH)
    statuses = check_signatures(header.canonical_bytes(), signatures, key_set, required, backends)
    return _verdict(statuses, failures)


def verify_seal_batch(
    header: SealHeader,
    signatures: Sequence[SignatureLine],
    leaf_hashes: Sequence[bytes],
    key_set: KeySet,
    required: Collection[SignatureScheme],
    backends: Mapping[SignatureScheme, SigningBackend] | None = None,
    *,
    leaf_topics: Sequence[str] | None = None,
) -> SealVerdict:
    """:func:`verify_header`, plus: the leaf hashes are exactly the batch the
    header commits to (count equals ``tree_size``, root recomputes), and, when
    ``leaf_topics`` is given, it has one topic per leaf and matches the
    header's signed digest.

    Every check runs even after one fails, so the verdict lists all failures.
    """
    verdict = verify_header(header, signatures, key_set, required, backends)
    failures = list(verdict.failures)
    if len(leaf_hashes) != header.tree_size:
        failures.append(SealFailure.SIZE_MISMATCH)
    # A malformed leaf hash can never be part of the committed batch.
    root_ok = all(len(h) == HASH_SIZE for h in leaf_hashes) and hmac.compare_digest(
        root_from_leaf_hashes(leaf_hashes), header.merkle_root
    )
    if not root_ok:
        failures.append(SealFailure.ROOT_MISMATCH)
    if leaf_topics is not None:
        digest = leaf_topics_digest(leaf_topics)
        topics_ok = (
            (not leaf_topics or len(leaf_topics) == header.tree_size)
            and (digest is None) == (header.leaf_topics_digest is None)
            and (
                digest is None
                or header.leaf_topics_digest is None
                or hmac.compare_digest(digest, header.leaf_topics_digest)
            )
        )
        if not topics_ok:
            failures.append(SealFailure.TOPICS_MISMATCH)
    order = list(SealFailure)
    return SealVerdict(verdict.statuses, tuple(sorted(set(failures), key=order.index)))
