"""``cachet``: the entry point. Each subcommand lives in its own module."""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from cachet.cli import bench, broker, cab, config_cmd, demo, keys, kvscrub, node, processors, topics
from cachet.cli.context import common_options, fail
from cachet.errors import CachetError

__all__ = ["build_parser", "main"]

# Each module exposes register(subparsers, parent) and sets args.handler.
SUBCOMMANDS = (broker, topics, config_cmd, keys, cab, node, processors, demo, bench, kvscrub)


def build_parser() -> argparse.ArgumentParser:
    parent = common_options()
    parser = argparse.ArgumentParser(
        prog="cachet",
        description="Cachet: a compliance-grade cache built as a signed, event-sourced ledger on Kafka.",
        parents=[parent],
    )
    parser.add_argument("-v", "--verbose", action="count", default=0, help="more logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in SUBCOMMANDS:
        module.register(sub, parent)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args.handler(args) or 0)
    except CachetError as exc:
        return fail(str(exc))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
