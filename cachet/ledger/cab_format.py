"""The Cache Attestation Bundle (CAB) byte format, versions 1 and 2.

A bundle is ``CACHETCAB``, a 2-byte big-endian version, then its sections
(tag byte, 4-byte big-endian length, value) in the one fixed order of
:class:`Section`, each exactly once: the seven of an event bundle (version
1), or those seven and the read section of a read bundle (version 2: one
read of a CacheReadBatch event, named by its index). The inner texts (key sets, signature
lines, the registration statement) are ASCII/UTF-8 lines with one canonical
form. The format is specified byte by byte in ``docs/cab-format.md``;
:func:`encode_bundle` and :func:`decode_bundle` implement it.

Everything here checks *form* only, never trust: that a bundle parses says
nothing about who signed it. :mod:`cachet.ledger.cab` builds bundles and
runs the verification checks.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Sequence
from dataclasses import dataclass

from cachet.crypto.merkle import HASH_SIZE
from cachet.crypto.registry import registration_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    NoteFormatError,
    SignatureLine,
    b64,
    check_id,
    parse_note,
    parse_uint,
    require_canonical_lines,
    unb64,
)
from cachet.crypto.signing import key_id
from cachet.errors import CachetError

__all__ = [
    "CAB_MAGIC",
    "CAB_READ_VERSION",
    "CAB_VERSION",
    "KEY_SET_FORMAT",
    "MAX_BUNDLE_BYTES",
    "MAX_PROOF_HASHES",
    "REGISTRATION_FORMAT",
    "Bundle",
    "CabError",
    "CabFormatError",
    "ReadClaim",
    "Registration",
    "Section",
    "decode_bundle",
    "encode_bundle",
    "encode_key_set",
    "encode_signature_lines",
    "parse_key_set",
    "parse_registration",
    "parse_signature_lines",
    "sections_of",
]

CAB_MAGIC = b"CACHETCAB"
CAB_VERSION = 1  # an event bundle: one event
CAB_READ_VERSION = 2  # a read bundle: one read of a CacheReadBatch event
KEY_SET_FORMAT = "cachet.key-set/v1"
REGISTRATION_FORMAT = "cachet.key-registration/v1"
# Bounds that keep a hostile bundle from making the parser allocate or loop
# without limit: a proof of a tree of 2^63 leaves has at most 63 hashes.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_PROOF_HASHES = 64
_U64_MAX = 2**63 - 1  # the seal header's integer range (Avro long)
# The event's seal reference stores its leaf index as an Avro int: a larger
# index can name no event, so it is refused before any check runs.
_LEAF_INDEX_MAX = 2**31 - 1
_U32_MAX = 2**32 - 1


class CabError(CachetError):
    """A bundle could not be built (the inputs do not make a valid bundle)."""


class CabFormatError(CabError):
    """Bytes that are not a bundle in canonical form; the message says where."""


class Section(enum.IntEnum):
    """Section tags, in the one order they must appear (each exactly once)."""

    EVENT = 0x01
    INCLUSION = 0x02
    SEAL_NOTE = 0x03
    PRODUCER_KEY_SET = 0x04
    REGISTRATION = 0x05
    REGISTRATION_SIGNATURES = 0x06
    ANCHOR_KEY_SET = 0x07
    READ = 0x08  # read bundles (version 2) only


def sections_of(version: int) -> tuple[Section, ...]:
    """The sections a bundle of ``version`` has, in their one order."""
    return tuple(s for s in Section if s is not Section.READ or version == CAB_READ_VERSION)


# --- the pieces -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """A parsed ``cachet.key-registration/v1`` statement."""

    producer_identity: str
    key_set: KeySet
    valid_from_us: int


@dataclass(frozen=True, slots=True)
class ReadClaim:
    """The read a read bundle proves: its ``index`` in the event's ``reads``
    array and ``record``, that read's Avro binary encoding as a
    ``cachet.events.CacheRead`` of the event's writer schema set."""

    index: int
    record: bytes


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle's content; ``encode_bundle`` gives its one byte form. With
    ``read`` it is a read bundle (version 2), without an event bundle (1)."""

    event_bytes: bytes
    leaf_index: int
    tree_size: int
    proof: tuple[bytes, ...]
    seal_note: bytes
    producer_key_set: KeySet
    registration: bytes
    registration_signatures: tuple[SignatureLine, ...]
    anchor: KeySet
    read: ReadClaim | None = None

    @property
    def version(self) -> int:
        return CAB_VERSION if self.read is None else CAB_READ_VERSION


def _unb64(kind: str, text: str) -> bytes:
    # The seal note's canonical base64, refused as a CAB format error.
    try:
        return unb64(kind, text)
    except NoteFormatError as exc:
        raise CabFormatError(str(exc)) from exc


def _text_lines(kind: str, data: bytes) -> list[str]:
    """``\\n``-terminated ASCII lines (the last one terminated too)."""
    try:
        text = data.decode("ascii")
    except UnicodeDecodeError as exc:
        raise CabFormatError(f"{kind} is not ASCII") from exc
    if not text.endswith("\n"):
        raise CabFormatError(f"{kind} must end with a newline")
    return text[:-1].split("\n")


def _uint(kind: str, text: str) -> int:
    # The seal note's canonical integers, refused as a CAB format error.
    try:
        return parse_uint(kind, text)
    except NoteFormatError as exc:
        raise CabFormatError(str(exc)) from exc


def encode_key_set(key_set: KeySet) -> bytes:
    """A key set section: format line, ``keyset`` line, one ``key`` line per
    scheme in scheme order (the same key lines registration statements use)."""
    lines = [KEY_SET_FORMAT, f"keyset {key_set.key_set_id}"]
    for scheme in SignatureScheme:
        public = key_set.public_keys.get(scheme)
        if public is not None:
            lines.append(f"key {scheme.value} {key_id(scheme, public)} {b64(public)}")
    return "".join(line + "\n" for line in lines).encode("ascii")


def _parse_key_lines(kind: str, lines: Sequence[str]) -> dict[SignatureScheme, bytes]:
    keys: dict[SignatureScheme, bytes] = {}
    for line in lines:
        parts = line.split(" ")
        if len(parts) != 4 or parts[0] != "key":
            raise CabFormatError(f"{kind}: not a key line: {line[:40]!r}")
        try:
            scheme = SignatureScheme(parts[1])
        except ValueError as exc:
            raise CabFormatError(f"{kind}: unknown scheme {parts[1][:40]!r}") from exc
        if scheme in keys:
            raise CabFormatError(f"{kind}: two keys for {scheme.value}")
        keys[scheme] = _unb64(f"{kind} {scheme.value} key", parts[3])
    return keys


def _key_set(kind: str, key_set_id: str, keys: dict[SignatureScheme, bytes]) -> KeySet:
    try:
        return KeySet(key_set_id, keys)
    except (ValueError, NoteFormatError) as exc:
        raise CabFormatError(f"{kind}: {exc}") from exc


def parse_key_set(data: bytes) -> KeySet:
    """Parse a key set section; refuses anything :func:`encode_key_set` would
    not have written byte for byte (order, key ids, base64, duplicates)."""
    lines = _text_lines("key set", data)
    if len(lines) < 3 or lines[0] != KEY_SET_FORMAT or not lines[1].startswith("keyset "):
        raise CabFormatError(f"key set must start {KEY_SET_FORMAT!r}, 'keyset <id>', a key")
    key_set = _key_set(
        "key set", lines[1][len("keyset ") :], _parse_key_lines("key set", lines[2:])
    )
    # The round trip checks what the line parser did not: key ids, scheme order.
    if not hmac.compare_digest(encode_key_set(key_set), data):
        raise CabFormatError(f"key set {key_set.key_set_id} is not in canonical form")
    return key_set


def encode_signature_lines(lines: Sequence[SignatureLine]) -> bytes:
    """Signature lines exactly as a signed note writes them, each ``\\n``-ended."""
    return "".join(line.text() + "\n" for line in lines).encode("utf-8")


def parse_signature_lines(data: bytes) -> tuple[SignatureLine, ...]:
    """Parse at least one signature line (``\\u2014 <alg> <key id> <b64 sig>``)."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CabFormatError("signature lines are not UTF-8") from exc
    if not text.endswith("\n"):
        raise CabFormatError("signature lines must end with a newline")
    out: list[SignatureLine] = []
    for raw in text[:-1].split("\n"):
        prefix = "\u2014 "
        parts = raw[len(prefix) :].split(" ") if raw.startswith(prefix) else []
        if len(parts) != 3:
            raise CabFormatError(f"not a signature line: {raw[:40]!r}")
        try:
            out.append(SignatureLine(parts[0], parts[1], _unb64("signature", parts[2])))
        except NoteFormatError as exc:
            raise CabFormatError(str(exc)) from exc
    if not hmac.compare_digest(encode_signature_lines(out), data):
        raise CabFormatError("signature lines are not in canonical form")
    _canonical_lines("registration signatures", out)
    return tuple(out)


def _canonical_lines(kind: str, lines: Sequence[SignatureLine]) -> None:
    # Known algorithms only, scheme order, one line per scheme: otherwise lines
    # could be added or reordered without changing the verdict.
    try:
        require_canonical_lines(kind, lines)
    except NoteFormatError as exc:
        raise CabFormatError(str(exc)) from exc


def parse_registration(statement: bytes) -> Registration:
    """Parse a registration statement; it must be exactly what
    :func:`~cachet.crypto.registry.registration_statement` writes."""
    lines = _text_lines("registration statement", statement)
    if (
        len(lines) < 5
        or lines[0] != REGISTRATION_FORMAT
        or not lines[1].startswith("producer ")
        or not lines[2].startswith("keyset ")
        or not lines[-1].startswith("valid-from ")
    ):
        raise CabFormatError(f"not a {REGISTRATION_FORMAT} statement")
    try:
        identity = check_id("producer id", lines[1][len("producer ") :])
    except NoteFormatError as exc:
        raise CabFormatError(str(exc)) from exc
    keys = _parse_key_lines("registration", lines[3:-1])
    key_set = _key_set("registration", lines[2][len("keyset ") :], keys)
    valid_from = _uint("valid-from", lines[-1][len("valid-from ") :])
    if not hmac.compare_digest(registration_statement(identity, key_set, valid_from), statement):
        raise CabFormatError("registration statement is not in canonical form")
    return Registration(identity, key_set, valid_from)


# --- the container ------------------------------------------------------------


def _section(tag: Section, value: bytes) -> bytes:
    if not value:
        raise CabError(f"section {tag.name} is empty")
    return bytes([tag]) + len(value).to_bytes(4, "big") + value


def _inclusion_bytes(leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    for name, value, top in (
        ("leaf index", leaf_index, _LEAF_INDEX_MAX),
        ("tree size", tree_size, _U64_MAX),
    ):
        if not 0 <= value <= top:
            raise CabError(f"{name} {value} out of range [0, {top}]")
    if any(len(h) != HASH_SIZE for h in proof) or len(proof) > MAX_PROOF_HASHES:
        raise CabError("inclusion proof hashes must be 32 bytes each, at most 64")
    return leaf_index.to_bytes(8, "big") + tree_size.to_bytes(8, "big") + b"".join(proof)


def _read_bytes(read: ReadClaim) -> bytes:
    if not 0 <= read.index <= _U32_MAX:
        raise CabError(f"read index {read.index} out of range [0, {_U32_MAX}]")
    if not read.record:
        raise CabError("the read's record is empty")
    return read.index.to_bytes(4, "big") + read.record


def encode_bundle(bundle: Bundle) -> bytes:
    """The bundle's bytes (``docs/cab-format.md``)."""
    data = (
        CAB_MAGIC
        + bundle.version.to_bytes(2, "big")
        + _section(Section.EVENT, bundle.event_bytes)
        + _section(
            Section.INCLUSION,
            _inclusion_bytes(bundle.leaf_index, bundle.tree_size, bundle.proof),
        )
        + _section(Section.SEAL_NOTE, bundle.seal_note)
        + _section(Section.PRODUCER_KEY_SET, encode_key_set(bundle.producer_key_set))
        + _section(Section.REGISTRATION, bundle.registration)
        + _section(
            Section.REGISTRATION_SIGNATURES, encode_signature_lines(bundle.registration_signatures)
        )
        + _section(Section.ANCHOR_KEY_SET, encode_key_set(bundle.anchor))
    )
    if bundle.read is not None:
        data += _section(Section.READ, _read_bytes(bundle.read))
    if len(data) > MAX_BUNDLE_BYTES:
        raise CabError(f"bundle of {len(data)} bytes exceeds {MAX_BUNDLE_BYTES}")
    return data


def _split_sections(data: bytes) -> dict[Section, bytes]:
    if len(data) > MAX_BUNDLE_BYTES:
        raise CabFormatError(f"{len(data)} bytes: larger than any bundle ({MAX_BUNDLE_BYTES})")
    head = len(CAB_MAGIC) + 2
    if len(data) < head or not hmac.compare_digest(data[: len(CAB_MAGIC)], CAB_MAGIC):
        raise CabFormatError("not a Cache Attestation Bundle (bad magic)")
    version = int.from_bytes(data[len(CAB_MAGIC) : head], "big")
    if version not in (CAB_VERSION, CAB_READ_VERSION):
        raise CabFormatError(
            f"bundle version {version}; this verifier reads {CAB_VERSION} and {CAB_READ_VERSION}"
        )
    sections: dict[Section, bytes] = {}
    pos = head
    # Fixed order, each once: no duplicates, no extras; a version 1 bundle
    # with a read section has trailing bytes, a version 2 one without it is
    # truncated (a read bundle cannot pass for an event bundle, nor the reverse).
    for expected in sections_of(version):
        if len(data) - pos < 5:
            raise CabFormatError(f"truncated before section {expected.name}")
        found = data[pos]
        if found != expected:
            raise CabFormatError(
                f"section tag 0x{found:02x} at byte {pos}; expected {expected.name} "
                f"(0x{expected:02x})"
            )
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        pos += 5
        if length == 0 or length > len(data) - pos:
            raise CabFormatError(f"section {expected.name}: length {length} is empty or truncated")
        sections[expected] = data[pos : pos + length]
        pos += length
    if pos != len(data):
        raise CabFormatError(f"{len(data) - pos} trailing byte(s) after the last section")
    return sections


def decode_bundle(data: bytes) -> Bundle:
    """Parse a bundle; anything not in canonical form raises
    :class:`CabFormatError`. Parsing checks form only, never trust."""
    s = _split_sections(bytes(data))
    inclusion = s[Section.INCLUSION]
    if len(inclusion) < 16 or (len(inclusion) - 16) % HASH_SIZE:
        raise CabFormatError("inclusion section is not 16 bytes + whole 32-byte hashes")
    proof = tuple(inclusion[i : i + HASH_SIZE] for i in range(16, len(inclusion), HASH_SIZE))
    if len(proof) > MAX_PROOF_HASHES:
        raise CabFormatError(f"inclusion proof of {len(proof)} hashes (at most {MAX_PROOF_HASHES})")
    leaf_index = int.from_bytes(inclusion[:8], "big")
    tree_size = int.from_bytes(inclusion[8:16], "big")
    if leaf_index > _LEAF_INDEX_MAX:
        raise CabFormatError(
            f"leaf index {leaf_index} does not fit an Avro int (at most {_LEAF_INDEX_MAX})"
        )
    if tree_size > _U64_MAX:
        raise CabFormatError(f"tree size {tree_size} is above 2^63 - 1")
    try:
        _, note_lines = parse_note(s[Section.SEAL_NOTE])
    except NoteFormatError as exc:
        raise CabFormatError(f"seal note: {exc}") from exc
    _canonical_lines("seal note", note_lines)
    parse_registration(s[Section.REGISTRATION])
    read = None
    if Section.READ in s:
        value = s[Section.READ]
        if len(value) < 5:
            raise CabFormatError("read section is not a 4-byte index and a record of 1+ bytes")
        read = ReadClaim(int.from_bytes(value[:4], "big"), value[4:])
    return Bundle(
        event_bytes=s[Section.EVENT],
        leaf_index=leaf_index,
        tree_size=tree_size,
        proof=proof,
        seal_note=s[Section.SEAL_NOTE],
        producer_key_set=parse_key_set(s[Section.PRODUCER_KEY_SET]),
        registration=s[Section.REGISTRATION],
        registration_signatures=parse_signature_lines(s[Section.REGISTRATION_SIGNATURES]),
        anchor=parse_key_set(s[Section.ANCHOR_KEY_SET]),
        read=read,
    )
