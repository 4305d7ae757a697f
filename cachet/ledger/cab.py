"""Cache Attestation Bundles (CAB): one event, provable offline.

A bundle carries everything needed to show, with no broker and no Avro
library, that one event's exact log bytes were sealed by a producer whose
key set the trust anchor registered: the event bytes, its inclusion proof,
the seal as its signed note, the producer's key set, the anchor-signed
registration statement, and the anchor's public key set. The format is
specified byte by byte in ``docs/cab-format.md``; :func:`encode_bundle` and
:func:`decode_bundle` implement it, :func:`verify_bundle` runs every check.

A bundle that brings its own anchor proves nothing by itself (anyone can
make an anchor and sign a registration with it): the verifier must pin the
anchor, by its public key set or by its fingerprint
(:func:`anchor_fingerprint`, the id derived from the anchor's keys). An
unpinned verification fails its ``anchor-pinned`` check.

What a bundle cannot prove: that the key set was not revoked or rotated
later (the registry's later statements are not in it), and the seal's place
in its producer's hash chain (``prev`` is signed, but the previous seal is
not carried). Both need the log or an archive.
"""

from __future__ import annotations

import enum
import functools
import hmac
import logging
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cachet.crypto.merkle import HASH_SIZE, inclusion_proof, leaf_hash, verify_inclusion
from cachet.crypto.registry import registration_statement
from cachet.crypto.seal import (
    KeySet,
    NoteFormatError,
    SchemeStatus,
    SealHeader,
    SignatureLine,
    check_id,
    check_signatures,
    derive_key_set_id,
    note_bytes,
    parse_note,
    verify_header,
)
from cachet.crypto.seal import b64 as seal_b64
from cachet.crypto.seal import unb64 as seal_unb64
from cachet.crypto.signing import SignatureScheme, key_id
from cachet.errors import CachetError
from cachet.ledger.identity import ProducerIdError, identity_of

if TYPE_CHECKING:  # the bundle code itself needs no Kafka and no Avro
    from cachet.ledger.verifier import Applied
    from schemas.codec import EventCodec

__all__ = [
    "CAB_MAGIC",
    "CAB_VERSION",
    "Bundle",
    "BundleReport",
    "CabCheck",
    "CabError",
    "CabFormatError",
    "CheckOutcome",
    "CheckResult",
    "Registration",
    "Section",
    "anchor_fingerprint",
    "build_bundle",
    "decode_bundle",
    "encode_bundle",
    "encode_key_set",
    "encode_signature_lines",
    "parse_key_set",
    "parse_registration",
    "parse_signature_lines",
    "verify_bundle",
]

log = logging.getLogger(__name__)

CAB_MAGIC = b"CACHETCAB"
CAB_VERSION = 1
KEY_SET_FORMAT = "cachet.key-set/v1"
REGISTRATION_FORMAT = "cachet.key-registration/v1"
# Bounds that keep a hostile bundle from making the parser allocate or loop
# without limit: a proof of a tree of 2^63 leaves has at most 63 hashes.
MAX_BUNDLE_BYTES = 16 * 1024 * 1024
MAX_PROOF_HASHES = 64
_U64_MAX = 2**63 - 1  # the seal header's integer range (Avro long)


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


class CabCheck(enum.StrEnum):
    """Every verification step, in the order they run and are reported."""

    PARSE = "parse"
    ANCHOR_PINNED = "anchor-pinned"
    REGISTRATION_SIGNED = "registration-signed-by-anchor"
    REGISTRATION_MATCHES = "registration-matches-seal"
    SEAL_SIGNED = "seal-signed"
    KEY_VALID_AT_SEAL = "key-valid-at-seal"
    INCLUSION = "inclusion"
    ENVELOPE = "event-envelope"


class CheckOutcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Only when an earlier step made this one impossible (a bundle that does
    # not parse), or the envelope check when no Avro codec is installed.
    NOT_RUN = "not-run"


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One step's result and what a person needs to know about it."""

    check: CabCheck
    outcome: CheckOutcome
    detail: str

    @property
    def passed(self) -> bool:
        return self.outcome is CheckOutcome.PASSED


# --- the pieces -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Registration:
    """A parsed ``cachet.key-registration/v1`` statement."""

    producer_identity: str
    key_set: KeySet
    valid_from_us: int


@dataclass(frozen=True, slots=True)
class Bundle:
    """A bundle's content; ``encode_bundle`` gives its one byte form."""

    event_bytes: bytes
    leaf_index: int
    tree_size: int
    proof: tuple[bytes, ...]
    seal_note: bytes
    producer_key_set: KeySet
    registration: bytes
    registration_signatures: tuple[SignatureLine, ...]
    anchor: KeySet


def _b64(data: bytes) -> str:
    return seal_b64(data)


def _unb64(kind: str, text: str) -> bytes:
    try:
        return seal_unb64(kind, text)
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
    if not text.isascii() or not text.isdigit() or (len(text) > 1 and text[0] == "0"):
        raise CabFormatError(f"{kind} {text[:40]!r} is not a canonical decimal integer")
    value = int(text)
    if value > _U64_MAX:
        raise CabFormatError(f"{kind} is out of range")
    return value


def encode_key_set(key_set: KeySet) -> bytes:
    """A key set section: format line, ``keyset`` line, one ``key`` line per
    scheme in scheme order (the same key lines registration statements use)."""
    lines = [KEY_SET_FORMAT, f"keyset {key_set.key_set_id}"]
    for scheme in SignatureScheme:
        public = key_set.public_keys.get(scheme)
        if public is not None:
            lines.append(f"key {scheme.value} {key_id(scheme, public)} {_b64(public)}")
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
    return tuple(out)


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


def anchor_fingerprint(anchor: KeySet) -> str:
    """What a verifier pins: the key set id derived from the anchor's public
    keys (``ks-`` + 32 hex digits). It names the keys, not a chosen label,
    so a self-made anchor cannot borrow a trusted anchor's fingerprint."""
    return derive_key_set_id(dict(anchor.public_keys))


# --- the container ------------------------------------------------------------


def _section(tag: Section, value: bytes) -> bytes:
    if not value:
        raise CabError(f"section {tag.name} is empty")
    return bytes([tag]) + len(value).to_bytes(4, "big") + value


def _inclusion_bytes(leaf_index: int, tree_size: int, proof: Sequence[bytes]) -> bytes:
    for name, value in (("leaf index", leaf_index), ("tree size", tree_size)):
        if not 0 <= value <= _U64_MAX:
            raise CabError(f"{name} {value} out of range")
    if any(len(h) != HASH_SIZE for h in proof) or len(proof) > MAX_PROOF_HASHES:
        raise CabError("inclusion proof hashes must be 32 bytes each, at most 64")
    return leaf_index.to_bytes(8, "big") + tree_size.to_bytes(8, "big") + b"".join(proof)


def encode_bundle(bundle: Bundle) -> bytes:
    """The bundle's bytes (``docs/cab-format.md``)."""
    data = (
        CAB_MAGIC
        + CAB_VERSION.to_bytes(2, "big")
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
    if version != CAB_VERSION:
        raise CabFormatError(f"bundle version {version}; this verifier reads {CAB_VERSION}")
    sections: dict[Section, bytes] = {}
    pos = head
    for expected in Section:  # fixed order, each once: no duplicates, no extras
        if len(data) - pos < 5:
            raise CabFormatError(f"truncated before section {expected.name}")
        tag = data[pos]
        if tag != expected:
            raise CabFormatError(
                f"section tag 0x{tag:02x} at byte {pos}; expected {expected.name} (0x{expected:02x})"
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
    if leaf_index > _U64_MAX or tree_size > _U64_MAX:
        raise CabFormatError("leaf index or tree size out of range")
    try:
        parse_note(s[Section.SEAL_NOTE])
    except NoteFormatError as exc:
        raise CabFormatError(f"seal note: {exc}") from exc
    parse_registration(s[Section.REGISTRATION])
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
    )


# --- building -----------------------------------------------------------------


def build_bundle(
    applied: Applied,
    registration_statement: bytes,
    anchor_signatures: Sequence[SignatureLine],
    anchor: KeySet,
    *,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
) -> bytes:
    """The bundle for one verified event.

    ``registration_statement`` and ``anchor_signatures`` are the registration
    of the seal's key set (from its SigningKeyRegistered event). The bundle is
    verified against ``anchor`` before it is returned: a bundle that would
    not verify is an error here, never a file handed to an auditor.
    """
    seal = applied.seal
    ref = applied.event.seal_ref
    if ref is None:
        raise CabError(f"event {applied.event.event_id} carries no seal reference")
    if not applied.origin.raw:
        raise CabError(f"event {applied.event.event_id}: its log bytes were not kept")
    signatures = tuple(
        SignatureLine(s["algorithm"], s["key_id"], s["signature"])
        for s in seal.event.payload["signatures"]
    )
    try:
        registration = parse_registration(registration_statement)
    except CabFormatError as exc:
        raise CabError(f"registration statement: {exc}") from exc
    bundle = Bundle(
        event_bytes=applied.origin.raw,
        leaf_index=ref.leaf_index,
        tree_size=seal.header.tree_size,
        proof=tuple(inclusion_proof(ref.leaf_index, seal.leaf_hashes)),
        seal_note=note_bytes(seal.header, signatures),
        producer_key_set=registration.key_set,
        registration=registration_statement,
        registration_signatures=tuple(anchor_signatures),
        anchor=anchor,
    )
    data = encode_bundle(bundle)
    report = verify_bundle(data, pinned_anchor=anchor, required=required)
    if not report.ok:
        failed = "; ".join(f"{c.check.value}: {c.detail}" for c in report.failures)
        raise CabError(f"bundle for event {applied.event.event_id} does not verify: {failed}")
    return data


# --- verifying ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class BundleReport:
    """Every check's result plus what the bundle says it attests."""

    checks: tuple[CheckResult, ...]
    anchor_key_set_id: str | None = None
    anchor_fingerprint: str | None = None
    anchor_pinned: bool = False
    event_id: str | None = None
    event_type: str | None = None
    producer_id: str | None = None
    producer_seq: int | None = None
    seal_seq: int | None = None
    leaf_index: int | None = None
    tree_size: int | None = None
    sealed_at_us: int | None = None
    key_set_id: str | None = None

    @property
    def ok(self) -> bool:
        """True only when every check passed. The envelope check alone may be
        NOT_RUN (no Avro codec here): it reads the event, it proves nothing."""
        return all(
            c.passed or (c.check is CabCheck.ENVELOPE and c.outcome is CheckOutcome.NOT_RUN)
            for c in self.checks
        ) and any(c.check is CabCheck.INCLUSION and c.passed for c in self.checks)

    @property
    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if c.outcome is CheckOutcome.FAILED]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"name": c.check.value, "outcome": c.outcome.value, "detail": c.detail}
                for c in self.checks
            ],
            "anchor_key_set_id": self.anchor_key_set_id,
            "anchor_fingerprint": self.anchor_fingerprint,
            "anchor_pinned": self.anchor_pinned,
            "event_id": self.event_id,
            "event_type": self.event_type,
            "producer_id": self.producer_id,
            "producer_seq": self.producer_seq,
            "seal_seq": self.seal_seq,
            "leaf_index": self.leaf_index,
            "tree_size": self.tree_size,
            "sealed_at_us": self.sealed_at_us,
            "key_set_id": self.key_set_id,
        }


def _same_key_set(a: KeySet, b: KeySet) -> bool:
    # Compare the canonical encodings (id and every key), in constant time.
    return hmac.compare_digest(encode_key_set(a), encode_key_set(b))


def _result(check: CabCheck, passed: bool, detail: str) -> CheckResult:
    return CheckResult(check, CheckOutcome.PASSED if passed else CheckOutcome.FAILED, detail)


def _check_pin(
    anchor: KeySet, pinned_anchor: KeySet | None, pinned_fingerprint: str | None
) -> CheckResult:
    fingerprint = anchor_fingerprint(anchor)
    if pinned_anchor is None and pinned_fingerprint is None:
        return _result(
            CabCheck.ANCHOR_PINNED,
            False,
            f"no anchor pinned: the bundle's own anchor {anchor.key_set_id} "
            f"(fingerprint {fingerprint}) proves nothing until pinned",
        )
    problems: list[str] = []
    if pinned_anchor is not None and not _same_key_set(anchor, pinned_anchor):
        problems.append(
            f"bundle anchor {anchor.key_set_id} ({fingerprint}) is not the pinned anchor "
            f"{pinned_anchor.key_set_id} ({anchor_fingerprint(pinned_anchor)})"
        )
    if pinned_fingerprint is not None and not hmac.compare_digest(
        fingerprint.encode("ascii"), pinned_fingerprint.encode("utf-8")
    ):
        problems.append(f"bundle anchor fingerprint {fingerprint} != pinned {pinned_fingerprint}")
    if problems:
        return _result(CabCheck.ANCHOR_PINNED, False, "; ".join(problems))
    return _result(CabCheck.ANCHOR_PINNED, True, f"anchor {anchor.key_set_id} ({fingerprint})")


def _check_registration_signed(
    bundle: Bundle, trusted: KeySet, required: Collection[SignatureScheme]
) -> CheckResult:
    statuses = check_signatures(
        bundle.registration, bundle.registration_signatures, trusted, required
    )
    bad = {s.value: st.value for s, st in statuses.items() if st is not SchemeStatus.VALID}
    lacking = sorted(s.value for s in required if statuses.get(s) is not SchemeStatus.VALID)
    if bad or lacking:
        return _result(
            CabCheck.REGISTRATION_SIGNED, False, f"under anchor {trusted.key_set_id}: {bad}"
        )
    return _result(
        CabCheck.REGISTRATION_SIGNED,
        True,
        f"{', '.join(sorted(s.value for s in statuses))} valid under {trusted.key_set_id}",
    )


def _check_registration_matches(
    bundle: Bundle,
    registration: Registration,
    header: SealHeader,
    required: Collection[SignatureScheme],
) -> CheckResult:
    problems: list[str] = []
    if not _same_key_set(registration.key_set, bundle.producer_key_set):
        problems.append("the producer key set section differs from the registered keys")
    if not hmac.compare_digest(
        registration.key_set.key_set_id.encode("ascii"), header.key_set_id.encode("ascii")
    ):
        problems.append(
            f"seal names key set {header.key_set_id}, "
            f"registration is for {registration.key_set.key_set_id}"
        )
    try:
        identity = identity_of(header.producer_id)
    except ProducerIdError as exc:
        problems.append(str(exc))
    else:
        # A key set registered for one identity must not vouch for another's seals.
        if not hmac.compare_digest(
            identity.encode("ascii"), registration.producer_identity.encode("ascii")
        ):
            problems.append(
                f"seal producer {header.producer_id} is not identity "
                f"{registration.producer_identity}"
            )
    lacking = sorted(s.value for s in required if s not in registration.key_set.public_keys)
    if lacking:
        problems.append(f"registered key set lacks required schemes {lacking}")
    if problems:
        return _result(CabCheck.REGISTRATION_MATCHES, False, "; ".join(problems))
    return _result(
        CabCheck.REGISTRATION_MATCHES,
        True,
        f"key set {header.key_set_id} registered for {registration.producer_identity}",
    )


def _check_seal(
    header: SealHeader,
    signatures: Sequence[SignatureLine],
    key_set: KeySet,
    required: Collection[SignatureScheme],
) -> CheckResult:
    verdict = verify_header(header, signatures, key_set, required)
    lacking = sorted(s.value for s in required if verdict.statuses.get(s) is not SchemeStatus.VALID)
    if not verdict.ok or lacking:
        statuses = {s.value: st.value for s, st in verdict.statuses.items()}
        failures = [f.value for f in verdict.failures]
        return _result(CabCheck.SEAL_SIGNED, False, f"{failures} {statuses}")
    return _result(
        CabCheck.SEAL_SIGNED,
        True,
        f"seal {header.seal_seq} of {header.producer_id}: "
        f"{', '.join(sorted(s.value for s in verdict.statuses))} valid",
    )


def _check_inclusion(bundle: Bundle, header: SealHeader) -> CheckResult:
    if bundle.tree_size != header.tree_size:
        return _result(
            CabCheck.INCLUSION,
            False,
            f"inclusion section says tree size {bundle.tree_size}, seal says {header.tree_size}",
        )
    # Root and size both come from the signed note (never from the proof
    # section alone): an RFC 9162 root does not commit to its tree size.
    ok = verify_inclusion(
        leaf_hash(bundle.event_bytes),
        bundle.leaf_index,
        header.tree_size,
        bundle.proof,
        header.merkle_root,
    )
    return _result(
        CabCheck.INCLUSION,
        ok,
        f"leaf {bundle.leaf_index} of {header.tree_size}"
        + ("" if ok else ": proof does not lead to the sealed root"),
    )


@functools.lru_cache(maxsize=1)
def _default_codec() -> EventCodec | None:
    try:
        from schemas.codec import EventCodec
    except ImportError:  # an auditor's machine without fastavro
        return None
    return EventCodec()


def _check_envelope(
    bundle: Bundle, header: SealHeader, codec: EventCodec | None
) -> tuple[CheckResult, dict[str, Any]]:
    if codec is None:
        return CheckResult(CabCheck.ENVELOPE, CheckOutcome.NOT_RUN, "no Avro codec here"), {}
    from schemas.codec import DecodeError

    try:
        event = codec.decode(bundle.event_bytes)
    except DecodeError as exc:
        return _result(CabCheck.ENVELOPE, False, f"event does not decode: {exc}"), {}
    seen = {
        "event_id": event.event_id,
        "event_type": event.type.value,
        "producer_seq": event.producer_seq,
    }
    problems: list[str] = []
    if event.producer_id != header.producer_id:
        problems.append(f"event names producer {event.producer_id}, seal {header.producer_id}")
    if event.producer_seq != header.first_producer_seq + bundle.leaf_index:
        problems.append(
            f"producer seq {event.producer_seq} != first {header.first_producer_seq} "
            f"+ leaf {bundle.leaf_index}"
        )
    ref = event.seal_ref
    if ref is None or (ref.seal_seq, ref.leaf_index) != (header.seal_seq, bundle.leaf_index):
        problems.append(
            f"event's seal reference {ref} is not seal {header.seal_seq} leaf {bundle.leaf_index}"
        )
    if problems:
        return _result(CabCheck.ENVELOPE, False, "; ".join(problems)), seen
    return (
        _result(
            CabCheck.ENVELOPE,
            True,
            f"{event.type.value} {event.event_id}, producer seq {event.producer_seq}",
        ),
        seen,
    )


def verify_bundle(
    data: bytes,
    *,
    pinned_anchor: KeySet | None,
    pinned_fingerprint: str | None = None,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
    codec: EventCodec | None = None,
) -> BundleReport:
    """Run every check on a bundle; ``ok`` only if all pass.

    The anchor must be pinned: by ``pinned_anchor`` (the trusted public key
    set; the registration is then verified under it, never under the
    bundle's copy) and/or ``pinned_fingerprint`` (see
    :func:`anchor_fingerprint`). With neither, ``anchor-pinned`` fails and
    the report only says what the bundle claims. Every step runs even after
    one fails, so the report lists every problem. Never raises on bad bytes.
    """
    if not required:
        raise ValueError("at least one signature scheme must be required")
    try:
        bundle = decode_bundle(data)
        header, signatures = parse_note(bundle.seal_note)
        registration = parse_registration(bundle.registration)
    except (CabFormatError, NoteFormatError) as exc:
        checks = [_result(CabCheck.PARSE, False, str(exc))] + [
            CheckResult(c, CheckOutcome.NOT_RUN, "the bundle did not parse")
            for c in CabCheck
            if c is not CabCheck.PARSE
        ]
        return BundleReport(tuple(checks))
    checks = [_result(CabCheck.PARSE, True, f"{len(data)} bytes, version {CAB_VERSION}")]
    pin = _check_pin(bundle.anchor, pinned_anchor, pinned_fingerprint)
    checks.append(pin)
    # The trust root is the pinned key set when there is one; the bundle's
    # copy is used only when pinned by fingerprint (or, unpinned, to report).
    trusted = pinned_anchor if pinned_anchor is not None else bundle.anchor
    checks.append(_check_registration_signed(bundle, trusted, required))
    checks.append(_check_registration_matches(bundle, registration, header, required))
    # Seal signatures are checked under the *registered* keys, so a swapped
    # producer key set section cannot make a forged seal verify.
    checks.append(_check_seal(header, signatures, registration.key_set, required))
    valid = registration.valid_from_us <= header.sealed_at_us
    checks.append(
        _result(
            CabCheck.KEY_VALID_AT_SEAL,
            valid,
            f"valid from {registration.valid_from_us}, sealed at {header.sealed_at_us}",
        )
    )
    checks.append(_check_inclusion(bundle, header))
    envelope, seen = _check_envelope(bundle, header, codec or _default_codec())
    checks.append(envelope)
    return BundleReport(
        tuple(checks),
        anchor_key_set_id=bundle.anchor.key_set_id,
        anchor_fingerprint=anchor_fingerprint(bundle.anchor),
        anchor_pinned=pin.passed,
        event_id=seen.get("event_id"),
        event_type=seen.get("event_type"),
        producer_id=header.producer_id,
        producer_seq=seen.get("producer_seq"),
        seal_seq=header.seal_seq,
        leaf_index=bundle.leaf_index,
        tree_size=header.tree_size,
        sealed_at_us=header.sealed_at_us,
        key_set_id=header.key_set_id,
    )
