"""What Cachet relies on from a Kafka-protocol broker, checked against the real one.

The quirks DESIGN.md records for the embedded broker are written down as
tests too: when a broker upgrade changes them, these tests say what changed.
"""

from __future__ import annotations

import time
import uuid

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from cachet.kafka.settings import admin_client, consumer_settings, producer_settings

pytestmark = pytest.mark.integration


def _topic(bootstrap: str, partitions: int = 1) -> str:
    name = f"conf-{uuid.uuid4().hex[:10]}"
    admin = admin_client(bootstrap)  # must outlive the future
    admin.create_topics([NewTopic(name, partitions, 1)])[name].result(timeout=10)
    return name


def _drain(consumer: Consumer, want: int, timeout_s: float = 20.0) -> list:
    got: list = []
    deadline = time.monotonic() + timeout_s
    while len(got) < want and time.monotonic() < deadline:
        for m in consumer.consume(500, 0.5):
            if m.error() is None:
                got.append(m)
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(m.error())
    return got


def _assigned(bootstrap: str, topic: str, partitions: int = 1, **extra) -> Consumer:
    c = Consumer(consumer_settings(bootstrap, **extra))
    c.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
    return c


def test_idempotent_produce_acks_all_keeps_order(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    p = Producer(producer_settings(bootstrap_servers))
    for i in range(500):
        p.produce(topic, key=b"k", value=str(i).encode())
    assert p.flush(10) == 0
    c = _assigned(bootstrap_servers, topic)
    got = _drain(c, 500)
    c.close()
    assert [int(m.value()) for m in got] == list(range(500))
    assert [m.offset() for m in got] == list(range(500))


def test_headers_round_trip(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    p = Producer(producer_settings(bootstrap_servers))
    headers = [("cachet.seal", b"\x00\x01\xff"), ("empty", b""), ("dup", b"1"), ("dup", b"2")]
    p.produce(topic, value=b"v", headers=headers)
    p.flush(10)
    c = _assigned(bootstrap_servers, topic)
    (m,) = _drain(c, 1)
    c.close()
    assert [(k, v or b"") for k, v in m.headers()] == headers


def test_one_megabyte_record(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    payload = bytes(range(256)) * 4096  # exactly 1 MiB
    p = Producer(producer_settings(bootstrap_servers))
    p.produce(topic, value=payload)
    assert p.flush(10) == 0
    c = _assigned(bootstrap_servers, topic)
    (m,) = _drain(c, 1)
    c.close()
    assert m.value() == payload


def test_assign_broadcast_reaches_every_consumer(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers, partitions=3)
    p = Producer(producer_settings(bootstrap_servers))
    for i in range(90):
        p.produce(topic, key=str(i).encode(), value=str(i).encode())
    p.flush(10)
    # Same group id on purpose: assign() ignores groups, every node sees all.
    consumers = [_assigned(bootstrap_servers, topic, 3, **{"group.id": "same"}) for _ in range(3)]
    for c in consumers:
        values = sorted(int(m.value()) for m in _drain(c, 90))
        c.close()
        assert values == list(range(90))


def test_group_join_and_offset_commit_resume(
    bootstrap_servers: str, record_property: pytest.RecordProperty
) -> None:
    topic = _topic(bootstrap_servers)
    group = f"g-{uuid.uuid4().hex[:8]}"
    p = Producer(producer_settings(bootstrap_servers))
    for i in range(20):
        p.produce(topic, value=str(i).encode())
    p.flush(10)

    c = Consumer(consumer_settings(bootstrap_servers, group))
    started = time.monotonic()
    c.subscribe([topic])
    first = _drain(c, 10, timeout_s=30)[:10]
    # Quirk (DESIGN.md): joining takes about session.timeout.ms / 2 here.
    record_property("group_join_s", round(time.monotonic() - started, 2))
    assert [int(m.value()) for m in first] == list(range(10))
    c.commit(message=first[-1], asynchronous=False)
    c.close()

    c2 = Consumer(consumer_settings(bootstrap_servers, group))
    c2.subscribe([topic])
    rest = _drain(c2, 10, timeout_s=30)
    c2.close()
    assert int(rest[0].value()) == 10, "a new member must resume after the committed offset"


def test_transactions_commit_and_abort(bootstrap_servers: str) -> None:
    topic = _topic(bootstrap_servers)
    p = Producer(producer_settings(bootstrap_servers, **{"transactional.id": f"tx-{uuid.uuid4()}"}))
    p.init_transactions(10)
    p.begin_transaction()
    p.produce(topic, value=b"aborted")
    p.abort_transaction(10)
    p.begin_transaction()
    p.produce(topic, value=b"committed")
    p.commit_transaction(10)

    c = _assigned(bootstrap_servers, topic, **{"isolation.level": "read_committed"})
    got = _drain(c, 1, timeout_s=10)
    time.sleep(0.5)
    got += _drain(c, 1, timeout_s=1)
    c.close()
    assert [m.value() for m in got] == [b"committed"]


def test_quirk_offsets_for_times_is_not_trustworthy(bootstrap_servers: str) -> None:
    """Quirk (DESIGN.md): the embedded broker answers offsets_for_times wrongly,
    so time-indexed replay uses our own index. When this test fails, the broker
    learned to answer correctly: update DESIGN.md."""
    topic = _topic(bootstrap_servers)
    p = Producer(producer_settings(bootstrap_servers))
    base_ms = int(time.time() * 1000) - 60_000
    for i in range(10):
        p.produce(topic, value=str(i).encode(), timestamp=base_ms + i * 1000)
    p.flush(10)
    c = _assigned(bootstrap_servers, topic)
    (tp,) = c.offsets_for_times([TopicPartition(topic, 0, base_ms + 5000)], timeout=10)
    c.close()
    correct = 5  # the first record whose timestamp is >= the query
    assert tp.offset != correct


def test_quirk_list_offsets_latest_lags_the_log_end(bootstrap_servers: str) -> None:
    """Quirk (measured 2026-11): the embedded broker's ListOffsets(latest)
    answer falls behind the real log end after some batches, while the high
    watermark of fetch responses stays exact. So the live view checks for a
    vanished log against the fetch-path watermark, never ListOffsets. When
    this test fails the broker answers ListOffsets correctly: update
    DESIGN.md and the view may use either."""
    topic = _topic(bootstrap_servers)
    p = Producer(producer_settings(bootstrap_servers, **{"linger.ms": 5}))
    c = _assigned(bootstrap_servers, topic)
    probe = Consumer(consumer_settings(bootstrap_servers))
    produced, lagging, fetch_exact = 0, 0, True
    for _ in range(20):
        for _ in range(7):
            p.produce(topic, value=b"x")
            produced += 1
        p.flush(10)
        _drain(c, 7)
        _, listed = probe.get_watermark_offsets(TopicPartition(topic, 0), timeout=5, cached=False)
        _, fetched = c.get_watermark_offsets(TopicPartition(topic, 0), cached=True)
        lagging += listed != produced
        fetch_exact &= fetched == produced
    c.close()
    probe.close()
    assert fetch_exact, "the fetch-path high watermark must be exact"
    assert lagging > 0
