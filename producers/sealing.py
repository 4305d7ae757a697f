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
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Message, Producer

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.seal import (
    PrivateKeySet,
    SealHeader,
    leaf_topics_digest,
    seal_hash,
    sign_header,
)
from cachet.errors import CachetError
from cachet.ledger.identity import GENESIS_SEAL_HASH, epoch_producer_id
from cachet.topics import TOPIC_OF_EVENT, Topic, TopicNames
from schemas.codec import EventCodec
from schemas.events import Event, EventType, SealRef, new_event, uuid7

__all__ = ["SealingProducer", "SealingSettings", "SealingError", "SealRecord"]

log = logging.getLogger(__name__)


def _now_us() -> int:
    return time.time_ns() // 1000


class SealingError(CachetError):
    """The sealing producer is closed or its signer failed."""


class _DeliveryFailed(SealingError):
    """Events of a batch were not acknowledged: the batch cannot be sealed."""


@dataclass(frozen=True, slots=True)
class SealingSettings:
    batch_max_events: int = 256
    batch_max_ms: int = 50


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


@dataclass(frozen=True, slots=True)
class SealRecord:
    """A seal this producer produced (for benchmarks, tests and CAB export)."""

    seal: Event
    leaf_count: int
    closed_at: float
    sealed_at: float


class SealingProducer:
    """Emits events into the signed ledger under one producer identity."""

    def __init__(
        self,
        producer: Producer,
        codec: EventCodec,
        names: TopicNames,
        identity: str,
        key_set: PrivateKeySet,
        settings: SealingSettings = SealingSettings(),
        *,
        clock_us: Callable[[], int] = _now_us,
        epoch: str | None = None,
        on_seal: Callable[[SealRecord], None] | None = None,
        producer_factory: Callable[[], Producer] | None = None,
    ) -> None:
        self._producer = producer
        self._factory = producer_factory
        self._identity = identity
        self._codec = codec
        self._names = names
        self._key_set = key_set
        self._settings = settings
        self._clock_us = clock_us
        self._on_seal = on_seal
        self.producer_id = epoch_producer_id(identity, epoch or uuid7().replace("-", "")[:16])
        self._lock = threading.Condition()
        self._next_seq = 0
        self._next_seal = 0
        self._open: _Batch | None = None
        self._closed: queue.Queue[_Batch | None] = queue.Queue()
        self._prev_hash = GENESIS_SEAL_HASH
        self._pending_seals = 0
        self._error: BaseException | None = None
        self._closing = False
        self._signer = threading.Thread(target=self._sign_loop, name="cachet-signer", daemon=True)
        self._ticker = threading.Thread(
            target=self._tick_loop, name="cachet-seal-window", daemon=True
        )
        self._signer.start()
        self._ticker.start()

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
        """Produce one event; it will be covered by this producer's next seal."""
        if event_type is EventType.SEAL:
            raise SealingError("Seal events are produced by the signer, not emitted")
        topic = topic or TOPIC_OF_EVENT[event_type]
        with self._lock:
            self._raise_if_failed()
            batch = self._open
            if batch is None:
                batch = self._open = _Batch(
                    self.producer_id, self._next_seal, self._next_seq, time.monotonic()
                )
                self._next_seal += 1
            seq = self._next_seq
            self._next_seq += 1
            event = new_event(
                event_type,
                payload,
                producer_id=self.producer_id,
                producer_seq=seq,
                occurred_at_us=occurred_at_us if occurred_at_us is not None else self._clock_us(),
                seal_ref=SealRef(batch.seal_seq, seq - batch.first_producer_seq),
            )
            data = self._codec.encode(event)
            batch.leaf_hashes.append(leaf_hash(data))
            batch.leaf_topics.append(topic.value)
            kwargs: dict[str, Any] = {"key": key, "value": data, "headers": list(headers or ())}
            if partition is not None:
                kwargs["partition"] = partition
            client = self._producer
            try:
                client.produce(
                    self._names(topic), on_delivery=self._delivery_callback(batch), **kwargs
                )
            except KafkaException as exc:
                # Nothing was produced: take the event back out of the batch.
                batch.leaf_hashes.pop()
                batch.leaf_topics.pop()
                self._next_seq -= 1
                fatal = bool(exc.args) and exc.args[0].fatal()
                if self._factory is not None and fatal and client is self._producer:
                    log.error(
                        "%s: fatal client error (%s); starting a new epoch", self.producer_id, exc
                    )
                    self.new_epoch()
                raise SealingError(f"{self.producer_id}: event not produced: {exc}") from exc
            if len(batch.leaf_hashes) >= self._settings.batch_max_events:
                self._close_open_batch()
        self._producer.poll(0)
        return event

    def _delivery_callback(self, batch: _Batch) -> Callable[[KafkaError | None, Message], None]:
        def delivered(err: KafkaError | None, msg: Message) -> None:
            with self._lock:
                if err is not None:
                    batch.failed.append(str(err))
                else:
                    batch.acked += 1
                self._lock.notify_all()

        return delivered

    def _close_open_batch(self) -> None:
        # Caller holds the lock.
        if self._open is not None and self._open.leaf_hashes:
            self._pending_seals += 1
            self._closed.put(self._open)
        self._open = None

    # -- sealing, off the caller's thread --------------------------------

    def _tick_loop(self) -> None:
        window_s = self._settings.batch_max_ms / 1000
        while True:
            with self._lock:
                if self._closing:
                    return
                b = self._open
                if b is not None and time.monotonic() - b.opened_at >= window_s:
                    self._close_open_batch()
                self._lock.wait(min(window_s / 4, 0.05))

    def _sign_loop(self) -> None:
        while True:
            batch = self._closed.get()
            if batch is None:
                return
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
                    self.new_epoch()
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
        closed_at = time.monotonic()
        header = SealHeader(
            producer_id=batch.epoch,
            seal_seq=batch.seal_seq,
            tree_size=len(batch.leaf_hashes),
            first_producer_seq=batch.first_producer_seq,
            merkle_root=root_from_leaf_hashes(batch.leaf_hashes),
            prev_seal_hash=self._prev_hash,
            key_set_id=self._key_set.key_set_id,
            sealed_at_us=self._clock_us(),
            leaf_topics_digest=leaf_topics_digest(batch.leaf_topics),
        )
        signatures = sign_header(header, self._key_set)
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
        )
        # Keyed by producer id: one partition per producer keeps its chain in order.
        self._producer.produce(
            self._names(Topic.SEALS), key=batch.epoch.encode(), value=self._codec.encode(seal)
        )
        with self._lock:
            if batch.epoch == self.producer_id:  # a new epoch restarts the chain
                self._prev_hash = seal_hash(header, signatures)
        if self._on_seal:
            self._on_seal(SealRecord(seal, len(batch.leaf_hashes), closed_at, time.monotonic()))

    # -- lifecycle --------------------------------------------------------

    def _raise_if_failed(self) -> None:
        if self._error is not None:
            raise SealingError(f"sealing producer {self.producer_id} failed: {self._error}")
        if self._closing:
            raise SealingError(f"sealing producer {self.producer_id} is closed")

    def new_epoch(self) -> str:
        """Start a new chain under a fresh client session (the broker lost or
        refused the old one). Events not yet sealed stay unsealed."""
        if self._factory is None:
            raise SealingError(f"{self.producer_id}: no producer factory to start a new epoch")
        with self._lock:
            old = self._producer
            self._producer = self._factory()
            self.producer_id = epoch_producer_id(self._identity, uuid7().replace("-", "")[:16])
            self._next_seq = 0
            self._next_seal = 0
            self._prev_hash = GENESIS_SEAL_HASH
            self._error = None
            if self._open is not None:
                self._open = None  # its events were produced under the old epoch
        old.purge()
        old.poll(0)  # deliver the purge callbacks of the abandoned epoch's events
        log.warning("sealing producer %s: new epoch %s", self._identity, self.producer_id)
        return self.producer_id

    def acknowledge(self, timeout_s: float = 10.0) -> None:
        """Wait until the broker acknowledged every event emitted so far
        (their seals may still be on the way)."""
        if self._producer.flush(timeout_s) != 0:
            raise SealingError(
                f"{self.producer_id}: broker did not acknowledge within {timeout_s}s"
            )

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
