"""``cachet cab``: export and verify Cache Attestation Bundles.

``cachet cab export --event-id ID --out FILE`` reads the control, seals and
data topics through a verifying consumer until it has verified that event,
finds the anchor-signed registration of the seal's key set on the control
topic, and writes the bundle. With ``--read-index N`` the event is a
CacheReadBatch and the bundle a read bundle: it proves read N of the batch
(the ``event_id`` and ``read_index`` of a row of ``cachet replay reads`` or
of an export's ``reads`` table). ``cachet cab verify FILE`` checks either
kind offline (no broker), prints every check, and exits 0 only when all pass.

A bundle brings its own copy of the trust anchor, which proves nothing by
itself: ``verify`` pins the anchor with ``--anchor-file`` (the anchor's
public key set), ``--anchor-fingerprint``, or ``keys.trust_anchor_id`` in
``cachet.toml``, and always prints the bundle's anchor fingerprint.
"""

from __future__ import annotations

import argparse
import logging
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cachet.cli.context import CliContext, emit_json, fail
from cachet.crypto.registry import registration_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet, SchemeStatus, SignatureLine, check_signatures
from cachet.errors import CachetError
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.anchor import UNPINNED, load_anchor
from cachet.ledger.cab import (
    BundleReport,
    CabError,
    CheckOutcome,
    anchor_fingerprint,
    build_bundle,
    build_read_bundle,
    verify_bundle,
)
from cachet.ledger.identity import identity_of
from cachet.ledger.verifier import Applied
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames

__all__ = ["DATA_TOPICS", "NOT_EXPORTABLE", "CabExportError", "export_bundle", "register"]

log = logging.getLogger(__name__)

# Topics sealed producers write events into (control, seals, alerts and the
# dead-letter topic carry no sealed data events).
DATA_TOPICS = (Topic.ENTRIES, Topic.READS, Topic.INVALIDATIONS, Topic.ERASURE, Topic.KVSCRUB)
# Topics no bundle can be exported from, and why. The verifying consumer
# assigns control and seals itself: naming one again as a data topic would
# assign its partitions twice, which librdkafka refuses with an exception.
NOT_EXPORTABLE: Mapping[Topic, str] = {
    Topic.CONTROL: "is read by the exporter for key registrations only; bundles of "
    "control events (ContractDefined, RoleGranted) are not supported by CAB v1",
    Topic.SEALS: "holds seals, which are not themselves sealed events",
    Topic.DEADLETTER: "holds undecodable raw records, not sealed events",
}
# Where `cachet keys init` writes the anchor's public key set.
ANCHOR_FILE = "anchor.json"


class CabExportError(CabError):
    """The event, its seal or its key registration could not be found or verified."""


# --- export (library function; the CLI and the integration tests call it) ---


def _partitions(partitions: Mapping[Topic, int] | int) -> Callable[[Topic], int]:
    return (lambda _t: partitions) if isinstance(partitions, int) else partitions.__getitem__


def _find_applied(
    servers: str,
    names: TopicNames,
    codec: EventCodec,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    event_id: str,
    data_topics: Collection[Topic],
    partitions: Mapping[Topic, int] | int,
    deadline: float,
) -> Applied:
    found: list[Applied] = []

    def apply(applied: Applied) -> None:
        if applied.event.event_id == event_id:
            found.append(applied)

    def alert(event_type: EventType, payload: dict[str, Any]) -> None:
        # Export only reads: rejections are reported to the operator, and the
        # running verifiers already raise the alerts on the log.
        log.warning("while exporting: %s %s", event_type.value, payload)

    vc = VerifyingConsumer(
        servers,
        names,
        codec,
        anchor,
        required,
        data_topics,
        apply,
        alert,
        Producer(producer_settings(servers)),
        partitions=partitions,
        name="cab-export",
    )
    try:
        while not found and time.monotonic() < deadline:
            vc.poll(0.2)
    finally:
        vc.close()
    if not found:
        raise CabExportError(
            f"event {event_id} was not found verified on {', '.join(t.value for t in data_topics)} "
            "before the timeout (absent, unsealed, or its seal did not verify)"
        )
    return found[0]


def read_registrations(
    servers: str,
    names: TopicNames,
    codec: EventCodec,
    partitions: Mapping[Topic, int] | int,
    deadline: float,
) -> list[dict[str, Any]]:
    """Every SigningKeyRegistered payload on the control topic, read to its end."""
    topic = names(Topic.CONTROL)
    count = _partitions(partitions)(Topic.CONTROL)
    consumer = Consumer(consumer_settings(servers))
    consumer.assign([TopicPartition(topic, p, 0) for p in range(count)])
    at_end: set[int] = set()
    found: list[dict[str, Any]] = []
    try:
        while len(at_end) < count and time.monotonic() < deadline:
            for msg in consumer.consume(500, 0.2):
                err = msg.error()
                if err is not None:
                    partition = msg.partition()
                    if err.code() == KafkaError._PARTITION_EOF and partition is not None:
                        at_end.add(partition)
                    else:
                        log.warning("control topic: %s", err)
                    continue
                try:
                    event = codec.decode(msg.value() or b"")
                except DecodeError as exc:
                    log.warning("control topic: undecodable record skipped: %s", exc)
                    continue
                if event.type is EventType.SIGNING_KEY_REGISTERED:
                    found.append(event.payload)
    finally:
        consumer.close()
    if len(at_end) < count:
        raise CabExportError(f"control topic {topic} was not read to its end before the timeout")
    return found


def registration_for(
    applied: Applied,
    payloads: list[dict[str, Any]],
    anchor: KeySet,
    required: Collection[SignatureScheme],
) -> tuple[bytes, tuple[SignatureLine, ...]]:
    """The anchor-signed registration that makes the seal's key set valid at
    its ``sealed_at`` (the earliest such one, as the registry would pick)."""
    header = applied.seal.header
    identity = identity_of(header.producer_id)
    best: tuple[int, bytes, tuple[SignatureLine, ...]] | None = None
    for p in payloads:
        if p["producer_id"] != identity or p["key_set_id"] != header.key_set_id:
            continue
        try:
            key_set = KeySet(
                p["key_set_id"],
                {SignatureScheme(k["algorithm"]): k["public_key"] for k in p["keys"]},
            )
            statement = registration_statement(identity, key_set, p["valid_from_us"])
            lines = tuple(
                SignatureLine(s["algorithm"], s["key_id"], s["signature"])
                for s in p["anchor_signatures"]
            )
        except (CachetError, ValueError, KeyError) as exc:
            log.warning("malformed registration of %s skipped: %s", header.key_set_id, exc)
            continue
        statuses = check_signatures(statement, lines, anchor, required)
        if any(st is not SchemeStatus.VALID for st in statuses.values()):
            log.warning("registration of %s not signed by the anchor: skipped", header.key_set_id)
            continue
        if p["valid_from_us"] <= header.sealed_at_us and (
            best is None or p["valid_from_us"] < best[0]
        ):
            best = (p["valid_from_us"], statement, lines)
    if best is None:
        raise CabExportError(
            f"no anchor-signed SigningKeyRegistered for key set {header.key_set_id} of "
            f"{identity} valid at {header.sealed_at_us} (a rotated-in key set is not "
            "supported by CAB v1)"
        )
    return best[1], best[2]


def export_bundle(
    servers: str,
    names: TopicNames,
    codec: EventCodec,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    event_id: str,
    *,
    data_topics: Collection[Topic] = DATA_TOPICS,
    partitions: Mapping[Topic, int] | int = 3,
    timeout_s: float = 30.0,
    read_index: int | None = None,
) -> bytes:
    """The Cache Attestation Bundle of event ``event_id``, from the live log;
    with ``read_index``, the read bundle of that read of the CacheReadBatch
    ``event_id``.

    The event is taken only once a verifying consumer (trusting ``anchor``)
    applied it, and the bundle is verified before it is returned. A topic of
    :data:`NOT_EXPORTABLE` in ``data_topics`` is a :class:`CabExportError`,
    raised before the broker is contacted; so is a negative ``read_index``.
    """
    if read_index is not None and read_index < 0:
        raise CabExportError(f"read index {read_index}: reads are numbered from 0")
    refused = [t for t in data_topics if t in NOT_EXPORTABLE]
    if refused:
        raise CabExportError(
            "; ".join(f"topic {t.value} {NOT_EXPORTABLE[t]}" for t in refused)
            + f" (export from: {', '.join(t.value for t in Topic if t not in NOT_EXPORTABLE)})"
        )
    deadline = time.monotonic() + timeout_s
    applied = _find_applied(
        servers, names, codec, anchor, required, event_id, data_topics, partitions, deadline
    )
    payloads = read_registrations(servers, names, codec, partitions, deadline)
    statement, lines = registration_for(applied, payloads, anchor, required)
    if read_index is None:
        return build_bundle(applied, statement, lines, anchor, required=required)
    if applied.event.type is not EventType.CACHE_READ_BATCH:
        raise CabExportError(
            f"event {event_id} is a {applied.event.type.value}, not a CacheReadBatch: "
            "--read-index names a read of a batch (a CacheRead event is proven by its "
            "event bundle, without --read-index)"
        )
    return build_read_bundle(applied, read_index, statement, lines, anchor, required=required)


# --- the command line -----------------------------------------------------------


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "cab", parents=[parent], help="Cache Attestation Bundles", description=__doc__
    )
    csub = p.add_subparsers(dest="cab_command", metavar="ACTION", required=True)
    e = csub.add_parser(
        "export",
        parents=[parent],
        help="write the attestation bundle of one event (reads the broker)",
    )
    e.add_argument("--event-id", required=True, help="the event's id (UUIDv7)")
    e.add_argument(
        "--read-index",
        type=int,
        default=None,
        metavar="N",
        help="write the read bundle of read N of the CacheReadBatch event (from 0)",
    )
    e.add_argument("--out", type=Path, required=True, help="bundle file to write")
    e.add_argument(
        "--anchor-file",
        type=Path,
        default=None,
        help=f"the trust anchor's public key set (default {ANCHOR_FILE} next to the keystore)",
    )
    e.add_argument("--timeout", type=float, default=30.0, help="seconds to look (default 30)")
    e.add_argument(
        "--topic",
        action="append",
        choices=[t.value for t in Topic],
        help="data topic to search (repeatable; default every data topic; "
        f"not {', '.join(t.value for t in NOT_EXPORTABLE)}: they hold no attestable events)",
    )
    e.add_argument("--json", action="store_true", help="print the outcome as JSON")
    e.set_defaults(handler=run_export)

    v = csub.add_parser("verify", parents=[parent], help="verify a bundle offline")
    v.add_argument("file", type=Path, help="the bundle")
    v.add_argument("--anchor-file", type=Path, default=None, help="pin this anchor key set")
    v.add_argument(
        "--anchor-fingerprint",
        default=None,
        metavar="KS_ID",
        help="pin the anchor by fingerprint (the id derived from its keys; "
        "default keys.trust_anchor_id when set)",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=run_verify)


def _required(ctx: CliContext) -> tuple[SignatureScheme, ...]:
    return tuple(ctx.config.attestation.schemes)


def run_export(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = args.anchor_file or ctx.config.keys.keystore_path.parent / ANCHOR_FILE
    anchor = load_anchor(path, ctx.config.keys.trust_anchor_id)
    kafka = ctx.config.kafka
    topics = [Topic(t) for t in args.topic] if args.topic else list(DATA_TOPICS)
    data = export_bundle(
        ctx.bootstrap_servers,
        ctx.topic_names,
        EventCodec(),
        anchor,
        _required(ctx),
        args.event_id,
        data_topics=topics,
        partitions={t: kafka.partitions_for(t) for t in Topic},
        timeout_s=args.timeout,
        read_index=args.read_index,
    )
    args.out.write_bytes(data)
    out = {
        "event_id": args.event_id,
        "read_index": args.read_index,
        "out": str(args.out),
        "bytes": len(data),
        "anchor_key_set_id": anchor.key_set_id,
        "anchor_fingerprint": anchor_fingerprint(anchor),
    }
    if args.json:
        emit_json(out)
    else:
        what = f"event {args.event_id}"
        if args.read_index is not None:
            what = f"read {args.read_index} of {what}"
        print(f"wrote {args.out} ({len(data)} bytes) for {what}")
        print(f"anchor fingerprint: {out['anchor_fingerprint']}  (give this to the auditor)")
    return 0


_MARK = {CheckOutcome.PASSED: "PASS", CheckOutcome.FAILED: "FAIL", CheckOutcome.NOT_RUN: "----"}


def _print_report(report: BundleReport) -> None:
    pinned = "pinned" if report.anchor_pinned else "NOT PINNED OR NOT MATCHING"
    print(f"ANCHOR FINGERPRINT  {report.anchor_fingerprint or '?'}  ({pinned})")
    print(f"anchor key set      {report.anchor_key_set_id or '?'}")
    for c in report.checks:
        print(f"{_MARK[c.outcome]}  {c.check.value:30s} {c.detail}")
    if report.event_id:
        print(
            f"event {report.event_id} ({report.event_type}) by {report.producer_id} "
            f"seq {report.producer_seq}, seal {report.seal_seq} leaf "
            f"{report.leaf_index}/{report.tree_size}, sealed at {report.sealed_at_us}"
        )
    if report.read_index is not None:
        print(f"read bundle: read {report.read_index} of the batch")
    if report.read is not None:
        r = report.read
        print(
            f"read by {r['node_id']} as {r['reader_role']}: {r['outcome']} ({r['reason']}), "
            f"key {r['key_hash']} in {r['namespace']} under {r['contract']}, "
            f"version {r['version']}, freshness {r['freshness']}"
        )
    print("VERIFIED" if report.ok else "NOT VERIFIED")


def pinned_anchor(ctx: CliContext, args: argparse.Namespace) -> tuple[KeySet | None, str | None]:
    """The trust anchor an offline verification pins: the ``--anchor-file``
    key set, else the ``--anchor-fingerprint``, else the configured anchor id."""
    pinned_id = ctx.config.keys.trust_anchor_id
    anchor = load_anchor(args.anchor_file, pinned_id) if args.anchor_file else None
    fingerprint = args.anchor_fingerprint
    if fingerprint is None and anchor is None and pinned_id != UNPINNED:
        fingerprint = pinned_id
    return anchor, fingerprint


def run_verify(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    try:
        data = args.file.read_bytes()
    except OSError as exc:
        return fail(f"cannot read bundle {args.file}: {exc}")
    anchor, fingerprint = pinned_anchor(ctx, args)
    report = verify_bundle(
        data, pinned_anchor=anchor, pinned_fingerprint=fingerprint, required=_required(ctx)
    )
    if args.json:
        emit_json(report.to_json())
    else:
        _print_report(report)
        if anchor is None and fingerprint is None:
            print(
                "no anchor pinned: pass --anchor-file or --anchor-fingerprint "
                "(or set keys.trust_anchor_id) after checking the fingerprint above"
            )
    return 0 if report.ok else 1
