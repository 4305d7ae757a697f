"""cachet.clock: the system clock reads the host, a manual clock moves when told."""

from __future__ import annotations

import time

import pytest

from cachet.clock import SYSTEM_CLOCK, Clock, ManualClock


def test_system_clock_reads_wall_time_in_microseconds() -> None:
    before = time.time_ns() // 1000
    now = SYSTEM_CLOCK.now_us()
    after = time.time_ns() // 1000
    assert before <= now <= after


def test_system_monotonic_never_goes_back() -> None:
    first = SYSTEM_CLOCK.monotonic()
    assert SYSTEM_CLOCK.monotonic() >= first


def test_manual_clock_moves_both_readings_together() -> None:
    clock: Clock = ManualClock(now_us=1_000_000, monotonic=5.0)
    assert (clock.now_us(), clock.monotonic()) == (1_000_000, 5.0)
    assert isinstance(clock, ManualClock)
    clock.advance(1.5)
    assert (clock.now_us(), clock.monotonic()) == (2_500_000, 6.5)


def test_manual_clock_steps_the_wall_clock_alone() -> None:
    clock = ManualClock(now_us=10_000_000, monotonic=1.0)
    clock.set_now_us(3_000_000)  # an NTP step back
    assert clock.now_us() == 3_000_000
    assert clock.monotonic() == 1.0


def test_manual_clock_refuses_to_go_back() -> None:
    clock = ManualClock()
    with pytest.raises(ValueError, match="does not go back"):
        clock.advance(-0.1)
    assert clock.monotonic() == 0.0
