"""Verified events from a replay source: every seal checked as a live node does.

The checks are the live verifying consumer's, not a copy of them: records are
decoded by the same :class:`~cachet.schemas.codec.EventCodec`, key-registry
statements and schema sets on ``control`` go through
:func:`cachet.kafka.verifying.apply_registry_event` and
:func:`~cachet.kafka.verifying.learn_schema_set`, and every seal and event
through the pure :class:`~cachet.ledger.verifier.SealVerifier` (signatures of
every required scheme, root, chain, dense sequence, leaf hash, leaf topic,
duplicates, log order). What differs is only how the log is fed:

* ``control`` is read to its end first (pass one), so no seal is judged
  against a registry that has not seen a revocation already in the log (the
  live consumer holds seals until its registry caught up, for the same
  reason). Then every topic is read (pass two).
* Time does not pass while the log is read: an event waits for its seal, and
  a seal for its events, however far apart the source delivers them, so the
  outcome does not depend on how a source interleaves partitions (archive
  order, broker fetch order). What never got a seal is refused once the
  source was read to its end (unsealed), and so is a sealed leaf that never
  arrived (missing).
* With ``until_us`` (event time), each partition is read as a prefix: up to
  its first event that occurred after ``until_us`` (the *cut*); nothing at or
  behind the cut is verified or applied. Seals are read past it as far as
  needed to judge what is before it. So the verifier's state after a run
  describes exactly what was fed, and a later run can continue from it.

Refused records are reported (:class:`Refusal`, with their coordinates) and
never yielded.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from cachet.config import CachetConfig
from cachet.crypto.registry import KeyRegistry, RegistrationRejected
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.errors import CachetError
from cachet.kafka.verifying import REGISTRY_EVENTS, apply_registry_event, learn_schema_set
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import (
    Applied,
    IntegrityStatus,
    Outcome,
    Rejected,
    SealVerifier,
    VerifiedSeal,
)
from cachet.materializers.replay.source import PartitionEnd, Position, ReplaySource
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import Event, EventType
from cachet.topics import Topic, TopicNames

__all__ = [
    "REPLAYED_TOPICS",
    "Refusal",
    "RefusalReason",
    "ReplayTrust",
    "SealProof",
    "VerifiedEvent",
    "VerifiedReplay",
    "iter_verified",
]

log = logging.getLogger(__name__)

# Every topic whose records are events of their own. Seals are read as the
# proofs of the others; the dead-letter topic holds copies of bad records.
REPLAYED_TOPICS = tuple(t for t in Topic if t not in (Topic.SEALS, Topic.DEADLETTER))
# Nothing times out while a log is replayed (see the module docstring); what
# still waits when the source ends is judged at once.
_NO_TIME = 0.0
_AFTER_EVERYTHING = float("inf")


@dataclass(frozen=True, slots=True)
class ReplayTrust:
    """What a replay trusts: the pinned root anchor and the signature schemes
    every seal must carry (``[attestation] schemes``)."""

    anchor: KeySet
    required: frozenset[SignatureScheme]

    @classmethod
    def from_config(cls, config: CachetConfig, anchor: KeySet) -> ReplayTrust:
        return cls(anchor, frozenset(config.attestation.schemes))


@dataclass(frozen=True, slots=True)
class SealProof:
    """The verified seal that covers an event: who sealed it, which seal, which
    leaf; the seal's hash (its link in the producer's chain) and root.
    ``seal_offset`` is where the Seal record is on ``seals`` (-1 when the seal
    was verified by an earlier run this one continues)."""

    producer_id: str
    seal_seq: int
    leaf_index: int
    key_set_id: str
    sealed_at_us: int
    seal_hash: bytes
    merkle_root: bytes
    seal_partition: int
    seal_offset: int


@dataclass(frozen=True, slots=True)
class VerifiedEvent:
    """An event whose seal verified (or, for ``control``'s key-registry
    statements and schema sets, whose trust-anchor signatures verified:
    ``seal`` is None). ``raw`` are its exact log bytes (what the leaf hash
    covers); ``timestamp_ms`` the broker's record timestamp."""

    event: Event
    topic: str
    partition: int
    offset: int
    timestamp_ms: int
    key: bytes
    raw: bytes
    seal: SealProof | None
    # The verified seal itself (its Seal event, leaf hashes, header): what a
    # proof of inclusion is built from. None where ``seal`` is None.
    verified_seal: VerifiedSeal | None = None

    @property
    def origin(self) -> RecordOrigin:
        """The record as the verifier saw it (headers are not kept)."""
        return RecordOrigin(
            self.topic, self.partition, self.offset, self.key, self.timestamp_ms, (), self.raw
        )

    @property
    def occurred_at_us(self) -> int:
        return self.event.occurred_at_us

    @property
    def anchor_signed(self) -> bool:
        return self.seal is None


class RefusalReason(enum.StrEnum):
    """Why a record was not applied."""

    UNDECODABLE = "undecodable"  # not an event of any known schema set
    FORGED_CONTROL = "forged_control"  # a registry statement / schema set the anchor did not sign
    INTEGRITY = "integrity"  # the seal verifier refused it: see ``statuses``
    UNSEALED = "unsealed"  # no verified seal for it anywhere in what was read


@dataclass(frozen=True, slots=True)
class Refusal:
    """A record (or a seal) the replay refused, with where it is in the log."""

    reason: RefusalReason
    detail: str
    topic: str
    partition: int
    offset: int
    statuses: tuple[IntegrityStatus, ...] = ()
    producer_id: str | None = None
    seal_seq: int | None = None

    @classmethod
    def of(cls, rejected: Rejected) -> Refusal:
        o = rejected.origin
        reason = (
            RefusalReason.UNSEALED
            if rejected.status is IntegrityStatus.UNSEALED_TIMEOUT
            else RefusalReason.INTEGRITY
        )
        return cls(
            reason,
            rejected.detail,
            o.topic if o else "",
            o.partition if o else -1,
            o.offset if o else -1,
            rejected.statuses,
            rejected.producer_id,
            rejected.seal_seq,
        )


def _proof(applied: Applied) -> SealProof:
    h, ref = applied.seal.header, applied.event.seal_ref
    origin = applied.seal.origin
    return SealProof(
        h.producer_id,
        h.seal_seq,
        ref.leaf_index if ref else -1,
        h.key_set_id,
        h.sealed_at_us,
        applied.seal.seal_hash,
        h.merkle_root,
        origin.partition if origin else -1,
        origin.offset if origin else -1,
    )


def _verified(
    event: Event, o: RecordOrigin, seal: SealProof | None, verified: VerifiedSeal | None = None
) -> VerifiedEvent:
    return VerifiedEvent(
        event, o.topic, o.partition, o.offset, o.timestamp_ms, o.key or b"", o.raw, seal, verified
    )


@dataclass
class VerifiedReplay:
    """One verified read of a source; iterate :meth:`events`.

    ``checkpoint`` and ``start`` resume an earlier run (its verifier state
    and where each partition stood; see :meth:`positions`). ``until_us`` cuts
    every partition at its first event after that event time. After
    :meth:`events` is exhausted: ``refused`` lists every refusal, ``cut`` the
    partitions cut (at which offset), ``exhausted`` whether the source was
    read to its end.
    """

    source: ReplaySource
    trust: ReplayTrust
    until_us: int | None = None
    codec: EventCodec = field(default_factory=EventCodec)
    checkpoint: VerifierCheckpoint | None = None
    start: Position | None = None
    stop: Position | None = None
    until_margin_ms: int = 600_000
    on_refused: Callable[[Refusal], None] | None = None
    # Called after each record read in pass two, once every event it released
    # was taken from :meth:`events`: a point where :meth:`positions` and the
    # verifier's checkpoint describe exactly what was yielded.
    on_record_done: Callable[[], None] | None = None
    refused: list[Refusal] = field(default_factory=list)
    cut: dict[tuple[str, int], int] = field(default_factory=dict)
    exhausted: bool = False
    read_count: int = 0

    def __post_init__(self) -> None:
        names: TopicNames = self.source.names
        self.registry = KeyRegistry(self.trust.anchor, self.trust.required)
        self.verifier = SealVerifier(
            self.registry,
            self.trust.required,
            {t.value for t in REPLAYED_TOPICS},
            topic_prefix=names.prefix,
            registry_ready=False,
        )
        self._control = names(Topic.CONTROL)
        self._seals = names(Topic.SEALS)
        self._topics = [names(t) for t in (*REPLAYED_TOPICS, Topic.SEALS)]
        self._next: dict[tuple[str, int], int] = dict(self.start or {})
        self._ended: set[tuple[str, int]] = set()

    # -- the stream ---------------------------------------------------------

    def events(self) -> Iterator[VerifiedEvent]:
        """Every verified event, in the order the verifier released it (log
        order within each partition)."""
        yield from self._learn_control()
        if self.checkpoint is not None:
            # After pass one: the codec now knows every announced schema set,
            # so the open seals the checkpoint kept decode whatever set wrote them.
            self.verifier.restore(self.checkpoint, self.codec.decode, _NO_TIME)
        for outcome in self.verifier.on_registry_caught_up(_NO_TIME):
            yield from self._outcome(outcome)
        until_ms = None if self.until_us is None else self.until_us // 1000 + self.until_margin_ms
        expected = self._expected_partitions()
        stopped = False
        for item in self.source.read(
            topics=self._topics, start=self.start, stop=self.stop, until_ms=until_ms
        ):
            if isinstance(item, PartitionEnd):
                self._ended.add((item.topic, item.partition))
            else:
                yield from self._record(item)
                if self.on_record_done is not None:
                    self.on_record_done()
            if expected is not None and self._all_judged(expected):
                stopped = True
                break
        self.exhausted = not stopped
        yield from self._finish()

    def _expected_partitions(self) -> frozenset[tuple[str, int]] | None:
        """With a cut: the partitions that must each be cut or ended before the
        read may stop early (seals are read only as far as they are needed)."""
        if self.until_us is None:
            return None
        return frozenset(k for k in self.source.partitions() if k[0] != self._seals)

    def _all_judged(self, expected: frozenset[tuple[str, int]]) -> bool:
        if self.verifier.waiting_count:
            return False
        return all(k in self.cut or k in self._ended for k in expected)

    def _learn_control(self) -> Iterator[VerifiedEvent]:
        """Pass one: the key registry and the schema sets, from ``control``'s start."""
        for item in self.source.control_records():
            try:
                event = self.codec.decode(item.raw)
            except DecodeError:
                continue  # refused in pass two, with every other record
            if event.type not in (*REGISTRY_EVENTS, EventType.SCHEMA_SET_PUBLISHED):
                continue
            try:
                if event.type is EventType.SCHEMA_SET_PUBLISHED:
                    learn_schema_set(self.registry, self.codec, event.payload)
                else:
                    apply_registry_event(self.registry, event)
            except (RegistrationRejected, CachetError, ValueError) as exc:
                self._refuse(
                    Refusal(
                        RefusalReason.FORGED_CONTROL,
                        f"forged or invalid {event.type.value}: {exc}",
                        item.topic,
                        item.partition,
                        item.offset,
                        (IntegrityStatus.UNKNOWN_KEY,),
                        event.payload.get("producer_id"),
                    )
                )
                continue
            if self._before_cut(event) and item.offset >= self._next.get(
                (item.topic, item.partition), 0
            ):
                yield _verified(event, item, None)

    def _before_cut(self, event: Event) -> bool:
        return self.until_us is None or event.occurred_at_us <= self.until_us

    def _record(self, origin: RecordOrigin) -> Iterator[VerifiedEvent]:
        part = (origin.topic, origin.partition)
        if part in self.cut:
            return  # behind the cut: neither verified nor applied
        self.read_count += 1
        try:
            event = self.codec.decode(origin.raw)
        except DecodeError as exc:
            self._next[part] = origin.offset + 1
            self._refuse(
                Refusal(
                    RefusalReason.UNDECODABLE,
                    str(exc),
                    origin.topic,
                    origin.partition,
                    origin.offset,
                )
            )
            return
        if origin.topic == self._seals:
            self._next[part] = origin.offset + 1
            for outcome in self.verifier.on_seal(event, origin, _NO_TIME):
                yield from self._outcome(outcome)
            return
        if not self._before_cut(event):
            self.cut[part] = origin.offset
            return
        self._next[part] = origin.offset + 1
        if origin.topic == self._control and event.type in (
            *REGISTRY_EVENTS,
            EventType.SCHEMA_SET_PUBLISHED,
        ):
            return  # judged in pass one (and yielded there when trusted)
        for outcome in self.verifier.on_event(event, origin, _NO_TIME):
            yield from self._outcome(outcome)

    def _outcome(self, outcome: Outcome) -> Iterator[VerifiedEvent]:
        if isinstance(outcome, Applied):
            yield _verified(outcome.event, outcome.origin, _proof(outcome), outcome.seal)
        else:
            self._refuse(Refusal.of(outcome))

    def _refuse(self, refusal: Refusal) -> None:
        self.refused.append(refusal)
        if self.on_refused is not None:
            self.on_refused(refusal)

    def _finish(self) -> Iterator[VerifiedEvent]:
        if self.until_us is None and self.exhausted:
            # The whole log was read: what still waits never got a seal, a
            # sealed leaf still expected never arrived.
            for outcome in self.verifier.expire(_AFTER_EVERYTHING):
                yield from self._outcome(outcome)
            return
        # A cut read: what waits stays where it is (it holds back its
        # partition, as on a live node) and is reported, not judged, so a
        # later run continues from exactly this state.
        for event, origin in self.verifier.waiting():
            if self.exhausted:
                self._refuse(
                    Refusal(
                        RefusalReason.UNSEALED,
                        f"no verified seal for producer seq {event.producer_seq} of "
                        f"{event.producer_id} in the source",
                        origin.topic,
                        origin.partition,
                        origin.offset,
                        (IntegrityStatus.UNSEALED_TIMEOUT,),
                        event.producer_id,
                        event.seal_ref.seal_seq if event.seal_ref else None,
                    )
                )

    # -- where it stands ------------------------------------------------------

    def positions(self) -> dict[tuple[str, int], int]:
        """Per partition, the next offset a continuing run must read: never
        past an event still waiting for its seal, nor a seal not judged yet,
        nor a cut."""
        out = dict(self._next)
        for _, origin in self.verifier.waiting():
            key = (origin.topic, origin.partition)
            out[key] = min(out.get(key, origin.offset), origin.offset)
        for key, offset in self.verifier.held_seal_offsets().items():
            out[key] = min(out.get(key, offset), offset)
        for key, offset in self.cut.items():
            out[key] = min(out.get(key, offset), offset)
        return out


def iter_verified(
    source: ReplaySource,
    *,
    trust: ReplayTrust,
    until_us: int | None = None,
    on_refused: Callable[[Refusal], None] | None = None,
) -> Iterator[VerifiedEvent]:
    """Every event of ``source`` a verified seal covers (or, for the key
    registry and schema sets, the trust anchor signed), in log order within
    each partition; with ``until_us``, only what occurred up to that event
    time (each partition up to its cut). Every refusal goes to
    ``on_refused`` and is never yielded."""
    return VerifiedReplay(source, trust, until_us=until_us, on_refused=on_refused).events()
