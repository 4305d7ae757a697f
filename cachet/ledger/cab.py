"""Cache Attestation Bundles (CAB): one event, or one read, provable offline.

A bundle carries everything needed to show, with no broker and no Avro
library, that one event's exact log bytes were sealed by a producer whose
key set the trust anchor registered: the event bytes, its inclusion proof,
the seal as its signed note, the producer's key set, the anchor-signed
registration statement, and the anchor's public key set. The format is
specified byte by byte in ``docs/cab-format.md``; :mod:`cachet.ledger.cab_format`
implements it, :func:`verify_bundle` (here) runs every check.

A read bundle (:func:`build_read_bundle`) proves one read of a
CacheReadBatch event: the bundle of the batch plus the read's index and the
read itself, which the ``read-in-batch`` step (:mod:`cachet.ledger.cab_read`)
finds at that index of the sealed batch.

A bundle that brings its own anchor proves nothing by itself (anyone can
make an anchor and sign a registration with it): the verifier must pin the
anchor, by its public key set or by its fingerprint
(:func:`anchor_fingerprint`, the id derived from the anchor's keys). An
unpinned verification fails its ``anchor-pinned`` check. Every key set in a
bundle (the anchor's and the producer's) must use its fingerprint as its id,
and signature lines come in scheme order with no unknown algorithm, so no
byte of a bundle can change without a check failing.

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
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any

from cachet.crypto.merkle import inclusion_proof, leaf_hash, verify_inclusion
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    NoteFormatError,
    SchemeStatus,
    SealHeader,
    SignatureLine,
    check_signatures,
    derive_key_set_id,
    note_bytes,
    parse_note,
    verify_header,
)
from cachet.ledger.cab_format import (
    CAB_MAGIC,
    CAB_READ_VERSION,
    Bundle,
    CabError,
    CabFormatError,
    ReadClaim,
    Registration,
    decode_bundle,
    encode_bundle,
    encode_key_set,
    parse_registration,
)
from cachet.ledger.identity import ProducerIdError, identity_of

if TYPE_CHECKING:  # the bundle code itself needs no Kafka and no Avro
    from cachet.ledger.verifier import Applied
    from cachet.schemas.codec import EventCodec

__all__ = [
    "BundleReport",
    "CabCheck",
    "CabError",  # defined with the format (CabFormatError subclasses it)
    "CheckOutcome",
    "CheckResult",
    "anchor_fingerprint",
    "build_bundle",
    "build_read_bundle",
    "verify_bundle",
]

log = logging.getLogger(__name__)


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
    READ = "read-in-batch"  # read bundles only


class CheckOutcome(enum.StrEnum):
    PASSED = "passed"
    FAILED = "failed"
    # Only when an earlier step made this one impossible (a bundle that does
    # not parse), or the envelope and read checks when no Avro codec is
    # installed (a read bundle then does not verify).
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


def anchor_fingerprint(anchor: KeySet) -> str:
    """What a verifier pins: the key set id derived from the anchor's public
    keys (``ks-`` + 32 hex digits). It names the keys, not a chosen label,
    so a self-made anchor cannot borrow a trusted anchor's fingerprint."""
    return derive_key_set_id(dict(anchor.public_keys))


# --- building -----------------------------------------------------------------


def _in_scheme_order(kind: str, lines: Sequence[SignatureLine]) -> tuple[SignatureLine, ...]:
    """The lines in the bundle's one order (scheme order). The order carries no
    meaning in the log (seal hashes sort the lines); a line of an algorithm
    this version does not know cannot be carried, and is an error here."""
    order = list(SignatureScheme)
    unknown = sorted({line.algorithm for line in lines if line.scheme is None})
    if unknown:
        raise CabError(
            f"{kind} carries signature lines of algorithms {unknown}: CAB v1 carries only "
            f"{', '.join(s.value for s in order)}"
        )
    return tuple(sorted(lines, key=lambda line: order.index(SignatureScheme(line.algorithm))))


def _bundle_of(
    applied: Applied,
    registration_statement: bytes,
    anchor_signatures: Sequence[SignatureLine],
    anchor: KeySet,
) -> Bundle:
    seal = applied.seal
    ref = applied.event.seal_ref
    if ref is None:
        raise CabError(f"event {applied.event.event_id} carries no seal reference")
    if not applied.origin.raw:
        raise CabError(f"event {applied.event.event_id}: its log bytes were not kept")
    signatures = _in_scheme_order(
        "seal",
        [
            SignatureLine(s["algorithm"], s["key_id"], s["signature"])
            for s in seal.event.payload["signatures"]
        ],
    )
    try:
        registration = parse_registration(registration_statement)
    except CabFormatError as exc:
        raise CabError(f"registration statement: {exc}") from exc
    return Bundle(
        event_bytes=applied.origin.raw,
        leaf_index=ref.leaf_index,
        tree_size=seal.header.tree_size,
        proof=tuple(inclusion_proof(ref.leaf_index, seal.leaf_hashes)),
        seal_note=note_bytes(seal.header, signatures),
        producer_key_set=registration.key_set,
        registration=registration_statement,
        registration_signatures=_in_scheme_order("registration", anchor_signatures),
        anchor=anchor,
    )


def _verified_bytes(
    bundle: Bundle, what: str, anchor: KeySet, required: Collection[SignatureScheme]
) -> bytes:
    """The bundle's bytes, verified against ``anchor``: a bundle that would
    not verify is an error here, never a file handed to an auditor."""
    data = encode_bundle(bundle)
    report = verify_bundle(data, pinned_anchor=anchor, required=required)
    if not report.ok:
        failed = "; ".join(f"{c.check.value}: {c.detail}" for c in report.failures)
        raise CabError(f"bundle for {what} does not verify: {failed or 'a check did not run'}")
    return data


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
    verified against ``anchor`` before it is returned.
    """
    bundle = _bundle_of(applied, registration_statement, anchor_signatures, anchor)
    return _verified_bytes(bundle, f"event {applied.event.event_id}", anchor, required)


def build_read_bundle(
    applied: Applied,
    read_index: int,
    registration_statement: bytes,
    anchor_signatures: Sequence[SignatureLine],
    anchor: KeySet,
    *,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
) -> bytes:
    """The read bundle for read ``read_index`` of a verified CacheReadBatch
    event (as :func:`build_bundle`, plus the read section). Raises
    :class:`CabError` when the event is no batch or has no such read."""
    from cachet.ledger.cab_read import read_claim

    bundle = _bundle_of(applied, registration_statement, anchor_signatures, anchor)
    claim = read_claim(bundle.event_bytes, read_index)
    what = f"read {read_index} of event {applied.event.event_id}"
    return _verified_bytes(replace(bundle, read=claim), what, anchor, required)


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
    # A read bundle's read: its index in the batch, and the read once proven.
    read_index: int | None = None
    read: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        """True only when every check passed. The envelope check alone may be
        NOT_RUN (no Avro codec here): it reads the event, it proves nothing.
        A read bundle's read check may not: which read is proven is its claim."""
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
            # A read bundle's read (an event bundle's report has no such keys).
            **(
                {}
                if self.read_index is None
                else {"read_index": self.read_index, "read": self.read}
            ),
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
    # The id line of section 0x07 is bound to the keys: otherwise, pinned by
    # fingerprint alone, the id could be rewritten without changing the verdict.
    if not hmac.compare_digest(anchor.key_set_id.encode("ascii"), fingerprint.encode("ascii")):
        problems.append(
            f"bundle anchor key set id {anchor.key_set_id} is not its fingerprint {fingerprint}"
        )
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
    derived = derive_key_set_id(dict(registration.key_set.public_keys))
    # A key set's id names its keys (as the anchor's does): one id, one set of
    # keys, in every bundle and every log that mentions it.
    if not hmac.compare_digest(
        registration.key_set.key_set_id.encode("ascii"), derived.encode("ascii")
    ):
        problems.append(
            f"registered key set id {registration.key_set.key_set_id} is not the id "
            f"derived from its keys ({derived})"
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
        from cachet.schemas.codec import EventCodec
    except ImportError:  # an auditor's machine without fastavro
        return None
    return EventCodec()


def _check_envelope(
    bundle: Bundle, header: SealHeader, codec: EventCodec | None
) -> tuple[CheckResult, dict[str, Any]]:
    if codec is None:
        return CheckResult(CabCheck.ENVELOPE, CheckOutcome.NOT_RUN, "no Avro codec here"), {}
    from cachet.schemas.codec import DecodeError

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


def _check_read(
    event_bytes: bytes, claim: ReadClaim, codec: EventCodec | None
) -> tuple[CheckResult, dict[str, Any] | None]:
    """The read step of a read bundle; NOT_RUN (so not verified) without Avro."""
    if codec is None:
        return CheckResult(CabCheck.READ, CheckOutcome.NOT_RUN, "no Avro codec here"), None
    from cachet.ledger.cab_read import check_read, read_json

    verdict = check_read(event_bytes, claim)
    shown = None if verdict.read is None else read_json(verdict.read)
    return _result(CabCheck.READ, verdict.passed, verdict.detail), shown


def verify_bundle(
    data: bytes,
    *,
    pinned_anchor: KeySet | None,
    pinned_fingerprint: str | None = None,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
    codec: EventCodec | None = None,
) -> BundleReport:
    """Run every check on a bundle (an event bundle, or a read bundle: then
    also ``read-in-batch``, which needs Avro); ``ok`` only if all pass.

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
        # The checks of the kind of bundle the header names (the read check
        # only for a read bundle), none of which could run.
        read_bundle = data[: len(CAB_MAGIC) + 2] == CAB_MAGIC + CAB_READ_VERSION.to_bytes(2, "big")
        checks = [_result(CabCheck.PARSE, False, str(exc))] + [
            CheckResult(c, CheckOutcome.NOT_RUN, "the bundle did not parse")
            for c in CabCheck
            if c is not CabCheck.PARSE and (read_bundle or c is not CabCheck.READ)
        ]
        return BundleReport(tuple(checks))
    checks = [_result(CabCheck.PARSE, True, f"{len(data)} bytes, version {bundle.version}")]
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
    codec = codec or _default_codec()
    envelope, seen = _check_envelope(bundle, header, codec)
    checks.append(envelope)
    read = None
    if bundle.read is not None:
        read_result, read = _check_read(bundle.event_bytes, bundle.read, codec)
        checks.append(read_result)
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
        read_index=None if bundle.read is None else bundle.read.index,
        read=read,
    )
