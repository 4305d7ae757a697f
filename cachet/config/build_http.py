"""``[http]``: a node's HTTP front, its bounds and the credentials it accepts.

::

    [http]
    host = "127.0.0.1"              # anything else needs TLS (tokens cross the network)
    max_body_bytes = 8388608
    request_timeout_ms = "10s"
    keep_alive_timeout_ms = "5s"
    tokens_file = "var/http-tokens.toml"   # written by `cachet tokens add`

    [http.tokens.alice]             # the principal's name
    token_sha256 = "9f86d0...0f00a08"  # SHA-256 of the token, hex; never the token
    role = "owner"                  # owner | regulator | auditor | data_protection
    scope = "tenant-a"              # optional: the tenant or subject it acts for
    expires_at = "2027-03-01T00:00:00Z"  # optional: RFC 3339 with an offset; none: never

    [http.client_certificates.bob]  # mutual TLS: the client certificate's CN
    common_name = "bob.example.org"
    role = "regulator"
    scope = "tenant-a"

A token file holds ``[tokens.<principal>]`` tables of the same shape
(:func:`parse_token`). Every role and scope comes from these tables: a
request never names its own.
"""

from __future__ import annotations

import datetime
import ipaddress
import re
from collections.abc import Mapping
from typing import Any

from cachet.config.enums import Role
from cachet.config.errors import ConfigError
from cachet.config.sections import HttpClientCertificate, HttpConfig, HttpToken
from cachet.config.values import Table, describe

__all__ = [
    "PRINCIPAL_PATTERN",
    "build_http",
    "format_timestamp_us",
    "parse_timestamp_us",
    "parse_token",
    "token_table",
]

# A bare TOML key (so `[http.tokens.<name>]` needs no quoting) that also
# reads well in ErasureRequested.requested_by and in logs.
PRINCIPAL_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}"
_SHA256_HEX = re.compile(r"[0-9a-f]{64}")
_MAX_BODY_BYTES = 1024 * 1024 * 1024
_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)
_MICROSECOND = datetime.timedelta(microseconds=1)
_TIMESTAMP_EXAMPLE = "'2027-03-01T00:00:00Z'"


def parse_timestamp_us(value: Any, key: str) -> int:
    """An RFC 3339 / ISO 8601 timestamp with an explicit UTC offset
    ("2027-03-01T00:00:00Z", "2027-03-01T01:00:00+01:00") as microseconds
    since the Unix epoch. Anything else (not a string, unparsable, no
    offset: whose local time?) is a :class:`ConfigError` naming ``key``."""
    if not isinstance(value, str):
        raise ConfigError(
            None,
            key,
            f"expected a timestamp string like {_TIMESTAMP_EXAMPLE}, got {describe(value)}"
            + (" (quote it)" if isinstance(value, datetime.date) else ""),
        )
    try:
        moment = datetime.datetime.fromisoformat(value.strip())
    except ValueError:
        raise ConfigError(
            None, key, f"expected an RFC 3339 timestamp like {_TIMESTAMP_EXAMPLE}, got {value!r}"
        ) from None
    if moment.tzinfo is None or moment.utcoffset() is None:
        raise ConfigError(
            None,
            key,
            f"{value!r} has no UTC offset: end it with 'Z' or '+HH:MM' ({_TIMESTAMP_EXAMPLE})",
        )
    return (moment - _EPOCH) // _MICROSECOND


def format_timestamp_us(at_us: int) -> str:
    """``at_us`` (microseconds since the epoch) as RFC 3339 in UTC, ending
    in 'Z'; what :func:`parse_timestamp_us` reads back exactly."""
    moment = _EPOCH + datetime.timedelta(microseconds=at_us)
    spec = "seconds" if moment.microsecond == 0 else "microseconds"
    return moment.isoformat(timespec=spec).replace("+00:00", "Z")


def _check_principal(table: Table, name: str) -> str:
    if re.fullmatch(PRINCIPAL_PATTERN, name) is None:
        raise table.error(name, f"a principal name must match {PRINCIPAL_PATTERN}")
    return name


def _role_and_scope(entry: Table) -> tuple[Role, str | None]:
    got = entry.take("role")
    if got is None:
        raise entry.error("role", "is required (owner, regulator, auditor or data_protection)")
    role = entry.check_enum(got[0], got[1], Role)
    return role, entry.opt_str(("scope",))


def parse_token(table: Table, principal: str) -> HttpToken:
    """One ``[...tokens.<principal>]`` table, checked: ``token_sha256`` is 64
    lowercase hex digits (a hash, so a pasted token is refused rather than
    stored), ``role`` one of the roles, ``scope`` optional, ``expires_at``
    optional (:func:`parse_timestamp_us`)."""
    entry = Table(table.data[principal], table.key(_check_principal(table, principal)))
    got = entry.take("token_sha256")
    if got is None:
        raise entry.error("token_sha256", "is required (the SHA-256 of the token, hex)")
    digest = got[1]
    if not isinstance(digest, str) or _SHA256_HEX.fullmatch(digest) is None:
        raise entry.error(
            "token_sha256",
            f"expected 64 lowercase hex digits (a SHA-256, never the token), got "
            f"{'a string of ' + str(len(digest)) + ' characters' if isinstance(digest, str) else describe(digest)}",
        )
    role, scope = _role_and_scope(entry)
    expiry = entry.take("expires_at")
    expires_at_us = None if expiry is None else parse_timestamp_us(expiry[1], entry.key(expiry[0]))
    entry.finish()
    return HttpToken(principal, bytes.fromhex(digest), role, scope, expires_at_us)


def _tokens(table: Table) -> tuple[HttpToken, ...]:
    got = table.take("tokens")
    if got is None:
        return ()
    sub = Table(got[1], table.key("tokens"))
    return tuple(parse_token(sub, name) for name in sorted(sub.data))


def _certificates(table: Table) -> tuple[HttpClientCertificate, ...]:
    got = table.take("client_certificates")
    if got is None:
        return ()
    sub = Table(got[1], table.key("client_certificates"))
    out = []
    for name in sorted(sub.data):
        entry = Table(sub.data[name], sub.key(_check_principal(sub, name)))
        cn = entry.opt_str(("common_name",))
        if cn is None:
            raise entry.error("common_name", "is required (the client certificate's subject CN)")
        role, scope = _role_and_scope(entry)
        entry.finish()
        out.append(HttpClientCertificate(name, cn, role, scope))
    return tuple(out)


def _check_unique(table: Table, config: HttpConfig) -> None:
    principals = [t.principal for t in config.tokens]
    for c in config.client_certificates:
        if c.principal in principals:
            raise table.error(
                f"client_certificates.{c.principal}", "this principal already has a token entry"
            )
    digests: dict[bytes, str] = {}
    for t in config.tokens:
        # Two principals on one token: which role would a request get?
        if t.token_sha256 in digests:
            raise table.error(
                f"tokens.{t.principal}.token_sha256",
                f"same token as tokens.{digests[t.token_sha256]}",
            )
        digests[t.token_sha256] = t.principal
    names: dict[str, str] = {}
    for c in config.client_certificates:
        if c.common_name in names:
            raise table.error(
                f"client_certificates.{c.principal}.common_name",
                f"same CN as client_certificates.{names[c.common_name]}",
            )
        names[c.common_name] = c.principal


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def build_http(table: Table) -> HttpConfig:
    """``[http]``, validated (unknown keys, wrong types, incomplete TLS and a
    non-loopback host without TLS are errors naming the key)."""
    base = HttpConfig()
    config = HttpConfig(
        host=table.str_(("host",), base.host),
        max_body_bytes=table.int_(
            ("max_body_bytes",), base.max_body_bytes, min=1, max=_MAX_BODY_BYTES
        ),
        request_timeout_ms=table.duration_ms(
            {"request_timeout_ms": 1, "request_timeout": 1}, base.request_timeout_ms
        ),
        keep_alive_timeout_ms=table.duration_ms(
            {"keep_alive_timeout_ms": 1, "keep_alive_timeout": 1}, base.keep_alive_timeout_ms
        ),
        tokens=_tokens(table),
        tokens_file=table.opt_path(("tokens_file",)),
        client_certificates=_certificates(table),
        ssl_certfile=table.opt_path(("ssl_certfile",)),
        ssl_keyfile=table.opt_path(("ssl_keyfile",)),
        ssl_ca_certs=table.opt_path(("ssl_ca_certs",)),
        require_client_certificate=table.bool_(
            ("require_client_certificate",), base.require_client_certificate
        ),
    )
    table.finish()
    _check_unique(table, config)
    if config.ssl_keyfile is not None and config.ssl_certfile is None:
        raise table.error("ssl_keyfile", "needs ssl_certfile (the server certificate)")
    if config.ssl_ca_certs is not None and config.ssl_certfile is None:
        raise table.error("ssl_ca_certs", "client certificates need TLS: set ssl_certfile")
    if config.require_client_certificate and config.ssl_ca_certs is None:
        raise table.error(
            "require_client_certificate", "needs ssl_ca_certs (the CA client certificates chain to)"
        )
    if config.client_certificates and config.ssl_ca_certs is None:
        raise table.error("client_certificates", "need ssl_ca_certs to verify the certificates")
    if config.ssl_certfile is None and not _is_loopback(config.host):
        # Bearer tokens in clear text on a network anyone may listen on.
        raise table.error(
            "host",
            f"{describe(config.host)} is not a loopback address: serving other machines needs "
            "TLS (set ssl_certfile and ssl_keyfile), or bearer tokens cross the network in clear",
        )
    return config


def token_table(document: Mapping[str, Any]) -> tuple[HttpToken, ...]:
    """Every ``[tokens.<principal>]`` of a parsed tokens file, checked like
    ``[http.tokens]``; nothing else may be in the file. Raises
    :class:`~cachet.config.ConfigError` (without the file's path: the
    reader adds it)."""
    top = Table(document, "")
    got = top.take("tokens")
    top.finish()
    if got is None:
        return ()
    sub = Table(got[1], "tokens")
    return tuple(parse_token(sub, name) for name in sorted(sub.data))
