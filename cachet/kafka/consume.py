"""The consume loop every Cachet consumer shares: decode, dispatch, never die.

Nothing is dropped. A record that does not decode, or whose handler raises,
is produced unchanged to the dead-letter topic with the reason in headers,
and the loop moves on to the next record: one bad record must never stop a
consumer (the failure mode where a poison pill halts a whole pipeline).

Every dead letter carries these headers (values UTF-8):

* ``cachet.dl.failure``: a :class:`DeadLetterFailure` value;
* ``cachet.dl.reason``: why, for a person;
* ``cachet.dl.topic``, ``cachet.dl.partition``, ``cachet.dl.offset``: where
  the record is in the log;
* ``cachet.dl.component``: the consuming component (the loop's ``name``).
  Broadcast topics are read by every component, so one bad record is
  dead-lettered once per component; this header tells the copies apart and
  says who refused it.

Each dead letter can also raise an alert through ``on_deadletter``,
rate-limited per component (:class:`cachet.ratelimit.RateLimiter`): the
first few in a window are reported one by one, the rest as one summary
("K more suppressed") when the window closes.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Callable, Mapping
from typing import Any

from confluent_kafka import Consumer, KafkaError, Message, Producer
from prometheus_client import CollectorRegistry, Counter

from cachet.errors import StateFailure
from cachet.ledger.record import RecordOrigin, as_int
from cachet.ratelimit import RateLimiter, Suppressed
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType

__all__ = [
    "ConsumeLoop",
    "DeadLetterAlert",
    "DeadLetterFailure",
    "DeadLetterLimiter",
    "DeadLetters",
    "Handler",
    "DL_HEADER_COMPONENT",
    "DL_HEADER_FAILURE",
    "DL_HEADER_REASON",
    "deadletter_alert_limiter",
]

log = logging.getLogger(__name__)

DL_HEADER_REASON = "cachet.dl.reason"
DL_HEADER_FAILURE = "cachet.dl.failure"
DL_HEADER_TOPIC = "cachet.dl.topic"
DL_HEADER_PARTITION = "cachet.dl.partition"
DL_HEADER_OFFSET = "cachet.dl.offset"
DL_HEADER_COMPONENT = "cachet.dl.component"

# Default alert budget per component: enough to see what is wrong, not
# enough to bury the alerts topic when a whole topic turns to garbage.
DL_ALERTS_PER_WINDOW = 10
DL_ALERT_WINDOW_S = 60.0


Handler = Callable[[Event, RecordOrigin], None]


class DeadLetterFailure(enum.Enum):
    """Why a record went to the dead-letter topic (header ``cachet.dl.failure``)."""

    UNDECODABLE = "undecodable"
    NO_HANDLER = "no_handler"
    HANDLER_FAILED = "handler_failed"


# on_deadletter(failure, origin, reason): one alert per admitted dead letter;
# a summary of suppressed ones arrives as the last suppressed record with a
# reason that starts with the count.
DeadLetterAlert = Callable[[DeadLetterFailure, RecordOrigin, str], None]
# What the alert limiter remembers of a suppressed dead letter, keyed by component.
DeadLetterLimiter = RateLimiter[str, tuple[DeadLetterFailure, RecordOrigin, str]]


def deadletter_alert_limiter(
    limit: int = DL_ALERTS_PER_WINDOW,
    window_s: float = DL_ALERT_WINDOW_S,
    clock: Callable[[], float] | None = None,
) -> DeadLetterLimiter:
    """A limiter for dead-letter alerts, keyed by component name."""
    if clock is None:
        return RateLimiter(limit, window_s)
    return RateLimiter(limit, window_s, clock)


class DeadLetters:
    """Produces rejected records, byte for byte, to the dead-letter topic."""

    def __init__(self, producer: Producer, topic: str) -> None:
        self._producer = producer
        self.topic = topic

    def send(
        self,
        value: bytes | None,
        origin: RecordOrigin,
        failure: DeadLetterFailure,
        reason: str,
        component: str = "",
    ) -> None:
        """Produce ``value`` unchanged, with the headers of the module docstring."""
        headers: list[tuple[str, str | bytes | None]] = [
            (DL_HEADER_FAILURE, failure.value.encode()),
            (DL_HEADER_REASON, reason.encode("utf-8", "replace")),
            (DL_HEADER_TOPIC, origin.topic.encode()),
            (DL_HEADER_PARTITION, str(origin.partition).encode()),
            (DL_HEADER_OFFSET, str(origin.offset).encode()),
            (DL_HEADER_COMPONENT, component.encode("utf-8", "replace")),
        ]
        log.warning(
            "dead-letter by %s of %s:%d@%d %s: %s",
            component or "?",
            origin.topic,
            origin.partition,
            origin.offset,
            failure.value,
            reason,
        )
        self._producer.produce(self.topic, value=value, key=origin.key, headers=headers)
        self._producer.poll(0)

    def flush(self, timeout_s: float = 10.0) -> int:
        return int(self._producer.flush(timeout_s))


class ConsumeLoop:
    """Polls a consumer, decodes each record and hands it to its handler.

    ``handlers`` maps event types to handlers; ``fallback`` (if given) takes
    every type without its own handler. ``on_raw`` sees each message before
    decoding (for offset bookkeeping), ``on_eof`` each partition end.

    ``name`` names the component in metrics, logs and the
    ``cachet.dl.component`` header of its dead letters. ``on_deadletter``
    (if given) is called for dead letters as the ``alert_limiter`` (default:
    10 per minute per component) lets them through; a closed window with
    suppressed ones is reported once, as the last suppressed record with
    reason ``"K more dead letters suppressed by NAME in Ws; last: ..."``.
    An alert callback that raises is logged and never stops the loop.

    A handler that raises :class:`~cachet.errors.StateFailure` (its own
    store failed) is not the record's fault: it propagates out of
    :meth:`poll` and nothing is dead-lettered.
    """

    def __init__(
        self,
        consumer: Consumer,
        codec: EventCodec,
        deadletters: DeadLetters,
        handlers: Mapping[EventType, Handler] | None = None,
        *,
        fallback: Handler | None = None,
        on_eof: Callable[[str, int, int], None] | None = None,
        on_error: Callable[[KafkaError], None] | None = None,
        registry: CollectorRegistry | None = None,
        name: str = "consumer",
        on_deadletter: DeadLetterAlert | None = None,
        alert_limiter: DeadLetterLimiter | None = None,
    ) -> None:
        self._consumer = consumer
        self._codec = codec
        self._deadletters = deadletters
        self._handlers = dict(handlers or {})
        self._fallback = fallback
        self._on_eof = on_eof
        self._on_error = on_error
        self._on_deadletter = on_deadletter
        self._alerts = alert_limiter if alert_limiter is not None else deadletter_alert_limiter()
        self.name = name
        self.records = Counter(
            "cachet_consumed_records",
            "Records consumed, by outcome",
            ["consumer", "outcome"],
            registry=registry if registry is not None else CollectorRegistry(),
        )

    def poll(self, timeout_s: float = 1.0, max_records: int = 500) -> int:
        """Consume one batch; the number of records taken (good or bad)."""
        msgs = self._consumer.consume(max_records, timeout_s)
        if self._on_deadletter is not None:
            # Windows close with time, not only with the next dead letter.
            self._report_suppressed(self._alerts.expired(self.name))
        taken = 0
        for msg in msgs:
            err = msg.error()
            if err is not None:
                if err.code() == KafkaError._PARTITION_EOF:
                    if self._on_eof:
                        self._on_eof(
                            msg.topic() or "", as_int(msg.partition()), as_int(msg.offset())
                        )
                    continue
                # Broker / transport errors are not records: log, keep going.
                log.warning("%s: consume error: %s", self.name, err)
                if self._on_error:
                    self._on_error(err)
                continue
            taken += 1
            self._handle(msg)
        return taken

    def _handle(self, msg: Message) -> None:
        origin = RecordOrigin.of(msg)
        value = msg.value()
        try:
            event = self._codec.decode(value or b"")
        except DecodeError as exc:
            self._reject(value, origin, DeadLetterFailure.UNDECODABLE, str(exc))
            return
        handler = self._handlers.get(event.type, self._fallback)
        if handler is None:
            self._reject(
                value,
                origin,
                DeadLetterFailure.NO_HANDLER,
                f"no handler for {event.type.value} on {origin.topic}",
            )
            return
        try:
            handler(event, origin)
        except StateFailure:
            # The handler's own store failed, not the record: dead-lettering
            # it would lose a good record and go on with half of it applied.
            raise
        except Exception as exc:  # noqa: BLE001 - one bad record must not kill the consumer
            log.exception("%s: handler for %s failed", self.name, event.type.value)
            self._reject(
                value,
                origin,
                DeadLetterFailure.HANDLER_FAILED,
                f"{event.type.value}: {type(exc).__name__}: {exc}",
            )
            return
        self.records.labels(self.name, "ok").inc()

    def _reject(
        self, value: bytes | None, origin: RecordOrigin, failure: DeadLetterFailure, reason: str
    ) -> None:
        self.records.labels(self.name, failure.value).inc()
        self._deadletters.send(value, origin, failure, reason, component=self.name)
        if self._on_deadletter is None:
            return
        admitted, closed = self._alerts.admit(self.name, (failure, origin, reason))
        self._report_suppressed(closed)
        if admitted:
            self._alert(failure, origin, reason)

    def _report_suppressed(
        self, closed: Suppressed[str, tuple[DeadLetterFailure, RecordOrigin, str]] | None
    ) -> None:
        if closed is None:
            return
        failure, origin, reason = closed.last
        self._alert(
            failure,
            origin,
            f"{closed.count} more dead letters suppressed by {self.name} in "
            f"{closed.window_s:g}s; last: {reason}",
        )

    def _alert(self, failure: DeadLetterFailure, origin: RecordOrigin, reason: str) -> None:
        assert self._on_deadletter is not None
        try:
            self._on_deadletter(failure, origin, reason)
        except Exception:  # noqa: BLE001 - an alert path must not stop the consumer
            log.exception("%s: dead-letter alert failed", self.name)

    def run(self, stop: threading.Event, timeout_s: float = 0.5) -> None:
        """Poll until ``stop`` is set."""
        while not stop.is_set():
            self.poll(timeout_s)


def headers_dict(headers: Any) -> dict[str, bytes]:
    """Kafka headers (list of pairs or None) as a dict, last value wins."""
    return {k: v or b"" for k, v in (headers or ())}
