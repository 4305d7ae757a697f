"""The sealing producer's delivery thread survives what its client raises.

The client here is a stand-in for one function's input: librdkafka raising a
fatal error from poll() (on the real broker it is an idempotent session the
broker forgot, UNKNOWN_PRODUCER_ID, which the multi-node test meets when it
restarts the broker empty). The delivery thread used to die of it, and then
no answer reached a caller that only emits.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from confluent_kafka import KafkaError, KafkaException

from cachet.crypto.seal import PrivateKeySet
from cachet.producers.sealing import SealingError, SealingProducer, SealingSettings
from cachet.schemas.codec import EventCodec
from cachet.topics import TopicNames


class _Client:
    """Counts polls; the first ``fatal`` polls raise a fatal KafkaError."""

    def __init__(self, fatal: int = 0) -> None:
        self.fatal = fatal
        self.polls = 0
        self.lock = threading.Lock()

    def poll(self, timeout: float | None = None) -> int:
        with self.lock:
            self.polls += 1
            if self.fatal:
                self.fatal -= 1
                raise KafkaException(
                    KafkaError(KafkaError._FATAL, "the broker forgot this session", fatal=True)
                )
        time.sleep(min(timeout or 0.0, 0.01))
        return 0

    def flush(self, timeout: float | None = None) -> int:
        return 0

    def purge(self, *args: Any, **kwargs: Any) -> None:
        pass

    def __len__(self) -> int:
        return 0


@pytest.fixture(scope="module")
def keys() -> PrivateKeySet:
    return PrivateKeySet.generate("deliveries")


def _producer(client: _Client, keys: PrivateKeySet, factory: Any = None) -> SealingProducer:
    return SealingProducer(
        client,  # type: ignore[arg-type]
        EventCodec(),
        TopicNames("t."),
        "deliveries",
        keys,
        SealingSettings(batch_max_events=1000, batch_max_ms=3_600_000, max_delay_ms=3_600_000),
        producer_factory=factory,
    )


def _until(cond: Any, timeout_s: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while not cond() and time.monotonic() < deadline:
        time.sleep(0.01)
    return bool(cond())


def test_a_fatal_error_in_the_delivery_thread_starts_a_new_epoch_it_then_serves(keys) -> None:
    old, new = _Client(), _Client()
    sp = _producer(old, keys, factory=lambda: new)
    try:
        first = sp.producer_id
        old.fatal = 1  # from now on (the thread polls from the start)
        assert _until(lambda: sp.producer_id != first), "no new epoch"
        polls = new.polls
        assert _until(lambda: new.polls > polls + 5), "the new client is not polled"
        assert any("fatal client error" in p for p in sp.health().problems)
    finally:
        sp.close()


def test_without_a_factory_a_fatal_error_is_said_once_and_the_thread_does_not_spin(
    keys,
) -> None:
    client = _Client(fatal=1_000_000)
    sp = _producer(client, keys)
    assert _until(lambda: any("forgot this session" in p for p in sp.health().problems))
    before = client.polls
    time.sleep(0.5)
    # A pause after each failed poll (0.1 s), not a loop at full speed.
    assert client.polls - before <= 10
    client.fatal = 0
    with pytest.raises(SealingError, match="the broker forgot this session"):
        sp.close()  # and the failure is the producer's, said at close too
