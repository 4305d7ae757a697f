"""``cachet erase``: request an erasure, set or lift a legal hold.

``cachet erase --subject ID [--namespace NS]`` emits a sealed
ErasureRequested and returns once the broker acknowledged it (and its seal);
it prints the request id. The erasure processor (``cachet processors
erasure``) carries it out and reports each stage as a sealed
ErasureCompleted; ``cachet erase status ID`` shows them.

``cachet erase hold set --subject ID | --namespace NS --reason TEXT`` and
``cachet erase hold lift HOLD_ID --reason TEXT`` set and lift legal holds:
entries a hold covers are held from every erasure until it is lifted.

The events are sealed with ``--identity`` (default: the one identity of
``[erasure] allowed_requesters``), whose key set must be in the keystore and
registered; the processor acts only on identities that list allows. The
subject id is hashed with the deployment's identifier secret: it never
leaves this process.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from cachet.cli.context import CliContext, emit_json, view_failed, wait_for_stop
from cachet.cli.keys import open_keystore
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.keystore import Keystore, KeystoreError
from cachet.errors import CachetError
from cachet.producers.erasure_request import (
    DEFAULT_LEGAL_BASIS,
    lift_legal_hold,
    request_erasure,
    set_legal_hold,
)
from cachet.producers.sealing import SealingProducer

__all__ = ["register"]


class EraseError(CachetError):
    """``cachet erase`` cannot act (no identity, no key set, bad arguments)."""


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "erase",
        parents=[parent],
        help="request an erasure, set or lift legal holds, show and verify erasures",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _identity_options(p)
    p.add_argument("--subject", help="the data subject's id (hashed before anything is sent)")
    p.add_argument("--namespace", default=None, help="erase in this namespace only")
    p.add_argument(
        "--legal-basis", default=DEFAULT_LEGAL_BASIS, help=f"default {DEFAULT_LEGAL_BASIS!r}"
    )
    p.add_argument("--requested-by", default=None, help="who asks (a label; default the identity)")
    p.set_defaults(handler=run_request)
    esub = p.add_subparsers(dest="erase_command", metavar="ACTION")

    hold = esub.add_parser("hold", parents=[parent], help="set or lift a legal hold")
    hsub = hold.add_subparsers(dest="hold_command", metavar="ACTION", required=True)
    hs = hsub.add_parser("set", parents=[parent], help="hold a subject and/or a namespace")
    _identity_options(hs)
    hs.add_argument("--subject", help="hold this data subject's entries")
    hs.add_argument("--namespace", default=None, help="hold this namespace's entries")
    hs.add_argument("--reason", required=True, help="why (e.g. the litigation matter)")
    hs.add_argument("--changed-by", default=None, help="who (a label; default the identity)")
    hs.set_defaults(handler=run_hold_set)
    hl = hsub.add_parser("lift", parents=[parent], help="lift a legal hold")
    _identity_options(hl)
    hl.add_argument("hold_id", help="the hold id `hold set` printed")
    hl.add_argument("--reason", required=True, help="why it ends")
    hl.add_argument("--changed-by", default=None, help="who (a label; default the identity)")
    hl.set_defaults(handler=run_hold_lift)
    try:
        from cachet.cli.erase_certificate import register_certificate_commands
    except ImportError:  # the certificate commands are not installed in this tree
        return
    register_certificate_commands(esub, parent)


def _identity_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--identity",
        default=None,
        help="sealing identity (default: the one of [erasure] allowed_requesters)",
    )
    p.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    p.add_argument("--timeout", type=float, default=10.0, help="seconds to wait for the ack")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def _identity(ctx: CliContext, args: argparse.Namespace) -> str:
    if args.identity:
        return str(args.identity)
    allowed = ctx.config.erasure.allowed_requesters
    if len(allowed) == 1:
        return allowed[0]
    raise EraseError(
        "name the sealing identity with --identity: [erasure] allowed_requesters lists "
        + (", ".join(allowed) if allowed else "nobody")
    )


def _producer(ctx: CliContext, store: Keystore, identity: str) -> SealingProducer:
    try:
        keys = store.key_set(identity)
    except KeystoreError as exc:
        raise EraseError(
            f"{exc}; create and register one with `cachet keys register --identity {identity}`"
        ) from exc
    return SealingProducer.from_config(ctx.config, ctx.bootstrap_servers, identity, keys)


def _run(
    args: argparse.Namespace, action: Any, describe: Any
) -> int:  # the three commands share everything but the call
    ctx = CliContext.from_args(args)
    identity = _identity(ctx, args)
    if identity not in ctx.config.erasure.allowed_requesters:
        # Sent anyway (the processor refuses and alerts): say so up front.
        print(
            f"cachet: warning: {identity!r} is not in [erasure] allowed_requesters; "
            "the erasure processor will refuse this",
            file=sys.stderr,
        )
    store = open_keystore(ctx, args)
    hasher = IdentifierHasher(store.identifier_secret())
    producer = _producer(ctx, store, identity)
    try:
        out = action(producer, hasher, identity)
        # Sealed before we return: a request whose seal never came is never acted on.
        producer.flush(args.timeout)
    finally:
        producer.close(args.timeout)
    if args.json:
        emit_json(out)
    else:
        print(describe(out))
    return 0


def run_request(args: argparse.Namespace) -> int:
    if not args.subject:
        raise EraseError("--subject is required (or an action: hold, status, verify)")

    def action(producer: SealingProducer, hasher: IdentifierHasher, identity: str) -> Any:
        ticket = request_erasure(
            producer,
            hasher,
            args.subject,
            namespace=args.namespace,
            requested_by=args.requested_by or identity,
            legal_basis=args.legal_basis,
            timeout_s=args.timeout,
        )
        return {
            "request_id": ticket.request_id,
            "subject_hash": ticket.subject_hash.hex(),
            "namespace": ticket.namespace,
            "requested_at_us": ticket.requested_at_us,
            "producer_id": ticket.producer_id,
        }

    return _run(
        args,
        action,
        lambda out: f"erasure requested: {out['request_id']} (subject hash {out['subject_hash']})",
    )


def run_hold_set(args: argparse.Namespace) -> int:
    if not args.subject and not args.namespace:
        raise EraseError("a legal hold needs --subject, --namespace, or both")

    def action(producer: SealingProducer, hasher: IdentifierHasher, identity: str) -> Any:
        ticket = set_legal_hold(
            producer,
            hasher,
            subject=args.subject,
            namespace=args.namespace,
            reason=args.reason,
            changed_by=args.changed_by or identity,
            timeout_s=args.timeout,
        )
        return {
            "hold_id": ticket.hold_id,
            "action": ticket.action.name,
            "subject_hash": ticket.subject_hash.hex() if ticket.subject_hash else None,
            "namespace": ticket.namespace,
        }

    return _run(args, action, lambda out: f"legal hold set: {out['hold_id']}")


def run_hold_lift(args: argparse.Namespace) -> int:
    def action(producer: SealingProducer, hasher: IdentifierHasher, identity: str) -> Any:
        ticket = lift_legal_hold(
            producer,
            args.hold_id,
            reason=args.reason,
            changed_by=args.changed_by or identity,
            timeout_s=args.timeout,
        )
        return {"hold_id": ticket.hold_id, "action": ticket.action.name}

    return _run(args, action, lambda out: f"legal hold lifted: {out['hold_id']}")


# -- cachet processors erasure --------------------------------------------------

PROCESSOR_DOC = """Run the erasure processor until SIGINT/SIGTERM.

It keeps its own replica of the live view in ``<node.data_dir>/view-<identity>``,
reads the erasure log from offset 0 on every start (so it knows which
requests were carried out), and carries out every ErasureRequested sealed by
an identity of ``[erasure] allowed_requesters``: revokes the subject's
entries, destroys its data keys in the vault, and reports each stage as a
sealed ErasureCompleted. Held entries (retention obligations, legal holds)
are erased when the obligation ends or the hold is lifted. Idempotent and
resumable: a restart after a crash completes what was interrupted, once.

The identity (``[erasure] processor_identity`` unless ``--identity``) must
hold a registered key set. With ``node.health_port`` set, ``GET /health``
answers 200 once the processor is ready; with ``node.metrics_port``,
Prometheus metrics (``cachet_erasure_latency_seconds`` among them).
"""


def register_processor(
    psub: argparse._SubParsersAction, parent: argparse.ArgumentParser, health_server: type
) -> None:
    """Add ``erasure`` to ``cachet processors``; ``health_server`` is that
    command's ``/health`` server class (passed in: the CLI modules import
    each other in one direction only)."""
    r = psub.add_parser(
        "erasure",
        parents=[parent],
        help="run the erasure processor until SIGINT/SIGTERM",
        description=PROCESSOR_DOC,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    r.add_argument("--identity", default=None, help="default [erasure] processor_identity")
    r.add_argument("--data-dir", type=Path, default=None, help="default node.data_dir")
    r.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    r.add_argument(
        "--kv-scrub-wait-ms",
        type=int,
        default=5000,
        metavar="N",
        help="wait up to N ms after a request for KV-scrub evidence (default 5000)",
    )
    r.add_argument("--host", default="127.0.0.1", help="address of /health and /metrics")
    r.set_defaults(handler=run_processor, health_server=health_server)


def run_processor(args: argparse.Namespace) -> int:
    import signal
    import threading
    from types import FrameType

    from prometheus_client import start_http_server

    from cachet.processors.erasure import ErasureProcessor
    from cachet.producers.cache_node import CacheNode, NodeKeys

    if args.kv_scrub_wait_ms < 0:
        raise EraseError("--kv-scrub-wait-ms must not be negative")
    ctx = CliContext.from_args(args)
    config = ctx.config
    identity = args.identity or config.erasure.processor_identity
    store = open_keystore(ctx, args)
    keys = NodeKeys.from_keystore(store, identity, config.vault)
    data_dir = args.data_dir or config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()
    node = CacheNode(config, ctx.bootstrap_servers, keys, data_dir, node_id=identity)
    processor: ErasureProcessor | None = None
    health: Any = None
    metrics: Any = None
    try:
        processor = ErasureProcessor(
            node,
            bootstrap_servers=ctx.bootstrap_servers,
            allowed_requesters=config.erasure.allowed_requesters,
            kv_scrub_wait_s=args.kv_scrub_wait_ms / 1000,
            registry=node.registry,
        )
        threads = processor.start(stop)
        p = processor

        def probe() -> dict[str, Any]:
            problems = [t.name + "_stopped" for t in threads if not t.is_alive()]
            if node.view.failure is not None:
                problems.append(f"view_failed: {node.view.failure}")
            elif not p.ready:
                problems.append("catching_up")
            problems.extend(f"producer: {x}" for x in node.producer.problems())
            return {
                "ok": not problems,
                "problems": problems,
                "identity": identity,
                "pending": p.docket.pending(),
            }

        def on_signal(signum: int, frame: FrameType | None) -> None:
            stop.set()

        signal.signal(signal.SIGINT, on_signal)
        signal.signal(signal.SIGTERM, on_signal)
        if config.node.health_port:
            health = args.health_server(args.host, config.node.health_port, probe)
        if config.node.metrics_port:
            metrics, _ = start_http_server(
                config.node.metrics_port, args.host, registry=node.registry
            )
        print(
            f"erasure processor {identity}: allowed requesters "
            f"{', '.join(config.erasure.allowed_requesters) or 'none'}"
            + (f"; health http://{args.host}:{health.port}/health" if health else ""),
            flush=True,
        )
        wait_for_stop(stop, node.view_stopped)
        for t in threads:
            t.join(10)
    finally:
        stop.set()
        if health is not None:
            health.close()
        if metrics is not None:
            metrics.shutdown()
        try:
            if processor is not None:
                processor.close()
        finally:
            node.close()
            keys.vault.close()
    if node.view.failure is not None:
        return view_failed(f"erasure processor {identity}", node.view.failure)
    print(f"erasure processor {identity} stopped", flush=True)
    return 0
