"""The low-latency path of eager invalidations into a node.

The live view verifies and applies every record in log order, in batches:
an eager Invalidated reaches it only as fast as its consumer's batch cycle
(tens of milliseconds). This listener is a second, small consumer on
``invalidations`` alone, broadcast (``assign()`` over every partition, no
group), with a short fetch wait (``[kafka] invalidation_fetch_wait_ms``,
default :data:`~cachet.kafka.settings.LISTENER_FETCH_WAIT_MS`), handing each eager
Invalidated to :meth:`LiveView.hide_early
<cachet.materializers.live_view.LiveView.hide_early>` the moment it
arrives. That applies the one thing the design allows before verification:
the provisional hide of what exists now, until the unsealed timeout (and the
key's eviction from the node's cache). Nothing else: the listener keeps no
offsets, touches no chain head, sequence position or duplicate memory, and
applies nothing; the view still reads, verifies and applies the same record
in log order (verify before you remember).

An attacker who can write the topic but holds no key gains nothing over
writing it for the view: a forged record hides the key's current version
until its unsealed timeout (then the view refuses and alerts it), never a
version written after it arrived; the listener's markers are bounded in
number (``max_early_invalidations`` of the view); a record the view already
read (applied, refused, timed out) is declined, so a genuine record re-read
or re-produced hides nothing it did not hide the first time.

It starts at the end of each partition: what is already in the log when a
node starts is the view's to apply while it catches up (it serves nothing
until then). ``auto.offset.reset = latest`` for the same reason: a listener
that lost its place resumes at the end, and the view, which must never skip,
reports the discontinuity.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from confluent_kafka import OFFSET_END, Consumer, KafkaException, Message, TopicPartition

from cachet.kafka.settings import LISTENER_FETCH_WAIT_MS, consumer_settings
from cachet.materializers.live_view import LiveView
from cachet.materializers.unverified_invalidations import EarlySighting
from cachet.ratelimit import RateLimiter
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames

__all__ = ["InvalidationListener"]

log = logging.getLogger(__name__)

# One warning per window and reason: a flood of forgeries must not become a
# flood of log lines.
_WARN_WINDOW_S = 60.0
# How long the listener waits for the broker to say where each partition ends.
_START_TIMEOUT_S = 10.0


class InvalidationListener:
    """Sights eager invalidations for ``view`` as they arrive (module docstring).

    ``on_sighting`` (if given) is called with each outcome, for metrics.
    ``start_offset`` is where every partition is read from (default: its
    end; tests pass an earlier one to replay what the view already read).
    """

    def __init__(
        self,
        view: LiveView,
        bootstrap_servers: str,
        names: TopicNames,
        codec: EventCodec,
        partitions: int,
        *,
        fetch_wait_ms: int = LISTENER_FETCH_WAIT_MS,
        start_offset: int = OFFSET_END,
        on_sighting: Callable[[EarlySighting], None] | None = None,
        name: str = "invalidation-listener",
    ) -> None:
        self._view = view
        self._codec = codec
        self._on_sighting = on_sighting
        self.name = name
        self._warnings: RateLimiter[str, str] = RateLimiter(1, _WARN_WINDOW_S)
        self.consumer = Consumer(
            consumer_settings(
                bootstrap_servers,
                overrides={
                    # The latency floor on the embedded broker (it answers a
                    # waiting fetch only when the wait is over), and most of an
                    # idle node's cost to it (cachet.kafka.settings).
                    "fetch.wait.max.ms": fetch_wait_ms,
                    "auto.offset.reset": "latest",
                    "enable.partition.eof": False,
                    # Invalidations are small: a fetch never needs megabytes,
                    # nor the prefetch queue (librdkafka's default: 64 MB)
                    # more than one: a flood waits at the broker, not here.
                    "fetch.max.bytes": 1024 * 1024,
                    "queued.max.messages.kbytes": 1024,
                },
                **{"client.id": name},
            )
        )
        topic = names(Topic.INVALIDATIONS)
        self.consumer.assign(
            [
                TopicPartition(topic, p, self._start(topic, p, start_offset))
                for p in range(partitions)
            ]
        )
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _start(self, topic: str, partition: int, start_offset: int) -> int:
        """Where ``partition`` is read from: the end as it is now, not as it
        is when the first fetch resolves OFFSET_END (on a busy host that can
        come after a node reported ready, and the records in between would
        reach only the view)."""
        if start_offset != OFFSET_END:
            return start_offset
        try:
            _, high = self.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=_START_TIMEOUT_S
            )
        except KafkaException as exc:
            log.warning(
                "%s: end of %s[%d] unknown (%s): from the end", self.name, topic, partition, exc
            )
            return OFFSET_END
        return high if high >= 0 else OFFSET_END

    def poll(self, timeout_s: float) -> EarlySighting | None:
        """Wait up to ``timeout_s`` for one record and sight it; its outcome
        (None: no record, or not an eager invalidation)."""
        msg = self.consumer.poll(timeout_s)
        if msg is None:
            return None
        err = msg.error()
        if err is not None:
            self._warn("error", f"consume error: {err}")
            return None
        return self._sight(msg)

    def _sight(self, msg: Message) -> EarlySighting | None:
        try:
            event = self._codec.decode(msg.value() or b"")
        except DecodeError:
            return None  # the view dead-letters and alerts it
        if event.type is not EventType.INVALIDATED:
            return None  # ticks: verified by the view, never acted on early
        payload = event.payload
        if not isinstance(payload, dict) or payload.get("mode") != "EAGER":
            return None
        key_hash, version = payload.get("key_hash"), payload.get("version")
        if not isinstance(key_hash, bytes) or not (version is None or type(version) is int):
            return None
        origin = (msg.topic() or "", msg.partition() or 0, msg.offset() or 0)
        sighting = self._view.hide_early(origin, key_hash, version)
        if sighting is EarlySighting.AT_CAPACITY:
            self._warn(
                "capacity",
                "too many unverified eager invalidations in flight (a flood of forgeries?): "
                "further ones take effect when the view reads them",
            )
        if self._on_sighting is not None:
            self._on_sighting(sighting)
        return sighting

    def _warn(self, reason: str, text: str) -> None:
        admitted, closed = self._warnings.admit(reason, text)
        if closed is not None:
            log.warning("%s: %d more like: %s", self.name, closed.count, closed.last)
        if admitted:
            log.warning("%s: %s", self.name, text)

    # -- the thread ----------------------------------------------------------

    def run(self) -> None:
        """Poll until :meth:`close`; a failure is logged, never fatal."""
        while not self._stop.is_set():
            try:
                self.poll(0.1)
            except Exception:  # noqa: BLE001 - the view still applies everything: keep listening
                log.exception("%s: poll failed", self.name)
                self._stop.wait(0.1)

    def start(self) -> InvalidationListener:
        self._thread = threading.Thread(target=self.run, name=self.name, daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop the thread (if started) and close the consumer."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.consumer.close()

    def __enter__(self) -> InvalidationListener:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
