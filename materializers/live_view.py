"""The live view: sealed, verified events materialized into RocksDB.

Every node keeps a full replica. It reads ``entries`` and ``invalidations``
with ``assign()`` over every partition (no consumer group, so no
rebalances), through the verifying consumer: only events a verified seal
covers are applied. Each poll's changes and the offsets they bring the view
to are committed in ONE synced WriteBatch, so a crash at any point resumes
exactly once.

The offset stored for a partition never passes an event that is still
waiting for its seal: otherwise a crash while waiting would skip it.

The view fails closed. It reports itself *catching up* until every
partition reached its end once, *stale* when no watermark tick arrived
within a contract's window (a node cut off from the broker), and in
*discontinuity* when the log it was built from is gone (a broker restarted
empty, an offset out of range, offsets below the log start): then it serves
nothing until it is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, Producer, TopicPartition

from cachet.consume import RecordOrigin
from cachet.crypto.seal import KeySet, SignatureScheme
from cachet.kafka import producer_settings
from cachet.ledger.consumer import AlertEmitter, VerifyingConsumer
from cachet.ledger.verifier import Applied, Rejected
from cachet.topics import Topic, TopicNames
from cachet.verdict import ViewHealth
from materializers.view import EntryState, ViewEntry, ViewStore
from schemas.codec import EventCodec
from schemas.events import Event, EventType

__all__ = ["LiveView", "FRESHNESS_CONFIRMED", "authority_text"]

log = logging.getLogger(__name__)

DATA_TOPICS = (Topic.ENTRIES, Topic.INVALIDATIONS)
# A StateTransitioned ACTIVE -> ACTIVE with this reason is a freshness
# confirmation from the source (contractual invalidation mode).
FRESHNESS_CONFIRMED = "freshness_confirmed"
_WATERMARK_CHECK_S = 1.0
# Definitive: the offset this view is at does not exist in the log. (Unknown
# topic or partition is not: it also happens transiently at startup.)
_DISCONTINUITY_ERRORS = frozenset({KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET})


def _now_us() -> int:
    return time.time_ns() // 1000


def authority_text(authority: Mapping[str, Any]) -> str:
    """A TransitionAuthority record as the view stores it."""
    kind = authority.get("kind", "UNKNOWN")
    if kind == "KEY":
        return f"KEY:{authority.get('key_id') or ''}:{authority.get('role') or ''}"
    return str(kind)


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    at_eof: bool = False
    reached_eof_once: bool = False
    last_progress_us: int = 0


class LiveView:
    """One node's replica of the cache, fed by the verifying consumer."""

    def __init__(
        self,
        store: ViewStore,
        *,
        bootstrap_servers: str,
        names: TopicNames,
        anchor: KeySet,
        required: Collection[SignatureScheme],
        alert: AlertEmitter,
        partitions: Mapping[Topic, int] | int = 3,
        history_depth: int = 100,
        unsealed_timeout_s: float = 5.0,
        on_change: Callable[[bytes], None] | None = None,
        on_log_vanished: Callable[[], None] | None = None,
        clock_us: Callable[[], int] = _now_us,
        codec: EventCodec | None = None,
        name: str = "live-view",
    ) -> None:
        self.store = store
        self._names = names
        self._alert = alert
        self._history_depth = history_depth
        self._on_change = on_change
        self._on_log_vanished = on_log_vanished
        self._clock_us = clock_us
        self._lock = threading.RLock()
        self._batch = store.begin()
        self._dirty = False
        self._changed_keys: set[bytes] = set()
        count = (lambda t: partitions) if isinstance(partitions, int) else partitions.__getitem__
        self._parts: dict[tuple[str, int], _Partition] = {
            (names(t), p): _Partition(last_progress_us=clock_us())
            for t in DATA_TOPICS
            for p in range(count(t))
        }
        self._ticks: dict[int, int] = {}
        self._tick_partitions = count(Topic.INVALIDATIONS)
        # Eager invalidations seen before their StateTransitioned is applied:
        # key hash -> highest invalidated version (None = every version).
        self._invalidated: dict[bytes, int | None] = {}
        self.discontinuity: str | None = None
        start = store.offsets()
        # What the store holds, kept here so an idle poll reads no RocksDB.
        self._committed: dict[tuple[str, int], int] = dict(start)
        self.consumer = VerifyingConsumer(
            bootstrap_servers,
            names,
            codec or EventCodec(),
            anchor,
            required,
            DATA_TOPICS,
            self._apply,
            alert,
            Producer(producer_settings(bootstrap_servers)),
            partitions=partitions,
            start_offsets=start,
            unsealed_timeout_s=unsealed_timeout_s,
            on_rejected=self._rejected,
            on_record=self._record,
            on_error=self._kafka_error,
            # An offset out of range must surface, never be reset silently:
            # it means the log this view was built from is gone.
            consumer_overrides={"auto.offset.reset": "error"},
            name=name,
        )
        self._watch_stop = threading.Event()
        self._watch = threading.Thread(
            target=self._watch_watermarks, daemon=True, name=f"{name}-watermarks"
        )
        self._watch.start()

    # -- consuming --------------------------------------------------------

    def poll(self, timeout_s: float = 0.1) -> int:
        """Consume, verify and apply one batch; commit it with its offsets."""
        taken = self.consumer.poll(timeout_s)
        with self._lock:
            self._eof()
            self._commit()
        return taken

    def _record(self, event: Event, origin: RecordOrigin) -> None:
        part = self._parts.get((origin.topic, origin.partition))
        if part is not None:
            part.pending.add(origin.offset)
            part.at_eof = False
        if event.type is EventType.INVALIDATED and event.payload.get("mode") == "EAGER":
            # Fail-safe early: an eager invalidation can only make this node
            # serve less, so it takes effect on arrival, before its seal is
            # verified. A forged one can cause misses, never wrong data; one
            # that is never sealed is still alerted (UnsealedTimeout).
            key_hash = event.payload["key_hash"]
            self.note_invalidated(key_hash, event.payload.get("version"))
            if self._on_change:
                self._on_change(key_hash)

    def _resolved(self, origin: RecordOrigin | None) -> None:
        if origin is None:
            return
        part = self._parts.get((origin.topic, origin.partition))
        if part is not None:
            part.pending.discard(origin.offset)

    def _rejected(self, rejected: Rejected) -> None:
        self._resolved(rejected.origin)

    def _apply(self, applied: Applied) -> None:
        event, origin = applied.event, applied.origin
        p = event.payload
        with self._lock:
            self._resolved(origin)
            event_hash = hashlib.sha3_256(origin.raw).digest()
            seal = applied.seal.header
            if event.type is EventType.CACHE_WRITTEN:
                v = p["value"]
                self._batch.put(
                    ViewEntry(
                        key_hash=p["key_hash"],
                        namespace=p["namespace"],
                        contract=p["contract"],
                        fingerprint=p["fingerprint"],
                        version=p["version"],
                        state=EntryState.ACTIVE,
                        ciphertext=v["ciphertext"],
                        nonce=v["nonce"],
                        data_key_id=v["data_key_id"],
                        commitment=v["commitment"],
                        aad_version=v["aad_version"],
                        subject_hash=p["subject_hash"],
                        classification=p["classification"],
                        written_at_us=event.occurred_at_us,
                        ttl_ms=p["ttl_ms"],
                        state_changed_at_us=event.occurred_at_us,
                        state_reason="",
                        authority="",
                        event_hash=event_hash,
                        producer_id=seal.producer_id,
                        seal_seq=seal.seal_seq,
                    ),
                    history_depth=self._history_depth,
                )
                self._changed(p["key_hash"])
            elif event.type is EventType.STATE_TRANSITIONED:
                state = self._state_of(p["key_hash"], p["version"])
                if state is None or state.value != p["from_state"]:
                    # First transition wins: an expiry racing a revoke (or a
                    # re-emitted expiry after a restart) must not overwrite the
                    # state the version already left; it stays in the log.
                    log.info(
                        "transition %s->%s of version %d ignored: version is %s",
                        p["from_state"],
                        p["to_state"],
                        p["version"],
                        state.value if state else "unknown",
                    )
                    return
                self._batch.transition(
                    p["key_hash"],
                    p["version"],
                    EntryState(p["to_state"]),
                    at_us=event.occurred_at_us,
                    reason=p["reason"],
                    authority=authority_text(p["authority"]),
                    event_hash=event_hash,
                    producer_id=seal.producer_id,
                    seal_seq=seal.seal_seq,
                )
                self._changed(p["key_hash"])
            elif event.type is EventType.INVALIDATED:
                if p["mode"] == "EAGER":
                    self.note_invalidated(p["key_hash"], p["version"])
                self._changed(p["key_hash"])
            elif event.type is EventType.WATERMARK_TICK and origin.topic == self._names(
                Topic.INVALIDATIONS
            ):
                self._ticks[origin.partition] = max(
                    self._ticks.get(origin.partition, 0), event.occurred_at_us
                )

    def _state_of(self, key_hash: bytes, version: int) -> EntryState | None:
        current = self._batch.current(key_hash)
        if current is not None and current.version == version:
            return current.state
        for old in self._batch.history(key_hash):
            if old.version == version:
                return old.state
        return None

    def _changed(self, key_hash: bytes) -> None:
        # Readers learn of the change only after the commit (see _commit): an
        # eviction before it would let a concurrent read refill a cache with
        # the old, still committed entry.
        self._dirty = True
        self._changed_keys.add(key_hash)

    def _commit(self) -> None:
        positions = self._safe_offsets()
        moved = {k: v for k, v in positions.items() if self._committed.get(k, 0) != v}
        if not self._dirty and not moved:
            return
        for (topic, partition), offset in moved.items():
            self._batch.set_offset(topic, partition, offset)
        self.store.commit(self._batch)
        self._committed.update(moved)
        self._batch = self.store.begin()
        self._dirty = False
        changed, self._changed_keys = self._changed_keys, set()
        if self._on_change:
            for key_hash in changed:
                self._on_change(key_hash)

    def _safe_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition: the next offset to read after a restart. Never past
        an event still waiting for its seal."""
        tps = [TopicPartition(t, p) for (t, p) in self._parts]
        out: dict[tuple[str, int], int] = {}
        for tp in self.consumer.consumer.position(tps):
            part = self._parts[(tp.topic, tp.partition)]
            if part.pending:
                out[(tp.topic, tp.partition)] = min(part.pending)
            elif tp.offset >= 0:
                out[(tp.topic, tp.partition)] = tp.offset
        return out

    # -- health -----------------------------------------------------------

    def _eof(self) -> None:
        now = self._clock_us()
        for key in list(self.consumer.eof):
            part = self._parts.get(key)
            if part is not None and not part.at_eof:
                part.at_eof = part.reached_eof_once = True
                part.last_progress_us = now
        self.consumer.eof.clear()

    def health(self) -> ViewHealth:
        """What a read needs to know about this view, now."""
        now = self._clock_us()
        caught_up = all(p.reached_eof_once for p in self._parts.values())
        behind = [p.last_progress_us for p in self._parts.values() if not p.at_eof]
        lag_ms = max(0, (now - min(behind)) // 1000) if behind else 0
        tick_age_ms: int | None = None
        if len(self._ticks) >= self._tick_partitions:
            tick_age_ms = max(0, (now - min(self._ticks.values())) // 1000)
        return ViewHealth(
            caught_up=caught_up,
            last_tick_age_ms=tick_age_ms,
            lag_ms=lag_ms,
            discontinuity=self.discontinuity is not None,
        )

    def catching_up(self) -> list[str]:
        """Partitions that have not reached their end since this view started."""
        return sorted(
            f"{t}[{p}]" for (t, p), part in self._parts.items() if not part.reached_eof_once
        )

    def note_invalidated(self, key_hash: bytes, version: int | None) -> None:
        """Versions up to ``version`` (all when None) are invalidated from now on."""
        with self._lock:
            prev = self._invalidated.get(key_hash, -1)
            self._invalidated[key_hash] = (
                None if version is None or prev is None else max(prev, version)
            )

    def invalidated(self, key_hash: bytes, version: int) -> bool:
        """An eager invalidation covers this version (before its transition lands)."""
        with self._lock:
            if key_hash not in self._invalidated:
                return False
            limit = self._invalidated[key_hash]
            return limit is None or version <= limit

    def current(self, key_hash: bytes) -> ViewEntry | None:
        with self._lock:
            return self.store.current(key_hash)

    def _kafka_error(self, err: KafkaError) -> None:
        if err.code() in _DISCONTINUITY_ERRORS:
            self._discontinuity(f"consumer error: {err.str()}", "log_vanished")

    def _check_watermarks(self) -> None:
        """Compare what this view stored with the log the broker holds now.

        Uses the watermarks of the consumer's own fetch responses (a local
        read, so it never blocks): the embedded broker's ListOffsets answer
        lags the real log end (a recorded quirk), the fetch path does not.
        """
        for (topic, partition), offset in dict(self._committed).items():
            low, high = self.consumer.consumer.get_watermark_offsets(
                TopicPartition(topic, partition), cached=True
            )
            if high < 0:
                continue  # no fetch answered yet
            if offset > high:
                self._discontinuity(
                    f"{topic}[{partition}]: view is at offset {offset}, log ends at {high}: "
                    "the log this view was built from is gone (broker restarted empty?)",
                    "log_vanished",
                    topic,
                    partition,
                    offset,
                    high,
                )
            elif 0 <= offset < low:
                self._discontinuity(
                    f"{topic}[{partition}]: view offset {offset} is below the log start {low}",
                    "below_low_watermark",
                    topic,
                    partition,
                    offset,
                    low,
                )

    def _watch_watermarks(self) -> None:
        while not self._watch_stop.wait(_WATERMARK_CHECK_S):
            try:
                self._check_watermarks()
            except Exception:  # noqa: BLE001 - the watcher must outlive one bad answer
                log.exception("watermark check failed")

    def _discontinuity(
        self,
        detail: str,
        kind: str,
        topic: str = "",
        partition: int = -1,
        expected: int = -1,
        found: int = -1,
    ) -> None:
        with self._lock:  # found by the poll thread or the watermark watcher
            if self.discontinuity is not None:
                return
            self.discontinuity = detail
        log.error("LogDiscontinuity: %s; this view serves nothing until rebuilt", detail)
        if kind == "log_vanished" and self._on_log_vanished:
            self._on_log_vanished()
        self._alert(
            EventType.LOG_DISCONTINUITY,
            {
                "kind": kind,
                "topic": topic,
                "partition": partition,
                "expected_offset": expected,
                "found_offset": found,
                "producer_id": None,
                "detail": detail,
            },
        )

    def close(self) -> None:
        self._watch_stop.set()
        self._watch.join(5)
        with self._lock:
            self._commit()
        self.consumer.close()
        self.store.close()

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> LiveView:
        return cls(ViewStore.open(path), **kwargs)
