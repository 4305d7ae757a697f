"""The erasure certificate byte format, version 1.

A certificate is ``CACHETERASURE``, a 2-byte big-endian version, then one
statement section (tag 0x01) and one to four bundle sections (tag 0x02),
each a tag byte, a 4-byte big-endian length and the value. Each bundle is a
complete Cache Attestation Bundle (``docs/cab-format.md``) of one sealed
event: the ErasureRequested first, then the request's ErasureCompleted
events. The statement is human-readable text *rendered from those events*
(:func:`render_statement`): a verifier renders it again from the bundles'
event bytes and compares, so the statement says nothing the sealed events do
not. ``docs/erasure-certificate.md`` specifies every byte.

Everything here checks *form* only, never trust; :mod:`cachet.ledger.erasure_certificate`
runs the checks.
"""

from __future__ import annotations

import enum
import hmac
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cachet.ledger.cab_format import CabError
from cachet.schemas.events import Event
from cachet.schemas.payloads import ErasureCompleted, ErasureRequested, ErasureStage, HeldEntry

__all__ = [
    "CERTIFICATE_MAGIC",
    "CERTIFICATE_VERSION",
    "MAX_BUNDLES",
    "MAX_CERTIFICATE_BYTES",
    "STATEMENT_FORMAT",
    "Certificate",
    "CertificateError",
    "CertificateFormatError",
    "ErasureStatus",
    "Section",
    "canonical_completion_order",
    "decode_certificate",
    "encode_certificate",
    "erasure_status",
    "render_statement",
]

CERTIFICATE_MAGIC = b"CACHETERASURE"
CERTIFICATE_VERSION = 1
STATEMENT_FORMAT = "cachet.erasure-certificate/v1"
# One request and at most one completion per stage (ErasureCompleted is
# "exactly one per (request_id, stage)"): four bundles at most.
MAX_BUNDLES = 4
MAX_STATEMENT_BYTES = 1024 * 1024
# Four bundles of at most 16 MiB each, plus the statement: a bound that keeps
# a hostile file from making the parser allocate without limit.
MAX_CERTIFICATE_BYTES = 4 * 16 * 1024 * 1024 + MAX_STATEMENT_BYTES + 64
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class CertificateError(CabError):
    """A certificate could not be built (the events do not make one)."""


class CertificateFormatError(CertificateError):
    """Bytes that are not a certificate in canonical form; the message says where."""


class Section(enum.IntEnum):
    """Section tags: one STATEMENT first, then one to four BUNDLEs."""

    STATEMENT = 0x01
    BUNDLE = 0x02


class ErasureStatus(enum.StrEnum):
    """Where an erasure stands, as the certificate's ``status`` line says."""

    REQUESTED = "requested"  # no completion sealed yet
    COMPLETED = "completed"  # nothing held, no failures
    HELD = "held"  # the latest completion still holds entries
    INCOMPLETE = "incomplete"  # some completion reported failures


@dataclass(frozen=True, slots=True)
class Certificate:
    """A certificate's content; :func:`encode_certificate` gives its one byte form.

    ``bundles[0]`` attests the ErasureRequested, the rest its completions in
    :func:`canonical_completion_order`. Each is a whole CAB v1 file.
    """

    statement: bytes
    bundles: tuple[bytes, ...]


# --- the container ----------------------------------------------------------


def _section(tag: Section, value: bytes) -> bytes:
    if not value:
        raise CertificateError(f"section {tag.name} is empty")
    return bytes([tag]) + len(value).to_bytes(4, "big") + value


def encode_certificate(certificate: Certificate) -> bytes:
    """The certificate's bytes (``docs/erasure-certificate.md``)."""
    if not 1 <= len(certificate.bundles) <= MAX_BUNDLES:
        raise CertificateError(
            f"{len(certificate.bundles)} bundles: a certificate has 1 to {MAX_BUNDLES}"
        )
    if len(certificate.statement) > MAX_STATEMENT_BYTES:
        raise CertificateError(f"statement of {len(certificate.statement)} bytes is too large")
    return (
        CERTIFICATE_MAGIC
        + CERTIFICATE_VERSION.to_bytes(2, "big")
        + _section(Section.STATEMENT, certificate.statement)
        + b"".join(_section(Section.BUNDLE, b) for b in certificate.bundles)
    )


def decode_certificate(data: bytes) -> Certificate:
    """Split a certificate into its sections; anything not in the one
    canonical layout raises :class:`CertificateFormatError` naming where.
    The bundles' own bytes are parsed by the CAB code, not here."""
    data = bytes(data)
    if len(data) > MAX_CERTIFICATE_BYTES:
        raise CertificateFormatError(f"{len(data)} bytes: larger than any certificate")
    head = len(CERTIFICATE_MAGIC) + 2
    if len(data) < head or not hmac.compare_digest(
        data[: len(CERTIFICATE_MAGIC)], CERTIFICATE_MAGIC
    ):
        raise CertificateFormatError("not an erasure certificate (bad magic)")
    version = int.from_bytes(data[len(CERTIFICATE_MAGIC) : head], "big")
    if version != CERTIFICATE_VERSION:
        raise CertificateFormatError(
            f"certificate version {version}; this verifier reads {CERTIFICATE_VERSION}"
        )
    pos = head
    values: list[bytes] = []
    while pos < len(data):
        index = len(values)
        expected = Section.STATEMENT if index == 0 else Section.BUNDLE
        where = "the statement" if index == 0 else f"bundle {index}"
        if len(data) - pos < 5:
            raise CertificateFormatError(f"truncated section header at byte {pos} ({where})")
        if data[pos] != expected:
            raise CertificateFormatError(
                f"section tag 0x{data[pos]:02x} at byte {pos}; expected {expected.name} "
                f"(0x{expected:02x}) for {where}"
            )
        if index > MAX_BUNDLES:
            raise CertificateFormatError(f"more than {MAX_BUNDLES} bundles")
        length = int.from_bytes(data[pos + 1 : pos + 5], "big")
        pos += 5
        if length == 0 or length > len(data) - pos:
            raise CertificateFormatError(f"{where}: length {length} is empty or truncated")
        values.append(data[pos : pos + length])
        pos += length
    if len(values) < 2:
        raise CertificateFormatError("a certificate needs a statement and at least one bundle")
    if len(values[0]) > MAX_STATEMENT_BYTES:
        raise CertificateFormatError(f"statement of {len(values[0])} bytes is too large")
    return Certificate(values[0], tuple(values[1:]))


# --- the statement ------------------------------------------------------------


def _stage_rank(stage: str) -> int:
    order = [s.value for s in ErasureStage]
    return order.index(stage) if stage in order else len(order)


def canonical_completion_order(completions: Sequence[Event]) -> list[Event]:
    """Completions as a certificate lists them: by event time, then stage
    order, then event id (one order, so one byte form)."""
    return sorted(
        completions,
        key=lambda e: (
            e.occurred_at_us,
            _stage_rank(ErasureCompleted.from_avro(e.payload).stage),
            e.event_id,
        ),
    )


def erasure_status(completions: Sequence[Event]) -> tuple[ErasureStatus, tuple[HeldEntry, ...]]:
    """The status and what is still held: the held list of the latest
    completion (each later stage re-states what remains held)."""
    if not completions:
        return ErasureStatus.REQUESTED, ()
    ordered = canonical_completion_order(completions)
    payloads = [ErasureCompleted.from_avro(e.payload) for e in ordered]
    remaining = tuple(payloads[-1].held)
    if any(p.failures for p in payloads):
        return ErasureStatus.INCOMPLETE, remaining
    return (ErasureStatus.HELD if remaining else ErasureStatus.COMPLETED), remaining


def _q(text: str) -> str:
    # Free text (ids, grounds, failures) as a JSON string: one ASCII line,
    # whatever it holds, so no field can forge a line of its own.
    return json.dumps(text, ensure_ascii=True)


def _time(us: int) -> str:
    """``<microseconds> <ISO 8601 UTC>``, e.g. ``1700000000000000 2023-11-14T22:13:20.000000Z``."""
    try:
        iso = (_EPOCH + timedelta(microseconds=us)).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    except OverflowError:
        iso = "out-of-range"
    return f"{us} {iso}"


def _sealed_by(event: Event) -> str:
    ref = event.seal_ref
    where = f"seal {ref.seal_seq} leaf {ref.leaf_index}" if ref else "unsealed"
    return f"sealed-by {event.producer_id} seq {event.producer_seq} {where}"


def _held_line(entry: HeldEntry) -> str:
    until = "legal-hold-lifted" if entry.held_until_us is None else _time(entry.held_until_us)
    return (
        f"held {entry.key_hash.hex()} namespace {_q(entry.namespace)} "
        f"contract {_q(entry.contract)} until {until} ground {_q(entry.ground)}"
    )


def _status_lines(completions: Sequence[Event]) -> list[str]:
    status, remaining = erasure_status(completions)
    lines = [f"status {status.value}"]
    if remaining:
        untils = [h.held_until_us for h in remaining]
        if any(u is None for u in untils):
            until = "legal-hold-lifted"
        else:
            until = _time(max(u for u in untils if u is not None))
        lines.append(f"still-held {len(remaining)} until {until}")
    return lines


def _completion_lines(event: Event) -> list[str]:
    c = ErasureCompleted.from_avro(event.payload)
    lines = [
        f"completion {_q(c.stage)}",
        f"  event {event.event_id} at {_time(event.occurred_at_us)}",
        f"  {_sealed_by(event)}",
        f"  entries-revoked {c.entries_revoked}",
        f"  data-keys-destroyed {c.data_keys_destroyed}",
        f"  l1-evictions {c.l1_evictions}",
        f"  kv-blocks-scrubbed {c.kv_blocks_scrubbed}",
        f"  proof-hash {c.proof_hash.hex()}",
    ]
    lines += [f"  destroyed-key {_q(k)}" for k in c.destroyed_key_ids]
    lines += [
        f"  step {_q(s.name)} count {s.count} started {_time(s.started_at_us)} "
        f"finished {_time(s.finished_at_us)}"
        for s in c.steps
    ]
    lines += [f"  {_held_line(h)}" for h in c.held]
    lines += [f"  failure {_q(f)}" for f in c.failures]
    return lines


def render_statement(request: Event, completions: Sequence[Event]) -> bytes:
    """The statement of a certificate: every field of the request and of each
    completion (in :func:`canonical_completion_order`), one per line.

    Deterministic: the same events give the same bytes, which is what binds
    the statement to the sealed events (the verifier renders and compares).
    Raises KeyError/ValueError on a payload that is not the expected type.
    """
    r = ErasureRequested.from_avro(request.payload)
    namespace = "*" if r.namespace is None else _q(r.namespace)
    lines = [
        STATEMENT_FORMAT,
        f"request {_q(r.request_id)}",
        f"subject-hash {r.subject_hash.hex()}",
        f"scope {r.scope.value}",
        f"namespace {namespace}",
        f"legal-basis {_q(r.legal_basis)}",
        f"requested-by {_q(r.requested_by)}",
        f"requested {request.event_id} at {_time(request.occurred_at_us)}",
        _sealed_by(request),
        *_status_lines(completions),
    ]
    for event in canonical_completion_order(completions):
        lines += _completion_lines(event)
    lines.append("end")
    return "".join(line + "\n" for line in lines).encode("ascii")
