"""A small per-key rate limiter for alerts and log lines.

A flood of identical alerts (a poison topic dead-lettered by every consumer,
an unreachable broker retried ten times a second) hides everything else, but
dropping them silently hides how bad it was. So :class:`RateLimiter` lets
the first ``limit`` events of a key through in each window, counts the rest,
and hands back one :class:`Suppressed` summary per key when that window
closes ("K more suppressed"): nothing is lost, only compressed.

Time comes in through ``clock`` (seconds, monotonic), so tests and replays
decide what "a window" is.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Hashable
from dataclasses import dataclass
from typing import Generic, TypeVar

__all__ = ["RateLimiter", "Suppressed"]

K = TypeVar("K", bound=Hashable)
T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Suppressed(Generic[K, T]):
    """What a closed window held back for one key.

    ``count`` events were suppressed; ``last`` is the most recent of them
    (whatever the caller passed to :meth:`RateLimiter.admit`), so a summary
    can point at a real example.
    """

    key: K
    count: int
    window_s: float
    last: T


@dataclass(slots=True)
class _Window:
    started: float
    admitted: int = 0
    suppressed: int = 0
    last: object = None


class RateLimiter(Generic[K, T]):
    """At most ``limit`` events per key in each ``window_s`` window.

    Windows are fixed, per key, and start with the first event of the key
    after the previous window ended. Thread-safe: one limiter may be shared
    by every component of a process, keyed by component.
    """

    def __init__(
        self, limit: int, window_s: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        if limit < 1:
            raise ValueError(f"limit must be at least 1, got {limit}")
        if window_s <= 0:
            raise ValueError(f"window_s must be positive, got {window_s}")
        self.limit = limit
        self.window_s = window_s
        self._clock = clock
        self._windows: dict[K, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, key: K, item: T) -> tuple[bool, Suppressed[K, T] | None]:
        """Whether ``item`` under ``key`` may go through now.

        Also returns the summary of the key's previous window when it just
        closed with suppressed events: report that first, so the counts
        come out in time order.
        """
        with self._lock:
            closed = self._close(key, self._clock())
            window = self._windows.get(key)
            if window is None:
                window = self._windows[key] = _Window(started=self._clock())
            if window.admitted < self.limit:
                window.admitted += 1
                return True, closed
            window.suppressed += 1
            window.last = item
            return False, closed

    def expired(self, key: K) -> Suppressed[K, T] | None:
        """The summary of ``key``'s window if it has closed with suppressed events.

        Call it now and then (a poll loop does) so a summary is reported
        even when no further event of that key ever arrives.
        """
        with self._lock:
            return self._close(key, self._clock())

    def _close(self, key: K, now: float) -> Suppressed[K, T] | None:
        window = self._windows.get(key)
        if window is None or now - window.started < self.window_s:
            return None
        del self._windows[key]
        if not window.suppressed:
            return None
        last: T = window.last  # type: ignore[assignment]  # set with every suppression
        return Suppressed(key, window.suppressed, self.window_s, last)
