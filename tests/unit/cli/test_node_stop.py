"""Long-running commands wait for a signal or for their view to stop for good."""

from __future__ import annotations

import threading

from cachet.cli.context import wait_for_stop


def _waiting(stop: threading.Event, view_stopped: threading.Event) -> threading.Thread:
    t = threading.Thread(target=wait_for_stop, args=(stop, view_stopped), daemon=True)
    t.start()
    return t


def test_a_signal_or_a_stopped_view_ends_the_wait_and_nothing_else_does() -> None:
    stop, view_stopped = threading.Event(), threading.Event()
    waiting = _waiting(stop, view_stopped)
    waiting.join(0.2)
    assert waiting.is_alive()  # neither happened: still serving
    view_stopped.set()
    waiting.join(10)
    assert not waiting.is_alive() and stop.is_set()

    signal = threading.Event()
    signalled = _waiting(signal, threading.Event())
    signal.set()
    signalled.join(10)
    assert not signalled.is_alive()
