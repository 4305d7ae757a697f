"""``cachet archive``: the hash-chained archive that outlives Kafka.

* ``run``: the archive consumer. Reads every partition of every topic and
  writes every record into Avro segments under ``[audit] archive_dir`` (a
  copy of each closed segment under ``[archive] backup_dir`` when set),
  each anchored by a sealed ArchiveSegmentSealed signed by ``--identity``
  (default ``[archive] identity`` or ``<node.node_id>-archive``; it must
  hold a registered key set: ``cachet keys register --identity ...``).
  Verifies itself every ``[archive] verify_interval`` and on SIGUSR1;
  a failure is logged, alerted (IntegrityFailure) and turns ``/health``
  (``[archive] health_port``) to 503. SIGINT/SIGTERM close the open segment.
* ``verify DIR``: checks the chain, every seal and leaf, offsets and the
  ledger anchors (``docs/archive-format.md``); prints the first
  inconsistency with its evidence and exits 1, or exits 0. With
  ``--bootstrap-servers`` it also reads the anchors of the newest segments
  (not archived yet) from the broker, verified under their seals.
* ``list DIR``: the segments, their hashes, counts and offset ranges.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from cachet.cli.context import CliContext
from cachet.ledger.anchor import load_anchor
from cachet.materializers.archive.broker_anchors import BrokerAnchor
from cachet.materializers.archive.report import ArchiveReport
from cachet.materializers.archive.segment import list_segments
from cachet.materializers.archive.verify import verify_archive

__all__ = ["register"]

log = logging.getLogger(__name__)

ANCHOR_FILE = "anchor.json"  # where `cachet keys init` writes the anchor's public key set


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("archive", parents=[parent], help="the hash-chained archive")
    asub = p.add_subparsers(dest="archive_command", metavar="ACTION", required=True)
    r = asub.add_parser(
        "run",
        parents=[parent],
        help="archive every topic until SIGINT/SIGTERM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--identity", default=None, help="signing identity of the anchors")
    r.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    r.add_argument("--host", default="127.0.0.1", help="address of /health")
    r.set_defaults(handler=run)
    v = asub.add_parser("verify", parents=[parent], help="verify an archive directory")
    v.add_argument("dir", type=Path, help="the archive directory")
    v.add_argument("--backup", type=Path, default=None, help="the backup set to compare")
    v.add_argument(
        "--anchor-file",
        type=Path,
        default=None,
        help=f"the pinned trust anchor's public key set (default {ANCHOR_FILE} next to the keystore)",
    )
    v.add_argument(
        "--identity",
        default=None,
        help="the only identity whose segment anchors count (default [archive] identity "
        "or <node.node_id>-archive)",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=run_verify)
    ls = asub.add_parser("list", parents=[parent], help="list an archive's segments")
    ls.add_argument("dir", type=Path, help="the archive directory")
    ls.add_argument("--json", action="store_true", help="print JSON")
    ls.set_defaults(handler=run_list)


def archive_identity(ctx: CliContext, given: str | None) -> str:
    return given or ctx.config.archive.identity or f"{ctx.config.node.node_id}-archive"


def _verify(ctx: CliContext, directory: Path, backup: Path | None, anchor_file: Path | None, identity: str, *, broker: bool = False) -> ArchiveReport:  # fmt: skip
    path = anchor_file or ctx.config.keys.keystore_path.parent / ANCHOR_FILE
    anchor = load_anchor(path, ctx.config.keys.trust_anchor_id)
    anchors: list[BrokerAnchor] = []
    if broker:
        from cachet.materializers.archive.broker_anchors import read_broker_anchors
        from cachet.topics import Topic

        kafka = ctx.config.kafka
        anchors = read_broker_anchors(
            ctx.bootstrap_servers,
            ctx.topic_names,
            anchor,
            tuple(ctx.config.attestation.schemes),
            partitions={t: kafka.partitions_for(t) for t in Topic},
        )
    return verify_archive(
        directory,
        broker_anchors=anchors,
        anchor=anchor,
        names=ctx.topic_names,
        required=tuple(ctx.config.attestation.schemes),
        backup_dir=backup,
        archive_identity=identity,
    )


def _print_report(report: ArchiveReport) -> None:
    print(f"archive {report.archive_id or '?'}: {len(report.segments)} segment(s)")
    for s in report.segments:
        print(f"  {s.name}  {s.status.value:<13} {s.records:>8} records  sha3-256 {s.sha3_256}")
    print(
        f"verified: {report.records_verified} records, {report.seals_verified} seals; "
        f"{report.unsealed_pending} awaiting a seal beyond the archive's end; "
        f"{report.unsigned} dead letters (unsigned copies)"
    )
    if report.first is None:
        print("OK: every check passed")
    else:
        f = report.first
        print("FIRST INCONSISTENCY (nothing from here on is verified):")
        print(f"  check     {f.check.value}")
        print(f"  segment   {f.segment}")
        if f.to_json()["record_index"] is not None:
            print(f"  record    {f.record_index}")
        if f.topic is not None:
            print(f"  record at {f.topic}[{f.partition}] offset {f.offset}")
        print(f"  expected  {f.expected}")
        print(f"  found     {f.found}")
        print(f"  detail    {f.detail}")


def run_verify(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    identity = archive_identity(ctx, args.identity)
    # An explicit --bootstrap-servers (or its variable) asks for the newest
    # segments' anchors from the broker too.
    broker = args.bootstrap_servers is not None or "CACHET_BOOTSTRAP_SERVERS" in os.environ
    report = _verify(ctx, args.dir, args.backup, args.anchor_file, identity, broker=broker)
    if args.json:
        print(json.dumps(report.to_json(), indent=2, sort_keys=True))
    else:
        _print_report(report)
    return 0 if report.ok else 1


def run_list(args: argparse.Namespace) -> int:
    CliContext.from_args(args)
    infos = list_segments(args.dir, verify_chain=False)
    rows = [
        {
            "seq": i.seq,
            "name": i.name,
            "sha3_256": i.hash.hex(),
            "prev_sha3_256": i.prev_hash.hex(),
            "records": i.record_count,
            "first_timestamp_ms": i.first_timestamp_ms,
            "last_timestamp_ms": i.last_timestamp_ms,
            "ranges": [[r.topic, r.partition, r.first_offset, r.last_offset] for r in i.ranges],
        }
        for i in infos
    ]
    if args.json:
        print(json.dumps(rows, indent=2))
    else:
        for row in rows:
            print(f"{row['name']}  {row['records']:>8} records  sha3-256 {row['sha3_256']}")
    return 0


def run(args: argparse.Namespace) -> int:
    # Imported here: `archive verify` needs no Kafka client or keystore.
    from cachet.cli.keys import open_keystore
    from cachet.cli.processors import HealthServer
    from cachet.crypto.registry import KeyRegistry
    from cachet.materializers.archive.archiver import Archiver, ArchiveSettings
    from cachet.materializers.archive.broker_anchors import anchored_segments
    from cachet.materializers.archive.selfcheck import SelfVerification
    from cachet.producers.sealing import LedgerAlerts, SealingProducer
    from cachet.schemas.codec import EventCodec
    from cachet.schemas.events import EventType
    from cachet.schemas.payloads import ArchiveSegmentSealed
    from cachet.topics import Topic

    ctx = CliContext.from_args(args)
    config = ctx.config
    identity = archive_identity(ctx, args.identity)
    store = open_keystore(ctx, args)
    signing = store.key_set(identity)
    anchor = store.anchor().public()
    required = tuple(config.attestation.schemes)
    codec = EventCodec()
    producer = SealingProducer.from_config(config, ctx.bootstrap_servers, identity, signing, codec=codec)  # fmt: skip

    def emit_anchor(anchor_event: ArchiveSegmentSealed) -> None:
        producer.emit_with_receipt(
            EventType.ARCHIVE_SEGMENT_SEALED,
            anchor_event.to_avro(),
            key=anchor_event.archive_id.encode(),
            topic=Topic.ARCHIVE,
        ).wait(10.0)

    def verified_anchors(archive_id: str) -> set[int]:
        return anchored_segments(
            ctx.bootstrap_servers,
            ctx.topic_names,
            anchor,
            required,
            archive_id=archive_id,
            identity=identity,
            partitions={t: config.kafka.partitions_for(t) for t in Topic},
            codec=codec,
        )

    settings = ArchiveSettings.from_config(config)
    stop = threading.Event()
    health: HealthServer | None = None
    threads: list[threading.Thread] = []
    archiver: Archiver | None = None
    selfcheck: SelfVerification | None = None
    try:
        archiver = Archiver(
            ctx.bootstrap_servers,
            ctx.topic_names,
            settings,
            codec=codec,
            emit_anchor=emit_anchor,
            registry=KeyRegistry(anchor, required),
            consumer_overrides=config.kafka.consumer_overrides,
            anchored=verified_anchors,
        )
        arch = archiver

        def verify_now() -> ArchiveReport:
            with arch.closing:  # never while a segment is half-published
                return verify_archive(
                    settings.directory,
                    anchor=anchor,
                    names=ctx.topic_names,
                    required=required,
                    backup_dir=settings.backup_dir,
                    archive_identity=identity,
                )

        selfcheck = SelfVerification(
            verify_now,
            LedgerAlerts(producer, f"archive {identity}"),
            config.archive.verify_interval_ms / 1000,
            source=f"archive {identity}",
        )
        threads.append(threading.Thread(target=selfcheck.run, args=(stop,), name="cachet-archive-verify", daemon=True))  # fmt: skip
        threads[-1].start()

        check = selfcheck

        def probe() -> dict[str, Any]:
            h = arch.health
            problems = list(h.problems) + check.problems
            problems += [f"unanchored_segment: {s}" for s in h.unanchored]
            problems += [f"producer: {p}" for p in producer.problems()]
            return {
                "ok": not problems,
                "problems": problems,
                "archive_id": arch.archive_id,
                "segments_closed": h.segments_closed,
                "records_archived": h.records_archived,
                "verifications": check.runs,
            }

        def on_signal(signum: int, frame: FrameType | None) -> None:
            if signum == signal.SIGUSR1:
                selfcheck.request()
            else:
                stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGUSR1, on_signal)
        if config.archive.health_port:
            health = HealthServer(args.host, config.archive.health_port, probe)
        print(
            f"archive {archiver.archive_id} ({identity}) -> {settings.directory}"
            + (f" + backup {settings.backup_dir}" if settings.backup_dir else "")
            + (f"; health http://{args.host}:{health.port}/health" if health else ""),
            flush=True,
        )
        archiver.run(stop)
    finally:
        stop.set()
        if selfcheck is not None:
            selfcheck.stop()
        for t in threads:
            t.join(10)
        if health is not None:
            health.close()
        producer.close(10)
    print("archive stopped", flush=True)
    return 0
