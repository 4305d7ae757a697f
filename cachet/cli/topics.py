"""``cachet topics create``: provision every topic of the design."""

from __future__ import annotations

import argparse

from cachet.cli.context import CliContext, emit_json
from cachet.kafka.settings import create_topics


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("topics", parents=[parent], help="manage Cachet's topics")
    tsub = p.add_subparsers(dest="topics_command", metavar="ACTION", required=True)
    c = tsub.add_parser(
        "create",
        parents=[parent],
        help="create every Cachet topic (existing ones are kept)",
        description="Create entries, reads, invalidations, control, erasure, kvscrub, seals, "
        "alerts and deadletter under the configured prefix, with the configured partitions.",
    )
    c.add_argument("--json", action="store_true", help="print the outcome as JSON")
    c.set_defaults(handler=run_create)


def run_create(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    kafka = ctx.config.kafka
    per_topic = {t: kafka.partitions_for(t) for t in ctx.topic_names.all()}
    outcome = create_topics(
        ctx.bootstrap_servers, ctx.topic_names, per_topic, kafka.replication_factor
    )
    if args.json:
        emit_json(outcome)
    else:
        for name, what in sorted(outcome.items()):
            print(f"{name:32s} {what}")
    return 0
