"""A bad put never breaks the node, and a put that returns is durable.

Found from the outside: a put with ``ttl_ms="x"`` (or a 7.4 MB value) took a
producer sequence number and lost it, so every later put of the node was
never applied (sequence_gap) or reported as leaf_mismatch. Now bad
arguments are refused, naming the argument, before anything is emitted.
"""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Consumer, TopicPartition

from cachet.kafka.settings import consumer_settings
from cachet.producers.cache_client import (
    CacheClient,
    InvalidArgument,
    UnknownContract,
    ValueTooLarge,
)
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.integration.cache.logtools import INTEGRITY_ALERTS, alerts_by, read_alerts, read_events

from .nodeproc import wait_for

pytestmark = pytest.mark.integration


BAD_PUTS = [
    ({"ttl_ms": "x"}, "ttl_ms"),
    ({"ttl_ms": -1}, "ttl_ms"),
    ({"ttl_ms": 1.5}, "ttl_ms"),
    ({"ttl_ms": True}, "ttl_ms"),
    ({"key": 7}, "key"),
    ({"key": ""}, "key"),
    ({"value": "text, not bytes"}, "value"),
    ({"namespace": ""}, "namespace"),
    ({"namespace": None}, "namespace"),
    ({"contract": "no-such-contract"}, "contract"),
    ({"value": b"\x00" * 7_400_000}, "value"),
]


def test_bad_puts_are_refused_and_each_next_put_is_served(
    make_node, ticker, bootstrap_servers, topics
) -> None:
    node = make_node()
    assert node.wait_caught_up()
    client = CacheClient(node)
    for version, (kwargs, argument) in enumerate(BAD_PUTS, start=1):
        before = node.producer.position
        put = {"key": "AAPL", "value": b"189.12", "contract": "quotes", **kwargs}
        with pytest.raises(InvalidArgument) as refused:
            client.put(put.pop("key"), put.pop("value"), **put)
        assert refused.value.argument == argument, kwargs
        assert isinstance(refused.value, ValueError), "bad input is the caller's error (400)"
        if argument == "contract":
            assert isinstance(refused.value, UnknownContract)
        if isinstance(kwargs.get("value"), bytes):
            assert isinstance(refused.value, ValueTooLarge)
            assert refused.value.size == 7_400_000 > refused.value.limit
            assert str(refused.value.limit) in str(refused.value)
        # Nothing was taken: the next event gets the number the bad one would have.
        after = node.producer.position
        assert (after.producer_id, after.next_seq) == (before.producer_id, before.next_seq)

        # At once a good put: acknowledged, applied, served.
        value = f"189.{version}".encode()
        receipt = client.put("AAPL", value, contract="quotes", ttl_ms=60_000, wait=True)
        assert receipt.acknowledged and receipt.version == version
        r = wait_for(lambda: (x := client.get("AAPL", contract="quotes")).hit and x)
        assert r.hit and r.value == value and r.version == version, kwargs

    node.producer.flush()
    integrity = alerts_by(read_alerts(bootstrap_servers, topics), types=INTEGRITY_ALERTS)
    assert integrity == []
    assert node.producer.problems() == ()


def test_put_many_validates_every_item_before_emitting_any(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    client = CacheClient(node)
    before = node.producer.position.next_seq
    with pytest.raises(InvalidArgument) as refused:
        client.put_many([("a", b"1"), ("b", "2")], contract="quotes")  # type: ignore[list-item]
    assert refused.value.argument == "items[1].value"
    with pytest.raises(InvalidArgument, match="appears twice"):
        client.put_many([("a", b"1"), ("a", b"2")], contract="quotes")
    assert node.producer.position.next_seq == before
    receipts = client.put_many([("a", b"1"), ("b", b"2")], contract="quotes", wait=True)
    assert all(r.acknowledged for r in receipts)
    assert [client.get(k, contract="quotes").value for k in ("a", "b")] == [b"1", b"2"]


def _record_at(servers: str, topic: str, partition: int, offset: int) -> bytes:
    c = Consumer(consumer_settings(servers))
    c.assign([TopicPartition(topic, partition, offset)])
    try:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            m = c.poll(0.2)
            if m is not None and m.error() is None:
                return m.value()
        raise AssertionError(f"no record at {topic}[{partition}]@{offset}")
    finally:
        c.close()


def test_put_returns_only_after_the_broker_acknowledged(
    make_node, ticker, bootstrap_servers, topics
) -> None:
    node = make_node()
    assert node.wait_caught_up()
    client = CacheClient(node)

    receipt = client.put("durable", b"kept", contract="quotes")  # no wait for the view
    # The broker already gave the write its place in the log: the receipt
    # names it, and the record there is this very write.
    assert receipt.acknowledged
    assert receipt.partition is not None and receipt.offset is not None
    stored = _record_at(bootstrap_servers, topics(Topic.ENTRIES), receipt.partition, receipt.offset)
    assert node.codec.decode(stored).event_id == receipt.event_id

    # The explicitly non-durable variant says so until it is acknowledged.
    pending = client.put_async("later", b"v", contract="quotes")
    assert not pending.receipt.acknowledged and pending.receipt.offset is None
    acked = pending.acknowledged()
    assert acked.acknowledged and acked.event_id == pending.receipt.event_id
    stored = _record_at(bootstrap_servers, topics(Topic.ENTRIES), acked.partition, acked.offset)
    assert node.codec.decode(stored).event_id == acked.event_id


def test_sync_audit_returns_after_its_read_record_is_acknowledged(
    make_node, make_config, ticker, bootstrap_servers, topics
) -> None:
    node = make_node(config=make_config(audit={"mode": "sync"}))
    assert node.wait_caught_up()
    r = CacheClient(node).get("absent", contract="quotes")
    assert not r.hit and node.audit.emitted == 1
    # Acknowledged before the read returned: the record is in the log now.
    reads = [e for _, e in read_events(bootstrap_servers, topics, Topic.READS)]
    assert [e.type for e in reads] == [EventType.CACHE_READ_BATCH]
    (read,) = reads[0].payload["reads"]
    assert read["outcome"] == "MISS" and node.audit.problems() == ()
