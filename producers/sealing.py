"""The sealing producer: every event it emits is covered by a signed seal.

Events are batched (by count and by time window). A batch's leaf hashes are
taken over the exact bytes produced; a background signer builds the Merkle
root, signs the canonical seal header with every scheme of the key set, and
produces the Seal -- pipelined, so callers fill batch N+1 while batch N is
being signed.

Invariants:

* A seal is produced only after every event it covers was acknowledged by
  the broker. A crash (or a failed delivery) before that leaves the batch
  unsealed -- verifiers raise UnsealedTimeout -- never falsely sealed.
* Seals of one producer id form a hash chain (``prev_seal_hash``) with dense
  sequence numbers, so a verifier detects dropped, replayed or reordered
  seals. Each process run is a new epoch with its own chain.
* A rejected call never consumes a sequence or seal number. ``emit``
  validates, encodes and size-checks the event *before* it takes a producer
  sequence or a leaf of the open batch; a synchronous refusal by the client
  (queue full, record too large) gives both back under the same lock. A
  rejected call leaves sequence, batch and chain exactly as they were.
* Success means durable: :meth:`SealingProducer.emit_with_receipt` returns a
  :class:`Delivery` whose :meth:`Delivery.wait` returns only once the broker
  acknowledged the event (the client runs with ``acks=all``). An event the
  broker refuses after it was produced (an asynchronous delivery failure)
  breaks the chain: its batch is never sealed and the producer starts a new
  epoch, which :meth:`SealingProducer.health` reports.
"""

from __future__ import annotations

import datetime
import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import CachetConfig
from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.schemes import SigningError
from cachet.crypto.seal import (
    PrivateKeySet,
    SealHeader,
    leaf_topics_digest,
    seal_hash,
)
from cachet.crypto.signing_process import SigningProcess, shared_signer
from cachet.errors import CachetError
from cachet.kafka.settings import MAX_RECORD_BYTES, producer_settings
from cachet.ledger.identity import GENESIS_SEAL_HASH, epoch_producer_id
from cachet.schemas.codec import EncodeError, EventCodec
from cachet.schemas.events import TOPIC_OF_EVENT, Event, EventType, SealRef, new_event, uuid7
from cachet.topics import Topic, TopicNames

__all__ = [
    "AcknowledgementTimeout",
    "Acknowledged",
    "Delivery",
    "EmitRejected",
    "EpochRestart",
    "EventNotDelivered",
    "InvalidEvent",
    "LedgerAlerts",
    "NotAcknowledged",
    "ProducerHealth",
    "ProducerPosition",
    "ProducerQueueFull",
    "RecordTooLarge",
    "SealRecord",
    "SealingError",
    "SealingProducer",
    "SealingSettings",
]

log = logging.getLogger(__name__)


def _fatal(exc: KafkaException) -> bool:
    """The client's session is broken for good (librdkafka's fatal error)."""
    err = exc.args[0] if exc.args else None
    return isinstance(err, KafkaError) and err.fatal()


class SealingError(CachetError):
    """The sealing producer is closed or its signer failed."""


class _DeliveryFailed(SealingError):
    """Events of a batch were not acknowledged: the batch cannot be sealed."""


class EmitRejected(SealingError):
    """The event was refused before it reached the broker. Nothing changed:
    no producer sequence, seal slot or leaf index was taken."""


class InvalidEvent(EmitRejected):
    """The event does not encode (a payload field of the wrong type, a
    missing or unknown field, a key or header of the wrong type)."""


class RecordTooLarge(EmitRejected):
    """The encoded record is larger than the producer's max message size."""

    def __init__(self, event_type: EventType, size: int, limit: int, detail: str = "") -> None:
        super().__init__(
            f"{event_type.value} record is {size} bytes, over the producer's limit of "
            f"{limit} bytes (message.max.bytes)" + (f": {detail}" if detail else "")
        )
        self.event_type = event_type
        self.size = size
        self.limit = limit


class ProducerQueueFull(EmitRejected):
    """The client's local queue is full (the broker is slow or away)."""


class NotAcknowledged(SealingError):
    """An emitted event was not acknowledged by the broker."""

    def __init__(self, message: str, event: Event) -> None:
        super().__init__(message)
        self.event = event


class EventNotDelivered(NotAcknowledged):
    """The broker (or the client, e.g. on purge) refused the event after it
    was produced. Its batch is never sealed: it is not in the ledger."""


class AcknowledgementTimeout(NotAcknowledged):
    """No answer from the broker in time. The event may still be written."""


# librdkafka adds at most this much to key + value + headers when it checks a
# record against message.max.bytes (record-batch v2 framing); overestimated,
# so what we let through the client accepts.
_RECORD_OVERHEAD = 64
_HEADER_OVERHEAD = 10
_MAX_RESTARTS_KEPT = 16


@dataclass(frozen=True, slots=True)
class SealingSettings:
    """Batching, limits and health thresholds of one sealing producer.

    A batch closes at ``batch_max_events``; or once ``batch_max_ms`` old if
    it holds a watermark tick or the signing budget has room
    (``sign_cpu_budget`` of one core, sustained, with half a second of
    signing as burst); or at ``max_delay_ms`` in any case. A window never
    closes a batch while an earlier one waits for the signer: the open batch
    grows instead. At low load that is a seal every ``batch_max_ms``; under
    load batches grow, so each triple signature covers more events, while
    seal latency stays bounded by ``max_delay_ms`` plus the signings queued
    in the process's signing child (at most two per producer).

    ``max_message_bytes`` must not exceed the client's ``message.max.bytes``
    (default: :data:`cachet.kafka.settings.MAX_RECORD_BYTES`, what
    :func:`cachet.kafka.settings.producer_settings` configures). ``ack_warn_ms``: an
    event unacknowledged for longer is a health problem. ``restart_report_ms``:
    how long an epoch restart stays a health problem.
    """

    batch_max_events: int = 4096
    batch_max_ms: int = 50
    max_delay_ms: int = 200
    sign_cpu_budget: float = 0.10
    max_message_bytes: int = MAX_RECORD_BYTES
    # The client's linger.ms: what send_now must get an event past.
    linger_ms: int = 0
    ack_warn_ms: int = 5_000
    restart_report_ms: int = 300_000

    @classmethod
    def from_config(cls, config: CachetConfig) -> SealingSettings:
        """Batching from ``[attestation]``; the size limit from the client's
        ``message.max.bytes`` in ``[kafka] producer_overrides`` (default
        :data:`~cachet.kafka.settings.MAX_RECORD_BYTES`), so the sealing
        producer refuses up front what the client would refuse later."""
        return cls(
            batch_max_events=config.attestation.seal_batch_max_events,
            batch_max_ms=config.attestation.seal_batch_max_ms,
            max_delay_ms=config.attestation.seal_max_delay_ms,
            sign_cpu_budget=config.attestation.sign_cpu_budget,
            max_message_bytes=int(
                config.kafka.producer_overrides.get("message.max.bytes", MAX_RECORD_BYTES)
            ),
            linger_ms=int(config.kafka.producer_overrides.get("linger.ms", 0)),
        )


@dataclass(slots=True)
class _Batch:
    epoch: str
    seal_seq: int
    first_producer_seq: int
    opened_at: float
    leaf_hashes: list[bytes] = field(default_factory=list)
    leaf_topics: list[str] = field(default_factory=list)
    acked: int = 0
    failed: list[str] = field(default_factory=list)
    done: threading.Event = field(default_factory=threading.Event)
    # Holds an event the signing budget never holds past the window.
    urgent: bool = False


@dataclass(frozen=True, slots=True)
class Acknowledged:
    """Where the broker stored an acknowledged event."""

    topic: str
    partition: int
    offset: int


class Delivery:
    """The broker's answer for one emitted event, once it arrives.

    Thread-safe. It is its event's delivery callback: the producer's delivery
    thread (or whichever thread polls the client) settles it; :meth:`wait`
    waits for that.
    """

    __slots__ = (
        "event",
        "topic",
        "_owner",
        "_batch",
        "_epoch",
        "_since",
        "_done",
        "_acked",
        "_error",
    )

    def __init__(
        self,
        event: Event,
        topic: str,
        owner: SealingProducer,
        batch: _Batch,
        epoch: str,
        since: float,
    ) -> None:
        self.event = event
        self.topic = topic
        self._owner = owner
        # The batch whose seal waits for this answer, the epoch (client
        # session) the event went out in, and when (monotonic clock).
        self._batch = batch
        self._epoch = epoch
        self._since = since
        # Set once, under the producer's lock.
        self._done = False
        self._acked: Acknowledged | None = None
        self._error: str | None = None

    @property
    def done(self) -> bool:
        return self._done

    @property
    def acknowledged(self) -> Acknowledged | None:
        """Where the event is stored, once acknowledged; None before (or on failure)."""
        return self._acked

    def _delivered(self, err: KafkaError | None, msg: Message) -> None:
        # The client's delivery callback for this event (one bound method,
        # not a closure made per event).
        self._owner._answered(self, err, msg)

    def _settle(self, acked: Acknowledged | None, error: str | None) -> None:
        # Caller holds the producer's lock; the first answer wins (a purge
        # after an acknowledgement does not turn it into a failure).
        if not self._done:
            self._acked, self._error = acked, error
            self._done = True

    def wait(self, timeout_s: float = 10.0) -> Acknowledged:
        """Returns once the broker acknowledged the event (``acks=all``).

        Raises :class:`EventNotDelivered` when it refused it,
        :class:`AcknowledgementTimeout` when no answer came in ``timeout_s``.
        """
        if not self._done and not self._owner._await(self, timeout_s):
            raise AcknowledgementTimeout(
                f"{self.event.type.value} {self.event.event_id} (seq "
                f"{self.event.producer_seq} of {self.event.producer_id}) not acknowledged "
                f"within {timeout_s}s; it may still be written",
                self.event,
            )
        if self._acked is None:
            raise EventNotDelivered(
                f"{self.event.type.value} {self.event.event_id} (seq "
                f"{self.event.producer_seq} of {self.event.producer_id}) not delivered: "
                f"{self._error}",
                self.event,
            )
        return self._acked


@dataclass(frozen=True, slots=True)
class ProducerPosition:
    """What the next emitted event will get (for tests and diagnostics)."""

    producer_id: str
    next_seq: int
    next_seal_seq: int
    open_batch_events: int


@dataclass(frozen=True, slots=True)
class EpochRestart:
    """One restart of the producer's chain under a new epoch."""

    at_us: int
    old_producer_id: str
    new_producer_id: str
    reason: str
    # Events of the old epoch no produced seal covers: verifiers report them
    # as UnsealedTimeout and never apply them.
    unsealed_events: int


@dataclass(frozen=True, slots=True)
class ProducerHealth:
    """The producer's state for a node's /health: ``problems`` is empty when well."""

    producer_id: str
    failed: str | None
    closed: bool
    unacknowledged: int
    oldest_unacknowledged_s: float | None
    epoch_restarts: int
    recent_restarts: tuple[EpochRestart, ...]
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def _iso(at_us: int) -> str:
    return datetime.datetime.fromtimestamp(at_us / 1e6, datetime.UTC).isoformat(
        timespec="milliseconds"
    )


def _wire_size(key: bytes | None, value: bytes, headers: list[tuple[str, bytes]]) -> int:
    size = _RECORD_OVERHEAD + len(key or b"") + len(value)
    for name, data in headers:
        size += _HEADER_OVERHEAD + len(name.encode()) + len(data or b"")
    return size


@dataclass(frozen=True, slots=True)
class SealRecord:
    """A seal this producer produced (for benchmarks, tests and CAB export)."""

    seal: Event
    leaf_count: int
    closed_at: float
    sealed_at: float


# The signing budget never holds a batch that carries a watermark tick past
# its window: the tick's age is what short freshness contracts are judged
# on, and a round of ticks is a handful of events, so holding it saves
# little signing. Everything else (writes, read batches, transitions) waits
# for the budget up to max_delay_ms: the budget exists to let batches under
# load grow, and a few events a window (a node's read batches) are load too.
_NEVER_HELD = frozenset({EventType.WATERMARK_TICK})


class _SignBudget:
    """Seconds of signing this producer may still spend: a token bucket
    filled at ``fraction`` of real time, holding at most ``burst_s``."""

    def __init__(self, fraction: float, now: float, burst_s: float = 0.5) -> None:
        self._fraction = fraction
        self._burst_s = burst_s
        self._tokens = burst_s
        self._at = now

    def _refill(self, now: float) -> None:
        self._tokens = min(self._burst_s, self._tokens + (now - self._at) * self._fraction)
        self._at = now

    def allows(self, now: float) -> bool:
        self._refill(now)
        return self._tokens > 0

    def spend(self, seconds: float, now: float) -> None:
        self._refill(now)
        self._tokens -= seconds


class SealingProducer:
    """Emits events into the signed ledger under one producer identity.

    ``clock`` stamps events and seals (wall clock) and times batch windows
    and acknowledgement ages (monotonic clock). ``producer_factory`` makes
    the client of a new epoch (:meth:`new_epoch`, which refuses without
    one). ``signer`` signs the seals (default: the process's shared signing
    child). :meth:`from_config` builds one as a deployment configures it.
    """

    def __init__(
        self,
        producer: Producer,
        codec: EventCodec,
        names: TopicNames,
        identity: str,
        key_set: PrivateKeySet,
        settings: SealingSettings = SealingSettings(),
        *,
        clock: Clock = SYSTEM_CLOCK,
        epoch: str | None = None,
        on_seal: Callable[[SealRecord], None] | None = None,
        producer_factory: Callable[[], Producer] | None = None,
        signer: SigningProcess | None = None,
    ) -> None:
        self._producer = producer
        self._factory = producer_factory
        self._identity = identity
        self._codec = codec
        self._names = names
        self._key_set = key_set
        self._settings = settings
        self._clock = clock
        self._on_seal = on_seal
        self.producer_id = epoch_producer_id(
            identity, epoch or uuid7(clock.now_us()).replace("-", "")[:16]
        )
        lock = threading.RLock()
        self._lock = threading.Condition(lock)
        self._next_seq = 0
        self._next_seal = 0
        self._open: _Batch | None = None
        self._closed: queue.Queue[_Batch | None] = queue.Queue()
        self._prev_hash = GENESIS_SEAL_HASH
        self._pending_seals = 0
        # Closed batches the signer has not yet taken up. The window closes a
        # batch only when this is 0: a signer slower than the window (a busy
        # host, a signing child shared by many producers) makes the open
        # batch grow instead of a queue of small batches, whose seals would
        # each come one signing later than the last.
        self._waiting_seals = 0
        self._error: BaseException | None = None
        self._closing = False
        # Events produced and not yet answered by the broker, oldest first
        # (an insertion-ordered dict used as a set): for health and for
        # new_epoch, which fails those of an abandoned client session.
        self._unacked: dict[Delivery, None] = {}
        # Delivery.wait waits on this (same lock), so an answer wakes only
        # the callers waiting for one, never the window thread; notified
        # only while someone waits.
        self._answers = threading.Condition(lock)
        self._answer_waiters = 0
        # Topic names by topic, made once.
        self._topic_names: dict[Topic, str] = {}
        # First producer seq of this epoch no produced seal covers yet.
        self._sealed_through = 0
        self._restarts: list[EpochRestart] = []
        self._restart_count = 0
        self._budget = _SignBudget(settings.sign_cpu_budget, clock.monotonic())
        # Signing runs in a child process: no thread of ours waits on the GIL
        # while a seal is signed. Started now, not at the first seal.
        self._signing = signer or shared_signer()
        self._signing.start()
        self._signer = threading.Thread(target=self._sign_loop, name="cachet-signer", daemon=True)
        self._ticker = threading.Thread(
            target=self._tick_loop, name="cachet-seal-window", daemon=True
        )
        # The client's delivery callbacks run on this thread, not on the
        # callers': an emit only produces (a caller that served callbacks
        # paid for other events' answers, one poll per emit).
        self._deliveries = threading.Thread(
            target=self._delivery_loop, name="cachet-deliveries", daemon=True
        )
        self._signer.start()
        self._ticker.start()
        self._deliveries.start()

    @classmethod
    def from_config(
        cls,
        config: CachetConfig,
        bootstrap_servers: str,
        identity: str,
        key_set: PrivateKeySet,
        *,
        codec: EventCodec | None = None,
        names: TopicNames | None = None,
        settings: SealingSettings | None = None,
        clock: Clock = SYSTEM_CLOCK,
        on_seal: Callable[[SealRecord], None] | None = None,
    ) -> SealingProducer:
        """A producer for ``identity`` as ``config`` deploys it.

        The client (and the client of every new epoch) gets
        :func:`~cachet.kafka.settings.producer_settings` with ``[kafka]
        producer_overrides``; topics are ``names`` (default: ``config``'s);
        ``settings`` default to :meth:`SealingSettings.from_config`.
        ``key_set`` must be registered under ``identity`` for its events to
        verify.
        """

        def client() -> Producer:
            return Producer(producer_settings(bootstrap_servers, config.kafka.producer_overrides))

        return cls(
            client(),
            codec or EventCodec(),
            names or config.kafka.topic_names(),
            identity,
            key_set,
            settings or SealingSettings.from_config(config),
            clock=clock,
            on_seal=on_seal,
            producer_factory=client,
        )

    # -- the hot path ---------------------------------------------------

    def emit(
        self,
        event_type: EventType,
        payload: dict[str, Any],
        *,
        key: bytes | None = None,
        topic: Topic | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        occurred_at_us: int | None = None,
        partition: int | None = None,
    ) -> Event:
        """Produce one event; it will be covered by this producer's next seal.

        Returns once the client accepted the event, *before* the broker
        acknowledged it; use :meth:`emit_with_receipt` to wait for that.
        Raises :class:`EmitRejected` (nothing changed) for an event that
        cannot be produced.
        """
        return self.emit_with_receipt(
            event_type,
            payload,
            key=key,
            topic=topic,
            headers=headers,
            occurred_at_us=occurred_at_us,
            partition=partition,
        ).event

    def emit_with_receipt(
        self,
        event_type: EventType,
        payload: dict[str, Any],
        *,
        key: bytes | None = None,
        topic: Topic | None = None,
        headers: Sequence[tuple[str, bytes]] | None = None,
        occurred_at_us: int | None = None,
        partition: int | None = None,
    ) -> Delivery:
        """Like :meth:`emit`; the returned :class:`Delivery` tells (and
        :meth:`Delivery.wait` waits for) the broker's acknowledgement.

        Validation, encoding and the size check run before a producer
        sequence or a leaf of the open batch is taken: a rejected call
        (:class:`InvalidEvent`, :class:`RecordTooLarge`,
        :class:`ProducerQueueFull`, :class:`EmitRejected`) changes nothing.
        """
        if event_type is EventType.SEAL:
            raise InvalidEvent("Seal events are produced by the signer, not emitted")
        if key is not None and not isinstance(key, bytes):
            raise InvalidEvent(
                f"{event_type.value}: record key must be bytes, got {type(key).__name__}"
            )
        if partition is not None and (type(partition) is not int or partition < 0):
            raise InvalidEvent(
                f"{event_type.value}: partition must be an int >= 0, got {partition!r}"
            )
        header_list = list(headers or ())
        for h in header_list:
            if not (
                isinstance(h, tuple)
                and len(h) == 2
                and isinstance(h[0], str)
                and isinstance(h[1], bytes)
            ):
                raise InvalidEvent(
                    f"{event_type.value}: a header must be (str, bytes), got {h!r:.100}"
                )
        topic = topic or TOPIC_OF_EVENT[event_type]
        topic_name = self._topic_names.get(topic)
        if topic_name is None:
            topic_name = self._topic_names[topic] = self._names(topic)
        with self._lock:
            self._raise_if_failed()
            # The numbers this event will take, if it is accepted. Nothing is
            # taken yet: the invariant "a rejected call never consumes a
            # sequence or seal number" (a taken-and-lost seq is a gap every
            # verifier waits on forever; a lost leaf shifts every later
            # leaf index of the batch, so their seals would not verify).
            batch = self._open
            seq = self._next_seq
            seal_seq = batch.seal_seq if batch is not None else self._next_seal
            first_seq = batch.first_producer_seq if batch is not None else seq
            event = new_event(
                event_type,
                payload,
                producer_id=self.producer_id,
                producer_seq=seq,
                occurred_at_us=occurred_at_us,
                clock=self._clock.now_us,
                seal_ref=SealRef(seal_seq, seq - first_seq),
            )
            try:
                data = self._codec.encode(event)
            except EncodeError as exc:
                raise InvalidEvent(f"{self.producer_id}: event not emitted: {exc}") from exc
            size = _wire_size(key, data, header_list)
            if size > self._settings.max_message_bytes:
                raise RecordTooLarge(event_type, size, self._settings.max_message_bytes)
            # Accepted so far: take the numbers. Until produce() returns they
            # can be given back, under the same lock (nobody saw them).
            now = self._clock.monotonic()
            opened = batch is None
            if batch is None:
                batch = self._open = _Batch(self.producer_id, seal_seq, seq, now)
                self._next_seal += 1
                self._lock.notify()  # the window thread times batches from now
            self._next_seq += 1
            batch.leaf_hashes.append(leaf_hash(data))
            batch.leaf_topics.append(topic.value)
            if event_type in _NEVER_HELD:
                batch.urgent = True
            delivery = Delivery(event, topic_name, self, batch, self.producer_id, now)
            self._unacked[delivery] = None
            client = self._producer
            wire_headers: Any = header_list or None
            try:
                # -1: the client's partitioner picks (by key).
                client.produce(
                    topic_name,
                    data,
                    key,
                    -1 if partition is None else partition,
                    delivery._delivered,
                    headers=wire_headers,
                )
            except (KafkaException, BufferError, TypeError, ValueError) as exc:
                # Nothing was produced: give the numbers back.
                self._give_back(batch, opened, delivery)
                if isinstance(exc, TypeError | ValueError):
                    raise InvalidEvent(
                        f"{self.producer_id}: event not produced, client refused it: {exc}"
                    ) from exc
                if isinstance(exc, BufferError):
                    raise ProducerQueueFull(
                        f"{self.producer_id}: event not produced, client queue full: {exc}"
                    ) from exc
                err = exc.args[0] if exc.args else None
                if isinstance(err, KafkaError) and err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    # Our estimate let it through, the client did not: still refused,
                    # still nothing taken.
                    raise RecordTooLarge(
                        event_type, size, self._settings.max_message_bytes, f"client: {exc}"
                    ) from exc
                self._renew_after(client, exc)
                raise EmitRejected(f"{self.producer_id}: event not produced: {exc}") from exc
            if len(batch.leaf_hashes) >= self._settings.batch_max_events:
                self._close_open_batch()
        # No poll here: the delivery thread serves the client's callbacks.
        return delivery

    def _give_back(self, batch: _Batch, opened: bool, delivery: Delivery) -> None:
        # Caller holds the lock, and nothing was emitted since the numbers
        # were taken: the event is the batch's last leaf.
        batch.leaf_hashes.pop()
        batch.leaf_topics.pop()
        self._next_seq -= 1
        if opened:
            self._open = None
            self._next_seal -= 1
        self._unacked.pop(delivery, None)

    def _answered(self, delivery: Delivery, err: KafkaError | None, msg: Message) -> None:
        # The client's answer for one event (Delivery._delivered).
        with self._lock:
            self._unacked.pop(delivery, None)
            if err is not None:
                delivery._batch.failed.append(str(err))
                delivery._settle(None, str(err))
            else:
                delivery._batch.acked += 1
                delivery._settle(
                    Acknowledged(msg.topic() or "", msg.partition() or 0, msg.offset() or 0),
                    None,
                )
            if self._answer_waiters:
                self._answers.notify_all()

    def _await(self, delivery: Delivery, timeout_s: float) -> bool:
        """Wait until ``delivery`` is settled; False when ``timeout_s`` passed first."""
        deadline = time.monotonic() + timeout_s
        while True:
            with self._lock:
                if delivery._done:
                    return True
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                if self._deliveries.is_alive():
                    # In slices: the delivery thread stops on close.
                    self._answer_waiters += 1
                    try:
                        self._answers.wait(min(remaining, 0.1))
                    finally:
                        self._answer_waiters -= 1
                    continue
            # Closed: nobody else serves the client's callbacks.
            self._producer.poll(min(remaining, 0.01))

    def _delivery_loop(self) -> None:
        # poll() waits inside librdkafka (the GIL released) until answers
        # arrive, then runs their callbacks here. The client is read anew
        # each round: new_epoch replaces it. Nothing may end this thread
        # but close(): without it no answer reaches a caller that only emits.
        while not self._closing:
            client = self._producer
            try:
                client.poll(0.1)
            except KafkaException as exc:
                self._client_failed(client, exc)
            except Exception:  # noqa: BLE001 - a callback's bug: keep serving the others
                log.exception("%s: a delivery callback failed", self.producer_id)

    def _renew_after(self, client: Producer, exc: KafkaException) -> bool:
        """A fatal error of the current client (the broker forgot this
        idempotent session, say) starts a new epoch, given a producer
        factory; True when it did."""
        if self._factory is None or client is not self._producer or not _fatal(exc):
            return False
        log.error("%s: fatal client error (%s); starting a new epoch", self.producer_id, exc)
        self.new_epoch(reason=f"fatal client error: {exc}")
        return True

    def _client_failed(self, client: Producer, exc: KafkaException) -> None:
        """The client raised from poll(): a new epoch after a fatal error;
        without a factory the producer fails (said once); anything else is
        logged. The loop goes on after a pause (no spin)."""
        if client is not self._producer or self._renew_after(client, exc):
            return  # replaced meanwhile, or just now: its errors are over
        if _fatal(exc):
            with self._lock:
                if self._error is None:  # said once; health says it from now on
                    log.error("%s: fatal client error: %s", self.producer_id, exc)
                    self._error = exc
        else:
            log.warning("%s: the client's poll failed: %s", self.producer_id, exc)
        time.sleep(0.1)

    def _close_open_batch(self) -> None:
        # Caller holds the lock.
        if self._open is not None and self._open.leaf_hashes:
            self._pending_seals += 1
            self._waiting_seals += 1
            self._closed.put(self._open)
        self._open = None

    # -- sealing, off the caller's thread --------------------------------

    def _tick_loop(self) -> None:
        window_s = self._settings.batch_max_ms / 1000
        # The delay bound never cuts a batch window short.
        max_delay_s = max(self._settings.max_delay_ms, self._settings.batch_max_ms) / 1000
        while True:
            with self._lock:
                if self._closing:
                    return
                b = self._open
                if b is not None and self._waiting_seals == 0:
                    now = self._clock.monotonic()
                    age = now - b.opened_at
                    if age >= max_delay_s or (
                        age >= window_s and (b.urgent or self._budget.allows(now))
                    ):
                        self._close_open_batch()
                if self._open is None:
                    # Nothing to time: sleep until an emit opens a batch (it
                    # notifies, under this lock) or close() wakes us. An idle
                    # producer does not wake 80 times a second.
                    self._lock.wait()
                else:
                    self._lock.wait(min(window_s / 4, 0.05))

    def _sign_loop(self) -> None:
        while True:
            batch = self._closed.get()
            if batch is None:
                return
            with self._lock:
                self._waiting_seals -= 1
            try:
                if batch.epoch != self.producer_id:
                    # A batch of an abandoned epoch stays unsealed: verifiers
                    # report its events as UnsealedTimeout, never as sealed.
                    log.warning(
                        "seal %d of %s abandoned with its epoch", batch.seal_seq, batch.epoch
                    )
                    continue
                self._seal(batch)
            except (_DeliveryFailed, KafkaException) as exc:
                # Undeliverable batch, or the client session is fatally broken
                # (e.g. the broker forgot our idempotent producer id).
                if batch.epoch != self.producer_id:
                    # An already abandoned epoch (e.g. purged by new_epoch).
                    log.warning(
                        "seal %d of abandoned epoch %s not produced: %s",
                        batch.seal_seq,
                        batch.epoch,
                        exc,
                    )
                elif self._factory is None:
                    log.exception("signer failed on seal %d of %s", batch.seal_seq, batch.epoch)
                    with self._lock:
                        self._error = exc
                else:
                    log.error("%s; starting a new epoch", exc)
                    self.new_epoch(reason=f"delivery failure: {exc}")
            except BaseException as exc:  # noqa: BLE001 - surfaced to callers by _raise_if_failed
                log.exception("signer failed on seal %d of %s", batch.seal_seq, self.producer_id)
                with self._lock:
                    self._error = exc
            finally:
                with self._lock:
                    self._pending_seals -= 1
                    batch.done.set()
                    self._lock.notify_all()

    def _seal(self, batch: _Batch) -> None:
        closed_at = self._clock.monotonic()
        header = SealHeader(
            producer_id=batch.epoch,
            seal_seq=batch.seal_seq,
            tree_size=len(batch.leaf_hashes),
            first_producer_seq=batch.first_producer_seq,
            merkle_root=root_from_leaf_hashes(batch.leaf_hashes),
            prev_seal_hash=self._prev_hash,
            key_set_id=self._key_set.key_set_id,
            sealed_at_us=self._clock.now_us(),
            leaf_topics_digest=leaf_topics_digest(batch.leaf_topics),
        )
        if header.key_set_id != self._key_set.key_set_id:
            raise SigningError(f"seal header names key set {header.key_set_id}")
        started = self._clock.monotonic()
        signatures = self._signing.sign(header.canonical_bytes(), self._key_set)
        with self._lock:
            # What signing took (in the child: CPU this producer caused).
            self._budget.spend(self._clock.monotonic() - started, self._clock.monotonic())
        # The invariant: no seal before every covered event is acknowledged.
        while True:
            with self._lock:
                if batch.epoch != self.producer_id:
                    # A new epoch replaced the client these events went to.
                    raise _DeliveryFailed(
                        f"seal {batch.seal_seq} of {batch.epoch}: epoch abandoned"
                    )
                if batch.failed:
                    raise _DeliveryFailed(
                        f"seal {batch.seal_seq} of {batch.epoch} not produced: "
                        f"{len(batch.failed)} event(s) failed delivery ({batch.failed[0]})"
                    )
                if batch.acked == len(batch.leaf_hashes):
                    break
            self._producer.poll(0.005)
        payload = {
            "producer_id": header.producer_id,
            "seal_seq": header.seal_seq,
            "prev_seal_hash": header.prev_seal_hash,
            "merkle_root": header.merkle_root,
            "tree_size": header.tree_size,
            "first_producer_seq": header.first_producer_seq,
            "leaf_hashes": list(batch.leaf_hashes),
            "leaf_topics": list(batch.leaf_topics),
            "key_set_id": header.key_set_id,
            "signatures": [
                {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature}
                for s in signatures
            ],
            "sealed_at_us": header.sealed_at_us,
        }
        seal = new_event(
            EventType.SEAL,
            payload,
            producer_id=batch.epoch,
            producer_seq=header.seal_seq,
            occurred_at_us=header.sealed_at_us,
            clock=self._clock.now_us,
        )
        # Keyed by producer id: one partition per producer keeps its chain in order.
        self._producer.produce(
            self._names(Topic.SEALS), key=batch.epoch.encode(), value=self._codec.encode(seal)
        )
        with self._lock:
            if batch.epoch == self.producer_id:  # a new epoch restarts the chain
                self._prev_hash = seal_hash(header, signatures)
                self._sealed_through = header.first_producer_seq + header.tree_size
        if self._on_seal:
            self._on_seal(
                SealRecord(seal, len(batch.leaf_hashes), closed_at, self._clock.monotonic())
            )

    # -- lifecycle --------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise SealingError(f"sealing producer {self.producer_id} failed: {self._error}")
        if self._closing:
            raise SealingError(f"sealing producer {self.producer_id} is closed")

    def new_epoch(self, *, reason: str = "requested") -> str:
        """Start a new chain under a fresh client session (the broker lost or
        refused the old one). Events not yet sealed stay unsealed; events
        not yet acknowledged fail (their :class:`Delivery` says so). The
        restart is recorded for :meth:`health`."""
        if self._factory is None:
            raise SealingError(f"{self.producer_id}: no producer factory to start a new epoch")
        with self._lock:
            old = self._producer
            old_id = self.producer_id
            unsealed = self._next_seq - self._sealed_through
            self._producer = self._factory()
            self.producer_id = epoch_producer_id(
                self._identity, uuid7(self._clock.now_us()).replace("-", "")[:16]
            )
            self._next_seq = 0
            self._next_seal = 0
            self._sealed_through = 0
            self._prev_hash = GENESIS_SEAL_HASH
            self._error = None
            if self._open is not None:
                self._open = None  # its events were produced under the old epoch
            self._restart_count += 1
            self._restarts.append(
                EpochRestart(self._clock.now_us(), old_id, self.producer_id, reason, unsealed)
            )
            del self._restarts[:-_MAX_RESTARTS_KEPT]
        old.purge()
        old.poll(0)  # deliver the purge callbacks of the abandoned epoch's events
        with self._lock:
            # Whatever the old client did not answer will never be answered.
            for delivery in list(self._unacked):
                if delivery._epoch == old_id:
                    del self._unacked[delivery]
                    delivery._settle(None, f"epoch {old_id} abandoned ({reason})")
            self._lock.notify_all()
            self._answers.notify_all()
        log.warning(
            "sealing producer %s: new epoch %s (%s); %d event(s) of %s left unsealed",
            self._identity,
            self.producer_id,
            reason,
            unsealed,
            old_id,
        )
        return self.producer_id

    @property
    def position(self) -> ProducerPosition:
        """The producer sequence and seal slot the next event will take."""
        with self._lock:
            return ProducerPosition(
                self.producer_id,
                self._next_seq,
                self._open.seal_seq if self._open is not None else self._next_seal,
                len(self._open.leaf_hashes) if self._open is not None else 0,
            )

    @property
    def max_message_bytes(self) -> int:
        """The largest record (key + value + headers + framing) emit accepts."""
        return self._settings.max_message_bytes

    def health(self) -> ProducerHealth:
        """What a node's /health reports about this producer.

        Problems: the signer failed; an event has waited longer than
        ``ack_warn_ms`` for the broker; the chain restarted under a new
        epoch within the last ``restart_report_ms``.
        """
        with self._lock:
            now_us = self._clock.now_us()
            oldest = next(iter(self._unacked), None)
            age = self._clock.monotonic() - oldest._since if oldest is not None else None
            problems: list[str] = []
            if self._error is not None:
                problems.append(f"sealing producer {self.producer_id} failed: {self._error}")
            if age is not None and age * 1000 >= self._settings.ack_warn_ms:
                problems.append(
                    f"writes not acknowledged for {age:.1f}s "
                    f"({len(self._unacked)} event(s) waiting for the broker)"
                )
            for r in self._restarts:
                if now_us - r.at_us <= self._settings.restart_report_ms * 1000:
                    problems.append(
                        f"producer epoch restarted at {_iso(r.at_us)} after {r.reason}; "
                        f"{r.unsealed_events} event(s) of {r.old_producer_id} left unsealed"
                    )
            return ProducerHealth(
                producer_id=self.producer_id,
                failed=str(self._error) if self._error is not None else None,
                closed=self._closing,
                unacknowledged=len(self._unacked),
                oldest_unacknowledged_s=age,
                epoch_restarts=self._restart_count,
                recent_restarts=tuple(self._restarts),
                problems=tuple(problems),
            )

    def problems(self) -> tuple[str, ...]:
        """Shorthand for ``health().problems``: empty when all is well."""
        return self.health().problems

    def acknowledge(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker acknowledged every event emitted so far
        (their seals may still be on the way)."""
        if self._producer.flush(timeout_s) != 0:
            raise SealingError(
                f"{self.producer_id}: broker did not acknowledge within {timeout_s}s"
            )

    def send_now(self, delivery: Delivery, timeout_s: float = 0.25) -> None:
        """Hand ``delivery``'s event (and whatever was emitted before it) to
        the broker now and wait for its answer, at most ``timeout_s`` (other
        traffic is not waited for); the delivery says whether it was
        acknowledged. An eager invalidation must leave at once: with the
        default ``linger.ms`` of 0 it does; with a configured linger,
        librdkafka skips it only while a flush runs, so this flushes in
        short steps until the event is answered. (Not by default: the
        delivery thread serves answers too, and a flush whose answer it took
        sleeps out its whole slice, ~0.5 ms more per send.)"""
        deadline = time.monotonic() + timeout_s
        if self._settings.linger_ms:
            while not delivery.done and time.monotonic() < deadline:
                self._producer.flush(0.001)
        if not delivery.done:
            self._await(delivery, max(0.0, deadline - time.monotonic()))

    def flush(self, timeout_s: float = 30.0) -> None:
        """Seal everything emitted so far and wait until the seals are acknowledged."""
        deadline = time.monotonic() + timeout_s
        with self._lock:
            self._close_open_batch()
        while True:
            with self._lock:
                if self._error is not None:
                    self._raise_if_failed()
                if self._pending_seals == 0:
                    break
            if time.monotonic() > deadline:
                raise SealingError(f"flush of {self.producer_id} timed out after {timeout_s}s")
            self._producer.poll(0.01)
        if self._producer.flush(max(0.0, deadline - time.monotonic())) != 0:
            raise SealingError(f"flush of {self.producer_id}: broker did not acknowledge in time")

    def close(self, timeout_s: float = 30.0) -> None:
        try:
            self.flush(timeout_s)
        finally:
            with self._lock:
                self._closing = True
                self._lock.notify_all()
            self._closed.put(None)
            self._signer.join(timeout_s)
            self._ticker.join(timeout_s)

    def __enter__(self) -> SealingProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LedgerAlerts:
    """Alerts as sealed events in the ledger, emitted through ``producer``.

    An :data:`~cachet.kafka.verifying.AlertEmitter` (call it with the alert's
    event type and payload) that never raises: verifiers raise alerts from
    inside their consumer's handlers, and an alert that cannot be sent must
    not take the node or processor down with it. A failure is logged,
    naming ``source`` (default: the producer's identity).
    """

    __slots__ = ("_producer", "_source")

    def __init__(self, producer: SealingProducer, source: str | None = None) -> None:
        self._producer = producer
        self._source = source

    def __call__(self, event_type: EventType, payload: dict[str, Any]) -> None:
        try:
            self._producer.emit(event_type, payload)
        except Exception:  # noqa: BLE001 - see the class docstring
            log.exception(
                "%s: alert %s not emitted",
                self._source or self._producer.producer_id,
                event_type.value,
            )
