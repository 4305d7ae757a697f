"""The live view: sealed, verified events materialized into RocksDB.

Every node keeps a full replica. It reads ``entries`` and ``invalidations``
with ``assign()`` over every partition (no consumer group, so no
rebalances), through the verifying consumer: only events a verified seal
covers are applied. Each poll's changes and the offsets they bring the view
to are committed in ONE synced WriteBatch, so a crash at any point resumes
exactly once.

The offset stored for a partition never passes an event that is still
waiting for its seal: otherwise a crash while waiting would skip it. The
verifier's checkpoint (chain heads, open seals, log-order positions:
:mod:`cachet.ledger.checkpoint`) and the seals offsets are committed in the
same WriteBatch, so a restart resumes where the view stood: a genuine record
re-produced later is refused as a duplicate, and a clean restart re-reads
no seal and raises no alert.

Events apply in log order per partition (the verifier holds back what is
behind an event waiting for its seal), so a live view, a restarted one and
one rebuilt from offset 0 reach the same state hash.

An eager invalidation takes effect on arrival, before its seal verifies
(a revoke must stop serving at once), but only as far as it can be trusted:
it hides the versions that existed when it arrived, and only until its
seal verifies or its unsealed timeout passes. A forged one is undone then
(and alerted by the verifier); a later genuine version is always served.
The node's low-latency listener may sight such a record before this view's
consumer does (:meth:`LiveView.hide_early`); the first sighting fixes what
the record hides, and neither order of the two leaves a stale marker
(:mod:`cachet.materializers.unverified_invalidations`).

The view also reads ``erasure`` (verified like everything else) and keeps
a subject index (``s/<subject hash>/<key hash>`` rows, written in the same
WriteBatch as the entries: :meth:`LiveView.subject_entries`). Each verified
erasure-topic event is handed, with the identity that sealed it, to the
listeners added with :meth:`LiveView.add_erasure_listener`, on the poll
thread right after the batch holding it committed (never on a read path).
Deciding whether to act on it (who may erase) is the listener's business:
the view only guarantees it was sealed and verified.

The view fails closed. It reports itself *catching up* until the key
registry read the control log to its end and every data partition applied
(or refused) everything up to the log end it first observed, events that
waited for seals included, *stale* when no watermark tick arrived
within a contract's window (a node cut off from the broker), and in
*discontinuity* when the log it was built from is gone (a broker restarted
empty, an offset out of range, offsets below the log start): then it serves
nothing until it is rebuilt.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer, TopicPartition

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import CachetConfig
from cachet.config.enums import InvalidationMode
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.errors import StateFailure
from cachet.kafka.settings import VIEW_FETCH_WAIT_MS, producer_settings
from cachet.kafka.verifying import AlertEmitter, VerifyingConsumer
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, Rejected
from cachet.materializers.unverified_invalidations import (
    DEFAULT_MAX_EARLY,
    EarlySighting,
    UnverifiedInvalidations,
)
from cachet.materializers.view import EntryState, ViewEntry, ViewFailedError, ViewStore
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import (
    FRESHNESS_CONFIRMED,
    CacheWritten,
    Invalidated,
    StateTransitioned,
)
from cachet.topics import Topic, TopicNames
from cachet.verdict import ViewHealth, ViewStanding

# FRESHNESS_CONFIRMED is re-exported for older callers; its home is
# cachet.schemas.payloads, with the other wire constants.
__all__ = ["FRESHNESS_CONFIRMED", "ErasureListener", "LiveView"]

log = logging.getLogger(__name__)

# Called with a verified erasure-topic event and the identity that sealed it.
ErasureListener = Callable[[Event, str], None]

DATA_TOPICS = (Topic.ENTRIES, Topic.INVALIDATIONS, Topic.ERASURE)
_WATERMARK_CHECK_S = 1.0
# How long close() waits for a poll running on another thread to end.
_CLOSE_WAIT_S = 5.0
# Definitive: the offset this view is at does not exist in the log. (Unknown
# topic or partition is not: it also happens transiently at startup.)
_DISCONTINUITY_ERRORS = frozenset({KafkaError.OFFSET_OUT_OF_RANGE, KafkaError._AUTO_OFFSET_RESET})
# The verifier checkpoint's rows live under this meta prefix.
_CHECKPOINT_PREFIX = "verifier/"


@dataclass(frozen=True, slots=True)
class _ChainHead:
    """Where a key's hash chain now ends: the event applied last and its seal."""

    event_hash: bytes
    producer_id: str
    seal_seq: int


@dataclass
class _Partition:
    pending: set[int] = field(default_factory=set)
    at_eof: bool = False
    # The log end first observed (an EOF); caught up once everything below
    # it was applied or refused, events that waited for seals included.
    target: int | None = None
    reached_eof_once: bool = False
    last_progress_us: int = 0

    def resolved_below(self, offset: int) -> bool:
        return not self.pending or min(self.pending) >= offset


def _version(value: object) -> int | None:
    """An Invalidated's ``version`` as read before verification: an int, or
    None (every version) for anything else the schema let through."""
    return value if isinstance(value, int) and not isinstance(value, bool) else None


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
        on_log_vanished: Callable[[], object] | None = None,
        clock: Clock = SYSTEM_CLOCK,
        codec: EventCodec | None = None,
        name: str = "live-view",
        max_early_invalidations: int = DEFAULT_MAX_EARLY,
        fetch_wait_ms: int = VIEW_FETCH_WAIT_MS,
    ) -> None:
        self.store = store
        self.name = name
        self._names = names
        self._alert = alert
        self._history_depth = history_depth
        self._on_change = on_change
        self._on_log_vanished = on_log_vanished
        self._clock = clock
        self._lock = threading.RLock()
        # Held for a whole poll (consume, apply, commit): close() never
        # commits in the middle of one.
        self._polling = threading.Lock()
        self._closed = False
        self._batch = store.begin()
        self._dirty = False
        self._commits = 0  # commits that changed entries (the state hash's cache key)
        self._state_hash: tuple[int, bytes] | None = None
        self._changed_keys: set[bytes] = set()
        self._erasure_listeners: list[ErasureListener] = []
        # Verified erasure events of the open batch: handed to the listeners
        # only after it committed (the subject index then matches them).
        self._erasure_events: list[tuple[Event, str]] = []
        self._erasures_committed: list[tuple[Event, str]] = []
        self._erasure_topic = names(Topic.ERASURE)
        count = (lambda t: partitions) if isinstance(partitions, int) else partitions.__getitem__
        self._parts: dict[tuple[str, int], _Partition] = {
            (names(t), p): _Partition(last_progress_us=clock.now_us())
            for t in DATA_TOPICS
            for p in range(count(t))
        }
        self._ticks: dict[int, int] = {}
        self._tick_partitions = count(Topic.INVALIDATIONS)
        self._unsealed_timeout_us = int(unsealed_timeout_s * 1_000_000)
        # Verified eager invalidations: key hash -> highest invalidated version,
        # until the key's StateTransitioned lands (then the state says it).
        self._invalidated: dict[bytes, int] = {}
        # Key hashes with an event read but not yet applied: a read of one
        # misses (catching up) rather than serve the version before it.
        self._pending_keys: dict[bytes, int] = {}
        self._pending_key_of: dict[tuple[str, int, int], bytes] = {}
        self.discontinuity: str | None = None
        # Set when the view's own store failed mid-batch: what it applied
        # since its last commit is not whole, so it commits nothing more,
        # serves nothing and polls no more until it is opened again (a node
        # restart resumes from the last commit).
        self.failure: str | None = None
        # What health() reports, kept current by whatever changes it (see
        # _refresh_standing), so a read never walks the partitions.
        self._caught_up = False
        self._standing_lock = threading.Lock()
        self._standing = self._stand()
        start = store.offsets()
        # What the store holds, kept here so an idle poll reads no RocksDB.
        self._committed: dict[tuple[str, int], int] = dict(start)
        # Unverified eager invalidations, each bounded in what it hides and for
        # how long, whether this view's consumer or the node's low-latency
        # listener sighted it first.
        self._unverified = UnverifiedInvalidations(
            self._unsealed_timeout_us, read_from=start, max_early=max_early_invalidations
        )
        self._seal_parts = [(names(Topic.SEALS), p) for p in range(count(Topic.SEALS))]
        self._control_parts = [(names(Topic.CONTROL), p) for p in range(count(Topic.CONTROL))]
        checkpoint = VerifierCheckpoint.from_rows(store.meta_rows(_CHECKPOINT_PREFIX))
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
            consumer_overrides={"auto.offset.reset": "error", "fetch.wait.max.ms": fetch_wait_ms},
            checkpoint=checkpoint,
            clock=clock.monotonic,
            name=name,
        )
        # Checked on the poll thread, between polls: librdkafka calls on a
        # consumer from another thread wait (spinning) until the poll thread
        # leaves consume(), which it hardly ever does (seconds per check and
        # ~1% of a core).
        self._next_watermark_check = clock.monotonic() + _WATERMARK_CHECK_S

    # -- consuming --------------------------------------------------------

    def poll(self, timeout_s: float = 0.1) -> int:
        """Consume, verify and apply one batch; commit it with its offsets.

        The view stops (see :attr:`failure`) when its store fails, and on
        any other error but the broker's (a record's own fault is
        dead-lettered, never raised): what it applied since its last commit
        may not be whole, or would sit unwritten while ticks keep arriving.
        Raises that error then, and :class:`ViewFailedError` on every later
        poll. A poll after :meth:`close` does nothing.
        """
        if self.failure is not None:
            raise ViewFailedError(self.failure)
        with self._polling:
            if self._closed:
                return 0  # closed while this thread was on its way here
            try:
                taken = self.consumer.poll(timeout_s)
                with self._lock:
                    self._eof()
                    self._commit()
                    self._unverified.sweep(self._clock.now_us())
            except KafkaException:
                raise  # the broker's trouble, not this view's state: retried
            except Exception as exc:
                # The store, or a bug part-way through verifying, applying or
                # committing (a record's own fault is dead-lettered inside):
                # what this view holds may no longer be whole, or sit
                # unwritten while ticks keep arriving.
                self._fail(exc)
                raise
        if self._erasures_committed:
            self._hand_on_erasures()
        if self._clock.monotonic() >= self._next_watermark_check:
            self._next_watermark_check = self._clock.monotonic() + _WATERMARK_CHECK_S
            try:
                self._check_watermarks()
            except Exception:  # noqa: BLE001 - the next check may get a good answer
                log.exception("watermark check failed")
        return taken

    def _record(self, event: Event, origin: RecordOrigin) -> None:
        coords = (origin.topic, origin.partition, origin.offset)
        part = self._parts.get((origin.topic, origin.partition))
        if part is not None:
            part.pending.add(origin.offset)
            if part.at_eof:
                part.at_eof = False
                self._refresh_standing()  # behind from now: reads see the lag at once
        key_hash = event.payload.get("key_hash") if isinstance(event.payload, dict) else None
        with self._lock:
            # From here on the low-latency listener leaves this record to us
            # (the same lock orders the two: see hide_early).
            sighted = self._unverified.view_read(coords)
            if not isinstance(key_hash, bytes):
                return
            self._pending_keys[key_hash] = self._pending_keys.get(key_hash, 0) + 1
            self._pending_key_of[coords] = key_hash
            # Takes effect on arrival, before its seal is verified, but bounded:
            # only versions that exist now, only until the unsealed timeout
            # (a forged one must not hide the key for good, nor hide a later
            # genuine version). Undone when the verifier refuses it. Sighted
            # first by the listener: its marker already stands.
            hidden = (
                not sighted
                and event.type is EventType.INVALIDATED
                and event.payload.get("mode") == "EAGER"
                and self._unverified.view_note(
                    coords,
                    key_hash,
                    _version(event.payload.get("version")),
                    self._current_version(key_hash),
                    self._clock.now_us(),
                )
            )
        if hidden and self._on_change:
            self._on_change(key_hash)

    def _resolved(self, origin: RecordOrigin | None) -> None:
        if origin is None:
            return
        coords = (origin.topic, origin.partition, origin.offset)
        part = self._parts.get((origin.topic, origin.partition))
        if part is not None:
            part.pending.discard(origin.offset)
        key_hash = self._pending_key_of.pop(coords, None)
        if key_hash is not None:
            left = self._pending_keys.get(key_hash, 1) - 1
            if left > 0:
                self._pending_keys[key_hash] = left
            else:
                self._pending_keys.pop(key_hash, None)

    def _rejected(self, rejected: Rejected) -> None:
        with self._lock:
            self._resolved(rejected.origin)
            o = rejected.origin
            if o is not None:
                self._drop_provisional((o.topic, o.partition, o.offset))

    def _apply(self, applied: Applied) -> None:
        event, origin = applied.event, applied.origin
        with self._lock:
            self._resolved(origin)
            self._drop_provisional((origin.topic, origin.partition, origin.offset))
            event_hash = hashlib.sha3_256(origin.raw).digest()
            seal = applied.seal.header
            chain = _ChainHead(event_hash, seal.producer_id, seal.seal_seq)
            # Parsed once, here at the codec boundary; typed from here on.
            if event.type is EventType.CACHE_WRITTEN:
                self._apply_written(CacheWritten.from_avro(event.payload), event, chain)
            elif event.type is EventType.STATE_TRANSITIONED:
                self._apply_transition(StateTransitioned.from_avro(event.payload), event, chain)
            elif event.type is EventType.INVALIDATED:
                self._apply_invalidated(Invalidated.from_avro(event.payload))
            elif event.type is EventType.WATERMARK_TICK and origin.topic == self._names(
                Topic.INVALIDATIONS
            ):
                self._ticks[origin.partition] = max(
                    self._ticks.get(origin.partition, 0), event.occurred_at_us
                )
                self._refresh_standing()
            elif origin.topic == self._erasure_topic and self._erasure_listeners:
                try:
                    identity = identity_of(seal.producer_id)
                except ProducerIdError:  # the verifier checked it; defend anyway
                    log.warning("erasure event sealed by %r not handed on", seal.producer_id)
                    return
                self._erasure_events.append((event, identity))

    def _apply_written(self, w: CacheWritten, event: Event, chain: _ChainHead) -> None:
        self._batch.put(
            ViewEntry(
                key_hash=w.key_hash,
                namespace=w.namespace,
                contract=w.contract,
                fingerprint=w.fingerprint,
                version=w.version,
                state=EntryState.ACTIVE,
                ciphertext=w.value.ciphertext,
                nonce=w.value.nonce,
                data_key_id=w.value.data_key_id,
                commitment=w.value.commitment,
                aad_version=w.value.aad_version,
                subject_hash=w.subject_hash,
                classification=w.classification,
                written_at_us=event.occurred_at_us,
                ttl_ms=w.ttl_ms,
                state_changed_at_us=event.occurred_at_us,
                state_reason="",
                authority="",
                event_hash=chain.event_hash,
                producer_id=chain.producer_id,
                seal_seq=chain.seal_seq,
            ),
            history_depth=self._history_depth,
        )
        self._changed(w.key_hash)

    def _apply_transition(self, t: StateTransitioned, event: Event, chain: _ChainHead) -> None:
        state = self._state_of(t.key_hash, t.version)
        if state is None or state is not t.from_state:
            # First transition wins: an expiry racing a revoke (or a
            # re-emitted expiry after a restart) must not overwrite the
            # state the version already left; it stays in the log.
            log.info(
                "transition %s->%s of version %d ignored: version is %s",
                t.from_state.name,
                t.to_state.name,
                t.version,
                state.name if state else "unknown",
            )
            return
        # A to_state this reader does not know arrives as UNKNOWN and is
        # stored as such: never served (fail closed), never guessed.
        self._batch.transition(
            t.key_hash,
            t.version,
            t.to_state,
            at_us=event.occurred_at_us,
            reason=t.reason,
            authority=t.authority.text(),
            event_hash=chain.event_hash,
            producer_id=chain.producer_id,
            seal_seq=chain.seal_seq,
        )
        if t.to_state is not EntryState.ACTIVE and (
            self._invalidated.get(t.key_hash, -1) <= t.version
        ):
            self._invalidated.pop(t.key_hash, None)
        self._changed(t.key_hash)

    def _apply_invalidated(self, inv: Invalidated) -> None:
        if inv.mode is InvalidationMode.EAGER:
            current = self._batch.current(inv.key_hash)
            limit = inv.version if inv.version is not None else -1
            if current is not None and inv.version is None:
                limit = current.version
            # Only while that version is still active: once its
            # transition landed, the state says it (and is durable).
            if limit >= 0 and self._state_of(inv.key_hash, limit) is EntryState.ACTIVE:
                self._invalidated[inv.key_hash] = max(
                    self._invalidated.get(inv.key_hash, -1), limit
                )
        self._changed(inv.key_hash)

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

    # -- driven from outside: a replay applies verified events itself --------

    def apply_verified(self, applied: Applied) -> None:
        """Apply one event verified elsewhere (a replay's verifier) exactly as
        an event from this view's own consumer is applied."""
        self._apply(applied)

    def uncommitted(self, key_hash: bytes) -> ViewEntry | None:
        """The key's entry as applied so far, changes not yet committed included."""
        return self._batch.current(key_hash)

    def commit_with(self, meta: Mapping[str, bytes | None]) -> None:
        """Commit what was applied with extra ``meta`` rows (None deletes) in
        the same synced WriteBatch, even when no entry changed."""
        for name, value in meta.items():
            if value is None:
                self._batch.delete_meta(name)
            else:
                self._batch.put_meta(name, value)
        self._dirty = True
        self._commit()

    def _commit(self) -> None:
        positions = self._safe_offsets()
        moved = {k: v for k, v in positions.items() if self._committed.get(k, 0) != v}
        checkpoint = self.consumer.verifier.take_checkpoint()
        if not self._dirty and not moved and not checkpoint:
            return
        for (topic, partition), offset in moved.items():
            self._batch.set_offset(topic, partition, offset)
        # Same WriteBatch as the entries and offsets: after a crash at any
        # point, the checkpoint describes exactly the events the view holds.
        for name, value in checkpoint.items():
            if value is None:
                self._batch.delete_meta(name)
            else:
                self._batch.put_meta(name, value)
        self.store.commit(self._batch)
        if self._dirty:
            self._commits += 1
        self._committed.update(moved)
        self._batch = self.store.begin()
        self._dirty = False
        changed, self._changed_keys = self._changed_keys, set()
        if self._on_change:
            for key_hash in changed:
                self._on_change(key_hash)
        self._erasures_committed.extend(self._erasure_events)
        self._erasure_events = []

    def _hand_on_erasures(self) -> None:
        """Call the erasure listeners for what committed; outside the view's
        lock, so reads never wait for a listener."""
        with self._lock:
            erasures, self._erasures_committed = self._erasures_committed, []
            listeners = list(self._erasure_listeners)
        for event, identity in erasures:
            for listener in listeners:
                try:
                    listener(event, identity)
                except Exception:  # noqa: BLE001 - one listener must not stop the view
                    log.exception("erasure listener %r failed on %s", listener, event.event_id)

    def _safe_offsets(self) -> dict[tuple[str, int], int]:
        """Per partition: the next offset to read after a restart. Never past
        an event still waiting for its seal, nor a seal not yet judged.
        Control offsets record how far rejections were alerted (the control
        log itself is re-read from 0 on every start)."""
        tps = [TopicPartition(t, p) for (t, p) in (*self._parts, *self._seal_parts)]
        if self.consumer.registry_caught_up:
            tps += [TopicPartition(t, p) for (t, p) in self._control_parts]
        held = self.consumer.verifier.held_seal_offsets()
        out: dict[tuple[str, int], int] = {}
        for tp in self.consumer.consumer.position(tps):
            key = (tp.topic, tp.partition)
            part = self._parts.get(key)
            if part is not None and part.pending:
                out[key] = min(part.pending)
            elif key in held:
                out[key] = held[key]
            elif tp.offset >= 0:
                out[key] = tp.offset
        return out

    # -- health -----------------------------------------------------------

    def _eof(self) -> None:
        now = self._clock.now_us()
        changed = False
        for key, offset in list(self.consumer.eof.items()):
            part = self._parts.get(key)
            if part is not None and not part.at_eof:
                part.at_eof = True
                part.last_progress_us = now
                changed = True
                if part.target is None:
                    part.target = offset
        self.consumer.eof.clear()
        if not self._caught_up:
            for part in self._parts.values():
                # Ready means caught up: everything below the log end observed
                # at start was applied or refused, not merely read.
                if not part.reached_eof_once and part.target is not None:
                    part.reached_eof_once = part.resolved_below(part.target)
            # Once caught up, always: reached_eof_once and the registry's
            # readiness never go back.
            self._caught_up = self.consumer.registry_caught_up and all(
                p.reached_eof_once for p in self._parts.values()
            )
            changed = changed or self._caught_up
        if changed:
            self._refresh_standing()

    def _stand(self) -> ViewStanding:
        behind = [p.last_progress_us for p in self._parts.values() if not p.at_eof]
        ticks = self._ticks
        return ViewStanding(
            caught_up=self._caught_up and self.failure is None,
            discontinuity=self.discontinuity is not None,
            failed=self.failure is not None,
            ticked_through_us=min(ticks.values()) if len(ticks) >= self._tick_partitions else None,
            behind_since_us=min(behind) if behind else None,
        )

    def _refresh_standing(self) -> None:
        """Rebuild the standing from what it is made of (partitions at the
        log end, ticks, caught up, discontinuity). Called by whoever changed
        one of those, after the change: the poll thread (records, log ends,
        ticks) and whoever finds a discontinuity. The lock makes the last
        rebuild the one that read the latest values (two threads may
        rebuild at once); reads take no lock, the standing is immutable."""
        with self._standing_lock:
            self._standing = self._stand()

    def standing(self) -> ViewStanding:
        """The view's health as a read needs it: O(1), no lock (see
        :class:`~cachet.verdict.ViewStanding`; ``standing().at(now_us)`` is
        :meth:`health` at ``now_us``)."""
        return self._standing

    def health(self) -> ViewHealth:
        """What a read needs to know about this view, now."""
        return self._standing.at(self._clock.now_us())

    def catching_up(self) -> list[str]:
        """What this view still waits for before it may serve."""
        waiting = sorted(
            f"{t}[{p}]" for (t, p), part in self._parts.items() if not part.reached_eof_once
        )
        if not self.consumer.registry_caught_up:
            waiting.insert(0, "key registry (control log)")
        return waiting

    def note_invalidated(self, key_hash: bytes, version: int | None) -> None:
        """This node invalidated versions up to ``version`` (all when None) of a
        key: hide them now, until this node's own Invalidated is verified or
        the unsealed timeout passes (the same bound as any unverified one)."""
        with self._lock:
            self._unverified.own(
                key_hash, version, self._current_version(key_hash), self._clock.now_us()
            )

    def hide_early(
        self, origin: tuple[str, int, int], key_hash: bytes, version: int | None
    ) -> EarlySighting:
        """The low-latency listener read an eager Invalidated at ``origin``
        (topic, partition, offset) before this view verified it: hide what it
        names now, exactly as this view would on reading it (see
        :mod:`~cachet.materializers.unverified_invalidations`), and evict the
        key from the node's cache. Changes nothing else: no offset, chain,
        sequence or duplicate memory.

        Under the view's lock, against the view's read position: if this
        view read the record already it is refused (READ_BY_VIEW), because
        the view has applied it, refused it or holds its own marker; a marker
        added here is dropped when the view applies or refuses the record.
        """
        with self._lock:
            sighting = self._unverified.listener_sighted(
                origin, key_hash, version, self._current_version(key_hash), self._clock.now_us()
            )
        if sighting is EarlySighting.HIDDEN and self._on_change:
            self._on_change(key_hash)
        return sighting

    def unverified_invalidations(self) -> tuple[int, int]:
        """(markers held, of which sighted by the listener and not read by this
        view yet): what unverified eager invalidations cost in memory now."""
        with self._lock:
            return self._unverified.marker_count, self._unverified.early_count

    def _current_version(self, key_hash: bytes) -> int | None:
        # Holding the lock: the key's version as applied so far, uncommitted
        # changes included (what a marker may hide is what exists now).
        current = self._batch.current(key_hash)
        return None if current is None else current.version

    def _drop_provisional(self, origin: tuple[str, int, int]) -> None:
        # Called for every applied or refused event: one dict lookup, not a
        # scan of every marker.
        key_hash = self._unverified.resolve(origin)
        if key_hash is not None and self._on_change:
            self._on_change(key_hash)

    def invalidated(self, key_hash: bytes, version: int) -> bool:
        """An eager invalidation covers this version (before its transition lands)."""
        with self._lock:
            limit = self._invalidated.get(key_hash)
            if limit is not None and version <= limit:
                return True
            return self._unverified.hides(key_hash, version, self._clock.now_us())

    def pending(self, key_hash: bytes) -> bool:
        """An event for this key was read and is not applied yet (waiting for
        its seal): its current version may be about to change.

        No lock: one dict lookup is atomic, and a read that asks this has
        its entry already, so seeing the dict mid-way through an apply
        (pending dropped, store not yet changed) answers what waiting for
        the lock would have answered about that entry."""
        return key_hash in self._pending_keys

    def state_hash(self) -> bytes:
        """The committed view's state hash (see :meth:`ViewStore.state_hash`),
        recomputed only after a commit changed the view."""
        with self._lock:
            if self._state_hash is None or self._state_hash[0] != self._commits:
                self._state_hash = (self._commits, self.store.state_hash())
            return self._state_hash[1]

    def current(self, key_hash: bytes) -> ViewEntry | None:
        with self._lock:
            return self.store.current(key_hash)

    def history(self, key_hash: bytes) -> list[ViewEntry]:
        """The committed earlier versions of the key (under the view's lock,
        like every read of the store: the poll thread commits to it)."""
        with self._lock:
            return self.store.history(key_hash)

    def subject_entries(self, subject_hash: bytes, namespace: str | None = None) -> list[ViewEntry]:
        """The current version of every key of a data subject, in any state.

        From the subject index: a key is listed while any version the view
        stores of it (current or history) carries ``subject_hash``, so an
        erasure finds old ciphertexts too; the entry returned is the key's
        current version. ``namespace`` keeps only that namespace's keys.
        Committed state only (what a restart would see), in key-hash order.
        """
        with self._lock:
            entries = []
            for key_hash in self.store.keys_of_subject(subject_hash):
                entry = self.store.current(key_hash)
                if entry is not None and (namespace is None or entry.namespace == namespace):
                    entries.append(entry)
            return entries

    def add_erasure_listener(self, listener: ErasureListener) -> None:
        """Call ``listener(event, identity)`` for every verified event of the
        ``erasure`` topic this view applies from now on, with the identity
        (not the epoch) whose keys sealed it.

        Called on the thread that polls the view (a node's background
        thread), after the batch holding the event committed and outside
        the view's lock, in log order per partition; never on a read path. A listener must be quick (queue
        work for another thread); an exception it raises is logged and the
        view goes on. After a restart the view resumes from its committed
        offsets, so events committed before are not handed on again (a
        crash between the commit and the call loses the call: a listener
        that must act exactly once keeps its own record in the log).
        """
        with self._lock:
            self._erasure_listeners.append(listener)

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

    def _discontinuity(
        self,
        detail: str,
        kind: str,
        topic: str = "",
        partition: int = -1,
        expected: int = -1,
        found: int = -1,
    ) -> None:
        with self._lock:  # found on the poll thread; serving threads read it
            if self.discontinuity is not None:
                return
            self.discontinuity = detail
        self._refresh_standing()
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

    def _fail(self, exc: Exception) -> None:
        with self._lock:
            if self.failure is not None:
                return
            self.failure = (
                str(exc) if isinstance(exc, StateFailure) else f"{type(exc).__name__}: {exc}"
            )
        self._refresh_standing()
        log.error(
            "%s stopped (%s): it serves nothing until opened again",
            self.name,
            exc,
        )

    def close(self) -> None:
        """Commit what was applied and close. A poll still running on another
        thread (its owner did not stop it in time) is never cut: its batch
        may be handled only in part while the consumer's position is already
        past all of it, so nothing is committed then and the consumer is
        left to that thread; the next start re-reads from the last commit.
        Closing again does nothing."""
        if self._closed:
            return
        self._closed = True
        idle = self._polling.acquire(timeout=_CLOSE_WAIT_S)
        try:
            with self._lock:
                if idle and self.failure is None:
                    try:
                        self._commit()
                    except StateFailure as exc:
                        self._fail(exc)
            if idle:
                self.consumer.close()
            else:
                log.warning(
                    "%s: closed while a poll was still running: nothing committed now",
                    self.name,
                )
            # Under the lock like every other use of the store: closing
            # releases the GIL while it holds the database, and a read on
            # another thread at that moment would fail ("Already mutably
            # borrowed"); after it, reads fail closed (the store is closed).
            with self._lock:
                try:
                    self.store.close()
                except StateFailure as exc:  # every commit was synced already
                    self._fail(exc)
        finally:
            if idle:
                self._polling.release()

    @classmethod
    def open(cls, path: Path, **kwargs: Any) -> LiveView:
        """A view over the RocksDB store at ``path`` (created if missing);
        ``kwargs`` are the constructor's."""
        return cls(ViewStore.open(path), **kwargs)

    @classmethod
    def from_config(
        cls,
        config: CachetConfig,
        bootstrap_servers: str,
        anchor: KeySet,
        path: Path,
        *,
        alert: AlertEmitter,
        on_change: Callable[[bytes], None] | None = None,
        on_log_vanished: Callable[[], object] | None = None,
        codec: EventCodec | None = None,
        clock: Clock = SYSTEM_CLOCK,
        name: str | None = None,
    ) -> LiveView:
        """A view at ``path`` as ``config`` deploys it: its topics and their
        partition counts, the signature schemes ``[attestation]`` requires and
        its unsealed timeout, the ``[state_machine]`` history depth, the
        ``[kafka]`` view fetch wait.

        ``anchor`` is the pinned trust anchor; ``alert`` receives every
        rejection the verifier reports (usually
        :class:`~cachet.producers.sealing.LedgerAlerts`). ``name`` (default:
        the directory's name) names the consumer and its threads.
        """
        return cls.open(
            path,
            bootstrap_servers=bootstrap_servers,
            names=config.kafka.topic_names(),
            anchor=anchor,
            required=config.attestation.schemes,
            alert=alert,
            partitions={t: config.kafka.partitions_for(t) for t in Topic},
            history_depth=config.state_machine.audit_trail_depth,
            unsealed_timeout_s=config.attestation.unsealed_timeout_ms / 1000,
            on_change=on_change,
            on_log_vanished=on_log_vanished,
            clock=clock,
            codec=codec,
            name=name or path.name,
            fetch_wait_ms=config.kafka.view_fetch_wait_ms,
        )
