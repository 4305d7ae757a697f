"""librdkafka's log lines and errors reach Python logging without a flood:
an unreachable broker is one clear ERROR, then one counted WARNING per
window; other lines are limited per facility; fatal errors always pass."""

from __future__ import annotations

import logging
import socket
import time

import pytest
from confluent_kafka import KafkaError, Producer

from cachet.kafka.settings import LibrdkafkaLog, producer_settings

LOGGER = "test.librdkafka"


class FakeClock:
    def __init__(self) -> None:
        self.now = 50.0

    def __call__(self) -> float:
        return self.now


def _fail_line(bridge: LibrdkafkaLog) -> None:
    bridge.log(
        logging.ERROR,
        "%s [%s] %s",
        "FAIL",
        "rdkafka#producer-1",
        "h:9/bootstrap: Connect to ipv4#10.0.0.9:9 failed: Connection refused",
    )


def _records(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    return [(r.levelno, r.getMessage()) for r in caplog.records if r.name == LOGGER]


def test_an_unreachable_broker_is_one_error_then_a_count_per_window(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    bridge = LibrdkafkaLog("h:9", logging.getLogger(LOGGER), window_s=30, clock=clock)
    for _ in range(40):
        _fail_line(bridge)
        clock.now += 0.1
    bridge.error(KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down"))
    (first,) = _records(caplog)
    assert first[0] == logging.ERROR
    assert first[1].startswith("broker h:9 unreachable: ") and "Connection refused" in first[1]

    clock.now += 30
    bridge.error(KafkaError(KafkaError._TRANSPORT, "h:9/bootstrap: Disconnected"))
    records = _records(caplog)
    assert len(records) == 2
    level, text = records[1]
    assert level == logging.WARNING
    assert "h:9 still unreachable: 41 more failed attempts in the last 30s" in text
    assert "Disconnected" in text


def test_other_lines_are_limited_per_facility_with_a_summary(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    clock = FakeClock()
    bridge = LibrdkafkaLog("h:9", logging.getLogger(LOGGER), window_s=10, per_window=2, clock=clock)
    for i in range(5):
        bridge.log(logging.WARNING, "%s [%s] %s", "PARTCNT", "c", f"partition count {i}")
    bridge.log(logging.DEBUG, "%s [%s] %s", "BROKER", "c", "debug lines are not limited")
    assert [t for _, t in _records(caplog)] == [
        "PARTCNT [c] partition count 0",
        "PARTCNT [c] partition count 1",
        "BROKER [c] debug lines are not limited",
    ]
    clock.now += 10
    bridge.log(logging.WARNING, "%s [%s] %s", "PARTCNT", "c", "partition count 5")
    tail = _records(caplog)[3:]
    assert tail[0][0] == logging.WARNING
    assert tail[0][1].startswith("3 more librdkafka log:PARTCNT lines suppressed in 10s")
    assert "partition count 4" in tail[0][1]
    assert tail[1] == (logging.WARNING, "PARTCNT [c] partition count 5")


def test_fatal_errors_are_never_held_back(caplog) -> None:
    caplog.set_level(logging.DEBUG, logger=LOGGER)
    bridge = LibrdkafkaLog("h:9", logging.getLogger(LOGGER), per_window=1, clock=FakeClock())
    for _ in range(3):
        bridge.error(KafkaError(KafkaError._FENCED, "producer fenced", fatal=True))
    assert len(_records(caplog)) == 3
    assert all(level == logging.ERROR and "fatal" in text for level, text in _records(caplog))


def test_a_real_client_without_a_broker_logs_one_error(caplog) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    servers = f"127.0.0.1:{port}"
    caplog.set_level(logging.DEBUG, logger="librdkafka")
    producer = Producer(producer_settings(servers, {"reconnect.backoff.max.ms": 100}))
    end = time.monotonic() + 3
    while time.monotonic() < end:
        producer.poll(0.1)
    errors = [
        r.getMessage()
        for r in caplog.records
        if r.name == "librdkafka" and r.levelno >= logging.ERROR
    ]
    assert len(errors) == 1, errors
    assert errors[0].startswith(f"broker {servers} unreachable: ")
