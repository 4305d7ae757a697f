"""What every subcommand shares: the options, the config, the exit codes.

The environment (``CACHET_CONFIG``, ``CACHET_BOOTSTRAP_SERVERS``) is read in
one place, :func:`cachet.config.load.resolve_config`, shared with
``cachet.open``; everything below gets typed values.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachet.config import CachetConfig
from cachet.config.load import resolve_config
from cachet.kafka.settings import use_security
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
    config_path: Path | None

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> CliContext:
        config, path = resolve_config(args.config, args.bootstrap_servers, os.environ)
        # Every Kafka client this command builds gets the deployment's SASL/TLS.
        use_security(config.kafka.bootstrap_servers, config.kafka.security, os.environ)
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


# The exit code of a long-running command whose view failed (its store, or an
# error that left its state not whole): its supervisor restarts it, and the
# restart resumes from the last commit.
EXIT_VIEW_FAILED = 3


def view_failed(who: str, failure: str) -> int:
    """Say that ``who`` stopped because its view failed; the exit code."""
    return fail(
        f"{who} stopped: its view failed ({failure}); restart it to resume from its last commit",
        code=EXIT_VIEW_FAILED,
    )


def wait_for_stop(stop: threading.Event, view_stopped: threading.Event) -> None:
    """Until ``stop`` (a signal) or ``view_stopped`` (a view failed for good)
    is set; no periodic wake-up while neither happens."""

    def relay() -> None:
        view_stopped.wait()
        stop.set()

    threading.Thread(target=relay, name="cachet-view-watch", daemon=True).start()
    stop.wait()
