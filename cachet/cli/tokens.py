"""``cachet tokens``: bearer tokens of the nodes' HTTP fronts.

``cachet tokens add --principal NAME --role ROLE [--scope S]
[--expires-in 90d | --expires-at 2027-03-01T00:00:00Z]`` makes a new random
token, prints it once, and stores only its SHA-256 (with the role, scope
and expiry) in the tokens file ``http.tokens_file`` names (or ``--file``).
The token is not kept anywhere: lose it and add another. ``list`` shows
the principals and their expiry (never hashes), marking expired ones;
``remove`` deletes one. Nodes read the file when they start.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path

from cachet.cli.context import CliContext, emit_json, fail
from cachet.clock import SYSTEM_CLOCK
from cachet.config import ConfigError, parse_duration_ms
from cachet.config.build_http import PRINCIPAL_PATTERN, format_timestamp_us, parse_timestamp_us
from cachet.config.enums import Role, parse_enum
from cachet.config.sections import HttpToken
from cachet.producers.http.credentials import load_tokens_file, new_token, token_digest

_ROLES = [r.value for r in Role if r is not Role.UNKNOWN]
_HEADER = (
    "# Bearer tokens of Cachet's HTTP fronts, written by `cachet tokens`.\n"
    "# Only SHA-256 hashes of the tokens are stored here; nodes read this file at start.\n"
)


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser("tokens", parents=[parent], help="HTTP bearer tokens (stored as hashes)")
    tsub = p.add_subparsers(dest="tokens_command", metavar="ACTION", required=True)
    file_help = "tokens file (default http.tokens_file)"

    a = tsub.add_parser(
        "add",
        parents=[parent],
        help="make a token for a principal; prints it once",
        description="Make a new random bearer token for PRINCIPAL with ROLE (and SCOPE), print "
        "it once, and store only its SHA-256 in the tokens file.",
    )
    a.add_argument("--principal", required=True, help=f"name ({PRINCIPAL_PATTERN})")
    a.add_argument("--role", required=True, help=f"one of {', '.join(_ROLES)}")
    a.add_argument("--scope", default=None, help="the tenant or subject it acts for")
    expiry = a.add_mutually_exclusive_group()
    expiry.add_argument(
        "--expires-in", metavar="DURATION", default=None, help="lifetime: 90d, 12h, 30m, 1h30m"
    )
    expiry.add_argument(
        "--expires-at",
        metavar="TIMESTAMP",
        default=None,
        help="expiry, RFC 3339 with an offset: 2027-03-01T00:00:00Z (default: never)",
    )
    a.add_argument("--file", type=Path, default=None, help=file_help)
    a.add_argument("--json", action="store_true", help="print one JSON object")
    a.set_defaults(handler=add)

    ls = tsub.add_parser("list", parents=[parent], help="principals, roles, scopes and expiry")
    ls.add_argument("--file", type=Path, default=None, help=file_help)
    ls.add_argument("--json", action="store_true", help="print one JSON object")
    ls.set_defaults(handler=list_tokens)

    rm = tsub.add_parser("remove", parents=[parent], help="delete a principal's token")
    rm.add_argument("--principal", required=True)
    rm.add_argument("--file", type=Path, default=None, help=file_help)
    rm.set_defaults(handler=remove)


def _file(args: argparse.Namespace, ctx: CliContext) -> Path | None:
    return args.file or ctx.config.http.tokens_file


def _read(path: Path) -> list[HttpToken]:
    return list(load_tokens_file(path)) if path.exists() else []


def _toml_string(text: str) -> str:
    # JSON string escapes are TOML basic-string escapes (ensure_ascii off:
    # TOML has no surrogate pairs; control characters are refused earlier).
    return json.dumps(text, ensure_ascii=False)


def _render(tokens: list[HttpToken]) -> str:
    out = [_HEADER]
    for t in sorted(tokens, key=lambda t: t.principal):
        out.append(f"\n[tokens.{t.principal}]\n")
        out.append(f'token_sha256 = "{t.token_sha256.hex()}"\n')
        out.append(f'role = "{t.role.value}"\n')
        if t.scope is not None:
            out.append(f"scope = {_toml_string(t.scope)}\n")
        if t.expires_at_us is not None:
            out.append(f'expires_at = "{format_timestamp_us(t.expires_at_us)}"\n')
    return "".join(out)


def _expires_at_us(args: argparse.Namespace, now_us: int) -> int | None:
    """The expiry ``--expires-in`` or ``--expires-at`` asks for (None:
    neither). Raises :class:`ConfigError` naming the option."""
    if args.expires_in is not None:
        return now_us + parse_duration_ms(args.expires_in, "--expires-in") * 1000
    if args.expires_at is None:
        return None
    at_us = parse_timestamp_us(args.expires_at, "--expires-at")
    if at_us <= now_us:
        raise ConfigError(None, "--expires-at", f"{args.expires_at!r} is not in the future")
    return at_us


def _expiry(t: HttpToken, now_us: int) -> str:
    if t.expires_at_us is None:
        return "never"
    when = format_timestamp_us(t.expires_at_us)
    return f"{when} (expired)" if now_us >= t.expires_at_us else when


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    """One writer at a time (two concurrent adds must not lose one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        yield


def _write(path: Path, tokens: list[HttpToken]) -> None:
    # Written whole and renamed into place: a crash leaves the old file or
    # the new one, never half of one. 0600: the hashes are not secrets, but
    # who holds which role is nobody else's business.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(_render(tokens))
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o600)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def add(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = _file(args, ctx)
    if path is None:
        return fail("no tokens file: set http.tokens_file in cachet.toml or pass --file")
    if re.fullmatch(PRINCIPAL_PATTERN, args.principal) is None:
        return fail(f"--principal {args.principal!r}: must match {PRINCIPAL_PATTERN}")
    try:
        role = parse_enum(Role, args.role)
    except ValueError:
        return fail(f"--role {args.role!r}: expected one of {', '.join(_ROLES)}")
    scope = args.scope
    if scope is not None and (not scope or not scope.isprintable()):
        return fail(f"--scope {scope!r}: expected a non-empty printable string")
    try:
        expires_at_us = _expires_at_us(args, SYSTEM_CLOCK.now_us())
    except ConfigError as exc:
        return fail(str(exc))
    if any(t.principal == args.principal for t in ctx.config.http.tokens):
        return fail(f"principal {args.principal!r} already has a token in [http.tokens]")
    token = new_token()
    with _locked(path):
        tokens = _read(path)
        if any(t.principal == args.principal for t in tokens):
            return fail(
                f"principal {args.principal!r} already has a token in {path} "
                "(remove it first: `cachet tokens remove`)"
            )
        tokens.append(HttpToken(args.principal, token_digest(token), role, scope, expires_at_us))
        _write(path, tokens)
    expires = None if expires_at_us is None else format_timestamp_us(expires_at_us)
    if args.json:
        emit_json(
            {
                "principal": args.principal,
                "role": role.value,
                "scope": scope,
                "expires_at": expires,
                "token": token,
            }
        )
    else:
        print(
            f"principal {args.principal} ({role.value}, scope {scope or '-'}, "
            f"expires {expires or 'never'}) added to {path}"
        )
        print("token (shown once; only its hash is stored):")
        print(token)
    return 0


def list_tokens(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = _file(args, ctx)
    rows = [(t, "cachet.toml") for t in ctx.config.http.tokens]
    if path is not None:
        rows += [(t, str(path)) for t in _read(path)]
    now_us = SYSTEM_CLOCK.now_us()
    if args.json:
        emit_json(
            {
                "tokens": [
                    {
                        "principal": t.principal,
                        "role": t.role.value,
                        "scope": t.scope,
                        "expires_at": (
                            None
                            if t.expires_at_us is None
                            else format_timestamp_us(t.expires_at_us)
                        ),
                        "expired": t.expires_at_us is not None and now_us >= t.expires_at_us,
                        "in": where,
                    }
                    for t, where in rows
                ]
            }
        )
        return 0
    for t, where in rows:
        print(f"{t.principal}\t{t.role.value}\t{t.scope or '-'}\t{_expiry(t, now_us)}\t{where}")
    return 0


def remove(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    path = _file(args, ctx)
    if path is None:
        return fail("no tokens file: set http.tokens_file in cachet.toml or pass --file")
    with _locked(path):
        tokens = _read(path)
        kept = [t for t in tokens if t.principal != args.principal]
        if len(kept) == len(tokens):
            return fail(f"principal {args.principal!r} has no token in {path}")
        _write(path, kept)
    print(f"principal {args.principal} removed from {path} (nodes drop it when restarted)")
    return 0
