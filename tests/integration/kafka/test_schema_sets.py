"""Schema sets learned from the control topic, against the real broker.

A consumer dead-letters a record written with a schema set it does not
know; once an anchor-signed SchemaSetPublished for that set is on
``control``, a fresh verifying consumer learns the set and decodes the same
record; an announcement signed by another anchor is alerted and teaches
nothing (docs/wire.md, "Evolution").
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.consume import DL_HEADER_FAILURE, DL_HEADER_REASON, headers_dict
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.record import RecordOrigin
from cachet.schemas.announcement import announcing_fingerprint, schema_set_announcement
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event
from cachet.schemas.loader import SCHEMA_DIR, load_schema_set
from cachet.topics import Topic, TopicNames
from tests.schema_sets import newer_schema_dir

pytestmark = pytest.mark.integration

PARTITIONS = 3


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture
def newer(tmp_path: Path) -> Path:
    """A schema set no codec ships: the current one with a ScrubTrigger symbol appended."""
    return newer_schema_dir(tmp_path)


@dataclass
class Seen:
    """What one verifying consumer did with what it read."""

    decoded: list[Event] = field(default_factory=list)
    alerts: list[tuple[EventType, dict[str, Any]]] = field(default_factory=list)

    def alert_statuses(self) -> list[str]:
        return [p.get("status", "") for _, p in self.alerts]


def _run_consumer(
    servers: str,
    names: TopicNames,
    anchor: PrivateKeySet,
    codec: EventCodec,
    until: Callable[[Seen], bool],
    timeout_s: float = 15.0,
) -> Seen:
    seen = Seen()

    def on_record(event: Event, origin: RecordOrigin) -> None:
        seen.decoded.append(event)

    vc = VerifyingConsumer(
        servers,
        names,
        codec,
        anchor.public(),
        tuple(SignatureScheme),
        [Topic.KVSCRUB],
        lambda applied: None,
        lambda event_type, payload: seen.alerts.append((event_type, payload)),
        Producer(producer_settings(servers)),
        partitions=PARTITIONS,
        on_record=on_record,
        unsealed_timeout_s=60.0,
    )
    try:
        deadline = time.monotonic() + timeout_s
        while not until(seen) and time.monotonic() < deadline:
            vc.poll(0.2)
    finally:
        vc.close()
    return seen


def _produce(servers: str, topic: str, key: bytes, value: bytes) -> None:
    producer = Producer(producer_settings(servers))
    producer.produce(topic, key=key, value=value)
    assert producer.flush(10) == 0


def _announce(
    servers: str, names: TopicNames, schema_dir: Path, release: str, anchor: PrivateKeySet
) -> bytes:
    schema_set = load_schema_set(schema_dir)
    payload = schema_set_announcement(schema_set, release, anchor)
    event = new_event(
        EventType.SCHEMA_SET_PUBLISHED,
        payload.to_avro(),
        producer_id="keys-admin@0",
        producer_seq=0,
    )
    value = EventCodec().encode_with(event, announcing_fingerprint(SCHEMA_DIR))
    _produce(servers, names(Topic.CONTROL), schema_set.fingerprint, value)
    return schema_set.fingerprint


def _dead_letters(servers: str, names: TopicNames, want: int) -> list[dict[str, bytes]]:
    consumer = Consumer(consumer_settings(servers))
    consumer.assign([TopicPartition(names(Topic.DEADLETTER), p, 0) for p in range(PARTITIONS)])
    found: list[dict[str, bytes]] = []
    deadline = time.monotonic() + 10
    try:
        while len(found) < want and time.monotonic() < deadline:
            for msg in consumer.consume(100, 0.3):
                if msg.error() is None:
                    found.append(headers_dict(msg.headers()))
                elif msg.error().code() != KafkaError._PARTITION_EOF:
                    raise AssertionError(msg.error())
    finally:
        consumer.close()
    return found


def test_a_set_announced_on_control_is_learned_and_a_forged_one_is_not(
    bootstrap_servers: str, topics: TopicNames, anchor: PrivateKeySet, newer: Path
) -> None:
    newer_codec = EventCodec(newer)
    record = new_event(
        EventType.KV_SCRUB_COMPLETED,
        {**SAMPLE_PAYLOADS[EventType.KV_SCRUB_COMPLETED], "trigger": "ERASURE"},
        producer_id="gpu-worker@1f",
        producer_seq=0,
        seal_ref=SealRef(0, 0),
    )
    _produce(bootstrap_servers, topics(Topic.KVSCRUB), b"tenant", newer_codec.encode(record))

    # 1. Nothing announced: the record is dead-lettered, not decoded.
    undecodable = "dead_letter.undecodable"
    first = _run_consumer(
        bootstrap_servers,
        topics,
        anchor,
        EventCodec(),
        until=lambda s: undecodable in s.alert_statuses(),
    )
    assert undecodable in first.alert_statuses()
    assert first.decoded == []
    (letter,) = _dead_letters(bootstrap_servers, topics, 1)
    assert letter[DL_HEADER_FAILURE] == b"undecodable"
    assert letter[DL_HEADER_REASON].startswith(b"unknown_fingerprint")

    # 2. Announced by another anchor: alerted as forged, nothing learned.
    forger = PrivateKeySet.generate("not-the-anchor")
    fingerprint = _announce(bootstrap_servers, topics, newer, "v3", forger)
    codec = EventCodec()
    second = _run_consumer(
        bootstrap_servers,
        topics,
        anchor,
        codec,
        until=lambda s: (
            undecodable in s.alert_statuses()
            and any("SchemaSetPublished" in p.get("detail", "") for _, p in s.alerts)
        ),
    )
    forged = [p for _, p in second.alerts if "SchemaSetPublished" in (p.get("detail") or "")]
    assert forged and "bad-anchor-signature" in forged[0]["detail"]
    assert forged[0]["topic"] == topics(Topic.CONTROL)
    assert fingerprint not in codec.known_fingerprints
    assert second.decoded == []
    assert undecodable in second.alert_statuses()

    # 3. Announced by the anchor: a fresh consumer learns the set and decodes it.
    assert _announce(bootstrap_servers, topics, newer, "v3", anchor) == fingerprint
    codec = EventCodec()
    third = _run_consumer(bootstrap_servers, topics, anchor, codec, until=lambda s: bool(s.decoded))
    assert fingerprint in codec.known_fingerprints
    assert [e.event_id for e in third.decoded] == [record.event_id]
    assert third.decoded[0].payload["trigger"] == "ERASURE"
    assert undecodable not in third.alert_statuses()
