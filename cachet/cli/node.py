"""``cachet node run``: a cache node process (live view replica + HTTP front)."""

from __future__ import annotations

import argparse
import gc
import signal
import socket
import threading
from pathlib import Path
from types import FrameType

from cachet.cli.context import CliContext, view_failed, wait_for_stop
from cachet.cli.keys import open_keystore, publish_registration
from cachet.crypto.keystore import KeystoreError
from cachet.errors import CachetError
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.http import HttpFrontError, NodeHttpServer, TokenStore
from cachet.producers.http.credentials import certificate_principals


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("node", parents=[parent], help="run a cache node")
    nsub = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    r = nsub.add_parser(
        "run",
        parents=[parent],
        help="run a node until SIGINT/SIGTERM",
        description="Run a cache node: a full replica of the live view, fed by the verifying "
        "consumer, with /health, /metrics, /openapi.json and a JSON cache API on http.host "
        "(127.0.0.1 by default). Every request but /health needs a credential from [http] "
        "(a bearer token: `cachet tokens add`; or a client certificate).",
    )
    r.add_argument("--node-id", default=None, help="identity (default node.node_id)")
    r.add_argument(
        "--http-port",
        type=int,
        default=None,
        help="HTTP port (default node.health_port; 0 = any free port)",
    )
    r.add_argument("--data-dir", type=Path, default=None, help="default node.data_dir")
    r.add_argument("--kek-file", type=Path, default=None, help="key-encryption key file")
    r.add_argument(
        "--register",
        action="store_true",
        help="create and register this node's key set if it has none",
    )
    r.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    config = ctx.config
    identity = args.node_id or config.node.node_id
    port = args.http_port if args.http_port is not None else config.node.health_port
    # Before keys are touched or the node starts consuming: a port we
    # cannot serve on is a one-line error now, not a traceback later.
    _check_port(
        port, "--http-port" if args.http_port is not None else "node.health_port", config.http.host
    )
    # Before the node starts too: a tokens file that is missing or malformed.
    try:
        tokens = TokenStore.from_config(config)
        certificate_principals(config)
    except CachetError as exc:
        raise HttpFrontError(f"[http] credentials: {exc}") from exc
    store = open_keystore(ctx, args)
    try:
        store.key_set(identity)
    except KeystoreError:
        if not args.register:
            raise
        publish_registration(ctx, store, identity)
    keys = NodeKeys.from_keystore(store, identity, config.vault)
    data_dir = args.data_dir or config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with CacheNode(config, ctx.bootstrap_servers, keys, data_dir, node_id=identity) as node:
        http = NodeHttpServer.from_config(node, config, port, tokens=tokens).start()
        print(f"node {identity} {http.url}", flush=True)
        # What startup made lives as long as the process: out of the garbage
        # collector's way, so a full collection (a pause in every read)
        # walks only what the node made since.
        gc.freeze()
        wait_for_stop(stop, node.view_stopped)
        http.close()
        failure = node.view.failure
    if failure is not None:
        return view_failed(f"node {identity}", failure)
    print(f"node {identity} stopped", flush=True)
    return 0


def _check_port(port: int, source: str, host: str) -> None:
    """Refuse a port out of range or one that cannot be bound (in use, not
    permitted), naming the port, where it came from and why."""
    if not 0 <= port <= 65535:
        raise CachetError(f"{source} {port}: not a TCP port (0-65535)")
    if port == 0:
        return  # any free port: nothing to check
    probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    try:
        # The server binds with SO_REUSEADDR too: a port in TIME_WAIT is free.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((host, port))
    except OSError as exc:
        raise HttpFrontError(
            f"{source} {port}: cannot serve HTTP on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    finally:
        probe.close()
