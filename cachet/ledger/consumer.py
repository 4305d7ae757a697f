"""The verifying consumer: the seal verifier wired to Kafka.

It reads the key registry's control events (broadcast: ``assign()`` over
all partitions, always from offset 0: the registry is rebuilt on every
start), every seal and the data topics it was asked for. Seals and data are
read from the offsets it was given: a view that stored a verifier
checkpoint (:mod:`cachet.ledger.checkpoint`) resumes without re-reading
``seals`` from 0; without one, seals are read from 0. Seals are judged only
once the control log was read to its end, so no seal is checked against a
registry that has not yet seen a revocation already in the log.

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

from confluent_kafka import Consumer, KafkaError, Producer, TopicPartition

from cachet.consume import ConsumeLoop, DeadLetterFailure, DeadLetters, RecordOrigin
from cachet.crypto.registry import KeyRegistry, RegistrationRejected
from cachet.crypto.seal import KeySet, SignatureLine, SignatureScheme
from cachet.kafka import consumer_settings
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.verifier import Applied, IntegrityStatus, Outcome, Rejected, SealVerifier
from cachet.topics import Topic, TopicNames
from schemas.codec import EventCodec
from schemas.events import Event, EventType

__all__ = ["AlertEmitter", "VerifyingConsumer", "alert_for"]

log = logging.getLogger(__name__)

AlertEmitter = Callable[[EventType, dict[str, Any]], None]

_REGISTRY_EVENTS = (
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
        handlers = {t: self._on_registry_event for t in _REGISTRY_EVENTS}
        handlers[EventType.SEAL] = self._on_seal
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
            if event.type is EventType.SIGNING_KEY_REGISTERED:
                self.registry.register(
                    p["producer_id"], _key_set(p, p["key_set_id"]), p["valid_from_us"], _lines(p)
                )
            elif event.type is EventType.SIGNING_KEY_ROTATED:
                self.registry.rotate(
                    p["producer_id"],
                    p["old_key_set_id"],
                    _key_set(p, p["new_key_set_id"]),
                    p["rotated_at_us"],
                    _lines(p),
                )
            else:
                self.registry.revoke(
                    p["producer_id"],
                    p["key_set_id"],
                    p["compromised_at_us"],
                    p["reason"],
                    _lines(p),
                )
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
        taken = self.loop.poll(timeout_s, max_records)
        self._handle(self.verifier.expire(self._clock()))
        return taken

    def close(self) -> None:
        self.consumer.close()
