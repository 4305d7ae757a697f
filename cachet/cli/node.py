"""``cachet node run``: a cache node process (live view replica + HTTP front)."""

from __future__ import annotations

import argparse
import signal
import threading
from pathlib import Path
from types import FrameType

from cachet.cli.context import CliContext
from cachet.cli.keys import open_keystore, publish_registration
from cachet.crypto.keystore import KeystoreError
from producers.cache_node import CacheNode, NodeKeys
from producers.node_http import NodeHttpServer


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("node", parents=[parent], help="run a cache node")
    nsub = p.add_subparsers(dest="node_command", metavar="ACTION", required=True)
    r = nsub.add_parser(
        "run",
        parents=[parent],
        help="run a node until SIGINT/SIGTERM",
        description="Run a cache node: a full replica of the live view, fed by the verifying "
        "consumer, with /health, /metrics and a JSON cache API on 127.0.0.1.",
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
    store = open_keystore(ctx, args)
    try:
        store.key_set(identity)
    except KeystoreError:
        if not args.register:
            raise
        publish_registration(ctx, store, identity)
    keys = NodeKeys.from_keystore(store, identity)
    data_dir = args.data_dir or config.node.data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    port = args.http_port if args.http_port is not None else config.node.health_port
    with CacheNode(config, ctx.bootstrap_servers, keys, data_dir, node_id=identity) as node:
        http = NodeHttpServer(node, port).start()
        print(f"node {identity} http://127.0.0.1:{http.port}", flush=True)
        stop.wait()
        http.close()
    print(f"node {identity} stopped", flush=True)
    return 0
