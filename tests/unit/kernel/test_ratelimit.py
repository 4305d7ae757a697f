"""The rate limiter behind dead-letter alerts and librdkafka log lines."""

from __future__ import annotations

import pytest

from cachet.ratelimit import RateLimiter, Suppressed


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_first_n_pass_then_one_summary_when_the_window_closes() -> None:
    clock = FakeClock()
    limiter: RateLimiter[str, int] = RateLimiter(3, 30, clock)
    outcomes = [limiter.admit("a", i) for i in range(7)]
    assert [ok for ok, _ in outcomes] == [True, True, True, False, False, False, False]
    assert all(closed is None for _, closed in outcomes)
    assert limiter.expired("a") is None, "the window is still open"
    clock.now += 30
    assert limiter.expired("a") == Suppressed("a", 4, 30, 6)
    assert limiter.expired("a") is None, "a summary is reported once"
    assert limiter.admit("a", 7) == (True, None), "a new window starts"


def test_summary_comes_with_the_next_event_after_the_window() -> None:
    clock = FakeClock()
    limiter: RateLimiter[str, str] = RateLimiter(1, 10, clock)
    assert limiter.admit("a", "x") == (True, None)
    assert limiter.admit("a", "y") == (False, None)
    clock.now += 10.5
    assert limiter.admit("a", "z") == (True, Suppressed("a", 1, 10, "y"))


def test_keys_have_their_own_budget_and_summaries() -> None:
    clock = FakeClock()
    limiter: RateLimiter[str, int] = RateLimiter(1, 10, clock)
    assert limiter.admit("a", 1)[0] and limiter.admit("b", 1)[0]
    assert not limiter.admit("a", 2)[0]
    clock.now += 10
    assert limiter.expired("b") is None, "b suppressed nothing"
    assert limiter.expired("a") == Suppressed("a", 1, 10, 2)


@pytest.mark.parametrize(("limit", "window"), [(0, 1.0), (1, 0.0), (1, -1.0)])
def test_nonsense_settings_are_refused(limit: int, window: float) -> None:
    with pytest.raises(ValueError, match="limit|window_s"):
        RateLimiter(limit, window)
