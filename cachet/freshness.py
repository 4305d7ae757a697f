"""Freshness proofs: how fresh a served value was, against its contract.

A proof states four numbers (the Avro ``FreshnessProof`` record): the value's
age at read time, the contract's maximum staleness, the headroom left, and
the serving node's view lag. The invariant a hit must satisfy is::

    headroom_ms = max_staleness_ms - age_ms - view_lag_ms >= 0

The view lag eats into the budget: a value that is fresh in the log but is
read from a node whose view trails the log by ``view_lag_ms`` could already
have been superseded there, so it is only *provably* fresh if the contract
still holds after adding the lag.

Rounding and clocks, both chosen to fail closed:

* Ages are computed from event time in microseconds and rounded *up* to
  whole milliseconds, so a proof never understates an age.
* An event time in the reader's future (producer clock ahead of the
  reader's) gives a negative raw age. The proof clamps ``age_ms`` to 0 --
  otherwise skew would *extend* the contract's window beyond
  ``max_staleness_ms`` -- and keeps the amount in ``clock_skew_ms`` so the
  skew stays detectable (it is not part of the Avro record).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

__all__ = ["FreshnessProof", "freshness_proof"]


@dataclass(frozen=True, slots=True)
class FreshnessProof:
    """How fresh a value was when read; ``fresh`` iff headroom is not negative."""

    age_ms: int
    max_staleness_ms: int
    headroom_ms: int
    view_lag_ms: int
    # How far the value's event time lay in the reader's future (0 normally).
    clock_skew_ms: int = 0

    @property
    def fresh(self) -> bool:
        """Whether the contract held: headroom_ms >= 0 (exactly 0 still holds)."""
        return self.headroom_ms >= 0

    def to_payload(self) -> dict[str, int]:
        """The Avro ``FreshnessProof`` record (``clock_skew_ms`` is not in it)."""
        return {
            "age_ms": self.age_ms,
            "max_staleness_ms": self.max_staleness_ms,
            "headroom_ms": self.headroom_ms,
            "view_lag_ms": self.view_lag_ms,
        }


# Every read that hits makes a proof. A frozen dataclass's __init__ sets each
# field with object.__setattr__ (to get past the frozen __setattr__), which
# costs twice what the slots' own setters do: freshness_proof builds the
# same object through those (FreshnessProof has no __post_init__ to skip;
# a test holds both ways to the same result). Unpacking fails at import if
# a field is added without being set below.
_new = object.__new__
_set_age, _set_max, _set_headroom, _set_lag, _set_skew = (
    FreshnessProof.__dict__[f.name].__set__ for f in fields(FreshnessProof)
)


def _ceil_ms(us: int) -> int:
    return -(-us // 1000)


def freshness_proof(
    *, written_at_us: int, now_us: int, max_staleness_ms: int, view_lag_ms: int
) -> FreshnessProof:
    """The proof for a value with event time ``written_at_us`` read at ``now_us``.

    Raises ``ValueError`` for a negative ``max_staleness_ms`` or
    ``view_lag_ms``: those are programming errors, not stale reads.
    """
    if max_staleness_ms < 0:
        raise ValueError(f"max_staleness_ms must be >= 0, got {max_staleness_ms}")
    if view_lag_ms < 0:
        raise ValueError(f"view_lag_ms must be >= 0, got {view_lag_ms}")
    raw_age_us = now_us - written_at_us
    age_ms = _ceil_ms(raw_age_us) if raw_age_us > 0 else 0
    skew_ms = _ceil_ms(-raw_age_us) if raw_age_us < 0 else 0
    proof = _new(FreshnessProof)
    _set_age(proof, age_ms)
    _set_max(proof, max_staleness_ms)
    _set_headroom(proof, max_staleness_ms - age_ms - view_lag_ms)
    _set_lag(proof, view_lag_ms)
    _set_skew(proof, skew_ms)
    return proof
