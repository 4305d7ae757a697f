"""Read audit: every read, hit or miss, becomes a CacheRead event.

``async`` (default): reads are queued and emitted by a background thread.
The queue is bounded (``audit.max_pending_events``) and a full queue blocks
the reader instead of dropping the event, so what a crash can lose is
bounded too: at most the queued events plus those not yet acknowledged,
i.e. about ``audit.loss_window_ms`` of reads (the emitter acknowledges at
least every ``flush_interval_ms``).

``sync``: the read's CacheRead event is acknowledged by the broker before the
value is returned to the caller (only that event is waited for, not every
event the producer has in flight); a read whose audit record is not
acknowledged raises instead of serving.

Nothing is dropped silently: a CacheRead the async emitter could not emit
is counted, logged, and reported by :meth:`ReadAudit.problems`.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from typing import Any

from cachet.config.enums import AuditMode
from cachet.producers.sealing import SealingError, SealingProducer
from cachet.schemas.events import EventType

__all__ = ["ReadAudit"]

log = logging.getLogger(__name__)

# How long a sync-audited read waits for its CacheRead's acknowledgement.
_SYNC_ACK_TIMEOUT_S = 10.0


class ReadAudit:
    """Emits CacheRead events through the node's sealing producer."""

    def __init__(
        self,
        producer: SealingProducer,
        mode: AuditMode,
        *,
        max_pending: int = 10_000,
        flush_interval_ms: int = 100,
    ) -> None:
        self._producer = producer
        self.mode = mode
        self._queue: queue.Queue[tuple[bytes, dict[str, Any]] | None] = queue.Queue(max_pending)
        self._flush_s = flush_interval_ms / 1000
        self.emitted = 0
        # CacheRead events the async emitter failed to emit, and the last reason.
        self.failed = 0
        self._last_failure = ""
        self._thread: threading.Thread | None = None
        if mode is AuditMode.ASYNC:
            self._thread = threading.Thread(
                target=self._drain, name="cachet-read-audit", daemon=True
            )
            self._thread.start()

    def record(self, key_hash: bytes, payload: dict[str, Any]) -> None:
        """Audit one read. ``sync``: returns once the broker acknowledged its
        CacheRead (raises :class:`SealingError` otherwise); ``async``: queues
        it (blocks while the queue is full)."""
        if self.mode is AuditMode.SYNC:
            delivery = self._producer.emit_with_receipt(EventType.CACHE_READ, payload, key=key_hash)
            delivery.wait(_SYNC_ACK_TIMEOUT_S)
            self.emitted += 1
            return
        self._queue.put((key_hash, payload))  # blocks when full: bounded loss window

    def _drain(self) -> None:
        last_ack = time.monotonic()
        while True:
            try:
                item: tuple[bytes, dict[str, Any]] | None = self._queue.get(timeout=self._flush_s)
            except queue.Empty:
                item = (b"", {})  # nothing queued: only the acknowledgement below
            if item is None:
                return
            if item[1]:
                key_hash, payload = item
                try:
                    self._producer.emit(EventType.CACHE_READ, payload, key=key_hash)
                    self.emitted += 1
                except SealingError as exc:  # keep auditing; counted, logged, reported
                    self.failed += 1
                    self._last_failure = str(exc)
                    log.error("read audit: CacheRead not emitted: %s", exc)
                except Exception as exc:  # noqa: BLE001 - the emitter thread must not die
                    self.failed += 1
                    self._last_failure = f"{type(exc).__name__}: {exc}"
                    log.exception("read audit: CacheRead not emitted")
            if time.monotonic() - last_ack >= self._flush_s:
                try:
                    self._producer.acknowledge()
                except Exception:  # noqa: BLE001 - broker away: keep auditing, retry next round
                    log.warning("read audit: broker has not acknowledged reads yet")
                last_ack = time.monotonic()

    @property
    def pending(self) -> int:
        return self._queue.qsize()

    def problems(self) -> tuple[str, ...]:
        """For a node's /health: reads whose CacheRead was not emitted."""
        if not self.failed:
            return ()
        return (f"{self.failed} read audit record(s) not emitted (last: {self._last_failure})",)

    def close(self) -> None:
        if self._thread is not None:
            self._queue.put(None)
            self._thread.join(10)
