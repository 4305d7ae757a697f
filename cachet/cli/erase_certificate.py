"""``cachet erase status`` and ``cachet erase verify``: erasure certificates.

``cachet erase status REQUEST_ID [--out FILE] [--json]`` reads the erasure
topic to its end, takes the request's ErasureRequested and ErasureCompleted
events only once a verifying consumer (trusting the anchor) applied them,
bundles each with its seal, inclusion proof and anchor-signed key
registration (the CAB machinery of ``cachet cab``), and prints the status
(requested / completed / held until ... / incomplete) with the certificate's
statement; ``--out`` writes the certificate. ``cachet erase verify FILE``
checks a certificate offline (no broker) and exits 0 only when every check
passes. The format: ``docs/erasure-certificate.md``.

``register_certificate_commands`` adds both to the ``cachet erase`` group
(``cachet.cli.erase`` owns the group and calls it).
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.cli.cab import ANCHOR_FILE, pinned_anchor, read_registrations, registration_for
from cachet.cli.context import CliContext, emit_json, fail
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.anchor import load_anchor
from cachet.ledger.cab import CheckOutcome, anchor_fingerprint, build_bundle
from cachet.ledger.erasure_certificate import (
    CertificateError,
    CertificateReport,
    build_certificate,
    verify_certificate,
)
from cachet.ledger.verifier import Applied, Rejected
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType
from cachet.topics import Topic, TopicNames

__all__ = [
    "CertificateExportError",
    "export_certificate",
    "register_certificate_commands",
]

log = logging.getLogger(__name__)

_ERASURE_EVENTS = (EventType.ERASURE_REQUESTED, EventType.ERASURE_COMPLETED)


class CertificateExportError(CertificateError):
    """The request, or one of its events, could not be found or verified on the log."""


@dataclass
class _Wanted:
    """The request's events on the erasure topic, by (partition, offset)."""

    events: dict[tuple[int, int], Event] = field(default_factory=dict)
    applied: dict[tuple[int, int], Applied] = field(default_factory=dict)
    rejected: dict[tuple[int, int], Rejected] = field(default_factory=dict)

    @property
    def settled(self) -> bool:
        return len(self.applied) + len(self.rejected) >= len(self.events)


def _scan_erasure_topic(
    servers: str, names: TopicNames, codec: EventCodec, request_id: str, count: int, deadline: float
) -> dict[tuple[int, int], Event]:
    """Where the request's events are: the erasure topic read (unverified) to
    the end it had when this began. Only a guide: nothing found here is
    trusted until the verifying consumer applies it."""
    topic = names(Topic.ERASURE)
    consumer = Consumer(consumer_settings(servers))
    found: dict[tuple[int, int], Event] = {}
    try:
        ends = {}
        for p in range(count):
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)
            if high > low:
                ends[p] = high
        consumer.assign([TopicPartition(topic, p, 0) for p in ends])
        while ends and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                partition, offset = msg.partition() or 0, msg.offset() or 0
                if msg.error() is not None:
                    continue
                if offset + 1 >= ends.get(partition, 0):
                    ends.pop(partition, None)
                try:
                    event = codec.decode(msg.value() or b"")
                except DecodeError:
                    continue  # the verifying readers dead-letter and alert it
                if event.type in _ERASURE_EVENTS and event.payload["request_id"] == request_id:
                    found[(partition, offset)] = event
        if ends:
            raise CertificateExportError(f"erasure topic {topic} was not read to its end in time")
    finally:
        consumer.close()
    return found


def _verify_wanted(
    servers: str,
    names: TopicNames,
    codec: EventCodec,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    partitions: Mapping[Topic, int] | int,
    wanted: _Wanted,
    deadline: float,
    unsealed_timeout_s: float,
) -> None:
    def apply(applied: Applied) -> None:
        at = (applied.origin.partition, applied.origin.offset)
        if at in wanted.events:
            wanted.applied[at] = applied

    def rejected(r: Rejected) -> None:
        if r.origin is not None and (r.origin.partition, r.origin.offset) in wanted.events:
            wanted.rejected[(r.origin.partition, r.origin.offset)] = r

    def alert(event_type: EventType, payload: dict[str, Any]) -> None:
        # Reading only: the running verifiers already alert on the log.
        log.warning("while building a certificate: %s %s", event_type.value, payload)

    vc = VerifyingConsumer(
        servers,
        names,
        codec,
        anchor,
        required,
        [Topic.ERASURE],
        apply,
        alert,
        Producer(producer_settings(servers)),
        partitions=partitions,
        on_rejected=rejected,
        unsealed_timeout_s=unsealed_timeout_s,
        name="erasure-certificate",
    )
    try:
        while not wanted.settled and time.monotonic() < deadline:
            vc.poll(0.2)
    finally:
        vc.close()


def export_certificate(
    servers: str,
    names: TopicNames,
    codec: EventCodec,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    request_id: str,
    *,
    partitions: Mapping[Topic, int] | int = 3,
    timeout_s: float = 30.0,
    unsealed_timeout_s: float = 5.0,
    allowed_requesters: Collection[str] | None = None,
    processor_identity: str | None = None,
) -> bytes:
    """The erasure certificate of ``request_id``, from the live log.

    Only events a verifying consumer (trusting ``anchor``) applied go in;
    one that was rejected (forged, unsealed, unregistered key) is left out
    with a warning (an event whose seal never verifies is judged after
    ``unsealed_timeout_s`` once the log was read to its end). The first verified ErasureRequested of the id is the
    request; of its completions, the first verified one per stage. The
    certificate is verified (with the pins given, see
    :func:`~cachet.ledger.erasure_certificate.verify_certificate`) before it
    is returned.
    """
    deadline = time.monotonic() + timeout_s
    count = partitions if isinstance(partitions, int) else partitions[Topic.ERASURE]
    wanted = _Wanted(_scan_erasure_topic(servers, names, codec, request_id, count, deadline))
    if not any(e.type is EventType.ERASURE_REQUESTED for e in wanted.events.values()):
        raise CertificateExportError(
            f"no ErasureRequested with request id {request_id!r} on the log"
        )
    _verify_wanted(
        servers, names, codec, anchor, required, partitions, wanted, deadline, unsealed_timeout_s
    )
    for at, r in sorted(wanted.rejected.items()):
        log.warning("event at erasure partition %d offset %d left out: %s", *at, r.detail)
    unsettled = sorted(set(wanted.events) - set(wanted.applied) - set(wanted.rejected))
    if unsettled:
        raise CertificateExportError(
            f"events of request {request_id!r} at (partition, offset) {unsettled} were not "
            "verified before the timeout"
        )
    ordered = sorted(
        wanted.applied.values(), key=lambda a: (a.event.occurred_at_us, a.event.event_id)
    )
    requests = [a for a in ordered if a.event.type is EventType.ERASURE_REQUESTED]
    if not requests:
        raise CertificateExportError(f"no verified ErasureRequested for request {request_id!r}")
    stages: dict[str, Applied] = {}
    for a in ordered:
        if a.event.type is EventType.ERASURE_COMPLETED:
            stages.setdefault(a.event.payload.get("stage", "immediate"), a)
    payloads = read_registrations(servers, names, codec, partitions, deadline)

    def bundle(applied: Applied) -> bytes:
        statement, lines = registration_for(applied, payloads, anchor, required)
        return build_bundle(applied, statement, lines, anchor, required=required)

    return build_certificate(
        bundle(requests[0]),
        [bundle(a) for a in stages.values()],
        anchor=anchor,
        required=required,
        codec=codec,
        allowed_requesters=allowed_requesters,
        processor_identity=processor_identity,
    )


# --- the command line -----------------------------------------------------------


def register_certificate_commands(
    sub: argparse._SubParsersAction, parent: argparse.ArgumentParser
) -> None:
    """Add ``status`` and ``verify`` to the ``cachet erase`` group's actions."""
    s = sub.add_parser(
        "status",
        parents=[parent],
        help="status and certificate of an erasure request (reads the broker)",
        description=__doc__,
    )
    s.add_argument("request_id", metavar="REQUEST_ID", help="the erasure request's id")
    s.add_argument("--out", type=Path, default=None, help="write the certificate to this file")
    s.add_argument(
        "--anchor-file",
        type=Path,
        default=None,
        help=f"the trust anchor's public key set (default {ANCHOR_FILE} next to the keystore)",
    )
    s.add_argument("--timeout", type=float, default=30.0, help="seconds to look (default 30)")
    s.add_argument(
        "--unsealed-timeout",
        type=float,
        default=5.0,
        metavar="SECONDS",
        help="how long an event of the request may wait for a verified seal once the "
        "log was read to its end, before it is left out (default 5)",
    )
    s.add_argument("--json", action="store_true", help="print the outcome as JSON")
    s.set_defaults(handler=run_status)

    v = sub.add_parser("verify", parents=[parent], help="verify an erasure certificate offline")
    v.add_argument("file", type=Path, help="the certificate")
    v.add_argument(
        "--anchor",
        "--anchor-file",
        dest="anchor_file",
        type=Path,
        default=None,
        metavar="ANCHOR_PUBLIC_FILE",
        help="pin this anchor key set (as `cachet keys init` writes it)",
    )
    v.add_argument(
        "--anchor-fingerprint",
        default=None,
        metavar="KS_ID",
        help="pin the anchor by fingerprint (default keys.trust_anchor_id when set)",
    )
    v.add_argument(
        "--requester",
        action="append",
        default=None,
        metavar="IDENTITY",
        help="an identity allowed to request erasures (repeatable; default "
        "[erasure] allowed_requesters; none: not pinned)",
    )
    v.add_argument(
        "--processor",
        default=None,
        metavar="IDENTITY",
        help="the erasure processor's identity (default [erasure] processor_identity)",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=run_verify)


def _required(ctx: CliContext) -> tuple[SignatureScheme, ...]:
    return tuple(ctx.config.attestation.schemes)


def _pins(ctx: CliContext, args: argparse.Namespace) -> dict[str, Any]:
    """Who may request erasures and who seals completions: from the options,
    else the deployment's ``[erasure]`` section (no requesters: not pinned)."""
    erasure = ctx.config.erasure
    requesters = getattr(args, "requester", None) or erasure.allowed_requesters or None
    return {
        "allowed_requesters": None if requesters is None else tuple(requesters),
        "processor_identity": getattr(args, "processor", None) or erasure.processor_identity,
    }


def run_status(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = args.anchor_file or ctx.config.keys.keystore_path.parent / ANCHOR_FILE
    anchor = load_anchor(path, ctx.config.keys.trust_anchor_id)
    kafka = ctx.config.kafka
    data = export_certificate(
        ctx.bootstrap_servers,
        ctx.topic_names,
        EventCodec(),
        anchor,
        _required(ctx),
        args.request_id,
        partitions={t: kafka.partitions_for(t) for t in Topic},
        timeout_s=args.timeout,
        unsealed_timeout_s=args.unsealed_timeout,
        **_pins(ctx, args),
    )
    report = verify_certificate(
        data, pinned_anchor=anchor, required=_required(ctx), **_pins(ctx, args)
    )
    if args.out is not None:
        args.out.write_bytes(data)
    if args.json:
        out = report.to_json()
        out["summary"] = _status_summary(report)
        out["out"] = None if args.out is None else str(args.out)
        out["bytes"] = len(data)
        out["anchor_fingerprint"] = anchor_fingerprint(anchor)
        emit_json(out)
    else:
        print(report.statement or "", end="")
        print(f"STATUS {_status_summary(report)}")
        if args.out is not None:
            print(f"wrote {args.out} ({len(data)} bytes)")
            print(f"anchor fingerprint: {anchor_fingerprint(anchor)}  (give this to the verifier)")
    return 0 if report.ok else 1


def _status_summary(report: CertificateReport) -> str:
    """``completed``, ``requested``, ``held: 2 until ...``: the statement's
    status lines (verified text, rendered from the sealed events)."""
    lines = (report.statement or "").split("\n")
    status = next((line[len("status ") :] for line in lines if line.startswith("status ")), "?")
    held = next((line for line in lines if line.startswith("still-held ")), None)
    return status if held is None else f"{status}: {held}"


_MARK = {CheckOutcome.PASSED: "PASS", CheckOutcome.FAILED: "FAIL", CheckOutcome.NOT_RUN: "----"}


def _print_report(report: CertificateReport) -> None:
    for c in report.checks:
        print(f"{_MARK[c.outcome]}  {c.check.value:30s} {c.detail}")
    for i, b in enumerate(report.bundles):
        print(
            f"bundle {i}: {b.event_type or '?'} {b.event_id or '?'} by {b.producer_id or '?'} "
            f"seal {b.seal_seq} leaf {b.leaf_index}/{b.tree_size}, anchor "
            f"{b.anchor_fingerprint or '?'} ({'pinned' if b.anchor_pinned else 'NOT PINNED'})"
        )
    if report.ok and report.statement:
        print("--- statement (verified: it says exactly what the sealed events say) ---")
        print(report.statement, end="")
    print(f"VERIFIED ({report.status.value})" if report.ok and report.status else "NOT VERIFIED")


def run_verify(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return fail(f"cannot read certificate {args.file}: {exc}")
    anchor, fingerprint = pinned_anchor(ctx, args)
    report = verify_certificate(
        data,
        pinned_anchor=anchor,
        pinned_fingerprint=fingerprint,
        required=_required(ctx),
        **_pins(ctx, args),
    )
    if args.json:
        emit_json(report.to_json())
    else:
        _print_report(report)
        if anchor is None and fingerprint is None:
            print(
                "no anchor pinned: pass --anchor or --anchor-fingerprint "
                "(or set keys.trust_anchor_id) after checking the fingerprint above"
            )
    return 0 if report.ok else 1
