"""``cachet config check``: validate a configuration file."""

from __future__ import annotations

import argparse

from cachet.cli.context import CliContext, emit_json, fail
from cachet.config import ConfigError, load_config


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("config", parents=[parent], help="inspect the configuration")
    csub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = csub.add_parser(
        "check",
        parents=[parent],
        help="validate a cachet.toml; non-zero exit with the error",
    )
    c.add_argument("path", nargs="?", default=None, help="file to check (default: --config)")
    c.add_argument("--json", action="store_true")
    c.set_defaults(handler=run_check)


def run_check(args: argparse.Namespace) -> int:
    path = args.path
    try:
        if path is None:
            ctx = CliContext.from_args(args)
            config, path = ctx.config, ctx.config_path
        else:
            config = load_config(path)
    except ConfigError as exc:
        if args.json:
            emit_json({"ok": False, "error": str(exc)})
            return 1
        return fail(str(exc), code=1)
    summary = {"ok": True, "path": path, "contracts": sorted(config.contracts)}
    if args.json:
        emit_json(summary)
    else:
        print(
            f"{path or '(defaults)'}: ok, {len(config.contracts)} contract(s)"
            + (f": {', '.join(summary['contracts'])}" if config.contracts else "")
        )
    return 0
