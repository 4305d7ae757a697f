"""Erasure certificates: proof of one erasure request, verifiable offline.

A certificate (format in :mod:`cachet.ledger.erasure_certificate_format`,
specified in ``docs/erasure-certificate.md``) is a human-readable statement
plus one Cache Attestation Bundle per sealed event: the ErasureRequested and
each ErasureCompleted of that request (stages immediate, retention_end,
hold_lifted). Each bundle carries the event's exact log bytes, its seal as a
signed note, the Merkle inclusion proof, and the anchor-signed registration
of the sealing key set, so :func:`verify_certificate` needs no broker.

What a verified certificate proves, given the pinned trust anchor: the
request was sealed by the identity the statement names (its authority; when
the verifier pins ``allowed_requesters``, one of them); every completion was
sealed by a registered producer (when pinned, the erasure processor's
identity) and is for the same request (id, subject hash, namespace); and the statement says exactly what those
sealed events say (it is re-rendered from them and compared byte for byte).
What it does not prove is listed in the CAB format (revocation after the
fact, the seal's place in its chain) and, beyond that, that the producer
that sealed a completion told the truth: the certificate attests what was
recorded, the erasure sweep test checks that it is so.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.ledger.cab import BundleReport, CheckOutcome, verify_bundle
from cachet.ledger.cab_format import CabFormatError, decode_bundle, parse_registration
from cachet.ledger.erasure_certificate_format import (
    CERTIFICATE_VERSION,
    Certificate,
    CertificateError,
    CertificateFormatError,
    ErasureStatus,
    canonical_completion_order,
    decode_certificate,
    encode_certificate,
    erasure_status,
    render_statement,
)
from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import ErasureCompleted, ErasureRequested, ErasureScope, ErasureStage

__all__ = [
    "CertificateCheck",
    "CertificateCheckResult",
    "CertificateError",
    "CertificateReport",
    "build_certificate",
    "verify_certificate",
]


class CertificateCheck(enum.StrEnum):
    """Every certificate check, in the order they run and are reported."""

    PARSE = "parse"
    BUNDLES = "bundles-verify"  # every CAB check of every bundle, envelope included
    REQUEST = "request-sealed-by-requester"
    COMPLETIONS = "completions-belong-to-request"
    STATEMENT = "statement-matches-events"


@dataclass(frozen=True, slots=True)
class CertificateCheckResult:
    """One check's result and what a person needs to know about it."""

    check: CertificateCheck
    outcome: CheckOutcome
    detail: str

    @property
    def passed(self) -> bool:
        return self.outcome is CheckOutcome.PASSED


@dataclass(frozen=True, slots=True)
class CertificateReport:
    """Every check's result, each bundle's own report, and (when it parsed)
    the statement: printable only as what the events say once ``ok``."""

    checks: tuple[CertificateCheckResult, ...]
    bundles: tuple[BundleReport, ...] = ()
    statement: str | None = None
    request_id: str | None = None
    status: ErasureStatus | None = None

    @property
    def ok(self) -> bool:
        """True only when every check passed (none failed, none not run)."""
        return all(c.passed for c in self.checks)

    @property
    def failures(self) -> list[CertificateCheckResult]:
        return [c for c in self.checks if c.outcome is CheckOutcome.FAILED]

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"name": c.check.value, "outcome": c.outcome.value, "detail": c.detail}
                for c in self.checks
            ],
            "request_id": self.request_id,
            "status": None if self.status is None else self.status.value,
            "bundles": [b.to_json() for b in self.bundles],
            "statement": self.statement,
        }


def _result(check: CertificateCheck, passed: bool, detail: str) -> CertificateCheckResult:
    return CertificateCheckResult(
        check, CheckOutcome.PASSED if passed else CheckOutcome.FAILED, detail
    )


def _not_run(check: CertificateCheck, why: str) -> CertificateCheckResult:
    return CertificateCheckResult(check, CheckOutcome.NOT_RUN, why)


def _name(index: int) -> str:
    return "bundle 0 (request)" if index == 0 else f"bundle {index} (completion)"


def _decode_events(
    bundles: Sequence[bytes], codec: EventCodec
) -> tuple[list[Event | None], list[str]]:
    events: list[Event | None] = []
    problems: list[str] = []
    for i, data in enumerate(bundles):
        try:
            events.append(codec.decode(decode_bundle(data).event_bytes))
        except (CabFormatError, DecodeError) as exc:
            events.append(None)
            problems.append(f"{_name(i)}: {exc}")
    return events, problems


def _check_bundles(reports: Sequence[BundleReport]) -> CertificateCheckResult:
    problems: list[str] = []
    for i, report in enumerate(reports):
        # Every CAB check must have passed, the envelope one included
        # (NOT_RUN counts as failed): the statement is rendered from the
        # decoded event, so its meaning must be bound too.
        for c in (c for c in report.checks if not c.passed):
            problems.append(f"{_name(i)}: {c.check.value}: {c.detail}")
    if problems:
        return _result(CertificateCheck.BUNDLES, False, "; ".join(problems))
    return _result(
        CertificateCheck.BUNDLES,
        True,
        f"{len(reports)} bundles: every seal, registration and inclusion proof verifies",
    )


def _sealing_identity(bundle: bytes, event: Event) -> tuple[str | None, str]:
    """The identity that sealed ``event``, if it is the one the bundle's
    anchor-signed registration names; else None and why not."""
    try:
        sealer = identity_of(event.producer_id)
        registered = parse_registration(decode_bundle(bundle).registration).producer_identity
    except (ProducerIdError, CabFormatError) as exc:
        return None, str(exc)
    if not hmac.compare_digest(sealer.encode(), registered.encode()):
        return None, f"sealed by {sealer!r}, but the registration is for {registered!r}"
    return sealer, ""


def _check_request(
    bundle: bytes, event: Event | None, allowed_requesters: Collection[str] | None
) -> CertificateCheckResult:
    if event is None:
        return _result(CertificateCheck.REQUEST, False, "bundle 0's event does not decode")
    if event.type is not EventType.ERASURE_REQUESTED:
        return _result(
            CertificateCheck.REQUEST,
            False,
            f"bundle 0 holds a {event.type.value}, not an ErasureRequested",
        )
    request = ErasureRequested.from_avro(event.payload)
    sealer, why = _sealing_identity(bundle, event)
    problems = [why] if sealer is None else []
    # The authority of a request is the key that sealed it (requested_by is
    # a label for a person): pinned, only a configured requester may erase.
    if sealer is not None and allowed_requesters is not None and sealer not in allowed_requesters:
        problems.append(
            f"request sealed by {sealer!r}, not one of the allowed requesters "
            f"{sorted(allowed_requesters)}"
        )
    if request.scope is ErasureScope.UNKNOWN:
        problems.append("request scope is UNKNOWN (no reader acts on it)")
    if problems:
        return _result(CertificateCheck.REQUEST, False, "; ".join(problems))
    pinned = "an allowed requester" if allowed_requesters is not None else "requesters not pinned"
    return _result(
        CertificateCheck.REQUEST,
        True,
        f"request {request.request_id!r} sealed by {event.producer_id} ({pinned})",
    )


def _completion_problems(
    index: int,
    bundle: bytes,
    event: Event | None,
    request: ErasureRequested,
    requested_at_us: int,
    processor_identity: str | None,
) -> list[str]:
    name = _name(index)
    if event is None:
        return [f"{name}: its event does not decode"]
    if event.type is not EventType.ERASURE_COMPLETED:
        return [f"{name} holds a {event.type.value}, not an ErasureCompleted"]
    c = ErasureCompleted.from_avro(event.payload)
    problems: list[str] = []
    sealer, why = _sealing_identity(bundle, event)
    if sealer is None:
        problems.append(f"{name}: {why}")
    elif processor_identity is not None and sealer != processor_identity:
        # Nodes act on completions only from the processor identity: one
        # sealed by anyone else is not an erasure that happened.
        problems.append(f"{name} sealed by {sealer!r}, not the processor {processor_identity!r}")
    if c.request_id != request.request_id:
        problems.append(f"{name} completes request {c.request_id!r}, not {request.request_id!r}")
    if not hmac.compare_digest(c.subject_hash, request.subject_hash):
        problems.append(f"{name} is for subject hash {c.subject_hash.hex()}, not the request's")
    if c.namespace != request.namespace:
        problems.append(f"{name} namespace {c.namespace!r} != request's {request.namespace!r}")
    if c.stage not in {s.value for s in ErasureStage}:
        problems.append(f"{name} has unknown stage {c.stage!r}")
    if event.occurred_at_us < requested_at_us:
        problems.append(f"{name} occurred at {event.occurred_at_us}, before the request")
    return problems


def _check_completions(
    bundles: Sequence[bytes], events: Sequence[Event | None], processor_identity: str | None
) -> CertificateCheckResult:
    first = events[0]
    if first is None or first.type is not EventType.ERASURE_REQUESTED:
        return _not_run(CertificateCheck.COMPLETIONS, "no request to compare with")
    request = ErasureRequested.from_avro(first.payload)
    problems: list[str] = []
    for i, event in enumerate(events[1:], start=1):
        problems += _completion_problems(
            i, bundles[i], event, request, first.occurred_at_us, processor_identity
        )
    completions = [e for e in events[1:] if e is not None]
    if not problems:
        stages = [ErasureCompleted.from_avro(e.payload).stage for e in completions]
        # One completion per (request, stage): a second one would be a
        # replayed or contradictory record, never a second erasure.
        if len(set(stages)) != len(stages):
            problems.append(f"stages repeat: {stages}")
        if len({e.event_id for e in events if e is not None}) != len(events):
            problems.append("an event appears twice")
        if [e.event_id for e in canonical_completion_order(completions)] != [
            e.event_id for e in completions
        ]:
            problems.append("completions are not in canonical order (time, stage, event id)")
    if problems:
        return _result(CertificateCheck.COMPLETIONS, False, "; ".join(problems))
    return _result(
        CertificateCheck.COMPLETIONS,
        True,
        f"{len(completions)} completion(s) of request {request.request_id!r}",
    )


def _first_difference(expected: bytes, found: bytes) -> str:
    want = expected.decode("ascii").split("\n")
    got = found.decode("ascii", errors="replace").split("\n")
    for n, (a, b) in enumerate(zip(want, got, strict=False), start=1):
        if a != b:
            return f"line {n}: the events say {a[:160]!r}, the statement says {b[:160]!r}"
    return f"the events give {len(want)} lines, the statement has {len(got)}"


def _check_statement(statement: bytes, events: Sequence[Event | None]) -> CertificateCheckResult:
    if any(e is None for e in events):
        return _not_run(CertificateCheck.STATEMENT, "not every event decodes")
    request, *completions = [e for e in events if e is not None]
    try:
        expected = render_statement(request, completions)
    except (KeyError, ValueError, TypeError, AttributeError) as exc:
        return _result(
            CertificateCheck.STATEMENT, False, f"the events do not render a statement: {exc!r}"
        )
    # Re-rendered from the sealed bytes and compared: the statement can say
    # nothing (a dropped held entry, a changed count) the events do not.
    if hmac.compare_digest(expected, statement):
        return _result(CertificateCheck.STATEMENT, True, f"{len(statement)} bytes, as rendered")
    return _result(CertificateCheck.STATEMENT, False, _first_difference(expected, statement))


def verify_certificate(
    data: bytes,
    *,
    pinned_anchor: KeySet | None,
    pinned_fingerprint: str | None = None,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
    codec: EventCodec | None = None,
    allowed_requesters: Collection[str] | None = None,
    processor_identity: str | None = None,
) -> CertificateReport:
    """Run every check on a certificate; ``ok`` only if all pass.

    Each bundle is verified with :func:`~cachet.ledger.cab.verify_bundle`
    under the pinned anchor (its key set and/or fingerprint; with neither,
    every bundle's ``anchor-pinned`` check fails). Every check runs even
    after one fails, so the report lists every problem. Never raises on bad
    bytes.

    ``allowed_requesters`` (the deployment's ``[erasure] allowed_requesters``)
    pins who may request an erasure: the request's sealing identity must be
    one. ``processor_identity`` pins who seals completions. None: not
    pinned (the statement still names each sealing identity).
    """
    codec = codec or EventCodec()
    try:
        cert = decode_certificate(data)
    except CertificateFormatError as exc:
        return CertificateReport(
            (_result(CertificateCheck.PARSE, False, str(exc)),)
            + tuple(
                _not_run(c, "the certificate did not parse")
                for c in CertificateCheck
                if c is not CertificateCheck.PARSE
            )
        )
    reports = tuple(
        verify_bundle(
            b,
            pinned_anchor=pinned_anchor,
            pinned_fingerprint=pinned_fingerprint,
            required=required,
            codec=codec,
        )
        for b in cert.bundles
    )
    events, undecodable = _decode_events(cert.bundles, codec)
    try:
        statement_text: str | None = cert.statement.decode("ascii")
    except UnicodeDecodeError:
        statement_text = None
    parse_problems = list(undecodable)
    if statement_text is None:
        parse_problems.append("the statement is not ASCII")
    parse = _result(
        CertificateCheck.PARSE,
        not parse_problems,
        "; ".join(parse_problems)
        or f"{len(data)} bytes, version {CERTIFICATE_VERSION}, {len(cert.bundles)} bundles",
    )
    checks = (
        parse,
        _check_bundles(reports),
        _check_request(cert.bundles[0], events[0], allowed_requesters),
        _check_completions(cert.bundles, events, processor_identity),
        _check_statement(cert.statement, events),
    )
    decoded = [e for e in events if e is not None]
    request_id = (
        ErasureRequested.from_avro(decoded[0].payload).request_id
        if decoded and decoded[0].type is EventType.ERASURE_REQUESTED
        else None
    )
    status = None
    if all(c.passed for c in checks):
        status = erasure_status(decoded[1:])[0]
    return CertificateReport(checks, reports, statement_text, request_id, status)


def build_certificate(
    request_bundle: bytes,
    completion_bundles: Sequence[bytes],
    *,
    anchor: KeySet,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
    codec: EventCodec | None = None,
    allowed_requesters: Collection[str] | None = None,
    processor_identity: str | None = None,
) -> bytes:
    """The certificate of a request from its bundles (each a CAB v1 file).

    Completions are put in canonical order and the statement rendered from
    the events; the result is verified against ``anchor`` before it is
    returned: a certificate that would not verify is a
    :class:`CertificateError`, never a file handed to a data subject.
    """
    codec = codec or EventCodec()
    events, problems = _decode_events([request_bundle, *completion_bundles], codec)
    if problems:
        raise CertificateError("; ".join(problems))
    request, *completions = [e for e in events if e is not None]
    by_id = dict(zip((e.event_id for e in completions), completion_bundles, strict=True))
    ordered = canonical_completion_order(completions)
    data = encode_certificate(
        Certificate(
            render_statement(request, ordered),
            (request_bundle, *(by_id[e.event_id] for e in ordered)),
        )
    )
    report = verify_certificate(
        data,
        pinned_anchor=anchor,
        required=required,
        codec=codec,
        allowed_requesters=allowed_requesters,
        processor_identity=processor_identity,
    )
    if not report.ok:
        failed = "; ".join(f"{c.check.value}: {c.detail}" for c in report.failures)
        raise CertificateError(f"certificate of request {report.request_id!r} fails: {failed}")
    return data
