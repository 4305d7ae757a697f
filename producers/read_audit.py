"""Read audit: every read, hit or miss, is a CacheRead record in the ledger.

Reads are packed many to a Kafka record: a node's reads accumulate in an open
batch, and one emitter thread writes the batch as a CacheReadBatch event
(record key: the node id, so one node's batches stay in order on one
partition) whose ``reads`` hold one CacheRead record per read, exactly as a
CacheRead event would. The event is sealed like any other, so read ``i`` is
proven by (batch event, ``i``) plus the event's inclusion proof. A reader's
thread only appends its record under a lock; the emitter encodes.

The emitter writes at most ``batch_max_reads`` reads per event, fewer when
the encoded record would exceed the producer's ``max_message_bytes`` (it
halves the batch until it fits, and keeps the smaller size; a read that
does not encode is isolated the same way and costs only itself), and waits
for the broker's acknowledgement of one flush before it starts the next.

``async`` (default): a batch is flushed once it holds ``batch_max_reads``
reads (or ``max_pending``, if fewer) or its oldest read is
``flush_interval_ms`` old. At most ``max_pending`` reads wait for the
emitter; a reader that finds them all taken blocks until the emitter takes
them, it never drops one. So what a crash can lose is bounded: the reads
waiting (at most ``max_pending``, at most about ``flush_interval_ms`` old
while the broker keeps up) plus the one flush the broker has not
acknowledged yet (at most ``max_pending`` more), i.e. about
``audit.loss_window_ms`` of reads.

``sync``: group commit. A reader appends its read to the open batch and
waits for that batch's acknowledgement; the emitter flushes the open batch as
soon as the previous flush is acknowledged (at once when none is in
flight), so concurrent readers share one acknowledgement. A read whose batch
is not acknowledged raises :class:`ReadNotAudited` (a :class:`SealingError`)
instead of serving.

Garbage collection: the reads waiting in a batch must not be what the
collector walks. A reader hands its FreshnessProof over flat (its four
numbers under their own names: ``age_ms``, ``max_staleness_ms``,
``headroom_ms``, ``view_lag_ms``; and ``freshness`` None), so its read is
a dict of plain values, which the collector never tracks; the emitter
nests the proof in a copy it encodes and lets go of at once (the emitted
event's list of records is emptied after the producer took its bytes).
Tracked reads held until their acknowledgement were promoted to the
oldest generation by the tens of thousands and made it collect in full,
a walk over every L1 entry (80 ms with 10,000).

Nothing is dropped silently: a read whose batch could not be emitted or was
not delivered is counted (per read), logged, and reported by
:meth:`ReadAudit.problems`.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from cachet.config.enums import AuditMode
from cachet.producers.sealing import (
    AcknowledgementTimeout,
    Delivery,
    InvalidEvent,
    ProducerQueueFull,
    RecordTooLarge,
    SealingError,
    SealingProducer,
)
from cachet.schemas.events import EventType

__all__ = ["ReadAudit", "ReadNotAudited"]

log = logging.getLogger(__name__)

# How long a sync-audited read waits for its batch's acknowledgement.
_SYNC_ACK_TIMEOUT_S = 10.0
# How often the emitter, waiting for an acknowledgement, checks for close.
_ACK_POLL_S = 0.5
# How long a sync flush makes the client send at once
# (SealingProducer.send_now): about 2.5 ms less per acknowledgement on the
# embedded broker.
_SYNC_SEND_NOW_S = 0.005
# How long the emitter waits before it offers a batch again to a client
# whose local queue is full.
_QUEUE_FULL_RETRY_S = 0.005


def _record(read: dict[str, Any]) -> dict[str, Any]:
    """The CacheRead record of ``read``: itself, or a copy with its flat
    proof nested (the reader's dict stays one the collector never tracks)."""
    if "age_ms" not in read:
        return read
    record = read.copy()
    pop = record.pop
    record["freshness"] = {
        "age_ms": pop("age_ms"),
        "max_staleness_ms": pop("max_staleness_ms"),
        "headroom_ms": pop("headroom_ms"),
        "view_lag_ms": pop("view_lag_ms"),
    }
    return record


class ReadNotAudited(SealingError):
    """A sync-audited read's CacheRead was not acknowledged: do not serve it."""


@dataclass(slots=True)
class _Group:
    """The reads of one flush, for the sync readers waiting on it."""

    done: threading.Event = field(default_factory=threading.Event)
    # (first index, end index, why) of reads whose batch event failed.
    failed: list[tuple[int, int, str]] = field(default_factory=list)

    def failure(self, index: int) -> str | None:
        for start, end, why in self.failed:
            if start <= index < end:
                return why
        return None


class ReadAudit:
    """Writes a node's reads as CacheReadBatch events through its sealing producer.

    ``emitted`` counts reads (not events) in batch events the producer
    accepted, ``acknowledged`` those the broker acknowledged, ``failed``
    those that were not emitted or not delivered.
    """

    def __init__(
        self,
        producer: SealingProducer,
        mode: AuditMode,
        *,
        node_id: str,
        max_pending: int = 10_000,
        flush_interval_ms: int = 100,
        batch_max_reads: int = 1000,
    ) -> None:
        if max_pending < 1 or batch_max_reads < 1 or flush_interval_ms < 0:
            raise ValueError(
                f"read audit: max_pending ({max_pending}) and batch_max_reads "
                f"({batch_max_reads}) must be >= 1, flush_interval_ms ({flush_interval_ms}) >= 0"
            )
        self._producer = producer
        self.mode = mode
        self._sync = mode is AuditMode.SYNC
        self.node_id = node_id
        self._key = node_id.encode()
        self._max_pending = max_pending
        self._flush_s = flush_interval_ms / 1000
        # A batch is due at batch_max_reads, or once the buffer is full.
        self._flush_at = min(batch_max_reads, max_pending)
        # Reads per event: batch_max_reads, halved for good whenever a record
        # would exceed the producer's max_message_bytes.
        self._per_record = batch_max_reads
        # A plain lock, taken directly on the reader's path: entering the
        # Condition (a Python-level method) costs twice as much per read.
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._reads: list[dict[str, Any]] = []  # the open batch
        self._opened_at = 0.0  # when the open batch got its first read (monotonic)
        self._group = _Group()  # the open batch's sync readers wait on this
        self._taken = 0  # reads the emitter took and has not yet emitted
        self._closing = False
        self._close_by = 0.0
        self.emitted = 0
        self.acknowledged = 0
        self.failed = 0
        self._last_failure = ""
        self._thread = threading.Thread(target=self._run, name="cachet-read-audit", daemon=True)
        self._thread.start()

    # -- the reader's side -------------------------------------------------

    def record(self, key_hash: bytes, payload: dict[str, Any]) -> None:
        """Audit one read (``payload``: a CacheRead record; ``key_hash`` is in
        it too). ``async``: appends it to the open batch (blocks while
        ``max_pending`` reads wait for the emitter). ``sync``: returns once
        the broker acknowledged its batch; raises :class:`ReadNotAudited`
        otherwise. Both raise :class:`SealingError` once the audit is closed.
        """
        cond = self._cond
        with self._lock:
            reads = self._reads
            if len(reads) >= self._max_pending or self._closing:
                reads = self._wait_for_room()
            reads.append(payload)
            count = len(reads)
            # Wake the emitter: a batch opened (its time window starts) or
            # full. Once per batch; all waiters, so it is never a reader
            # blocked on a full buffer that gets the wake-up instead.
            if count == 1:
                self._opened_at = time.monotonic()
                cond.notify_all()
            elif count == self._flush_at:
                cond.notify_all()
            group = self._group
        if self._sync:
            self._await(group, count - 1)

    def _wait_for_room(self) -> list[dict[str, Any]]:
        # Caller holds the lock. Blocking, not dropping, is what keeps the
        # loss window bounded.
        while True:
            if self._closing:
                raise SealingError(f"read audit of {self.node_id} is closed: read not audited")
            if len(self._reads) < self._max_pending:
                return self._reads
            self._cond.wait()

    def _await(self, group: _Group, index: int) -> None:
        if not group.done.wait(_SYNC_ACK_TIMEOUT_S):
            raise ReadNotAudited(
                f"read audit of {self.node_id}: the read's CacheReadBatch was not "
                f"acknowledged within {_SYNC_ACK_TIMEOUT_S}s; it may still be written"
            )
        why = group.failure(index)
        if why is not None:
            raise ReadNotAudited(f"read audit of {self.node_id}: read not audited: {why}")

    # -- the emitter ---------------------------------------------------------

    def _next_flush(self) -> tuple[list[dict[str, Any]], _Group] | None:
        """Waits until the open batch is due; takes it (None: closed and empty)."""
        cond = self._cond
        with cond:
            while True:
                reads = self._reads
                if reads:
                    wait_s = self._opened_at + self._flush_s - time.monotonic()
                    if self._sync or self._closing or len(reads) >= self._flush_at or wait_s <= 0:
                        break
                    cond.wait(wait_s)
                elif self._closing:
                    return None
                else:
                    cond.wait()
            group = self._group
            self._reads, self._group = [], _Group()
            self._taken = len(reads)
            cond.notify_all()  # readers blocked on a full buffer have room now
            return reads, group

    def _run(self) -> None:
        while True:
            taken = self._next_flush()
            if taken is None:
                return
            reads, group = taken
            try:
                self._flush(reads, group)
            except Exception as exc:  # noqa: BLE001 - the emitter thread must not die
                log.exception("read audit: flush of %d read(s) failed", len(reads))
                self._fail(group, 0, len(reads), f"{type(exc).__name__}: {exc}")
            finally:
                self._taken = 0
                group.done.set()

    def _flush(self, reads: list[dict[str, Any]], group: _Group) -> None:
        """Emits ``reads`` as batch events, then waits for every acknowledgement."""
        sent: list[tuple[int, int, Delivery]] = []
        start = 0
        while start < len(reads):
            end = min(start + self._per_record, len(reads))
            self._emit(reads, start, end, group, sent)
            start = end
        if self._sync and sent:
            # Sync readers wait on these: out to the broker now, not after linger.ms.
            self._producer.send_now(sent[-1][2], _SYNC_SEND_NOW_S)
        for first, end, delivery in sent:
            why = self._acknowledgement(delivery)
            if why is None:
                self.acknowledged += end - first
            else:
                self._fail(group, first, end, why)

    def _emit(
        self,
        reads: list[dict[str, Any]],
        start: int,
        end: int,
        group: _Group,
        sent: list[tuple[int, int, Delivery]],
    ) -> None:
        """Emits ``reads[start:end]`` as one CacheReadBatch, or as halves when
        it is too large or holds a read that does not encode (so one bad read
        costs only itself)."""
        records = [_record(r) for r in reads[start:end]]
        payload = {"node_id": self.node_id, "reads": records}
        try:
            delivery = self._produce(payload)
        except (RecordTooLarge, InvalidEvent) as exc:
            if end - start == 1:
                self._fail(group, start, end, str(exc))
                return
            if isinstance(exc, RecordTooLarge):
                self._per_record = min(self._per_record, max(1, (end - start) // 2))
                log.info("read audit: records hold at most %d reads now", self._per_record)
            middle = (start + end) // 2
            self._emit(reads, start, middle, group, sent)
            self._emit(reads, middle, end, group, sent)
            return
        except SealingError as exc:  # closed, signer failed, client refused
            self._fail(group, start, end, str(exc))
            return
        except Exception as exc:  # noqa: BLE001 - counted and reported; the emitter goes on
            log.exception("read audit: CacheReadBatch not emitted")
            self._fail(group, start, end, f"{type(exc).__name__}: {exc}")
            return
        # The producer took the bytes; held by the delivery's event until the
        # acknowledgement, the records would only feed the collector.
        records.clear()
        self.emitted += end - start
        self._taken -= end - start
        sent.append((start, end, delivery))

    def _produce(self, payload: dict[str, Any]) -> Delivery:
        while True:
            try:
                return self._producer.emit_with_receipt(
                    EventType.CACHE_READ_BATCH, payload, key=self._key
                )
            except ProducerQueueFull:
                # The broker is slow or away: hold on to the batch (readers
                # block once max_pending reads wait) rather than drop it.
                if self._closing and time.monotonic() > self._close_by:
                    raise
                time.sleep(_QUEUE_FULL_RETRY_S)

    def _acknowledgement(self, delivery: Delivery) -> str | None:
        """None once the broker acknowledged ``delivery``; else why not."""
        while True:
            wait_s = _ACK_POLL_S
            if self._closing:
                wait_s = max(0.0, min(wait_s, self._close_by - time.monotonic()))
            try:
                delivery.wait(wait_s)
                return None
            except AcknowledgementTimeout:
                # Keep waiting for the broker's answer (sync readers time out
                # on their own), except past the deadline of a close.
                if self._closing and time.monotonic() >= self._close_by:
                    return "not acknowledged before the read audit closed"
            except SealingError as exc:  # EventNotDelivered: not in the ledger
                return str(exc)

    def _fail(self, group: _Group, start: int, end: int, why: str) -> None:
        group.failed.append((start, end, why))
        self.failed += end - start
        self._last_failure = why
        log.error("read audit: %d read(s) not audited: %s", end - start, why)

    # -- state -----------------------------------------------------------

    @property
    def pending(self) -> int:
        """Reads recorded and not yet emitted (the open batch and the flush
        being emitted)."""
        return len(self._reads) + self._taken

    def problems(self) -> tuple[str, ...]:
        """For a node's /health: reads whose CacheRead was not audited."""
        if not self.failed:
            return ()
        return (f"{self.failed} read audit record(s) not emitted (last: {self._last_failure})",)

    def close(self, timeout_s: float = 10.0) -> None:
        """Emits every read recorded so far and waits (up to ``timeout_s``)
        for their acknowledgement; later reads raise."""
        with self._cond:
            if not self._closing:
                self._closing = True
                self._close_by = time.monotonic() + timeout_s
            self._cond.notify_all()
        self._thread.join(timeout_s + 1)
