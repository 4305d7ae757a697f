"""Who a request comes from: bearer tokens and client certificates mapped to
a principal with one role and one scope.

Tokens are high-entropy random strings (:func:`new_token`); only their
SHA-256 is ever stored (in ``cachet.toml`` or the tokens file), so a leaked
configuration grants nothing. A presented token is hashed and compared with
every stored hash in constant time, without stopping at a match: how long a
lookup takes says nothing about which stored token (or how much of one) a
guess matched.

A token may carry an expiry (``expires_at``): from that instant on it is
refused with :class:`TokenExpired`, which says so and when, so its holder
knows to ask for a new one rather than suspect a typo. The store reads the
wall clock it is given (:data:`~cachet.clock.SYSTEM_CLOCK` in production).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import tomllib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import CachetConfig, ConfigError
from cachet.config.build_http import format_timestamp_us, token_table
from cachet.config.enums import Role
from cachet.config.sections import HttpToken
from cachet.errors import CachetError

__all__ = [
    "TOKEN_PREFIX",
    "CredentialError",
    "Principal",
    "TokenExpired",
    "TokenStore",
    "certificate_principals",
    "load_tokens_file",
    "new_token",
    "token_digest",
]

log = logging.getLogger(__name__)

# Recognisable in a leaked log line or a secret scanner; 32 random bytes follow.
TOKEN_PREFIX = "cachet_"
_TOKEN_BYTES = 32


class CredentialError(CachetError):
    """The credentials the front was given cannot be used (a tokens file
    missing or malformed, a principal twice); the message names which."""


class TokenExpired(CachetError):
    """A presented token matched a stored one whose expiry has passed.

    Carries the principal (for the node's log) and the expiry (for the
    answer); never the token."""

    def __init__(self, principal: str, expires_at_us: int) -> None:
        self.principal = principal
        self.expires_at_us = expires_at_us
        super().__init__(f"the bearer token expired at {format_timestamp_us(expires_at_us)}")


@dataclass(frozen=True, slots=True)
class Principal:
    """An authenticated caller: its name, the one role it acts in and the
    tenant or subject scope every one of its reads and writes is bound to
    (None: entries without a subject only)."""

    name: str
    role: Role
    scope: str | None


def new_token() -> str:
    """A fresh bearer token: ``cachet_`` and 256 bits from the OS CSPRNG."""
    return TOKEN_PREFIX + secrets.token_urlsafe(_TOKEN_BYTES)


def token_digest(token: str) -> bytes:
    """The SHA-256 of ``token``: what configuration stores instead of it.
    (A fast hash is enough: the token is random, not a password, so there is
    nothing to guess from its hash.)"""
    return hashlib.sha256(token.encode()).digest()


def load_tokens_file(path: Path) -> tuple[HttpToken, ...]:
    """The tokens of a tokens file (``[tokens.<principal>]`` tables).
    Raises :class:`CredentialError` naming the file and what is wrong."""
    try:
        document = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CredentialError(
            f"{path}: no such tokens file (http.tokens_file; `cachet tokens add` creates it)"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialError(f"{path}: cannot read the tokens file: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise CredentialError(f"{path}: invalid TOML: {exc}") from None
    try:
        return token_table(document)
    except ConfigError as exc:
        raise CredentialError(str(exc.with_path(str(path)))) from None


class TokenStore:
    """The bearer tokens a front accepts, by hash only.

    :meth:`authenticate` returns the token's principal or None (or raises
    :class:`TokenExpired`); it never sees or keeps a token beyond hashing
    the presented one. Expiry is read from ``clock``'s wall clock.
    """

    def __init__(self, tokens: Iterable[HttpToken], *, clock: Clock = SYSTEM_CLOCK) -> None:
        entries: list[tuple[bytes, Principal, int | None]] = []
        names: set[str] = set()
        digests: set[bytes] = set()
        for t in tokens:
            if t.principal in names:
                raise CredentialError(f"principal {t.principal!r} has two token entries")
            if t.token_sha256 in digests:
                raise CredentialError(f"principal {t.principal!r} has another principal's token")
            if len(t.token_sha256) != hashlib.sha256().digest_size:
                raise CredentialError(f"principal {t.principal!r}: token_sha256 is not a SHA-256")
            names.add(t.principal)
            digests.add(t.token_sha256)
            principal = Principal(t.principal, t.role, t.scope)
            entries.append((t.token_sha256, principal, t.expires_at_us))
        self._entries = tuple(entries)
        self._clock = clock

    @classmethod
    def from_config(cls, config: CachetConfig, *, clock: Clock = SYSTEM_CLOCK) -> TokenStore:
        """``[http.tokens]`` and the tokens file ``http.tokens_file`` names.
        Tokens already expired are kept (their holders get a 401 saying so)
        and logged as a warning: other principals still work."""
        tokens = list(config.http.tokens)
        if config.http.tokens_file is not None:
            tokens.extend(load_tokens_file(config.http.tokens_file))
        for t in tokens:
            _check_granted(config, t.principal, t.role)
        store = cls(tokens, clock=clock)
        for name, expires_at_us in store.expired():
            log.warning(
                "http: the token of principal %r expired at %s; remove it "
                "(`cachet tokens remove`) or give the principal a new one",
                name,
                format_timestamp_us(expires_at_us),
            )
        return store

    def __len__(self) -> int:
        return len(self._entries)

    @property
    def principals(self) -> tuple[Principal, ...]:
        return tuple(p for _, p, _ in self._entries)

    def expired(self) -> list[tuple[str, int]]:
        """(principal, expiry) of every token expired now, by principal."""
        now = self._clock.now_us()
        return sorted((p.name, at) for _, p, at in self._entries if at is not None and now >= at)

    def authenticate(self, token: str) -> Principal | None:
        """The principal whose token this is, or None. Raises
        :class:`TokenExpired` for a known token whose expiry has passed."""
        digest = token_digest(token)
        found: tuple[Principal, int | None] | None = None
        # Every entry is compared, match or not, each in constant time
        # (hmac.compare_digest): no early exit, no short-circuit on a prefix.
        for stored, principal, expires_at_us in self._entries:
            if hmac.compare_digest(stored, digest):
                found = (principal, expires_at_us)
        if found is None:
            return None
        principal, expires_at_us = found
        if expires_at_us is not None and self._clock.now_us() >= expires_at_us:
            raise TokenExpired(principal.name, expires_at_us)
        return principal


def _check_granted(config: CachetConfig, principal: str, role: Role) -> None:
    # [access_control] roles is what this deployment grants at all: a
    # credential for a role it does not grant is a configuration mistake.
    if role not in config.access_control.roles:
        granted = ", ".join(r.value for r in config.access_control.roles if r is not Role.UNKNOWN)
        raise CredentialError(
            f"principal {principal!r} has role {role.value!r}, which [access_control] roles "
            f"does not grant ({granted})"
        )


def certificate_principals(config: CachetConfig) -> dict[str, Principal]:
    """Client certificate subject CN -> principal (``[http.client_certificates]``).
    Raises :class:`CredentialError` for a role the deployment does not grant."""
    for c in config.http.client_certificates:
        _check_granted(config, c.principal, c.role)
    return {
        c.common_name: Principal(c.principal, c.role, c.scope)
        for c in config.http.client_certificates
    }
