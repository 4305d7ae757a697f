"""What the erasure processor learns from the log: verified, and from whom.

The intake reads ``erasure`` and ``kvscrub`` from offset 0 on every start
through the :class:`~cachet.kafka.verifying.VerifyingConsumer`: only records
a verified seal covers reach :meth:`ErasureIntake.apply`; forged, tampered,
unsealed and replayed records are refused by the verifier (and alerted).
Then authority, from the key that sealed the record -- never from a field:

* ``ErasureRequested`` and ``LegalHoldChanged``: only from
  ``[erasure] allowed_requesters``. Anything else is refused with an
  ``IntegrityFailure`` alert of status ``unauthorized_requester`` and never
  acted on.
* ``ErasureCompleted``: only from the processor's own identity; another
  identity's "completion" could otherwise suppress an erasure
  (``unauthorized_completion``).
* ``KvScrubCompleted`` with trigger ERASURE: recorded as scrub evidence.

A replayed genuine request (the same record bytes produced again) is a
duplicate the verifier refuses; a request re-sent with the same
``request_id`` (a new event) finds its case in the docket and does nothing.

:meth:`ErasureIntake.caught_up` says every ``erasure`` record read so far
was verified or refused and each partition reached its end once: before
that, the docket may not yet know a completion, and acting would repeat it.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Collection, Mapping

from confluent_kafka import Producer

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.kafka.verifying import AlertEmitter, VerifyingConsumer
from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, Rejected
from cachet.processors.erasure.docket import ErasureDocket, KvScrubEvidence
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import (
    ErasureCompleted,
    ErasureRequested,
    ErasureScope,
    KvScrubCompleted,
    LegalHoldChanged,
    ScrubTrigger,
)
from cachet.topics import Topic, TopicNames

__all__ = ["INTAKE_TOPICS", "ErasureIntake", "IntakeRefusal"]

log = logging.getLogger(__name__)

INTAKE_TOPICS: tuple[Topic, ...] = (Topic.ERASURE, Topic.KVSCRUB)


class IntakeRefusal(enum.StrEnum):
    """Alert statuses of verified records the processor does not act on."""

    UNAUTHORIZED_REQUESTER = "unauthorized_requester"
    UNAUTHORIZED_COMPLETION = "unauthorized_completion"


class ErasureIntake:
    """Feeds an :class:`ErasureDocket` from the verified log (see the module doc)."""

    def __init__(
        self,
        docket: ErasureDocket,
        *,
        bootstrap_servers: str,
        names: TopicNames,
        anchor: KeySet,
        required: Collection[SignatureScheme],
        allowed_requesters: Collection[str],
        processor_identity: str,
        alert: AlertEmitter,
        deadletter_producer: Producer,
        partitions: Mapping[Topic, int] | int = 3,
        unsealed_timeout_s: float = 5.0,
        codec: EventCodec | None = None,
        name: str = "erasure-intake",
    ) -> None:
        self.docket = docket
        self.allowed = frozenset(allowed_requesters)
        self.processor_identity = processor_identity
        self._alert = alert
        self.refused = 0
        self._erasure_topic = names(Topic.ERASURE)
        count = (lambda t: partitions) if isinstance(partitions, int) else partitions.__getitem__
        self._erasure_parts = [(self._erasure_topic, p) for p in range(count(Topic.ERASURE))]
        # Offsets read but not yet verified or refused, per erasure partition.
        self._pending: dict[tuple[str, int], set[int]] = {tp: set() for tp in self._erasure_parts}
        self._read_to: dict[tuple[str, int], int] = dict.fromkeys(self._erasure_parts, 0)
        self._reached_end: set[tuple[str, int]] = set()
        # The progress above is written by the poll thread, read by the worker.
        self._lock = threading.Lock()
        self.consumer = VerifyingConsumer(
            bootstrap_servers,
            names,
            codec or EventCodec(),
            anchor,
            required,
            INTAKE_TOPICS,
            self.apply,
            alert,
            deadletter_producer,
            partitions=partitions,
            unsealed_timeout_s=unsealed_timeout_s,
            on_rejected=self._rejected,
            on_record=self._on_record,
            name=name,
        )

    # -- progress ------------------------------------------------------------

    def poll(self, timeout_s: float = 0.1) -> int:
        """Consume and verify one batch (on the intake's own thread)."""
        taken = self.consumer.poll(timeout_s)
        with self._lock:
            for tp, end in list(self.consumer.eof.items()):
                if tp in self._read_to:
                    self._read_to[tp] = max(self._read_to[tp], end)
                    self._reached_end.add(tp)
            self.consumer.eof.clear()
        return taken

    def caught_up(self) -> bool:
        """Every erasure partition reached its end once, and nothing read is
        still waiting for its seal: the docket knows every verified record."""
        with self._lock:
            return (
                self.consumer.registry_caught_up
                and len(self._reached_end) == len(self._erasure_parts)
                and not any(self._pending.values())
            )

    @property
    def partitions(self) -> list[tuple[str, int]]:
        """The erasure partitions this intake reads."""
        return list(self._erasure_parts)

    def resolved_through(self, ends: Mapping[tuple[str, int], int]) -> bool:
        """Every erasure record below ``ends`` was read and verified or refused:
        the docket knows what the log held there (a hold set before a request,
        say). ``ends`` come from another consumer (the processor's probe):
        this consumer is its poll thread's alone."""
        if not self.caught_up():
            return False
        with self._lock:
            for tp, end in ends.items():
                pending = self._pending.get(tp, ())
                if self._read_to.get(tp, 0) < end or any(o < end for o in pending):
                    return False
        return True

    def _on_record(self, event: Event, origin: RecordOrigin) -> None:
        tp = (origin.topic, origin.partition)
        with self._lock:
            if tp in self._pending:
                self._pending[tp].add(origin.offset)
                self._read_to[tp] = max(self._read_to[tp], origin.offset + 1)

    def _resolve(self, origin: RecordOrigin | None) -> None:
        if origin is not None:
            with self._lock:
                self._pending.get((origin.topic, origin.partition), set()).discard(origin.offset)

    def _rejected(self, rejected: Rejected) -> None:
        self._resolve(rejected.origin)

    # -- the only way a record reaches the docket ----------------------------

    def apply(self, applied: Applied) -> None:
        """One verified record. Never raises (it runs inside the consumer)."""
        try:
            self._apply(applied)
        except Exception:  # noqa: BLE001 - one bad record must not stop the intake
            log.exception("erasure intake: %s not taken", applied.event.event_id)
        finally:
            self._resolve(applied.origin)

    def _apply(self, applied: Applied) -> None:
        event = applied.event
        try:
            identity = identity_of(applied.seal.header.producer_id)
        except ProducerIdError as exc:  # the verifier checked it; defend anyway
            self._refuse(applied, IntakeRefusal.UNAUTHORIZED_REQUESTER, str(exc))
            return
        if event.type is EventType.ERASURE_REQUESTED:
            request = ErasureRequested.from_avro(event.payload)
            # Authority is the sealing key, never ``requested_by`` (a label).
            if identity not in self.allowed:
                self._refuse(
                    applied,
                    IntakeRefusal.UNAUTHORIZED_REQUESTER,
                    f"ErasureRequested {request.request_id} sealed by {identity!r}, not in "
                    "[erasure] allowed_requesters; not acted on",
                )
                return
            if request.scope is not ErasureScope.SUBJECT:
                # Tenant erasures are the KV-scrub workers' (no entry is
                # indexed by tenant); an unknown scope is never acted on.
                log.warning(
                    "erasure request %s of scope %s: not for the erasure processor",
                    request.request_id,
                    request.scope.name,
                )
                return
            self.docket.add_request(request, event.occurred_at_us, identity)
        elif event.type is EventType.LEGAL_HOLD_CHANGED:
            change = LegalHoldChanged.from_avro(event.payload)
            if identity not in self.allowed:
                self._refuse(
                    applied,
                    IntakeRefusal.UNAUTHORIZED_REQUESTER,
                    f"LegalHoldChanged {change.hold_id} ({change.action.name}) sealed by "
                    f"{identity!r}, not in [erasure] allowed_requesters; not acted on",
                )
                return
            self.docket.hold_changed(change)
        elif event.type is EventType.ERASURE_COMPLETED:
            completed = ErasureCompleted.from_avro(event.payload)
            if identity != self.processor_identity:
                self._refuse(
                    applied,
                    IntakeRefusal.UNAUTHORIZED_COMPLETION,
                    f"ErasureCompleted {completed.request_id} sealed by {identity!r}, not the "
                    f"erasure processor {self.processor_identity!r}; ignored",
                )
                return
            self.docket.add_completion(completed)
        elif event.type is EventType.KV_SCRUB_COMPLETED:
            scrub = KvScrubCompleted.from_avro(event.payload)
            if scrub.trigger is ScrubTrigger.ERASURE:
                self.docket.note_kv_scrub(
                    KvScrubEvidence(
                        scrub.worker_id,
                        scrub.tenant,
                        scrub.blocks,
                        event.occurred_at_us,
                        scrub.request_id,
                    )
                )

    def _refuse(self, applied: Applied, status: IntakeRefusal, detail: str) -> None:
        event, origin, header = applied.event, applied.origin, applied.seal.header
        log.warning(
            "refused %s at %s[%d]@%d: %s",
            event.type.value,
            origin.topic,
            origin.partition,
            origin.offset,
            detail,
        )
        self.refused += 1
        self._alert(
            EventType.INTEGRITY_FAILURE,
            {
                "status": status.value,
                "producer_id": header.producer_id,
                "seal_seq": header.seal_seq,
                "producer_seq": event.producer_seq,
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
                "detail": detail,
            },
        )

    def close(self) -> None:
        self.consumer.close()
