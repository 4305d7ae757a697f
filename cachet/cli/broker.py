"""``cachet broker``: run the embedded Kafka-protocol broker in the foreground."""

from __future__ import annotations

import argparse
import signal
import sys
import threading
from types import FrameType

from cachet.cli.context import CliContext
from cachet.ops.broker import EmbeddedBroker


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "broker",
        parents=[parent],
        help="run the embedded broker on 127.0.0.1",
        description="Start the embedded Kafka-protocol broker (Tansu, memory storage: a restart "
        "loses the log) on 127.0.0.1, print its bootstrap address, stop on SIGINT/SIGTERM.",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="port (default from config: broker.port; 0 = any free)",
    )
    p.add_argument("--topics", action="store_true", help="also create every Cachet topic")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    port = args.port if args.port is not None else ctx.config.broker.port
    broker = EmbeddedBroker(port=port, startup_timeout_s=ctx.config.broker.startup_timeout_s)
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    with broker:
        if args.topics:
            from cachet.kafka.settings import create_topics

            create_topics(broker.bootstrap_servers, ctx.topic_names, ctx.config.kafka.partitions)
        print(f"bootstrap_servers={broker.bootstrap_servers}", flush=True)
        while not stop.wait(0.5):
            if broker._proc is not None and broker._proc.poll() is not None:
                print("cachet: broker exited unexpectedly", file=sys.stderr)
                return 1
    print("broker stopped", flush=True)
    return 0
