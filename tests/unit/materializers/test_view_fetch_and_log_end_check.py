"""A node's consumers as ``[kafka]`` configures them, and the view's log-end
check on its poll thread.

librdkafka serializes calls on one consumer: a call from a second thread
(the log-end check used to run on one) waits, spinning, until the poll
thread leaves ``consume()``, which it hardly ever does: seconds per check
and about 1% of a core on an idle node. So the check runs between polls.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import cachet.kafka.verifying as verifying
import cachet.materializers.invalidation_listener as invalidation_listener
from cachet.clock import ManualClock
from cachet.config import parse_config
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.materializers.invalidation_listener import InvalidationListener
from cachet.materializers.live_view import LiveView
from cachet.schemas.codec import EventCodec
from cachet.topics import Topic, TopicNames

NAMES = TopicNames("unit.")


class _RecordingConsumer:
    """Stands in for librdkafka's Consumer where only its settings matter."""

    settings: list[dict[str, Any]] = []

    def __init__(self, settings: dict[str, Any]) -> None:
        type(self).settings.append(dict(settings))

    def assign(self, partitions: object) -> None:
        pass

    def get_watermark_offsets(self, *args: object, **kwargs: object) -> tuple[int, int]:
        return 0, 0

    def position(self, partitions: list[Any]) -> list[Any]:
        return partitions

    def close(self) -> None:
        pass


@pytest.fixture
def recorded(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    _RecordingConsumer.settings = []
    monkeypatch.setattr(verifying, "Consumer", _RecordingConsumer)
    monkeypatch.setattr(invalidation_listener, "Consumer", _RecordingConsumer)
    return _RecordingConsumer.settings


def test_the_view_and_the_listener_fetch_with_the_configured_waits(
    tmp_path: Path, recorded: list[dict[str, Any]]
) -> None:
    config = parse_config(
        {
            "kafka": {
                "bootstrap_servers": "127.0.0.1:9",
                "topic_prefix": NAMES.prefix,
                "view_fetch_wait_ms": 240,
                "invalidation_fetch_wait_ms": 15,
            }
        },
        "<test>",
    )
    view = LiveView.from_config(
        config,
        "127.0.0.1:9",
        PrivateKeySet.generate("anchor").public(),
        tmp_path / "view",
        alert=lambda *_: None,
    )
    try:
        assert [s["fetch.wait.max.ms"] for s in recorded] == [240]
        # Still refuses to reset an offset silently.
        assert recorded[0]["auto.offset.reset"] == "error"
        InvalidationListener(
            view,
            "127.0.0.1:9",
            NAMES,
            EventCodec(),
            config.kafka.partitions_for(Topic.INVALIDATIONS),
            fetch_wait_ms=config.kafka.invalidation_fetch_wait_ms,
        )
        assert [s["fetch.wait.max.ms"] for s in recorded] == [240, 15]
    finally:
        view.close()


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def view(tmp_path: Path, clock: ManualClock) -> Iterator[LiveView]:
    v = LiveView.open(
        tmp_path / "view",
        bootstrap_servers="127.0.0.1:9",  # never reached: the consumer's poll is stubbed
        names=NAMES,
        anchor=PrivateKeySet.generate("anchor").public(),
        required=(SignatureScheme.ML_DSA_65,),
        alert=lambda *_: None,
        partitions=3,
        clock=clock,
        name="unit-view",
    )
    yield v
    v.close()


def test_the_log_end_check_runs_between_polls_once_a_second(
    view: LiveView, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert not [t for t in threading.enumerate() if t.name.startswith("unit-view")]
    checks: list[int] = []
    monkeypatch.setattr(view.consumer, "poll", lambda *args, **kwargs: 0)
    monkeypatch.setattr(view, "_check_watermarks", lambda: checks.append(threading.get_ident()))
    view.poll(0)
    assert checks == []
    clock.advance(1.0)
    view.poll(0)
    assert checks == [threading.get_ident()]  # on the thread that polls
    view.poll(0)
    clock.advance(0.5)
    view.poll(0)
    assert len(checks) == 1
    clock.advance(0.5)
    view.poll(0)
    assert len(checks) == 2


def test_a_failing_log_end_check_does_not_stop_the_poll(
    view: LiveView, clock: ManualClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("no answer")

    monkeypatch.setattr(view.consumer, "poll", lambda *args, **kwargs: 7)
    monkeypatch.setattr(view, "_check_watermarks", broken)
    clock.advance(1.0)
    assert view.poll(0) == 7
