"""An in-memory signed log for the replay's unit tests: real seals (all three
schemes), a real anchor-signed registration, exact record bytes; and a
:class:`ListSource` that serves it like an archive (one stream)."""

from __future__ import annotations

from collections.abc import Collection, Iterator
from dataclasses import dataclass, field

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.seal import PrivateKeySet, SealHeader, leaf_topics_digest, seal_hash, sign_header
from cachet.ledger.identity import GENESIS_SEAL_HASH
from cachet.ledger.record import RecordOrigin
from cachet.ledger.registration import registration_payload
from cachet.materializers.replay.source import PartitionEnd, Position, SourceItem
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, TOPIC_OF_EVENT, EventType, SealRef, new_event
from cachet.topics import Topic, TopicNames

NAMES = TopicNames("t.")
T0 = 1_700_000_000_000_000  # event time of the first event (us)


@dataclass
class MemoryLog:
    """A log being written: ``emit`` appends sealed-to-be events, ``seal``
    appends the seal over everything emitted since the last one."""

    codec: EventCodec
    anchor: PrivateKeySet
    keys: PrivateKeySet
    identity: str = "node-a"
    epoch: str = "01"
    records: list[RecordOrigin] = field(default_factory=list)
    _offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    _seq: int = 0
    _seal_seq: int = 0
    _prev: bytes = GENESIS_SEAL_HASH
    _batch: list[tuple[bytes, str]] = field(default_factory=list)
    _first: int = 0

    @property
    def pid(self) -> str:
        return f"{self.identity}@{self.epoch}"

    def append(
        self, topic: Topic, partition: int, raw: bytes, ts_ms: int, key: bytes = b""
    ) -> RecordOrigin:
        name = NAMES(topic)
        off = self._offsets.get((name, partition), 0)
        self._offsets[(name, partition)] = off + 1
        origin = RecordOrigin(name, partition, off, key, ts_ms, (), raw)
        self.records.append(origin)
        return origin

    def register(self, at_us: int = T0 - 1_000_000) -> RecordOrigin:
        payload = registration_payload(self.identity, self.keys.public(), 0, self.anchor)
        event = new_event(
            EventType.SIGNING_KEY_REGISTERED,
            payload,
            producer_id="keys-admin@0",
            producer_seq=0,
            occurred_at_us=at_us,
        )
        return self.append(Topic.CONTROL, 0, self.codec.encode(event), at_us // 1000)

    def emit(
        self,
        event_type: EventType,
        at_us: int,
        partition: int = 0,
        **fields: object,
    ) -> RecordOrigin:
        payload = dict(SAMPLE_PAYLOADS[event_type])
        payload.update(fields)
        if not self._batch:
            self._first = self._seq
        event = new_event(
            event_type,
            payload,
            producer_id=self.pid,
            producer_seq=self._seq,
            seal_ref=SealRef(self._seal_seq, len(self._batch)),
            occurred_at_us=at_us,
        )
        raw = self.codec.encode(event)
        topic = TOPIC_OF_EVENT[event_type]
        self._batch.append((raw, topic.value))
        self._seq += 1
        return self.append(topic, partition, raw, at_us // 1000)

    def seal(self, at_us: int) -> RecordOrigin:
        leaves = [leaf_hash(r) for r, _ in self._batch]
        topics = [t for _, t in self._batch]
        header = SealHeader(
            producer_id=self.pid,
            seal_seq=self._seal_seq,
            tree_size=len(leaves),
            first_producer_seq=self._first,
            merkle_root=root_from_leaf_hashes(leaves),
            prev_seal_hash=self._prev,
            key_set_id=self.keys.key_set_id,
            sealed_at_us=at_us,
            leaf_topics_digest=leaf_topics_digest(topics),
        )
        sigs = sign_header(header, self.keys)
        payload = {
            "producer_id": self.pid,
            "seal_seq": self._seal_seq,
            "prev_seal_hash": header.prev_seal_hash,
            "merkle_root": header.merkle_root,
            "tree_size": header.tree_size,
            "first_producer_seq": self._first,
            "leaf_hashes": leaves,
            "leaf_topics": topics,
            "key_set_id": self.keys.key_set_id,
            "signatures": [
                {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature}
                for s in sigs
            ],
            "sealed_at_us": at_us,
        }
        event = new_event(
            EventType.SEAL,
            payload,
            producer_id=self.pid,
            producer_seq=self._seal_seq,
            occurred_at_us=at_us,
        )
        self._prev = seal_hash(header, sigs)
        self._seal_seq += 1
        self._batch = []
        return self.append(Topic.SEALS, 0, self.codec.encode(event), at_us // 1000)


class ListSource:
    """A replay source over a list of records, served in list order."""

    def __init__(self, records: list[RecordOrigin], names: TopicNames = NAMES) -> None:
        self.records = records
        self.names = names
        self.label = "memory"
        self.reads = 0

    def partitions(self) -> frozenset[tuple[str, int]]:
        return frozenset((r.topic, r.partition) for r in self.records)

    def control_records(self) -> Iterator[RecordOrigin]:
        return (r for r in self.records if r.topic == self.names(Topic.CONTROL))

    def read(
        self,
        *,
        topics: Collection[str] | None = None,
        start: Position | None = None,
        stop: Position | None = None,
        until_ms: int | None = None,
    ) -> Iterator[SourceItem]:
        self.reads += 1
        ends: dict[tuple[str, int], int] = {}
        for r in self.records:
            key = (r.topic, r.partition)
            if topics is not None and r.topic not in topics:
                continue
            if r.offset < (start or {}).get(key, 0):
                continue
            ends[key] = r.offset + 1
            yield r
        for (t, p), end in sorted(ends.items()):
            yield PartitionEnd(t, p, end)


def key(n: int) -> bytes:
    return n.to_bytes(32, "big")


def written(
    log: MemoryLog, n: int, at_us: int, version: int = 1, partition: int = 0
) -> RecordOrigin:
    return log.emit(EventType.CACHE_WRITTEN, at_us, partition, key_hash=key(n), version=version)
