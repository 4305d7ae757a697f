"""The verifying consumer: the seal verifier wired to Kafka.

It reads the key registry's control events (broadcast: ``assign()`` over
all partitions, always from offset 0: the registry is rebuilt on every
start), every seal and the data topics it was asked for. Seals and data are
read from the offsets it was given: a view that stored a verifier
checkpoint (:mod:`cachet.ledger.checkpoint`) resumes without re-reading
``seals`` from 0; without one, seals are read from 0. Seals are judged only
once the control log was read to its end, so no seal is checked against a
registry that has not yet seen a revocation already in the log.

Anchor-signed SchemaSetPublished events on ``control`` teach the codec a
new writer schema set (after the anchor's signatures verify, never before);
a forged one is alerted like a forged registration and teaches nothing. So
a fresh consumer does not meet records of a set it has not learned yet
because control partitions are read in no set order against data ones, the
first :meth:`VerifyingConsumer.poll` reads ``control`` to its end for schema
sets before it consumes anything.

Verified events go to ``apply``; every rejection becomes an alert event
(IntegrityFailure, UnsealedTimeout or LogDiscontinuity) and is never
applied. A rejection of a control record below the control offset given in
``start_offsets`` was alerted before this start and is not alerted again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition

from cachet.crypto.registry import KeyRegistry, RegistrationRejected, schema_set_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet, SignatureLine
from cachet.errors import CachetError
from cachet.kafka.consume import ConsumeLoop, DeadLetterFailure, DeadLetters
from cachet.kafka.settings import consumer_settings
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, IntegrityStatus, Outcome, Rejected, SealVerifier
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import SchemaSetPublished
from cachet.topics import Topic, TopicNames

__all__ = [
    "REGISTRY_EVENTS",
    "AlertEmitter",
    "VerifyingConsumer",
    "alert_for",
    "apply_registry_event",
    "learn_schema_set",
]

log = logging.getLogger(__name__)

AlertEmitter = Callable[[EventType, dict[str, Any]], None]

REGISTRY_EVENTS = (
    EventType.SIGNING_KEY_REGISTERED,
    EventType.SIGNING_KEY_ROTATED,
    EventType.SIGNING_KEY_REVOKED,
)


def alert_for(rejected: Rejected) -> tuple[EventType, dict[str, Any]]:
    """The alert event that reports a rejection."""
    o = rejected.origin
    topic, partition, offset = (o.topic, o.partition, o.offset) if o else ("", -1, -1)
    if rejected.status is IntegrityStatus.UNSEALED_TIMEOUT:
        return EventType.UNSEALED_TIMEOUT, {
            "producer_id": rejected.producer_id or "",
            "producer_seq": rejected.producer_seq or -1,
            "waited_ms": 0,
            "topic": topic,
            "partition": partition,
            "offset": offset,
        }
    if rejected.status.is_discontinuity:
        return EventType.LOG_DISCONTINUITY, {
            "kind": rejected.status.value,
            "topic": topic,
            "partition": partition,
            "expected_offset": -1,
            "found_offset": offset,
            "producer_id": rejected.producer_id,
            "detail": rejected.detail,
        }
    return EventType.INTEGRITY_FAILURE, {
        "status": ",".join(s.value for s in rejected.statuses),
        "producer_id": rejected.producer_id,
        "seal_seq": rejected.seal_seq,
        "producer_seq": rejected.producer_seq,
        "topic": topic,
        "partition": partition,
        "offset": offset,
        "detail": rejected.detail,
    }


def _key_set(payload: Mapping[str, Any], key_set_id: str) -> KeySet:
    return KeySet(
        key_set_id, {SignatureScheme(k["algorithm"]): k["public_key"] for k in payload["keys"]}
    )


def _lines(payload: Mapping[str, Any]) -> tuple[SignatureLine, ...]:
    return tuple(
        SignatureLine(s["algorithm"], s["key_id"], s["signature"])
        for s in payload["anchor_signatures"]
    )


def apply_registry_event(registry: KeyRegistry, event: Event) -> None:
    """Applies one anchor-signed key-registry event (a registration, rotation
    or revocation: ``event.type`` in ``REGISTRY_EVENTS``) to ``registry``.

    The one place a control record changes the key registry: the verifying
    consumer and the replay of an archive (:mod:`cachet.materializers.replay`)
    both call it, so both trust exactly the same key sets. Raises
    RegistrationRejected or ValueError for a forged or invalid statement, and
    then the registry is unchanged.
    """
    p = event.payload
    if event.type is EventType.SIGNING_KEY_REGISTERED:
        registry.register(
            p["producer_id"], _key_set(p, p["key_set_id"]), p["valid_from_us"], _lines(p)
        )
    elif event.type is EventType.SIGNING_KEY_ROTATED:
        registry.rotate(
            p["producer_id"],
            p["old_key_set_id"],
            _key_set(p, p["new_key_set_id"]),
            p["rotated_at_us"],
            _lines(p),
        )
    elif event.type is EventType.SIGNING_KEY_REVOKED:
        registry.revoke(
            p["producer_id"],
            p["key_set_id"],
            p["compromised_at_us"],
            p["reason"],
            _lines(p),
        )
    else:
        raise ValueError(f"{event.type.value} is not a key-registry event")


def learn_schema_set(registry: KeyRegistry, codec: EventCodec, payload: Mapping[str, Any]) -> bool:
    """Verifies a SchemaSetPublished payload, then teaches ``codec`` its set;
    True when the set was new to the codec.

    Verify before remembering: a schema set gives sealed bytes their
    meaning, so only one the trust anchor signed may be learned. Raises
    (a CachetError or ValueError) for a forged or invalid announcement.
    """
    announced = SchemaSetPublished.from_avro(payload)
    statement = schema_set_statement(
        announced.release, announced.fingerprint, announced.schema_json
    )
    registry.check_anchor_statement(statement, _lines(payload))
    return codec.learn(
        announced.schema_json, announced.fingerprint, source=f"release {announced.release}"
    )


class VerifyingConsumer:
    """Consumes ``data_topics`` and applies only sealed, verified events."""

    def __init__(
        self,
        bootstrap_servers: str,
        names: TopicNames,
        codec: EventCodec,
        anchor: KeySet,
        required: Collection[SignatureScheme],
        data_topics: Collection[Topic],
        apply: Callable[[Applied], None],
        alert: AlertEmitter,
        deadletter_producer: Producer,
        *,
        partitions: Mapping[Topic, int] | int = 3,
        start_offsets: Mapping[tuple[str, int], int] | None = None,
        unsealed_timeout_s: float = 5.0,
        on_rejected: Callable[[Rejected], None] | None = None,
        on_record: Callable[[Event, RecordOrigin], None] | None = None,
        on_error: Callable[[KafkaError], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
        consumer_overrides: Mapping[str, Any] | None = None,
        checkpoint: VerifierCheckpoint | None = None,
        name: str = "verifier",
    ) -> None:
        self.registry = KeyRegistry(anchor, required)
        self.verifier = SealVerifier(
            self.registry,
            required,
            {t.value for t in data_topics},
            unsealed_timeout_s,
            topic_prefix=names.prefix,
            registry_ready=False,
            seals_current=False,
            data_current=False,
        )
        self.codec = codec
        self._bootstrap_servers = bootstrap_servers
        self._consumer_overrides = consumer_overrides
        self._schema_sets_read = False
        if checkpoint is not None:
            self.verifier.restore(checkpoint, codec.decode, clock())
        self._apply = apply
        self._alert = alert
        self._on_rejected = on_rejected
        self._on_record = on_record
        self._clock = clock
        self._names = names
        count = (lambda t: partitions) if isinstance(partitions, int) else partitions.__getitem__
        starts = dict(start_offsets or {}) if checkpoint is not None else {}
        if checkpoint is None:  # no verifier state: seals must be read from 0
            starts.update(
                {k: v for k, v in (start_offsets or {}).items() if k[0] != names(Topic.SEALS)}
            )
        self._control_alerted = {
            p: starts.get((names(Topic.CONTROL), p), 0) for p in range(count(Topic.CONTROL))
        }
        self._control_eof: set[int] = set()
        # Partitions at their end right now (cleared by each record read):
        # timeouts count only once the log read so far reached its end.
        self._seal_parts = {(names(Topic.SEALS), p) for p in range(count(Topic.SEALS))}
        self._data_parts = {(names(t), p) for t in data_topics for p in range(count(t))}
        self._at_end: set[tuple[str, int]] = set()
        assignment = [
            TopicPartition(names(Topic.CONTROL), p, 0) for p in range(count(Topic.CONTROL))
        ] + [
            TopicPartition(names(t), p, starts.get((names(t), p), 0))
            for t in (Topic.SEALS, *data_topics)
            for p in range(count(t))
        ]
        self.consumer = Consumer(consumer_settings(bootstrap_servers, overrides=consumer_overrides))
        self.consumer.assign(assignment)
        self.assignment = [(tp.topic, tp.partition) for tp in assignment]
        self.eof: dict[tuple[str, int], int] = {}
        self._seals_topic = names(Topic.SEALS)
        self._control_topic = names(Topic.CONTROL)
        handlers = {t: self._on_registry_event for t in REGISTRY_EVENTS}
        handlers[EventType.SEAL] = self._on_seal
        handlers[EventType.SCHEMA_SET_PUBLISHED] = self._on_schema_set
        self._name = name
        self.loop = ConsumeLoop(
            self.consumer,
            codec,
            DeadLetters(deadletter_producer, names(Topic.DEADLETTER)),
            handlers,
            fallback=self._on_event,
            on_eof=self._on_eof,
            on_error=on_error,
            on_deadletter=self._deadlettered,
            name=name,
        )

    # -- dispatch ---------------------------------------------------------

    def _on_registry_event(self, event: Event, origin: RecordOrigin) -> None:
        p = event.payload
        try:
            apply_registry_event(self.registry, event)
        except (RegistrationRejected, ValueError) as exc:
            if origin.offset < self._control_alerted.get(origin.partition, 0):
                return  # judged and alerted before this start
            self._handle(
                [
                    Rejected(
                        (IntegrityStatus.UNKNOWN_KEY,),
                        f"forged or invalid {event.type.value}: {exc}",
                        p.get("producer_id"),
                        None,
                        None,
                        origin,
                    )
                ]
            )
            return
        self._handle(self.verifier.on_registry_change(self._clock()))

    def _learn_schema_set(self, payload: Mapping[str, Any]) -> bool:
        """Verifies a SchemaSetPublished payload, then teaches the codec its set.

        Verify before remembering: a schema set gives sealed bytes their
        meaning, so only one the trust anchor signed may be learned. Raises
        (a CachetError or ValueError) for a forged or invalid announcement.
        """
        return learn_schema_set(self.registry, self.codec, payload)

    def _on_schema_set(self, event: Event, origin: RecordOrigin) -> None:
        self._read((origin.topic, origin.partition))
        try:
            self._learn_schema_set(event.payload)
        except (CachetError, ValueError) as exc:
            if origin.offset < self._control_alerted.get(origin.partition, 0):
                return  # judged and alerted before this start
            self._handle(
                [
                    Rejected(
                        (IntegrityStatus.UNKNOWN_KEY,),
                        f"forged or invalid {event.type.value}: {exc}",
                        None,
                        None,
                        None,
                        origin,
                    )
                ]
            )

    def read_schema_sets(self, timeout_s: float = 10.0) -> int:
        """Reads ``control`` from its start to its end now and learns every
        verified SchemaSetPublished on it; the number of sets new to the codec.

        A short-lived reader of its own: the consumer's position is not
        touched, and the main read still sees (and alerts) every
        announcement. A forged one is skipped here. Returns when every
        control partition was read to the end it had when this began, or
        after ``timeout_s``.
        """
        reader = Consumer(
            consumer_settings(self._bootstrap_servers, overrides=self._consumer_overrides)
        )
        try:
            ends: dict[int, int] = {}
            for partition in self._control_alerted:
                low, high = reader.get_watermark_offsets(
                    TopicPartition(self._control_topic, partition), timeout=timeout_s
                )
                if high > low:
                    ends[partition] = high
            reader.assign([TopicPartition(self._control_topic, p, 0) for p in ends])
            learned = 0
            deadline = time.monotonic() + timeout_s
            while ends and time.monotonic() < deadline:
                for msg in reader.consume(500, 0.2):
                    partition = msg.partition() or 0
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            ends.pop(partition, None)
                        continue
                    if (msg.offset() or 0) + 1 >= ends.get(partition, 0):
                        ends.pop(partition, None)
                    learned += self._learn_from(msg.value() or b"")
            if ends:
                log.warning("%s: control not read to its end for schema sets", self._name)
            return learned
        finally:
            reader.close()

    def _learn_from(self, value: bytes) -> int:
        try:
            event = self.codec.decode(value)
        except DecodeError:
            return 0  # the main read dead-letters it
        if event.type is not EventType.SCHEMA_SET_PUBLISHED:
            return 0
        try:
            return int(self._learn_schema_set(event.payload))
        except (CachetError, ValueError):
            return 0  # forged: the main read alerts it

    def _on_seal(self, event: Event, origin: RecordOrigin) -> None:
        self._read((origin.topic, origin.partition))
        self._handle(self.verifier.on_seal(event, origin, self._clock()))

    def _read(self, part: tuple[str, int]) -> None:
        self._at_end.discard(part)
        if part in self._seal_parts:
            self.verifier.seals_current = False
        elif part in self._data_parts:
            self.verifier.data_current = False

    def _on_event(self, event: Event, origin: RecordOrigin) -> None:
        self._read((origin.topic, origin.partition))
        if origin.topic in (self._seals_topic, self._control_topic):
            return  # other control events (contracts, roles) are not ours to verify here
        if self._on_record:
            self._on_record(event, origin)
        self._handle(self.verifier.on_event(event, origin, self._clock()))

    def _deadlettered(self, failure: DeadLetterFailure, origin: RecordOrigin, reason: str) -> None:
        """A record on a signed topic that could not even be judged is an
        integrity concern: alert (rate-limited by the loop), never drop."""
        self._alert(
            EventType.INTEGRITY_FAILURE,
            {
                "status": f"dead_letter.{failure.value}",
                "producer_id": None,
                "seal_seq": None,
                "producer_seq": None,
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
                "detail": f"{self._name}: {reason}"[:1000],
            },
        )

    def _on_eof(self, topic: str, partition: int, offset: int) -> None:
        self.eof[(topic, partition)] = offset
        part = (topic, partition)
        self._at_end.add(part)
        if part in self._seal_parts and self._seal_parts <= self._at_end:
            self.verifier.on_seals_caught_up(self._clock())
        if part in self._data_parts and self._data_parts <= self._at_end:
            self.verifier.on_data_caught_up(self._clock())
        if topic == self._control_topic and not self.verifier.registry_ready:
            self._control_eof.add(partition)
            if len(self._control_eof) == len(self._control_alerted):
                self._handle(self.verifier.on_registry_caught_up(self._clock()))

    @property
    def registry_caught_up(self) -> bool:
        """The control log was read to its end once: seals are being judged."""
        return self.verifier.registry_ready

    def _handle(self, outcomes: list[Outcome]) -> None:
        for outcome in outcomes:
            if isinstance(outcome, Applied):
                self._apply(outcome)
                continue
            if self._on_rejected:
                self._on_rejected(outcome)
            event_type, payload = alert_for(outcome)
            self._alert(event_type, payload)

    # -- driving ----------------------------------------------------------

    def poll(self, timeout_s: float = 0.2, max_records: int = 1000) -> int:
        if not self._schema_sets_read:
            self._schema_sets_read = True
            try:
                self.read_schema_sets()
            except KafkaException as exc:  # no broker yet: the main read learns them later
                log.warning("%s: schema sets not read from control at start: %s", self._name, exc)
        taken = self.loop.poll(timeout_s, max_records)
        self._handle(self.verifier.expire(self._clock()))
        return taken

    def close(self) -> None:
        self.consumer.close()
