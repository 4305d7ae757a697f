"""The shared consume loop against the real broker: every event type
round-trips, and garbage lands in the dead-letter topic without stopping it."""

from __future__ import annotations

import struct
import time

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.errors import StateFailure
from cachet.kafka.consume import (
    DL_HEADER_COMPONENT,
    DL_HEADER_FAILURE,
    DL_HEADER_REASON,
    ConsumeLoop,
    DeadLetterFailure,
    DeadLetters,
    deadletter_alert_limiter,
    headers_dict,
)
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.ledger.record import RecordOrigin
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, TOPIC_OF_EVENT, Event, EventType, new_event
from cachet.topics import Topic, TopicNames
from tests.integration.cache.logtools import read_topic

pytestmark = pytest.mark.integration


def _consumer(servers: str, names: TopicNames, topics: list[Topic]) -> Consumer:
    c = Consumer(consumer_settings(servers))
    c.assign([TopicPartition(names(t), p, 0) for t in topics for p in range(3)])
    return c


def _poll_until(loop: ConsumeLoop, done, timeout_s: float = 20.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not done() and time.monotonic() < deadline:
        loop.poll(0.3)


def _dead_letters(servers: str, names: TopicNames, want: int) -> list:
    c = _consumer(servers, names, [Topic.DEADLETTER])
    got: list = []
    deadline = time.monotonic() + 15
    while len(got) < want and time.monotonic() < deadline:
        got += [m for m in c.consume(100, 0.3) if m.error() is None]
    c.close()
    return got


def _contracts(servers: str, names: TopicNames, codec: EventCodec, n: int) -> Producer:
    """``n`` ContractDefined events (producer_seq 0..n-1) on control[0]; the producer."""
    producer = Producer(producer_settings(servers))
    for seq in range(n):
        e = new_event(
            EventType.CONTRACT_DEFINED,
            SAMPLE_PAYLOADS[EventType.CONTRACT_DEFINED],
            producer_id="p",
            producer_seq=seq,
        )
        producer.produce(names(Topic.CONTROL), key=b"c", value=codec.encode(e), partition=0)
    producer.flush(10)
    return producer


def test_every_event_type_round_trips(bootstrap_servers: str, topics: TopicNames) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(bootstrap_servers))
    sent: dict[str, Event] = {}
    for seq, event_type in enumerate(EventType):
        event = new_event(
            event_type, SAMPLE_PAYLOADS[event_type], producer_id="p", producer_seq=seq
        )
        producer.produce(topics(TOPIC_OF_EVENT[event_type]), key=b"k", value=codec.encode(event))
        sent[event.event_id] = event
    assert producer.flush(10) == 0

    received: dict[str, Event] = {}
    consumer = _consumer(bootstrap_servers, topics, [t for t in Topic if t is not Topic.DEADLETTER])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        fallback=lambda e, o: received.__setitem__(e.event_id, e),
    )
    _poll_until(loop, lambda: len(received) == len(sent))
    consumer.close()
    assert received == sent
    assert {e.type for e in received.values()} == set(EventType)


def test_garbage_goes_to_deadletter_and_consumer_keeps_going(
    bootstrap_servers: str, topics: TopicNames
) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(bootstrap_servers))
    good = codec.encode(
        new_event(
            EventType.WATERMARK_TICK,
            SAMPLE_PAYLOADS[EventType.WATERMARK_TICK],
            producer_id="p",
            producer_seq=1,
        )
    )
    garbage = {
        "random": b"\x17\x99 garbage bytes \x00",
        "empty": b"",
        "truncated": good[: len(good) // 2],
        "unknown_fingerprint": b"\xc3\x01" + struct.pack("<Q", 0xDEADBEEF) + good[10:],
    }
    topic = topics(Topic.INVALIDATIONS)
    for name, value in garbage.items():
        producer.produce(topic, key=name.encode(), value=value, partition=0)
        producer.produce(topic, key=b"good", value=good, partition=0)
    producer.flush(10)

    handled: list[Event] = []
    consumer = _consumer(bootstrap_servers, topics, [Topic.INVALIDATIONS])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        {EventType.WATERMARK_TICK: lambda e, o: handled.append(e)},
    )
    _poll_until(loop, lambda: len(handled) == len(garbage))
    consumer.close()
    producer.flush(10)
    # Every good record after each bad one was still handled.
    assert len(handled) == len(garbage)

    letters = _dead_letters(bootstrap_servers, topics, len(garbage))
    by_key = {m.key().decode(): m for m in letters}
    assert set(by_key) == set(garbage)
    for name, value in garbage.items():
        m = by_key[name]
        assert (m.value() or b"") == value, "the dead letter must keep the raw bytes"
        h = headers_dict(m.headers())
        assert h[DL_HEADER_FAILURE] == b"undecodable"
        assert h[DL_HEADER_REASON], "a dead letter must say why"
    assert (
        b"UNKNOWN_FINGERPRINT"
        in headers_dict(by_key["unknown_fingerprint"].headers())[DL_HEADER_REASON].upper()
    )


def test_handler_failure_is_dead_lettered_not_fatal(
    bootstrap_servers: str, topics: TopicNames
) -> None:
    codec = EventCodec()
    producer = _contracts(bootstrap_servers, topics, codec, 3)

    seen: list[int] = []

    def handler(event: Event, origin) -> None:
        seen.append(event.producer_seq)
        if event.producer_seq == 1:
            raise ValueError("contract refused")

    consumer = _consumer(bootstrap_servers, topics, [Topic.CONTROL])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        {EventType.CONTRACT_DEFINED: handler},
    )
    _poll_until(loop, lambda: len(seen) == 3)
    consumer.close()
    producer.flush(10)
    assert seen == [0, 1, 2]
    (letter,) = _dead_letters(bootstrap_servers, topics, 1)
    h = headers_dict(letter.headers())
    assert h[DL_HEADER_FAILURE] == b"handler_failed"
    assert b"contract refused" in h[DL_HEADER_REASON]


def test_a_handlers_own_state_failure_stops_the_loop_and_dead_letters_nothing(
    bootstrap_servers: str, topics: TopicNames
) -> None:
    """A StateFailure is the handler's store failing, not the record: the
    record must stay in the log for the restarted component, not be
    dead-lettered while the loop goes on with the next one."""
    codec = EventCodec()
    producer = _contracts(bootstrap_servers, topics, codec, 2)

    seen: list[int] = []

    def handler(event: Event, origin) -> None:
        seen.append(event.producer_seq)
        raise StateFailure("the handler's database is gone")

    consumer = _consumer(bootstrap_servers, topics, [Topic.CONTROL])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        {EventType.CONTRACT_DEFINED: handler},
    )
    with pytest.raises(StateFailure, match="database is gone"):
        _poll_until(loop, lambda: False)
    consumer.close()
    producer.flush(10)
    assert seen == [0]  # the next record was not handled either
    assert read_topic(bootstrap_servers, topics(Topic.DEADLETTER)) == []


def test_dead_letters_name_their_component_and_alerts_are_rate_limited(
    bootstrap_servers: str, topics: TopicNames
) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(bootstrap_servers))
    topic = topics(Topic.INVALIDATIONS)
    for i in range(5):
        producer.produce(topic, key=f"bad-{i}".encode(), value=b"garbage %d" % i, partition=0)
    producer.flush(10)

    now = [1000.0]
    alerts: list[tuple[DeadLetterFailure, RecordOrigin, str]] = []
    consumer = _consumer(bootstrap_servers, topics, [Topic.INVALIDATIONS])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        {},
        name="live-view@node-7",
        on_deadletter=lambda f, o, r: alerts.append((f, o, r)),
        alert_limiter=deadletter_alert_limiter(limit=2, window_s=60, clock=lambda: now[0]),
    )
    dead = 0
    deadline = time.monotonic() + 20
    while dead < 5 and time.monotonic() < deadline:
        dead += loop.poll(0.3)
    producer.flush(10)
    assert dead == 5
    # Within one window: the first two are alerted one by one, the rest held.
    assert [o.key for _, o, _ in alerts] == [b"bad-0", b"bad-1"]
    assert all(f is DeadLetterFailure.UNDECODABLE for f, _, _ in alerts)

    loop.poll(0.1)
    assert len(alerts) == 2, "the window is still open: nothing more is reported"
    now[0] += 60
    loop.poll(0.1)  # no new dead letter: the closed window still reports
    consumer.close()
    assert len(alerts) == 3
    failure, origin, reason = alerts[2]
    assert failure is DeadLetterFailure.UNDECODABLE and origin.key == b"bad-4"
    assert reason.startswith("3 more dead letters suppressed by live-view@node-7 in 60s; last: ")

    letters = _dead_letters(bootstrap_servers, topics, 5)
    assert len(letters) == 5
    for m in letters:
        assert headers_dict(m.headers())[DL_HEADER_COMPONENT] == b"live-view@node-7"


def test_a_failing_alert_callback_does_not_stop_the_loop(
    bootstrap_servers: str, topics: TopicNames
) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(bootstrap_servers))
    topic = topics(Topic.CONTROL)
    producer.produce(topic, key=b"bad", value=b"not an event", partition=0)
    e = new_event(
        EventType.CONTRACT_DEFINED,
        SAMPLE_PAYLOADS[EventType.CONTRACT_DEFINED],
        producer_id="p",
        producer_seq=0,
    )
    producer.produce(topic, key=b"good", value=codec.encode(e), partition=0)
    producer.flush(10)

    def broken_alert(failure, origin, reason) -> None:
        raise RuntimeError("alerts topic unavailable")

    handled: list[Event] = []
    consumer = _consumer(bootstrap_servers, topics, [Topic.CONTROL])
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, topics(Topic.DEADLETTER)),
        {EventType.CONTRACT_DEFINED: lambda ev, o: handled.append(ev)},
        on_deadletter=broken_alert,
    )
    _poll_until(loop, lambda: len(handled) == 1)
    consumer.close()
    assert handled == [e]
