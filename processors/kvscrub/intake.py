"""Which requests may make a scrub worker act: verified, authorized, live.

Wiping KV blocks is not "fail-safe": it is loss of service for a tenant,
chosen by whoever can make the worker act. So a request from the log reaches
:class:`~cachet.processors.kvscrub.worker.KvScrubWorker` only through
:class:`ScrubIntake`, and only when all three hold:

1. **verified** -- the intake reads ``kvscrub`` and ``erasure`` through the
   :class:`~cachet.kafka.verifying.VerifyingConsumer`, and acts in its
   ``apply`` callback only, i.e. after a verified seal covered the record's
   exact bytes. Unsealed, forged, tampered or replayed records never reach
   ``apply``; the verifier turns them into alerts.
2. **authorized** -- the identity whose keys sealed the request
   (``identity_of(seal.header.producer_id)``) is one the deployment allows
   (:class:`RequestAuthority`, ``[kvscrub] allowed_requesters``). A verified
   request from any other identity is refused with an ``IntegrityFailure``
   alert of status ``unauthorized_requester``, never acted on.
3. **live** -- the record lies at or after the log end this worker observed
   when it started. The pool is process memory: nothing older can name its
   blocks, and acting on an old tenant erasure would wipe sessions opened
   since. Older records are still read and verified (from offset 0), so the
   verifier knows them and refuses a re-produced copy as a duplicate, and
   their seals' leaves are not reported missing. Because partitions are
   read concurrently, a copy re-produced into another partition could reach
   the verifier before the original does; so live requests are held until
   every request partition was read up to its start end, and one whose
   ``(producer_id, producer_seq)`` appeared in that history is refused as
   ``replayed_request``.

The worker's own request ends do not travel through the log at all
(:meth:`KvScrubWorker.finish_request`, in process); a ``KvScrubRequested``
sealed by the worker's own identity is also accepted, ``ErasureRequested``
never is: an erasure is a data-protection decision that must come from an
identity configured for it.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from typing import Any

from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.kafka.consume import DeadLetterFailure, DeadLetters
from cachet.kafka.settings import consumer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, Rejected
from cachet.processors.kvscrub.errors import WorkerSetupError
from cachet.processors.kvscrub.worker import KvScrubWorker
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.topics import Topic, TopicNames

__all__ = [
    "REQUEST_TOPICS",
    "RequestAuthority",
    "RequestRefusal",
    "ScrubIntake",
    "request_log_layout",
]

logger = logging.getLogger(__name__)

# The topics a worker takes requests from (and sees its peers' evidence on).
REQUEST_TOPICS: tuple[Topic, ...] = (Topic.KVSCRUB, Topic.ERASURE)
_REQUESTS: frozenset[EventType] = frozenset(
    {EventType.KV_SCRUB_REQUESTED, EventType.ERASURE_REQUESTED}
)
# Types that share the worker's topics but need no action from it: its own
# (and its peers') evidence, and the erasure processor's completion.
_IGNORED: frozenset[EventType] = frozenset(
    {
        EventType.KV_SCRUB_COMPLETED,
        EventType.KV_BLOCK_QUARANTINED,
        EventType.ERASURE_COMPLETED,
    }
)


class RequestRefusal(enum.StrEnum):
    """Why a verified record did not make the worker act (alert status / metric label)."""

    UNAUTHORIZED_REQUESTER = "unauthorized_requester"
    REPLAYED_REQUEST = "replayed_request"
    MALFORMED_REQUEST = "malformed_request"
    UNEXPECTED_EVENT = "unexpected_event"


@dataclass(frozen=True, slots=True)
class RequestAuthority:
    """Who may make a worker act on a request.

    ``allowed`` are producer identities (``node-a``, not ``node-a@<epoch>``)
    whose sealed ``KvScrubRequested`` and ``ErasureRequested`` are acted on.
    ``own`` is the worker's own signing identity: allowed for
    ``KvScrubRequested`` only (its own request ends).
    """

    allowed: frozenset[str]
    own: str | None = None

    @classmethod
    def of(cls, allowed: Collection[str], own: str | None = None) -> RequestAuthority:
        return cls(frozenset(allowed), own)

    def permits(self, identity: str, event_type: EventType) -> bool:
        """Whether a request of ``event_type`` sealed by ``identity`` may be acted on."""
        if identity in self.allowed:
            return event_type in (EventType.KV_SCRUB_REQUESTED, EventType.ERASURE_REQUESTED)
        return identity == self.own and event_type is EventType.KV_SCRUB_REQUESTED


def request_log_layout(
    bootstrap_servers: str,
    names: TopicNames,
    *,
    from_beginning: bool = False,
    overrides: Mapping[str, Any] | None = None,
    timeout_s: float = 10.0,
) -> tuple[dict[Topic, int], dict[tuple[str, int], int]]:
    """Partition counts of the topics the intake reads, and where acting starts.

    Returns ``(partitions, act_from)``: ``act_from`` maps each
    ``(topic name, partition)`` of :data:`REQUEST_TOPICS` to its current end,
    resolved NOW (not lazily), so a request produced after this returns is
    never skipped; with ``from_beginning`` it maps them to 0. A missing topic
    is a :class:`WorkerSetupError`.
    """
    consumer = Consumer(consumer_settings(bootstrap_servers, overrides=overrides))
    try:
        partitions: dict[Topic, int] = {}
        act_from: dict[tuple[str, int], int] = {}
        for topic in (Topic.CONTROL, Topic.SEALS, *REQUEST_TOPICS):
            name = names(topic)
            meta = consumer.list_topics(name, timeout=timeout_s).topics.get(name)
            if meta is None or meta.error is not None or not meta.partitions:
                raise WorkerSetupError(f"topic {name} is missing on {bootstrap_servers}")
            partitions[topic] = len(meta.partitions)
            if topic not in REQUEST_TOPICS:
                continue
            for p in sorted(meta.partitions):
                # ListOffsets may lag the real end (DESIGN, embedded broker):
                # a lagging end only lets in a few genuine requests produced
                # just before start, it never skips one produced after.
                _, end = consumer.get_watermark_offsets(TopicPartition(name, p), timeout=timeout_s)
                act_from[(name, p)] = 0 if from_beginning else max(end, 0)
        return partitions, act_from
    finally:
        consumer.close()


class ScrubIntake:
    """Feeds a worker the verified, authorized, live requests of its topics.

    Rejections by the verifier become alerts through ``worker.alert`` (so
    they are sealed events on ``alerts``); so do refusals of verified
    requests from identities ``authority`` does not permit. A verified but
    malformed request is dead-lettered with the reason, and counted.
    """

    def __init__(
        self,
        worker: KvScrubWorker,
        *,
        bootstrap_servers: str,
        names: TopicNames,
        anchor: KeySet,
        required: Collection[SignatureScheme],
        authority: RequestAuthority,
        deadletter_producer: Producer,
        partitions: Mapping[Topic, int],
        act_from: Mapping[tuple[str, int], int],
        unsealed_timeout_s: float = 5.0,
        codec: EventCodec | None = None,
        consumer_overrides: Mapping[str, Any] | None = None,
        name: str = "kvscrub",
    ) -> None:
        self.worker = worker
        self.authority = authority
        self._act_from = dict(act_from)
        # Request partitions not yet read up to where acting starts.
        self._behind = {tp for tp, start in self._act_from.items() if start > 0}
        # (producer_id, producer_seq) of the requests in that history; kept
        # for the process's life (a copy may wait for its seal), requests only.
        self._history: set[tuple[str, int]] = set()
        self._held: list[Applied] = []
        self._deadletters = DeadLetters(deadletter_producer, names(Topic.DEADLETTER))
        self.consumer = VerifyingConsumer(
            bootstrap_servers,
            names,
            codec or EventCodec(),
            anchor,
            required,
            REQUEST_TOPICS,
            self.apply,
            worker.alert,
            deadletter_producer,
            partitions=partitions,
            unsealed_timeout_s=unsealed_timeout_s,
            on_rejected=self._rejected,
            on_record=self._on_record,
            consumer_overrides=consumer_overrides,
            name=name,
        )

    @property
    def caught_up(self) -> bool:
        """Every request partition was read up to where acting starts."""
        return not self._behind

    def poll(self, timeout_s: float = 0.2) -> int:
        """Consume and verify one batch; acting happens in :meth:`apply`."""
        taken = self.consumer.poll(timeout_s)
        if self._behind:
            for tp, end in self.consumer.eof.items():
                if tp in self._behind and end >= self._act_from[tp]:
                    self._behind.discard(tp)
            if not self._behind:
                held, self._held = self._held, []
                for applied in held:
                    self._act(applied)
        return taken

    def _on_record(self, event: Event, origin: RecordOrigin) -> None:
        """Every data record on arrival, before verification: bookkeeping only."""
        tp = (origin.topic, origin.partition)
        start = self._act_from.get(tp, 0)
        if origin.offset < start and event.type in _REQUESTS:
            self._history.add((event.producer_id, event.producer_seq))
        if origin.offset >= start - 1:
            self._behind.discard(tp)

    def close(self) -> None:
        self.consumer.close()
        self._deadletters.flush()

    # -- the only way a record from the log makes the worker act ----------

    def apply(self, applied: Applied) -> None:
        """Act on one verified record, if it is live and its sealer may ask.

        Called by the verifying consumer only after the record's seal
        verified. Never raises: it runs inside the consumer's handlers,
        where an exception would dead-letter the seal that released it.
        """
        event, origin = applied.event, applied.origin
        if event.type in _IGNORED:
            return
        if origin.offset < self._act_from.get((origin.topic, origin.partition), 0):
            # History: verified (so a re-produced copy is a duplicate) but
            # from before this worker existed; see the module docstring.
            logger.debug("history %s at %s:%d@%d", event.type.value, *_where(applied))
            return
        if self._behind:
            self._held.append(applied)  # acted on (or refused) once caught up
            return
        self._act(applied)

    def _act(self, applied: Applied) -> None:
        event = applied.event
        if event.type not in _REQUESTS:
            self._dead_letter(applied, RequestRefusal.UNEXPECTED_EVENT, "not a scrub request")
            return
        header = applied.seal.header
        if (event.producer_id, event.producer_seq) in self._history:
            # A genuine request from before this worker started, re-produced
            # into another partition and read before its original.
            self._refuse(
                applied,
                RequestRefusal.REPLAYED_REQUEST,
                f"{event.type.value} {event.event_id} is a copy of a request from before "
                f"worker {self.worker.worker_id} started; not acted on",
            )
            return
        try:
            identity = identity_of(header.producer_id)
        except ProducerIdError as exc:  # the verifier checked it; defend anyway
            self._refuse(applied, RequestRefusal.UNAUTHORIZED_REQUESTER, str(exc))
            return
        # Authority comes from the key that sealed the request, never from a
        # field of the request (``requested_by`` is a label, not a credential).
        if not self.authority.permits(identity, event.type):
            self._refuse(
                applied,
                RequestRefusal.UNAUTHORIZED_REQUESTER,
                f"{event.type.value} sealed by {identity!r}, not an allowed requester of "
                f"worker {self.worker.worker_id} ([kvscrub] allowed_requesters); not acted on",
            )
            return
        try:
            if event.type is EventType.KV_SCRUB_REQUESTED:
                self.worker.on_scrub_requested(event)
            else:
                self.worker.on_erasure_requested(event)
        except Exception as exc:  # noqa: BLE001 - one bad request must not stop the intake
            logger.exception("kvscrub request %s refused", event.event_id)
            self._dead_letter(
                applied, RequestRefusal.MALFORMED_REQUEST, f"{type(exc).__name__}: {exc}"
            )

    # -- refusals ----------------------------------------------------------

    def _rejected(self, rejected: Rejected) -> None:
        self.worker.metrics.refused(rejected.status.value)

    def _refuse(self, applied: Applied, reason: RequestRefusal, detail: str) -> None:
        """A verified request not acted on: counted, and alerted as an IntegrityFailure."""
        event, origin, header = applied.event, applied.origin, applied.seal.header
        logger.warning("refused %s at %s:%d@%d: %s", event.type.value, *_where(applied), detail)
        self.worker.metrics.refused(reason.value)
        self.worker.alert(
            EventType.INTEGRITY_FAILURE,
            {
                "status": reason.value,
                "producer_id": header.producer_id,
                "seal_seq": header.seal_seq,
                "producer_seq": event.producer_seq,
                "topic": origin.topic,
                "partition": origin.partition,
                "offset": origin.offset,
                "detail": detail,
            },
        )

    def _dead_letter(self, applied: Applied, reason: RequestRefusal, detail: str) -> None:
        self.worker.metrics.refused(reason.value)
        self._deadletters.send(
            applied.origin.raw,
            applied.origin,
            DeadLetterFailure.HANDLER_FAILED,
            f"{applied.event.type.value}: {reason.value}: {detail}",
        )


def _where(applied: Applied) -> tuple[str, int, int]:
    o = applied.origin
    return o.topic, o.partition, o.offset
