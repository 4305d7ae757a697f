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
  producer sequence number is the one the leaf position implies; it was not
  applied before (duplicates); producer sequence numbers of one producer
  increase within a partition (reordering); offsets never go back.
* completeness: every leaf of a verified seal that belongs to a topic this
  verifier reads must arrive within the timeout (dropped events).
"""

from __future__ import annotations

import enum
import hmac
import logging
from collections import OrderedDict
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field

from cachet.consume import RecordOrigin
from cachet.crypto.merkle import leaf_hash
from cachet.crypto.registry import KeyRegistry, KeyStatus
from cachet.crypto.seal import (
    NoteFormatError,
    SchemeStatus,
    SealFailure,
    SealHeader,
    SignatureLine,
    SignatureScheme,
    leaf_topics_digest,
    seal_hash,
    verify_seal_batch,
)
from cachet.ledger.identity import GENESIS_SEAL_HASH, ProducerIdError, identity_of
from schemas.events import Event, EventType

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
class _Waiting:
    event: Event
    origin: RecordOrigin
    since: float


@dataclass(slots=True)
class _Coverage:
    """Which leaves of a verified seal this verifier still expects."""

    seal: VerifiedSeal
    expected: set[int]
    verified_at: float


@dataclass(slots=True)
class _Chain:
    last_seq: int = -1
    last_hash: bytes = GENESIS_SEAL_HASH


@dataclass
class SealVerifier:
    """Verifies seals and events; see the module docstring for every check.

    ``topics`` are the topic suffixes (``Topic.value``) whose events this
    verifier is fed: only their leaves are expected to arrive.
    """

    registry: KeyRegistry
    required: Collection[SignatureScheme]
    topics: Collection[str]
    unsealed_timeout_s: float = 5.0
    max_cached_seals: int = 100_000
    _chains: dict[str, _Chain] = field(default_factory=dict)
    _seals: OrderedDict[tuple[str, int], VerifiedSeal] = field(default_factory=OrderedDict)
    _waiting: dict[tuple[str, int], list[_Waiting]] = field(default_factory=dict)
    _parked: list[tuple[Event, RecordOrigin | None, float]] = field(default_factory=list)
    _coverage: dict[tuple[str, int], _Coverage] = field(default_factory=dict)
    _applied: dict[str, set[int]] = field(default_factory=dict)
    _arrived: dict[str, set[int]] = field(default_factory=dict)
    _last_seq_in_partition: dict[tuple[str, int, str], int] = field(default_factory=dict)
    _last_offset: dict[tuple[str, int], int] = field(default_factory=dict)

    # -- seals ------------------------------------------------------------

    def on_seal(self, seal: Event, origin: RecordOrigin | None, now: float) -> list[Outcome]:
        """Verify a Seal event; on success, release the events waiting for it."""
        p = seal.payload
        try:
            header = SealHeader(
                producer_id=p["producer_id"],
                seal_seq=p["seal_seq"],
                tree_size=p["tree_size"],
                first_producer_seq=p["first_producer_seq"],
                merkle_root=p["merkle_root"],
                prev_seal_hash=p["prev_seal_hash"],
                key_set_id=p["key_set_id"],
                sealed_at_us=p["sealed_at_us"],
                leaf_topics_digest=leaf_topics_digest(p.get("leaf_topics", [])),
            )
            identity = identity_of(header.producer_id)
        except (NoteFormatError, ProducerIdError, ValueError, KeyError) as exc:
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
        signatures = tuple(
            SignatureLine(s["algorithm"], s["key_id"], s["signature"]) for s in p["signatures"]
        )
        verdict = verify_seal_batch(
            header,
            signatures,
            p["leaf_hashes"],
            lookup.key_set,
            self.required,
            leaf_topics=p.get("leaf_topics", []),
        )
        statuses = list(self._statuses_of(verdict.statuses, verdict.failures))
        chain = self._chains.setdefault(header.producer_id, _Chain())
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
        chain.last_seq = header.seal_seq
        chain.last_hash = seal_hash(header, signatures)
        verified = VerifiedSeal(
            header,
            tuple(p["leaf_hashes"]),
            tuple(p.get("leaf_topics", [])),
            chain.last_hash,
            seal,
            origin,
        )
        key = (header.producer_id, header.seal_seq)
        self._seals[key] = verified
        while len(self._seals) > self.max_cached_seals:
            self._seals.popitem(last=False)
        expected = {i for i, t in enumerate(verified.leaf_topics) if t in self.topics}
        if expected:
            self._coverage[key] = _Coverage(verified, expected, now)
        outcomes: list[Outcome] = []
        for waiting in self._waiting.pop(key, []):
            outcomes.extend(self._check_event(waiting.event, waiting.origin, verified))
        return outcomes

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
        parked, self._parked = self._parked, []
        outcomes: list[Outcome] = []
        for seal, origin, since in parked:
            before = len(self._parked)
            outcomes.extend(self.on_seal(seal, origin, now))
            if len(self._parked) > before:  # parked again: keep its original time
                self._parked[-1] = (seal, origin, since)
        return outcomes

    # -- events -----------------------------------------------------------

    def on_event(self, event: Event, origin: RecordOrigin, now: float) -> list[Outcome]:
        """An event read from the log; ``origin.raw`` are its exact bytes."""
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
        ref = event.seal_ref
        if ref is None:
            return [
                self._reject_event(
                    event, origin, IntegrityStatus.NOT_SEALED, "event carries no seal reference"
                )
            ]
        # Log order is checked on arrival, before any waiting for seals: the
        # buffering below would otherwise hide a reordering across seals.
        arrived = self._arrived.setdefault(event.producer_id, set())
        if event.producer_seq in arrived:
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.DUPLICATE_EVENT,
                    f"producer seq {event.producer_seq} seen before",
                )
            ]
        pkey = (origin.topic, origin.partition, event.producer_id)
        last_seq = self._last_seq_in_partition.get(pkey, -1)
        if event.producer_seq < last_seq:
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.EVENT_REORDERED,
                    f"seq {event.producer_seq} after {last_seq} "
                    f"in {origin.topic}[{origin.partition}]",
                )
            ]
        arrived.add(event.producer_seq)
        self._last_seq_in_partition[pkey] = event.producer_seq
        seal = self._seals.get((event.producer_id, ref.seal_seq))
        if seal is None:
            self._waiting.setdefault((event.producer_id, ref.seal_seq), []).append(
                _Waiting(event, origin, now)
            )
            return []
        return self._check_event(event, origin, seal)

    def _check_event(self, event: Event, origin: RecordOrigin, seal: VerifiedSeal) -> list[Outcome]:
        ref = event.seal_ref
        assert ref is not None
        index = ref.leaf_index
        h = seal.header
        if not (0 <= index < h.tree_size) or event.producer_seq != h.first_producer_seq + index:
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.LEAF_MISMATCH,
                    f"leaf {index} / seq {event.producer_seq} not in seal {h.seal_seq}",
                )
            ]
        # The one per-event cost once the seal is verified: one leaf hash.
        if not hmac.compare_digest(leaf_hash(origin.raw), seal.leaf_hashes[index]):
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.LEAF_MISMATCH,
                    f"bytes differ from leaf {index} of seal {h.seal_seq}",
                )
            ]
        applied = self._applied.setdefault(event.producer_id, set())
        if event.producer_seq in applied:
            return [
                self._reject_event(
                    event,
                    origin,
                    IntegrityStatus.DUPLICATE_EVENT,
                    f"producer seq {event.producer_seq} already applied",
                )
            ]
        applied.add(event.producer_seq)
        coverage = self._coverage.get((event.producer_id, h.seal_seq))
        if coverage is not None:
            coverage.expected.discard(index)
            if not coverage.expected:
                del self._coverage[(event.producer_id, h.seal_seq)]
        return [Applied(event, origin, seal)]

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
        limit = now - self.unsealed_timeout_s
        for key in [k for k, ws in self._waiting.items() if ws[0].since <= limit]:
            for w in self._waiting.pop(key):
                out.append(
                    self._reject_event(
                        w.event,
                        w.origin,
                        IntegrityStatus.UNSEALED_TIMEOUT,
                        f"no verified seal {key[1]} of {key[0]} within {self.unsealed_timeout_s}s",
                    )
                )
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
        for key in [k for k, c in self._coverage.items() if c.verified_at <= limit]:
            cov = self._coverage.pop(key)
            h = cov.seal.header
            out.append(
                Rejected(
                    (IntegrityStatus.EVENT_MISSING,),
                    f"{len(cov.expected)} event(s) of seal {h.seal_seq} never arrived: "
                    f"producer seqs {sorted(h.first_producer_seq + i for i in cov.expected)[:10]}",
                    h.producer_id,
                    h.seal_seq,
                    None,
                    cov.seal.origin,
                )
            )
        return out

    def seal_for(self, producer_id: str, seal_seq: int) -> VerifiedSeal | None:
        return self._seals.get((producer_id, seal_seq))

    @property
    def waiting_count(self) -> int:
        return sum(len(w) for w in self._waiting.values())


_ = EventType  # documented in the module: Seal events go to on_seal
