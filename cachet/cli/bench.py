"""``cachet bench NAME``: the one entry point for every benchmark.

Each benchmark is a module ``cachet.ops.bench.NAME`` with ``run(quick, **options)``
returning a dict of figures and ratios (its baseline measured in the same
run) and ``format_report(result)`` for people. ``--json`` prints the dict as
one JSON object on the last line.
"""

from __future__ import annotations

import argparse
import importlib
import inspect
import pkgutil

import cachet.ops.bench
from cachet.cli.context import CliContext, emit_json, fail


def available() -> list[str]:
    return sorted(
        m.name
        for m in pkgutil.iter_modules(cachet.ops.bench.__path__)
        if not m.name.startswith("_")
    )


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "bench",
        parents=[parent],
        help="run a benchmark against its baseline",
        description="Run a benchmark. Available: " + ", ".join(available()),
    )
    p.add_argument("name", help="which benchmark: " + ", ".join(available()))
    p.add_argument(
        "--quick", action="store_true", help="a smaller run that finishes within a minute"
    )
    p.add_argument("--json", action="store_true", help="print one JSON object of figures last")
    p.add_argument("--device", default=None, help="scrub: cpu or cuda (default: best available)")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    if args.name not in available():
        return fail(f"unknown benchmark {args.name!r}; available: {', '.join(available())}")
    module = importlib.import_module(f"cachet.ops.bench.{args.name}")
    options = {"config": CliContext.from_args(args).config}
    if args.device:
        options["device"] = args.device
    accepted = inspect.signature(module.run).parameters
    result = module.run(quick=args.quick, **{k: v for k, v in options.items() if k in accepted})
    print(module.format_report(result), flush=True)
    if args.json:
        emit_json(result)
    return 0
