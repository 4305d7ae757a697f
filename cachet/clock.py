"""Time, as Cachet reads it: one :class:`Clock` passed in wherever it matters.

Two readings, never mixed: the wall clock (:meth:`Clock.now_us`, microseconds
since the Unix epoch) stamps events and seals and is compared with event
times; the monotonic clock (:meth:`Clock.monotonic`, seconds) measures how
long something took or has waited, and never goes back when the wall clock
is stepped. Production code gets :data:`SYSTEM_CLOCK`; tests pass a
:class:`ManualClock` and move time by hand, so replays and timeouts are
deterministic.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass
from typing import Final, Protocol

__all__ = ["SYSTEM_CLOCK", "Clock", "ManualClock", "SystemClock"]


class Clock(Protocol):
    """Where time comes from."""

    def now_us(self) -> int:
        """Wall-clock time: microseconds since the Unix epoch."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes back (only differences mean anything)."""
        ...


@dataclass(frozen=True, slots=True)
class SystemClock:
    """The host's clocks: ``time.time_ns`` and ``time.monotonic``."""

    def now_us(self) -> int:
        return time.time_ns() // 1000

    def monotonic(self) -> float:
        return time.monotonic()


SYSTEM_CLOCK: Final[Clock] = SystemClock()


class ManualClock:
    """A clock that moves only when told (tests and replays); thread-safe.

    Both readings advance together: :meth:`advance` moves the wall clock by
    the same span as the monotonic one. :meth:`set_now_us` steps the wall
    clock alone, as an NTP correction would.
    """

    def __init__(self, now_us: int = 1_700_000_000_000_000, monotonic: float = 0.0) -> None:
        self._lock = threading.Lock()
        self._now_us = now_us
        self._monotonic = monotonic

    def now_us(self) -> int:
        with self._lock:
            return self._now_us

    def monotonic(self) -> float:
        with self._lock:
            return self._monotonic

    def advance(self, seconds: float) -> None:
        """Move both clocks forward by ``seconds`` (not negative)."""
        if seconds < 0:
            raise ValueError(f"a clock does not go back: advance({seconds})")
        with self._lock:
            self._now_us += round(seconds * 1_000_000)
            self._monotonic += seconds

    def set_now_us(self, now_us: int) -> None:
        """Step the wall clock (either way); the monotonic clock stays."""
        with self._lock:
            self._now_us = now_us
