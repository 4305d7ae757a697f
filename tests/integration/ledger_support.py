"""Support for tests of the signed ledger against the real broker.

Keys are generated once per session (SLH-DSA keygen is not free). The
attacker model of the tamper tests: someone who can read and write the
Kafka log but holds no private key. ``genuine`` runs a real sealing producer
into a staging prefix; the test then copies the records, tampered or not,
into its own topics, which a real verifying consumer reads.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import pytest
from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.control import publish_control
from cachet.kafka.settings import consumer_settings, create_topics, producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.registration import registration_payload
from cachet.ledger.verifier import Applied, IntegrityStatus, Rejected
from cachet.producers.sealing import SealingProducer, SealingSettings
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType
from cachet.topics import Topic, TopicNames

REQUIRED = tuple(SignatureScheme)
PARTITIONS = 3


@pytest.fixture(scope="session")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="session")
def producer_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def other_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def codec() -> EventCodec:
    return EventCodec()


@dataclass(frozen=True)
class Record:
    topic: Topic
    partition: int
    key: bytes | None
    value: bytes


def read_all(servers: str, names: TopicNames, topics: Iterable[Topic], want: int) -> list[Record]:
    """Every record of ``topics`` in (topic, partition, offset) order."""
    c = Consumer(consumer_settings(servers))
    by_name = {names(t): t for t in topics}
    c.assign([TopicPartition(n, p, 0) for n in by_name for p in range(PARTITIONS)])
    got: list[tuple[str, int, int, Record]] = []
    deadline = time.monotonic() + 20
    while len(got) < want and time.monotonic() < deadline:
        for m in c.consume(500, 0.3):
            if m.error() is None:
                got.append(
                    (
                        m.topic(),
                        m.partition(),
                        m.offset(),
                        Record(by_name[m.topic()], m.partition(), m.key(), m.value()),
                    )
                )
            elif m.error().code() != KafkaError._PARTITION_EOF:
                raise AssertionError(m.error())
    c.close()
    assert len(got) == want, f"expected {want} records, read {len(got)}"
    return [r for *_, r in sorted(got, key=lambda g: g[:3])]


@dataclass
class LedgerRun:
    """Applied events and rejections seen by one verifying consumer."""

    applied: list[Applied] = field(default_factory=list)
    rejected: list[Rejected] = field(default_factory=list)

    @property
    def applied_seqs(self) -> set[int]:
        return {a.event.producer_seq for a in self.applied}

    def statuses(self) -> set[IntegrityStatus]:
        return {s for r in self.rejected for s in r.statuses}


@dataclass
class Ledger:
    servers: str
    names: TopicNames
    codec: EventCodec
    anchor: PrivateKeySet

    def register(
        self,
        identity: str,
        keys: PrivateKeySet,
        *,
        anchor: PrivateKeySet | None = None,
        valid_from_us: int = 0,
    ) -> Event:
        producer = Producer(producer_settings(self.servers))
        payload = registration_payload(
            identity, keys.public(), valid_from_us, anchor or self.anchor
        )
        return publish_control(
            producer, self.codec, self.names, EventType.SIGNING_KEY_REGISTERED, payload
        )

    def sealing_producer(
        self,
        identity: str,
        keys: PrivateKeySet,
        names: TopicNames | None = None,
        batch: int = 8,
        window_ms: int = 30,
        **kw,
    ) -> SealingProducer:
        return SealingProducer(
            Producer(producer_settings(self.servers)),
            self.codec,
            names or self.names,
            identity,
            keys,
            SealingSettings(batch_max_events=batch, batch_max_ms=window_ms),
            **kw,
        )

    def verify(
        self,
        *,
        until: Callable[[LedgerRun], bool],
        timeout_s: float = 10.0,
        unsealed_timeout_s: float = 1.5,
        settle_s: float = 0.0,
        topics: Iterable[Topic] = (Topic.ENTRIES, Topic.READS),
    ) -> LedgerRun:
        run = LedgerRun()
        alerts = Producer(producer_settings(self.servers))

        def alert(event_type: EventType, payload: dict) -> None:
            pass  # alert production is tested separately (test_alerts_reach_the_alerts_topic)

        vc = VerifyingConsumer(
            self.servers,
            self.names,
            self.codec,
            self.anchor.public(),
            REQUIRED,
            list(topics),
            run.applied.append,
            alert,
            alerts,
            partitions=PARTITIONS,
            unsealed_timeout_s=unsealed_timeout_s,
            on_rejected=run.rejected.append,
        )
        deadline = time.monotonic() + timeout_s
        while not until(run) and time.monotonic() < deadline:
            vc.poll(0.2)
        settle = time.monotonic() + settle_s
        while time.monotonic() < settle:
            vc.poll(0.2)
        vc.close()
        return run

    def copy(self, records: Iterable[Record]) -> None:
        """Write records, byte for byte, into this ledger's topics (same partitions)."""
        p = Producer(producer_settings(self.servers))
        for r in records:
            p.produce(self.names(r.topic), key=r.key, value=r.value, partition=r.partition)
        assert p.flush(10) == 0


@pytest.fixture
def ledger(
    bootstrap_servers: str, topics: TopicNames, codec: EventCodec, anchor: PrivateKeySet
) -> Ledger:
    return Ledger(bootstrap_servers, topics, codec, anchor)


@pytest.fixture
def staging(bootstrap_servers: str, codec: EventCodec, anchor: PrivateKeySet) -> Ledger:
    names = TopicNames(f"s{uuid.uuid4().hex[:10]}.")
    create_topics(bootstrap_servers, names, partitions=PARTITIONS)
    return Ledger(bootstrap_servers, names, codec, anchor)


def emit_sample(sp: SealingProducer, n: int) -> list[Event]:
    """n events alternating CacheWritten (entries) and CacheRead (reads)."""
    out = []
    for i in range(n):
        t = EventType.CACHE_WRITTEN if i % 2 == 0 else EventType.CACHE_READ
        payload = dict(SAMPLE_PAYLOADS[t])
        payload["key_hash"] = i.to_bytes(32, "big")
        out.append(sp.emit(t, payload, key=payload["key_hash"]))
    return out
