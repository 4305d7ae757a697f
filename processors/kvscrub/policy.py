"""Session policies for KV-cache blocks: how long a session's blocks may live
and how often they may be reused before they must be scrubbed.

A policy is a value; the pool evaluates it against a session's creation time
(from an injected clock, so tests and replay are deterministic) and its reuse
count. The pool, not the policy, acts on the verdict.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = [
    "Clock",
    "ExpiredSession",
    "ExpiryReason",
    "SessionKey",
    "SessionPolicy",
    "evaluate",
    "monotonic_clock",
]

Clock = Callable[[], float]
"""Seconds on a monotonic scale; only differences between readings matter."""


def monotonic_clock() -> float:
    """The default clock: :func:`time.monotonic` (immune to wall-clock steps)."""
    return time.monotonic()


class ExpiryReason(enum.Enum):
    """Why a session's blocks must leave circulation."""

    TTL_EXPIRED = "TTL_EXPIRED"
    MAX_REUSE = "MAX_REUSE"
    # The policy forbids holding anything at all (ttl_s <= 0): there is no
    # window in which the blocks may stay reachable, so they are quarantined
    # at once rather than queued for a scrub.
    TTL_NONPOSITIVE = "TTL_NONPOSITIVE"


@dataclass(frozen=True, slots=True)
class SessionKey:
    """One inference request of one tenant: the unit a block table belongs to."""

    tenant: str
    request_id: str


@dataclass(frozen=True, slots=True)
class SessionPolicy:
    """How long a session's KV blocks may live and how often they may be reused.

    ``ttl_s``: seconds from allocation after which the session is expired;
    ``math.inf`` for none. ``ttl_s <= 0`` means "may hold nothing": a pool
    quarantines such a session's blocks immediately.
    ``max_reuse``: the number of reuses (prefix-cache hits, explicit
    :meth:`BlockPool.mark_reuse`) allowed; the reuse after that expires the
    session. ``-1`` for unlimited.
    """

    ttl_s: float = math.inf
    max_reuse: int = -1

    def __post_init__(self) -> None:
        if math.isnan(self.ttl_s):
            raise ValueError("SessionPolicy.ttl_s must be a number, not NaN")
        if self.max_reuse < -1:
            raise ValueError(f"SessionPolicy.max_reuse must be >= -1, got {self.max_reuse}")

    @property
    def holds_nothing(self) -> bool:
        """True when the policy allows no retention at all (``ttl_s <= 0``)."""
        return self.ttl_s <= 0


@dataclass(frozen=True, slots=True)
class ExpiredSession:
    """A session a policy says must be scrubbed now, and why."""

    key: SessionKey
    reason: ExpiryReason


def evaluate(
    policy: SessionPolicy, *, created_at: float, reuse_count: int, now: float
) -> ExpiryReason | None:
    """The reason ``policy`` expires a session, or ``None`` while it may live.

    TTL is checked before reuse so a session that is both old and overused
    reports the time-based reason (the stricter audit statement).
    """
    if policy.holds_nothing:
        return ExpiryReason.TTL_NONPOSITIVE
    if now - created_at >= policy.ttl_s:
        return ExpiryReason.TTL_EXPIRED
    if policy.max_reuse >= 0 and reuse_count > policy.max_reuse:
        return ExpiryReason.MAX_REUSE
    return None
