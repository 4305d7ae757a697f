"""What every subcommand shares: the options, the config, the exit codes.

The CLI is the one boundary that reads the environment (``CACHET_CONFIG``,
``CACHET_BOOTSTRAP_SERVERS``); everything below it gets typed values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from cachet.config import CachetConfig, load_config
from cachet.topics import TopicNames

__all__ = ["CliContext", "common_options", "emit_json", "fail"]

DEFAULT_CONFIG = "cachet.toml"


def common_options(*, suppress: bool = False) -> argparse.ArgumentParser:
    """Options every command understands, before or after the subcommand.

    The top-level parser takes them with real defaults; every subparser
    with ``suppress=True`` (default ``argparse.SUPPRESS``), so an option
    not repeated after the subcommand keeps the value given before it
    rather than being reset by the subparser's default.
    """

    def default(value: Any) -> Any:
        return argparse.SUPPRESS if suppress else value

    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument(
        "--config",
        metavar="PATH",
        default=default(None),
        help=f"configuration file (default ./{DEFAULT_CONFIG}, env CACHET_CONFIG)",
    )
    parent.add_argument(
        "--bootstrap-servers",
        metavar="HOST:PORT",
        default=default(None),
        help="Kafka bootstrap servers (env CACHET_BOOTSTRAP_SERVERS; default from config)",
    )
    parent.add_argument(
        "-v", "--verbose", action="count", default=default(0), help="more logging (-vv: debug)"
    )
    return parent


@dataclass(frozen=True, slots=True)
class CliContext:
    """The loaded config with command-line and environment overrides applied."""

    config: CachetConfig
    config_path: str | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CliContext:
        path = args.config or os.environ.get("CACHET_CONFIG")
        explicit = path is not None
        if path is None and Path(DEFAULT_CONFIG).exists():
            path = DEFAULT_CONFIG
        config = load_config(path if (explicit or path) else None)
        servers = args.bootstrap_servers or os.environ.get("CACHET_BOOTSTRAP_SERVERS")
        if servers:
            config = replace(config, kafka=replace(config.kafka, bootstrap_servers=servers))
        return cls(config, path)

    @property
    def bootstrap_servers(self) -> str:
        return self.config.kafka.bootstrap_servers

    @property
    def topic_names(self) -> TopicNames:
        return TopicNames(self.config.kafka.topic_prefix)


def emit_json(obj: Any) -> None:
    """One JSON object on one line: the last line a machine reads."""
    print(json.dumps(obj, sort_keys=True, default=str))


def fail(message: str, code: int = 2) -> int:
    print(f"cachet: error: {message}", file=sys.stderr)
    return code
