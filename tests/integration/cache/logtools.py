"""Reading and writing the log as an attacker or an auditor would.

The attacker of the guarantee tests can produce any record to any topic with
a plain ``confluent_kafka.Producer`` but holds no signing key. These helpers
read whole topics (every partition from offset 0 to its end), copy genuine
records byte for byte, forge envelopes that decode but carry no seal, and
count the alerts (sealed events on the ``alerts`` topic) by type and by the
producer that emitted them.

"The end" of a partition is taken from the consumer's fetch path (the
partition-EOF event and the high watermark cached from fetch responses,
``get_watermark_offsets(cached=True)``), never from ListOffsets, which lags
the real log end on the embedded broker (DESIGN.md, measured quirks).
"""

from __future__ import annotations

import dataclasses
import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cachet.kafka.settings import consumer_settings
from cachet.ledger.identity import identity_of
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType, SealRef
from cachet.topics import Topic, TopicNames

__all__ = [
    "INTEGRITY_ALERTS",
    "Alert",
    "LogRecord",
    "alerts_by",
    "count_alerts",
    "decode",
    "first",
    "forge",
    "produce_raw",
    "producer_ids",
    "read_alerts",
    "read_events",
    "read_topic",
]

# The alert kinds that say "the log or a seal is wrong" (ContractViolation is
# about a read, not about integrity, and is not one of them).
INTEGRITY_ALERTS = frozenset(
    {EventType.INTEGRITY_FAILURE, EventType.LOG_DISCONTINUITY, EventType.UNSEALED_TIMEOUT}
)


@dataclass(frozen=True, slots=True)
class LogRecord:
    """One record exactly as the log holds it."""

    key: bytes | None
    value: bytes
    headers: tuple[tuple[str, bytes], ...]
    partition: int
    offset: int


@dataclass(frozen=True, slots=True)
class Alert:
    """An alert event: its type, who emitted it (envelope producer id), payload."""

    type: EventType
    emitted_by: str
    payload: dict[str, Any]
    offset: int

    @property
    def statuses(self) -> tuple[str, ...]:
        """IntegrityFailure status list (``"a,b"`` on the wire); else the kind."""
        raw = self.payload.get("status") or self.payload.get("kind") or ""
        return tuple(s for s in str(raw).split(",") if s)

    @property
    def about(self) -> str | None:
        """The producer id the alert is about (payload ``producer_id``)."""
        return self.payload.get("producer_id")


def _bytes(v: str | bytes | None) -> bytes:
    return v.encode() if isinstance(v, str) else (v or b"")


def read_topic(servers: str, topic: str, timeout_s: float = 30.0) -> list[LogRecord]:
    """Every record of every partition of ``topic``, from offset 0 to the end
    the broker's fetch path reported during this call (partition order, then
    offset order). Raises AssertionError if the end is not reached in time."""
    c = Consumer(consumer_settings(servers))  # partition EOF events on: the end is known
    try:
        meta = c.list_topics(topic, timeout=10).topics[topic]
        assert meta.error is None, f"{topic}: {meta.error}"
        parts = sorted(meta.partitions)
        c.assign([TopicPartition(topic, p, 0) for p in parts])
        out: dict[int, list[LogRecord]] = {p: [] for p in parts}
        next_offset = dict.fromkeys(parts, 0)
        eof: set[int] = set()
        deadline = time.monotonic() + timeout_s

        def at_end(p: int) -> bool:
            if p not in eof:
                return False
            _, high = c.get_watermark_offsets(TopicPartition(topic, p), cached=True)
            return high >= 0 and next_offset[p] >= high

        while not all(at_end(p) for p in parts):
            assert time.monotonic() < deadline, (
                f"{topic}: end not reached in {timeout_s}s (at {next_offset}, eof {sorted(eof)})"
            )
            for m in c.consume(500, 0.2):
                err = m.error()
                p = m.partition() or 0
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof.add(p)
                        continue
                    raise AssertionError(f"{topic}[{p}]: {err}")
                eof.discard(p)
                offset = m.offset() or 0
                out[p].append(
                    LogRecord(
                        _bytes(m.key()) if m.key() is not None else None,
                        _bytes(m.value()),
                        tuple((str(h[0]), _bytes(h[1])) for h in (m.headers() or ())),
                        p,
                        offset,
                    )
                )
                next_offset[p] = offset + 1
        return [r for p in parts for r in out[p]]
    finally:
        c.close()


def decode(records: Iterable[LogRecord], codec: EventCodec) -> list[tuple[LogRecord, Event]]:
    """Records that decode as events (anything else is skipped: forged junk)."""
    out = []
    for r in records:
        try:
            out.append((r, codec.decode(r.value)))
        except DecodeError:
            continue
    return out


def read_events(
    servers: str, names: TopicNames, topic: Topic, codec: EventCodec | None = None
) -> list[tuple[LogRecord, Event]]:
    """Every decodable event of ``topic``, with its record."""
    return decode(read_topic(servers, names(topic)), codec or EventCodec())


def read_alerts(servers: str, names: TopicNames, codec: EventCodec | None = None) -> list[Alert]:
    """Every alert on the alerts topic, in partition then offset order."""
    return [
        Alert(e.type, e.producer_id, e.payload, r.offset)
        for r, e in read_events(servers, names, Topic.ALERTS, codec)
    ]


def alerts_by(
    alerts: Iterable[Alert],
    *,
    identity: str | None = None,
    emitted_by: Iterable[str] | None = None,
    types: Iterable[EventType] = INTEGRITY_ALERTS,
    exclude_emitters: Iterable[str] = (),
) -> list[Alert]:
    """Alerts of ``types`` emitted by ``identity`` (any epoch) and/or by one of
    the producer ids ``emitted_by``, minus those of ``exclude_emitters``."""
    kinds, excluded = frozenset(types), frozenset(exclude_emitters)
    ids = frozenset(emitted_by) if emitted_by is not None else None
    return [
        a
        for a in alerts
        if a.type in kinds
        and a.emitted_by not in excluded
        and (identity is None or identity_of(a.emitted_by) == identity)
        and (ids is None or a.emitted_by in ids)
    ]


def count_alerts(alerts: Iterable[Alert], **filters: Any) -> Counter[str]:
    """``alerts_by(...)`` counted by ``Type:status`` (e.g. ``IntegrityFailure:duplicate_event``)."""
    return Counter(f"{a.type.value}:{','.join(a.statuses)}" for a in alerts_by(alerts, **filters))


def producer_ids(events: Iterable[tuple[LogRecord, Event]], identity: str) -> set[str]:
    """Every producer id (epoch) of ``identity`` that emitted one of ``events``."""
    return {e.producer_id for _, e in events if identity_of(e.producer_id) == identity}


def produce_raw(
    servers: str,
    topic: str,
    records: Sequence[tuple[bytes | None, bytes, Sequence[tuple[str, bytes]], int | None]],
) -> None:
    """Produce ``(key, value, headers, partition)`` records as the attacker:
    a plain client, no keys. Returns once the broker acknowledged them all."""
    p = Producer({"bootstrap.servers": servers, "acks": "all"})
    failed: list[str] = []

    def delivered(err: KafkaError | None, _msg: Any) -> None:
        if err is not None:
            failed.append(str(err))

    for key, value, headers, partition in records:
        kw: dict[str, Any] = {"key": key, "value": value, "headers": list(headers)}
        if partition is not None:
            kw["partition"] = partition
        p.produce(topic, on_delivery=delivered, **kw)
    assert p.flush(15) == 0, f"{topic}: records not acknowledged"
    assert not failed, failed


def forge(
    template: Event,
    *,
    producer_id: str | None = None,
    producer_seq: int,
    seal_ref: SealRef | None,
    codec: EventCodec,
    payload: dict[str, Any] | None = None,
    type: EventType | None = None,  # noqa: A002 - the Event field's name
) -> bytes:
    """A properly encoded envelope no seal covers: ``template`` with the given
    producer id, sequence, seal reference and payload (it decodes; only a
    verifier can tell it is not genuine)."""
    event = dataclasses.replace(
        template,
        type=type or template.type,
        producer_id=producer_id or template.producer_id,
        producer_seq=producer_seq,
        seal_ref=seal_ref,
        payload=payload if payload is not None else template.payload,
    )
    data = codec.encode(event)
    assert codec.decode(data).producer_seq == producer_seq
    return data


def first(
    events: Iterable[tuple[LogRecord, Event]], pred: Callable[[LogRecord, Event], bool]
) -> tuple[LogRecord, Event]:
    """The first ``(record, event)`` matching ``pred``; AssertionError if none."""
    for r, e in events:
        if pred(r, e):
            return r, e
    raise AssertionError("no such event in the log")
