"""``cachet export``: FINRA examination and SOC 2 evidence, signed; and their check.

``cachet export examination --contract NAME --from T1 --to T2 --out DIR``
writes every table of the contract's examination (Avro OCF, plus CSV, JSONL
or XML as the contract's ``examination_export_format`` asks), a
self-contained ``report.html`` and a manifest of every file's SHA3-256,
signed with the exporting identity's key set. ``cachet export soc2 --from
T1 --to T2 --out DIR`` writes one folder per SOC 2 control, signed the same
way. Both read verified events from ``--archive DIR``, the broker
(``--broker``, the default) or both (archive first, then the log).

``cachet export verify DIR --anchor FILE`` checks an export offline: the
anchor pin, the signer's anchor-signed registration, the manifest's
signatures, every file's size and hash, and that no file was added. Exit 0
only when every check passes. Times: ISO 8601 (``2026-12-01T14:32:00Z``,
UTC when no zone) or microseconds since the epoch.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from cachet.cli.context import CliContext, emit_json, fail
from cachet.crypto.keystore import KeystoreError, open_keystore
from cachet.ledger.anchor import UNPINNED, load_anchor
from cachet.materializers.evidence import (
    ManifestReport,
    Window,
    export_examination,
    export_soc2,
    parse_time_us,
    verify_export,
)
from cachet.materializers.evidence.records import EvidenceSource
from cachet.materializers.evidence.replay_source import ReplayEvidenceSource
from cachet.materializers.replay import (
    ArchiveSource,
    ArchiveThenBroker,
    BrokerSource,
    ReplaySource,
    ReplayTrust,
)

__all__ = ["register"]

ANCHOR_FILE = "anchor.json"  # where `cachet keys init` writes the anchor's public keys


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "export", parents=[parent], help="examination and SOC 2 evidence", description=__doc__
    )
    es = p.add_subparsers(dest="export_command", metavar="ACTION", required=True)
    common = argparse.ArgumentParser(add_help=False, parents=[parent])
    common.add_argument(
        "--from", dest="from_time", required=True, metavar="T1", help="window start (inclusive)"
    )
    common.add_argument(
        "--to", dest="to_time", required=True, metavar="T2", help="window end (exclusive)"
    )
    common.add_argument("--out", type=Path, required=True, help="a new (or empty) directory")
    common.add_argument("--archive", type=Path, default=None, help="read the archive in DIR")
    common.add_argument(
        "--broker",
        action="store_true",
        help="read the broker (the default; with --archive: the archive first, then the log)",
    )
    common.add_argument(
        "--identity", default=None, help="the exporting identity (default node.node_id)"
    )
    common.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    common.add_argument(
        "--anchor-file",
        type=Path,
        default=None,
        help=f"the trust anchor's public key set (default {ANCHOR_FILE} next to the keystore)",
    )
    common.add_argument("--json", action="store_true", help="print the outcome as JSON")
    e = es.add_parser("examination", parents=[common], help="FINRA examination of one contract")
    e.add_argument("--contract", required=True, help="the contract to examine")
    e.set_defaults(handler=run_examination)
    s = es.add_parser("soc2", parents=[common], help="SOC 2 evidence, one folder per control")
    s.set_defaults(handler=run_soc2)
    v = es.add_parser("verify", parents=[parent], help="verify an export offline")
    v.add_argument("dir", type=Path, help="the export directory")
    v.add_argument("--anchor", type=Path, default=None, help="pin this anchor key set (file)")
    v.add_argument(
        "--anchor-fingerprint",
        default=None,
        metavar="KS_ID",
        help="pin the anchor by fingerprint (default keys.trust_anchor_id when set)",
    )
    v.add_argument("--json", action="store_true", help="print the report as JSON")
    v.set_defaults(handler=run_verify)


@contextmanager
def _progress(enabled: bool) -> Iterator[Callable[[str, int], None]]:
    """A rich progress display on stderr (only where stderr is a terminal)."""
    from rich.console import Console
    from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        TextColumn("{task.completed:>9,d}"),
        TimeElapsedColumn(),
        console=console,
        transient=True,
        disable=not (enabled and console.is_terminal),
    )
    tasks: dict[str, Any] = {}

    def update(stage: str, count: int) -> None:
        if stage not in tasks:
            tasks[stage] = progress.add_task(stage, total=None)
        progress.update(tasks[stage], completed=count)

    with progress:
        yield update


def _source(ctx: CliContext, args: argparse.Namespace) -> ReplaySource:
    names = ctx.topic_names
    broker = BrokerSource(
        ctx.bootstrap_servers, names, consumer_overrides=ctx.config.kafka.consumer_overrides
    )
    if args.archive is None:
        return broker
    archive = ArchiveSource(args.archive, names)
    return ArchiveThenBroker(archive, broker) if args.broker else archive


def _prepare(
    args: argparse.Namespace, progress: Callable[[str, int], None]
) -> tuple[CliContext, EvidenceSource, dict[str, Any]]:
    ctx = CliContext.from_args(args)
    # The window first: a typo in a time is one line, before keys or the log are touched.
    window = Window(parse_time_us(args.from_time), parse_time_us(args.to_time))
    keys_config = ctx.config.keys
    anchor_path = args.anchor_file or keys_config.keystore_path.parent / ANCHOR_FILE
    anchor = load_anchor(anchor_path, keys_config.trust_anchor_id)
    identity = args.identity or ctx.config.node.node_id
    keystore = open_keystore(
        keys_config.keystore_path,
        args.kek_file or keys_config.kek_file,
        keys_config.kek_env,
        os.environ,
    )
    try:
        signing = keystore.key_set(identity)
    except KeystoreError as exc:
        raise KeystoreError(f"exporting identity {identity}: {exc}") from exc
    trust = ReplayTrust.from_config(ctx.config, anchor)
    source = ReplayEvidenceSource(
        _source(ctx, args), trust, progress=lambda n: progress("verified events", n)
    )
    common = {
        "window": window,
        "out": args.out,
        "identity": identity,
        "keys": signing,
        "anchor": anchor,
        "clock": lambda: time.time_ns() // 1000,
        "progress": progress,
    }
    return ctx, source, common


def _done(args: argparse.Namespace, result: Any) -> int:
    if args.json:
        emit_json(result.as_json())
        return 0
    out = result.as_json()
    print(f"wrote {out['files']} files to {out['out']}, signed by {out['signer']['identity']}")
    print(f"anchor fingerprint: {out['signer']['anchor_fingerprint']}  (give this to the examiner)")
    for name, rows in sorted(out["rows"].items()):
        print(f"  {name:24s} {rows}")
    refused = out["verification"]["refused_records"]
    if refused:
        print(
            f"warning: {refused} records did not verify and are not in the export", file=sys.stderr
        )
    return 0


def run_examination(args: argparse.Namespace) -> int:
    with _progress(not args.json) as progress:
        ctx, source, common = _prepare(args, progress)
        result = export_examination(
            source,
            contract=args.contract,
            config_contract=ctx.config.contracts.get(args.contract),
            **common,
        )
    return _done(args, result)


def run_soc2(args: argparse.Namespace) -> int:
    with _progress(not args.json) as progress:
        ctx, source, common = _prepare(args, progress)
        kafka = ctx.config.kafka
        transport = {
            "bootstrap_servers": kafka.bootstrap_servers,
            "producer_security_protocol": str(
                kafka.producer_overrides.get("security.protocol", "plaintext")
            ),
            "consumer_security_protocol": str(
                kafka.consumer_overrides.get("security.protocol", "plaintext")
            ),
            "note": "plaintext is allowed only on loopback (the embedded broker); production "
            "deployments configure TLS/SASL through [kafka] producer_overrides/consumer_overrides",
        }
        result = export_soc2(source, transport=transport, **common)
    return _done(args, result)


def _print_report(report: ManifestReport) -> None:
    for c in report.checks:
        print(f"{'PASS' if c.passed else 'FAIL'}  {c.check.value:30s} {c.detail}")
    print("VERIFIED" if report.ok else "NOT VERIFIED")


def run_verify(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    pinned_id = ctx.config.keys.trust_anchor_id
    anchor = load_anchor(args.anchor, pinned_id) if args.anchor else None
    fingerprint = args.anchor_fingerprint
    if fingerprint is None and anchor is None and pinned_id != UNPINNED:
        fingerprint = pinned_id
    if not args.dir.is_dir():
        return fail(f"export directory {args.dir} does not exist")
    report = verify_export(
        args.dir,
        pinned_anchor=anchor,
        pinned_fingerprint=fingerprint,
        required=tuple(ctx.config.attestation.schemes),
    )
    if args.json:
        emit_json(report.as_json())
    else:
        _print_report(report)
        if anchor is None and fingerprint is None:
            print(
                "no anchor pinned: pass --anchor or --anchor-fingerprint (or set keys.trust_anchor_id)"
            )
    return 0 if report.ok else 1
