"""The seal verifier: decides, for every event, whether it may be applied.

Pure state machine, no Kafka: the verifying consumer feeds it seals, key
registry events and data events (with their exact log bytes) and acts on the
outcomes. An event is applied only when a verified seal covers it; each
further event of a verified seal costs one leaf hash.

Every check runs every time (a verifier that skips a check is a security
bug). What is checked:

* seal: registered, unrevoked key set at ``sealed_at``; every required
  signature; root recomputed from the leaf hashes; tree size; the per-
  producer hash chain (``prev_seal_hash``) and dense seal sequence numbers;
  the signed digest of the leaves' topics.
* event: a seal reference; its leaf hash equals the seal's leaf; its
  producer sequence number is the one the leaf position implies; the seal
  sealed it for the topic it was found on; it was not applied before
  (duplicates); producer sequence numbers of one producer increase within a
  partition (reordering); offsets never go back.
* completeness: every leaf of a verified seal that belongs to a topic this
  verifier reads must arrive within the timeout (dropped events).

Three invariants hold the rest together (each broke once; each has a test):

* Verify before you remember. Nothing this verifier keeps (chain heads,
  duplicate memory, log-order positions) changes because of a record whose
  seal has not verified. A forged record costs the work to reject it and
  one alert: it can neither claim a sequence number nor block a real one.
* Log order. Events are released in log order per partition: an event
  waiting for its seal holds back the events behind it in its partition, so
  a live view, a restarted one and one rebuilt from offset 0 apply the same
  events in the same order and reach the same state.
* Durable replay protection. Per producer epoch the chain head and the
  seals still open are the whole duplicate memory (a seal at or below the
  head that is not open is closed: a record naming it is a replay). It is
  small, bounded by what is open, and checkpointed with the view
  (:mod:`cachet.ledger.checkpoint`), so a genuine record re-produced after
  any number of restarts is refused, and a clean restart re-reads nothing.
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections import OrderedDict, deque
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field

from cachet.crypto.merkle import leaf_hash
from cachet.crypto.registry import KeyRegistry, KeyStatus
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    NoteFormatError,
    SchemeStatus,
    SealFailure,
    SealHeader,
    SignatureLine,
    leaf_topics_digest,
    seal_hash,
    verify_seal_batch,
)
from cachet.ledger.checkpoint import (
    CHAINS_ROW,
    ORDER_ROW,
    OpenSealRow,
    VerifierCheckpoint,
    encode_chains,
    encode_order,
    open_row_name,
)
from cachet.ledger.identity import GENESIS_SEAL_HASH, ProducerIdError, identity_of
from cachet.ledger.record import RecordOrigin
from cachet.schemas.events import Event, EventType

__all__ = [
    "Applied",
    "IntegrityStatus",
    "Outcome",
    "Rejected",
    "SealVerifier",
    "VerifiedSeal",
]

log = logging.getLogger(__name__)


class IntegrityStatus(enum.StrEnum):
    """Why an event or a seal was not applied. Values appear in alerts."""

    SIGNATURE_INVALID_ML_DSA_65 = "signature_invalid.ml-dsa-65"
    SIGNATURE_INVALID_FN_DSA_512 = "signature_invalid.fn-dsa-512"
    SIGNATURE_INVALID_SLH_DSA_SHA2_128F = "signature_invalid.slh-dsa-sha2-128f"
    SIGNATURE_MISSING = "signature_missing"
    SEAL_MALFORMED = "seal_malformed"
    ROOT_MISMATCH = "root_mismatch"
    UNKNOWN_KEY = "unknown_key"
    REVOKED_KEY = "revoked_key"
    RETIRED_KEY = "retired_key"
    CHAIN_BROKEN = "chain_broken"
    SEQUENCE_GAP = "sequence_gap"
    SEAL_REPLAYED = "seal_replayed"
    NOT_SEALED = "not_sealed"
    UNSEALED_TIMEOUT = "unsealed_timeout"
    LEAF_MISMATCH = "leaf_mismatch"
    DUPLICATE_EVENT = "duplicate_event"
    EVENT_REORDERED = "event_reordered"
    EVENT_MISSING = "event_missing"
    OFFSET_REGRESSED = "offset_regressed"

    @property
    def is_discontinuity(self) -> bool:
        """Alerted as LogDiscontinuity (the log itself lost or reordered something)."""
        return self in _DISCONTINUITIES


_DISCONTINUITIES = frozenset(
    {
        IntegrityStatus.CHAIN_BROKEN,
        IntegrityStatus.SEQUENCE_GAP,
        IntegrityStatus.EVENT_MISSING,
        IntegrityStatus.OFFSET_REGRESSED,
        IntegrityStatus.EVENT_REORDERED,
    }
)

# Failures already reported per scheme (signature_invalid.<scheme>, signature_missing).
_PER_SCHEME_FAILURES = frozenset(
    {
        SealFailure.MISSING_SIGNATURE,
        SealFailure.DUPLICATE_SIGNATURE,
        SealFailure.UNKNOWN_KEY_ID,
        SealFailure.INVALID_SIGNATURE,
    }
)

_INVALID_BY_SCHEME = {
    SignatureScheme.ML_DSA_65: IntegrityStatus.SIGNATURE_INVALID_ML_DSA_65,
    SignatureScheme.FN_DSA_512: IntegrityStatus.SIGNATURE_INVALID_FN_DSA_512,
    SignatureScheme.SLH_DSA_SHA2_128F: IntegrityStatus.SIGNATURE_INVALID_SLH_DSA_SHA2_128F,
}


@dataclass(frozen=True, slots=True)
class Applied:
    """A verified event: apply it."""

    event: Event
    origin: RecordOrigin
    seal: VerifiedSeal


@dataclass(frozen=True, slots=True)
class Rejected:
    """Not applied, ever. ``statuses`` lists every failed check (first = main)."""

    statuses: tuple[IntegrityStatus, ...]
    detail: str
    producer_id: str | None = None
    seal_seq: int | None = None
    producer_seq: int | None = None
    origin: RecordOrigin | None = None

    @property
    def status(self) -> IntegrityStatus:
        return self.statuses[0]


Outcome = Applied | Rejected


@dataclass(frozen=True, slots=True)
class VerifiedSeal:
    """A seal whose every check passed; cached so events cost one leaf hash."""

    header: SealHeader
    leaf_hashes: tuple[bytes, ...]
    leaf_topics: tuple[str, ...]
    seal_hash: bytes
    event: Event
    origin: RecordOrigin | None


@dataclass(slots=True)
class _Queued:
    """An event read from the log, not yet released (waiting for its seal).

    ``since`` is when its wait started to count: not before the seals read
    so far reached the log end (None until then), so a node catching up on
    a long log never times out an event whose seal it simply has not read.
    """

    event: Event
    origin: RecordOrigin
    since: float | None


@dataclass(slots=True)
class _OpenSeal:
    """A verified seal with leaves on our topics still expected."""

    seal: VerifiedSeal
    expected: set[int]
    # When waiting for its leaves started to count: not before the data read
    # so far reached the log end (None until then), for the same reason.
    verified_at: float | None
    # A seal that does not list its leaves' topics cannot say which leaves
    # must come here: its leaves are accepted, none is reported missing.
    alert_missing: bool = True


@dataclass(slots=True)
class _Chain:
    last_seq: int = -1
    last_hash: bytes = GENESIS_SEAL_HASH


def _header_of(payload: Mapping[str, object]) -> SealHeader:
    p = payload
    return SealHeader(
        producer_id=p["producer_id"],  # type: ignore[arg-type]
        seal_seq=p["seal_seq"],  # type: ignore[arg-type]
        tree_size=p["tree_size"],  # type: ignore[arg-type]
        first_producer_seq=p["first_producer_seq"],  # type: ignore[arg-type]
        merkle_root=p["merkle_root"],  # type: ignore[arg-type]
        prev_seal_hash=p["prev_seal_hash"],  # type: ignore[arg-type]
        key_set_id=p["key_set_id"],  # type: ignore[arg-type]
        sealed_at_us=p["sealed_at_us"],  # type: ignore[arg-type]
        leaf_topics_digest=leaf_topics_digest(p.get("leaf_topics") or []),  # type: ignore[arg-type]
    )


def _signature_lines(payload: Mapping[str, object]) -> tuple[SignatureLine, ...]:
    return tuple(
        SignatureLine(s["algorithm"], s["key_id"], s["signature"])
        for s in payload["signatures"]  # type: ignore[attr-defined]
    )


@dataclass
class SealVerifier:
    """Verifies seals and events; see the module docstring for every check.

    ``topics`` are the topic suffixes (``Topic.value``) whose events this
    verifier is fed: only their leaves are expected to arrive.
    ``topic_prefix`` is the deployment's topic prefix: with it, the verifier
    also checks that each event was found on the topic its seal names.

    ``registry_ready`` starts False in a consumer that replays the control
    topic first: seals are held (not judged) until the key registry has
    caught up, so a seal is never checked against a registry that has not
    yet seen a revocation or rotation already in the log.

    ``seals_current`` / ``data_current``: whether the seals (data) read so
    far reached the log end. Timeouts count only from such a moment: an
    event waits for its seal, and a seal for its events, as long as the
    other side of the log has not been read up to now. A consumer clears
    them on every record it reads and reports each return to the log end
    (:meth:`on_seals_caught_up`, :meth:`on_data_caught_up`); a pure verifier
    fed in order leaves them True.
    """

    registry: KeyRegistry
    required: Collection[SignatureScheme]
    topics: Collection[str]
    unsealed_timeout_s: float = 5.0
    max_cached_seals: int = 100_000
    topic_prefix: str | None = None
    registry_ready: bool = True
    seals_current: bool = True
    data_current: bool = True
    _chains: dict[str, _Chain] = field(default_factory=dict)
    _seals: OrderedDict[tuple[str, int], VerifiedSeal] = field(default_factory=OrderedDict)
    _open: dict[tuple[str, int], _OpenSeal] = field(default_factory=dict)
    _queues: dict[tuple[str, int], deque[_Queued]] = field(default_factory=dict)
    _parked: list[tuple[Event, RecordOrigin | None, float]] = field(default_factory=list)
    _held: list[tuple[Event, RecordOrigin | None]] = field(default_factory=list)
    _order: dict[tuple[str, int, str], int] = field(default_factory=dict)
    _last_offset: dict[tuple[str, int], int] = field(default_factory=dict)
    # What changed since the last checkpoint was taken.
    _dirty_chains: bool = False
    _dirty_order: bool = False
    _dirty_open: set[tuple[str, int]] = field(default_factory=set)
    _raw_of: dict[tuple[str, int], bytes] = field(default_factory=dict)

    # -- seals ------------------------------------------------------------

    def on_seal(self, seal: Event, origin: RecordOrigin | None, now: float) -> list[Outcome]:
        """Verify a Seal event; on success, release the events waiting for it."""
        if not self.registry_ready:
            self._held.append((seal, origin))
            return []
        p = seal.payload
        try:
            header = _header_of(p)
            identity = identity_of(header.producer_id)
            signatures = _signature_lines(p)
        except (NoteFormatError, ProducerIdError, ValueError, KeyError, TypeError) as exc:
            return [self._reject_seal(seal, origin, (IntegrityStatus.SEAL_MALFORMED,), str(exc))]
        if header.producer_id != seal.producer_id:
            return [
                self._reject_seal(
                    seal,
                    origin,
                    (IntegrityStatus.SEAL_MALFORMED,),
                    "envelope producer id differs from the sealed one",
                )
            ]
        lookup = self.registry.lookup(identity, header.key_set_id, header.sealed_at_us)
        if lookup.status in (KeyStatus.UNKNOWN_PRODUCER, KeyStatus.UNKNOWN_KEY_SET):
            # The registration may still be on its way on the control topic.
            self._parked.append((seal, origin, now))
            return []
        if lookup.status is not KeyStatus.VALID or lookup.key_set is None:
            status = {
                KeyStatus.REVOKED: IntegrityStatus.REVOKED_KEY,
                KeyStatus.RETIRED: IntegrityStatus.RETIRED_KEY,
            }.get(lookup.status, IntegrityStatus.UNKNOWN_KEY)
            return [
                self._reject_seal(
                    seal, origin, (status,), f"key set {header.key_set_id}: {lookup.status.value}"
                )
            ]
        verdict = verify_seal_batch(
            header,
            signatures,
            p["leaf_hashes"],
            lookup.key_set,
            self.required,
            leaf_topics=p.get("leaf_topics", []),
        )
        statuses = list(self._statuses_of(verdict.statuses, verdict.failures))
        # Read the chain without creating it: a seal that fails must leave no trace.
        chain = self._chains.get(header.producer_id, _Chain())
        if header.seal_seq <= chain.last_seq:
            statuses.append(IntegrityStatus.SEAL_REPLAYED)
        elif header.seal_seq > chain.last_seq + 1:
            statuses.append(IntegrityStatus.SEQUENCE_GAP)
        elif not hmac.compare_digest(header.prev_seal_hash, chain.last_hash):
            statuses.append(IntegrityStatus.CHAIN_BROKEN)
        if statuses:
            return [
                self._reject_seal(
                    seal,
                    origin,
                    tuple(statuses),
                    f"seal {header.seal_seq} of {header.producer_id} refused",
                )
            ]
        # Verified: only now does anything about this producer change.
        verified = VerifiedSeal(
            header,
            tuple(p["leaf_hashes"]),
            tuple(p.get("leaf_topics") or ()),
            seal_hash(header, signatures),
            seal,
            origin,
        )
        self._chains[header.producer_id] = _Chain(header.seal_seq, verified.seal_hash)
        self._dirty_chains = True
        self._remember_seal(verified, origin.raw if origin else b"", now)
        return self._release(now)

    def _remember_seal(self, verified: VerifiedSeal, raw: bytes, now: float) -> None:
        h = verified.header
        key = (h.producer_id, h.seal_seq)
        self._seals[key] = verified
        while len(self._seals) > self.max_cached_seals:
            self._seals.popitem(last=False)
        if verified.leaf_topics:
            expected = {i for i, t in enumerate(verified.leaf_topics) if t in self.topics}
            alert_missing = True
        else:
            expected, alert_missing = set(range(h.tree_size)), False
        if expected:
            since = now if self.data_current else None
            self._open[key] = _OpenSeal(verified, expected, since, alert_missing)
            self._raw_of[key] = raw
            self._dirty_open.add(key)

    @staticmethod
    def _statuses_of(schemes, failures: Iterable[SealFailure]) -> Iterable[IntegrityStatus]:
        for scheme, status in schemes.items():
            if status is SchemeStatus.INVALID_SIGNATURE:
                yield _INVALID_BY_SCHEME[scheme]
            elif status is not SchemeStatus.VALID:
                yield IntegrityStatus.SIGNATURE_MISSING
        for failure in failures:
            if failure in (
                SealFailure.ROOT_MISMATCH,
                SealFailure.SIZE_MISMATCH,
                SealFailure.TOPICS_MISMATCH,
            ):
                yield IntegrityStatus.ROOT_MISMATCH
            elif failure is SealFailure.KEY_SET_MISMATCH:
                yield IntegrityStatus.UNKNOWN_KEY
            elif failure not in _PER_SCHEME_FAILURES:
                yield IntegrityStatus.SEAL_MALFORMED  # a failure this mapping does not know

    def _reject_seal(
        self,
        seal: Event,
        origin: RecordOrigin | None,
        statuses: tuple[IntegrityStatus, ...],
        detail: str,
    ) -> Rejected:
        seal_seq = seal.payload.get("seal_seq") if isinstance(seal.payload, dict) else None
        log.warning("seal refused: %s (%s)", [s.value for s in statuses], detail)
        return Rejected(
            tuple(dict.fromkeys(statuses)), detail, seal.producer_id, seal_seq, None, origin
        )

    def on_registry_change(self, now: float) -> list[Outcome]:
        """Retry seals parked for an unknown key after the registry changed."""
        if not self.registry_ready:
            return []
        parked, self._parked = self._parked, []
        outcomes: list[Outcome] = []
        for seal, origin, since in parked:
            before = len(self._parked)
            outcomes.extend(self.on_seal(seal, origin, now))
            if len(self._parked) > before:  # parked again: keep its original time
                self._parked[-1] = (seal, origin, since)
        return outcomes

    def on_registry_caught_up(self, now: float) -> list[Outcome]:
        """The registry has read the control log to its end: judge held seals."""
        if self.registry_ready:
            return []
        self.registry_ready = True
        # Events that arrived while seals were held get their full timeout now.
        for queue in self._queues.values():
            for q in queue:
                q.since = now if self.seals_current else None
        held, self._held = self._held, []
        outcomes: list[Outcome] = []
        for seal, origin in held:
            outcomes.extend(self.on_seal(seal, origin, now))
        return outcomes

    def on_seals_caught_up(self, now: float) -> None:
        """Every seals partition reached its end: waiting events start to count."""
        self.seals_current = True
        for queue in self._queues.values():
            for q in queue:
                if q.since is None:
                    q.since = now

    def on_data_caught_up(self, now: float) -> None:
        """Every data partition reached its end: open seals start to count."""
        self.data_current = True
        for cov in self._open.values():
            if cov.verified_at is None:
                cov.verified_at = now

    def held_seal_offsets(self) -> dict[tuple[str, int], int]:
        """Per seals partition, the lowest offset of a seal not judged yet."""
        out: dict[tuple[str, int], int] = {}
        origins = [o for _, o, _ in self._parked] + [o for _, o in self._held]
        for origin in origins:
            if origin is not None:
                part = (origin.topic, origin.partition)
                out[part] = min(out.get(part, origin.offset), origin.offset)
        return out

    # -- events -----------------------------------------------------------

    def on_event(self, event: Event, origin: RecordOrigin, now: float) -> list[Outcome]:
        """An event read from the log; ``origin.raw`` are its exact bytes.

        Returns what can be decided now, in log order: this event and any
        behind it in its partition once nothing ahead of them waits.
        """
        part = (origin.topic, origin.partition)
        last = self._last_offset.get(part, -1)
        if origin.offset <= last:
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.OFFSET_REGRESSED,
                    f"offset {origin.offset} after {last}",
                )
            ]
        self._last_offset[part] = origin.offset
        since = now if self.seals_current else None
        self._queues.setdefault(part, deque()).append(_Queued(event, origin, since))
        return self._drain(part)

    def _drain(self, part: tuple[str, int]) -> list[Outcome]:
        queue = self._queues.get(part)
        out: list[Outcome] = []
        while queue:
            decided = self._decide(queue[0])
            if decided is None:
                break  # the head waits for its seal, and holds back the rest
            queue.popleft()
            out.append(decided)
        return out

    def _release(self, now: float) -> list[Outcome]:
        out: list[Outcome] = []
        for part in list(self._queues):
            out.extend(self._drain(part))
        return out

    def _decide(self, q: _Queued) -> Outcome | None:
        """Applied or Rejected, or None while the event's seal may still come."""
        event, origin = q.event, q.origin
        ref = event.seal_ref
        if ref is None:
            return self._reject_event(
                event, origin, IntegrityStatus.NOT_SEALED, "event carries no seal reference"
            )
        key = (event.producer_id, ref.seal_seq)
        chain = self._chains.get(event.producer_id)
        if chain is None or ref.seal_seq > chain.last_seq:
            return None
        open_seal = self._open.get(key)
        seal = open_seal.seal if open_seal else self._seals.get(key)
        if seal is None:
            # Verified earlier and closed: each of its leaves on our topics was
            # applied or reported missing. A record naming it is a replay.
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.DUPLICATE_EVENT,
                f"seal {ref.seal_seq} of {event.producer_id} is closed: "
                f"producer seq {event.producer_seq} was applied or reported before",
            )
        return self._check_event(event, origin, seal, open_seal)

    def _check_event(
        self,
        event: Event,
        origin: RecordOrigin,
        seal: VerifiedSeal,
        open_seal: _OpenSeal | None,
    ) -> Outcome:
        ref = event.seal_ref
        assert ref is not None
        index = ref.leaf_index
        h = seal.header
        if not (0 <= index < h.tree_size) or event.producer_seq != h.first_producer_seq + index:
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.LEAF_MISMATCH,
                f"leaf {index} / seq {event.producer_seq} not in seal {h.seal_seq}",
            )
        # The one per-event cost once the seal is verified: one leaf hash.
        if not hmac.compare_digest(leaf_hash(origin.raw), seal.leaf_hashes[index]):
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.LEAF_MISMATCH,
                f"bytes differ from leaf {index} of seal {h.seal_seq}",
            )
        found = self._topic_suffix(origin.topic)
        if seal.leaf_topics and found is not None and seal.leaf_topics[index] != found:
            # A genuine event copied onto another topic (e.g. a read onto entries).
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.LEAF_MISMATCH,
                f"leaf {index} of seal {h.seal_seq} was sealed for topic "
                f"{seal.leaf_topics[index]!r}, found on {found!r}",
            )
        if open_seal is None or index not in open_seal.expected:
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.DUPLICATE_EVENT,
                f"producer seq {event.producer_seq} already applied",
            )
        order_key = (origin.topic, origin.partition, event.producer_id)
        last_seq = self._order.get(order_key, -1)
        if event.producer_seq < last_seq:
            return self._reject_event(
                event,
                origin,
                IntegrityStatus.EVENT_REORDERED,
                f"seq {event.producer_seq} after {last_seq} in {origin.topic}[{origin.partition}]",
            )
        # Verified and in order: remember it.
        self._order[order_key] = event.producer_seq
        self._dirty_order = True
        open_seal.expected.discard(index)
        self._close_if_done((event.producer_id, h.seal_seq))
        return Applied(event, origin, seal)

    def _close_if_done(self, key: tuple[str, int]) -> None:
        self._dirty_open.add(key)
        open_seal = self._open.get(key)
        if open_seal is not None and not open_seal.expected:
            del self._open[key]
            self._raw_of.pop(key, None)

    def _topic_suffix(self, topic: str) -> str | None:
        if self.topic_prefix is None or not topic.startswith(self.topic_prefix):
            return None
        return topic[len(self.topic_prefix) :]

    def _reject_event(
        self, event: Event, origin: RecordOrigin, status: IntegrityStatus, detail: str
    ) -> Rejected:
        log.warning(
            "event refused: %s %s:%d@%d (%s)",
            status.value,
            origin.topic,
            origin.partition,
            origin.offset,
            detail,
        )
        seal_seq = event.seal_ref.seal_seq if event.seal_ref else None
        return Rejected((status,), detail, event.producer_id, seal_seq, event.producer_seq, origin)

    # -- time -------------------------------------------------------------

    def expire(self, now: float) -> list[Outcome]:
        """Time out events whose seal never came, seals whose key never
        registered, and leaves of verified seals that never arrived."""
        out: list[Outcome] = []
        if not self.registry_ready:
            return out  # nothing is judged, so nothing times out, before the registry is
        limit = now - self.unsealed_timeout_s
        for part, queue in list(self._queues.items()):
            out.extend(self._drain(part))  # after this, a head left is one that waits
            while queue and queue[0].since is not None and queue[0].since <= limit:
                w = queue.popleft()
                ref = w.event.seal_ref
                out.append(
                    self._reject_event(
                        w.event,
                        w.origin,
                        IntegrityStatus.UNSEALED_TIMEOUT,
                        f"no verified seal {ref.seal_seq if ref else '?'} of "
                        f"{w.event.producer_id} within {self.unsealed_timeout_s}s",
                    )
                )
                out.extend(self._drain(part))
        keep = []
        for seal, origin, since in self._parked:
            if since <= limit:
                out.append(
                    self._reject_seal(
                        seal,
                        origin,
                        (IntegrityStatus.UNKNOWN_KEY,),
                        f"no registered key set {seal.payload.get('key_set_id')}",
                    )
                )
            else:
                keep.append((seal, origin, since))
        self._parked = keep
        due = [
            (key, cov)
            for key, cov in self._open.items()
            if cov.verified_at is not None and cov.verified_at <= limit
        ]
        # Built only when a seal is due: this runs on every poll.
        queued = (
            {
                (q.event.producer_id, q.event.producer_seq)
                for qs in self._queues.values()
                for q in qs
            }
            if due
            else set()
        )
        for key, cov in due:
            h = cov.seal.header
            if any((h.producer_id, h.first_producer_seq + i) in queued for i in cov.expected):
                continue  # it arrived, and waits behind another event in its partition
            missing = sorted(h.first_producer_seq + i for i in cov.expected)
            cov.expected.clear()
            self._close_if_done(key)
            if cov.alert_missing:
                out.append(
                    Rejected(
                        (IntegrityStatus.EVENT_MISSING,),
                        f"{len(missing)} event(s) of seal {h.seal_seq} never arrived: "
                        f"producer seqs {missing[:10]}",
                        h.producer_id,
                        h.seal_seq,
                        None,
                        cov.seal.origin,
                    )
                )
        return out

    # -- what a view shows and stores ---------------------------------------

    def seal_for(self, producer_id: str, seal_seq: int) -> VerifiedSeal | None:
        return self._seals.get((producer_id, seal_seq))

    @property
    def waiting_count(self) -> int:
        return sum(len(q) for q in self._queues.values())

    def waiting(self) -> Iterable[tuple[Event, RecordOrigin]]:
        """Events read but not yet released, in log order per partition."""
        for queue in self._queues.values():
            for q in queue:
                yield q.event, q.origin

    def take_checkpoint(self) -> dict[str, bytes | None]:
        """Rows changed since the last call (None = delete); see :mod:`checkpoint`."""
        rows: dict[str, bytes | None] = {}
        if self._dirty_chains:
            rows[CHAINS_ROW] = encode_chains(
                {pid: (c.last_seq, c.last_hash) for pid, c in self._chains.items()}
            )
        if self._dirty_order:
            rows[ORDER_ROW] = encode_order(self._order)
        for key in self._dirty_open:
            cov = self._open.get(key)
            rows[open_row_name(*key)] = (
                None
                if cov is None
                else OpenSealRow(self._raw_of.get(key, b""), frozenset(cov.expected)).encode()
            )
        self._dirty_chains = self._dirty_order = False
        self._dirty_open = set()
        return rows

    def restore(
        self, checkpoint: VerifierCheckpoint, decode: Callable[[bytes], Event], now: float
    ) -> None:
        """Resume from a checkpoint the view stored (before reading anything)."""
        for pid, (seq, last_hash) in checkpoint.chains.items():
            self._chains[pid] = _Chain(seq, last_hash)
        self._order.update(checkpoint.order)
        for key, row in checkpoint.open_seals.items():
            seal = decode(row.raw)
            header = _header_of(seal.payload)
            signatures = _signature_lines(seal.payload)
            verified = VerifiedSeal(
                header,
                tuple(seal.payload["leaf_hashes"]),
                tuple(seal.payload.get("leaf_topics") or ()),
                seal_hash(header, signatures),
                seal,
                None,
            )
            self._seals[key] = verified
            if row.expected:
                self._open[key] = _OpenSeal(
                    verified,
                    set(row.expected),
                    now if self.data_current else None,
                    bool(verified.leaf_topics),
                )
                self._raw_of[key] = row.raw


_ = EventType  # documented in the module: Seal events go to on_seal
