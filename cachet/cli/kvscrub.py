"""``cachet kvscrub worker``: run a KV-cache scrub worker until SIGINT/SIGTERM.

Keys, for now: the worker generates an EPHEMERAL signing key set at start
and registers it on the control topic under its worker id, signed by the
trust anchor held in the local keystore (``[keys]`` in ``cachet.toml``; the
KEK from ``kek_file`` or the ``kek_env`` variable). The same keystore gives
the identifier secret that hashes tenant and subject ids. A keystore without
an anchor or an identifier secret is a clear error, not a fallback: evidence
nobody can verify, or plaintext tenant ids on the log, would be worse than
no worker. The ephemeral private keys die with the process; rotation and
revocation of worker keys are not handled here yet.

Requests: the worker acts only on scrub and erasure requests whose seal
verifies under keys that anchor registered, sealed by an identity named in
``[kvscrub] allowed_requesters`` (its own identity may ask for scrubs, not
erasures). Anything else is refused and alerted on the ``alerts`` topic.
"""

from __future__ import annotations

import argparse
import secrets
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any

from confluent_kafka import Producer

from cachet.cli.context import CliContext
from cachet.cli.keys import open_keystore
from cachet.clock import SYSTEM_CLOCK
from cachet.config.enums import ScrubMethod as ConfigScrubMethod
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.keystore import KeystoreError
from cachet.crypto.seal import PrivateKeySet
from cachet.errors import CachetError
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.ledger.registration import registration_payload
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType


def run_worker(*args: Any, **kwargs: Any) -> None:
    """``cachet.processors.kvscrub.runner.run_worker``, imported when a worker runs:
    torch loads then, not with the CLI (``cachet --help`` works without it)."""
    from cachet.processors.kvscrub.runner import run_worker as _run_worker

    _run_worker(*args, **kwargs)


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("kvscrub", parents=[parent], help="KV-cache scrubbing on inference workers")
    ksub = p.add_subparsers(dest="kvscrub_command", metavar="ACTION", required=True)
    w = ksub.add_parser(
        "worker",
        parents=[parent],
        help="run a scrub worker until SIGINT/SIGTERM",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    w.add_argument(
        "--device",
        choices=("auto", "cpu", "cuda"),
        default=None,
        help="where the block pool lives (default: [kvscrub] device)",
    )
    w.add_argument("--worker-id", default=None, help="this worker's id (default: [node] node_id)")
    w.add_argument(
        "--kek-file",
        type=Path,
        default=None,
        help="key-encryption key file (default keys.kek_file, else $CACHET_KEK)",
    )
    w.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    config = ctx.config
    worker_id: str = args.worker_id or config.node.node_id
    store = open_keystore(ctx, args)
    try:
        anchor = store.anchor()
        hasher = IdentifierHasher(store.identifier_secret())
    except KeystoreError as exc:
        raise CachetError(f"kvscrub worker cannot start: {exc}") from exc

    keys = PrivateKeySet.generate()
    payload = registration_payload(worker_id, keys.public(), SYSTEM_CLOCK.now_us(), anchor)
    publish_control(
        Producer(producer_settings(ctx.bootstrap_servers, config.kafka.producer_overrides)),
        EventCodec(),
        ctx.topic_names,
        EventType.SIGNING_KEY_REGISTERED,
        payload,
    )
    print(f"registered ephemeral key set {keys.key_set_id} for {worker_id}")

    # SAMPLED needs a secret sampling key; an ephemeral one keeps positions
    # unpredictable, though an auditor cannot recompute them after exit.
    sample_key = (
        secrets.token_bytes(32) if config.kvscrub.method is ConfigScrubMethod.SAMPLED else b""
    )

    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    allowed = ", ".join(config.kvscrub.allowed_requesters) or "none ([kvscrub] allowed_requesters)"
    print(f"kvscrub worker {worker_id} running; acts on requests from: {allowed}; Ctrl-C to stop")
    run_worker(
        config,
        ctx.bootstrap_servers,
        ctx.topic_names,
        keys,
        stop,
        anchor=anchor.public(),
        hasher=hasher,
        worker_id=worker_id,
        device=args.device,
        sample_key=sample_key,
    )
    print(f"kvscrub worker {worker_id} stopped")
    return 0
