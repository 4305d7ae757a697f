"""Evaluating one read against its contract.

:func:`evaluate_read` is pure: it takes what the node's view knows about the
entry and about its own health, plus the reader's clock, and decides hit or
miss. A miss carries a :class:`MissReason` the caller can match on and a
``detail`` that names the numbers; the caller turns it into a CacheRead
event, a ContractViolation event and a metric (DESIGN: "The cache").

The read path uses the same checks in the form a hot loop wants
(:func:`judge_read`): the contract compiled once (:class:`ContractCheck`),
the view's health as a :class:`ViewStanding` the view maintains (numbers
that do not depend on the reader's clock), and a hit that allocates only its
freshness proof. :func:`evaluate_read` is that function plus the conversion
from and to the plain values, so both give the same verdict.

Checks run in this order; the first failure wins:

1. View health, because a view that is cut off or behind cannot prove
   anything, not even absence: ``view_failed`` (its own store failed),
   ``log_discontinuity``, ``view_catching_up``,
   then ``view_stale`` (no watermark tick, or the last one older than the
   contract's max staleness: the node fails closed rather than serve data it
   cannot prove fresh).
2. ``not_found``.
3. ``scope_mismatch``. Scope is a mandatory filter, checked before anything
   else about the entry so that a reader of another tenant or subject learns
   nothing about it (not its state, fingerprint or version). Callers should
   not show untrusted clients the difference from ``not_found`` either.
4. Lifecycle state: only ACTIVE is served (``revoked``, ``expired``,
   ``superseded``; an unrecognised state fails closed as ``state_unknown``).
5. ``fingerprint_mismatch`` when the reader expects a fingerprint.
6. ``signature_unverified``: the covering seal must carry every scheme the
   contract requires (and at least one scheme at all).
7. Freshness. Eager and versioned contracts measure age from the write:
   ``stale`` when headroom < 0. Contractual contracts measure it from the
   source's last freshness confirmation instead (a confirmed value is
   current as of the confirmation, however old the write):
   ``freshness_unconfirmed`` when there is none or it is out of the window.
   A view that counts the write itself as the first confirmation sets
   ``confirmed_at_us = written_at_us``.

Strict mode: ``strict = true`` enforces every check. ``strict = false`` skips
only the watermark-tick check (``view_stale``), for deployments that run no
ticker; freshness, signatures and state are enforced regardless.

``contract_unknown``, ``decrypt_failed`` and ``erased`` are never produced
here: they arise before (no contract for the namespace) and after (the
ciphertext does not open; its data key was destroyed by an erasure) this
evaluation, and are listed so every miss shares one enum.
"""

from __future__ import annotations

import functools
import hmac
from dataclasses import dataclass, field
from enum import StrEnum

from cachet.config.contract import ContractConfig
from cachet.config.enums import InvalidationMode
from cachet.freshness import FreshnessProof, freshness_proof

__all__ = [
    "ContractCheck",
    "EntryFacts",
    "EntryState",
    "MissReason",
    "ReadVerdict",
    "SERVED",
    "SignatureSummary",
    "VerificationStatus",
    "ViewHealth",
    "ViewStanding",
    "compile_contract",
    "evaluate_read",
    "judge_read",
    "served_detail",
    "served_verdict",
]

# What CacheRead.reason says for a hit.
SERVED = "served"


class MissReason(StrEnum):
    """Why a read missed; the value is what CacheRead/ContractViolation carry."""

    NOT_FOUND = "not_found"
    STALE = "stale"
    SUPERSEDED = "superseded"
    EXPIRED = "expired"
    REVOKED = "revoked"
    STATE_UNKNOWN = "state_unknown"
    FINGERPRINT_MISMATCH = "fingerprint_mismatch"
    SIGNATURE_UNVERIFIED = "signature_unverified"
    VIEW_CATCHING_UP = "view_catching_up"
    VIEW_STALE = "view_stale"
    LOG_DISCONTINUITY = "log_discontinuity"
    VIEW_FAILED = "view_failed"
    SCOPE_MISMATCH = "scope_mismatch"
    FRESHNESS_UNCONFIRMED = "freshness_unconfirmed"
    DECRYPT_FAILED = "decrypt_failed"
    CONTRACT_UNKNOWN = "contract_unknown"
    # The entry's data key was destroyed (crypto-shredded): nothing can read it.
    ERASED = "erased"


class VerificationStatus(StrEnum):
    """Whether the seal covering a value satisfies the contract.

    ``evaluate_read`` yields VERIFIED or UNVERIFIED from what the view
    recorded; FAILED is for a caller that re-verifies a seal and sees it fail.
    """

    VERIFIED = "verified"
    UNVERIFIED = "unverified"
    FAILED = "failed"


class EntryState(StrEnum):
    """Lifecycle state of an entry (the Avro ``EntryState`` symbols)."""

    ACTIVE = "ACTIVE"
    SUPERSEDED = "SUPERSEDED"
    EXPIRED = "EXPIRED"
    REVOKED = "REVOKED"
    UNKNOWN = "UNKNOWN"

    @classmethod
    def parse(cls, text: str) -> EntryState:
        """The state ``text`` names; anything unrecognised is UNKNOWN (never served)."""
        try:
            return cls(text.upper())
        except ValueError:
            return cls.UNKNOWN


_STATE_MISS = {
    EntryState.REVOKED: MissReason.REVOKED,
    EntryState.EXPIRED: MissReason.EXPIRED,
    EntryState.SUPERSEDED: MissReason.SUPERSEDED,
    EntryState.UNKNOWN: MissReason.STATE_UNKNOWN,
}


@dataclass(frozen=True, slots=True)
class SignatureSummary:
    """The seal behind a value, as the reader is told about it."""

    status: VerificationStatus
    schemes: tuple[str, ...]
    key_set_id: str
    producer_id: str
    seal_seq: int


@dataclass(frozen=True, slots=True)
class ViewHealth:
    """The serving node's view, as of the read.

    ``last_tick_age_ms`` is the age of the newest WatermarkTick seen (None:
    none yet); ``lag_ms`` how far the view trails the log; ``discontinuity``
    whether a LogDiscontinuity was detected and not yet resolved; ``failed``
    whether the view's own store failed (it stopped: it is never caught up
    again until opened again).
    """

    caught_up: bool
    last_tick_age_ms: int | None
    lag_ms: int
    discontinuity: bool
    failed: bool = False

    def __post_init__(self) -> None:
        if self.lag_ms < 0:
            raise ValueError(f"ViewHealth.lag_ms must be >= 0, got {self.lag_ms}")
        if self.last_tick_age_ms is not None and self.last_tick_age_ms < 0:
            raise ValueError(
                f"ViewHealth.last_tick_age_ms must be >= 0, got {self.last_tick_age_ms}"
            )


@dataclass(frozen=True, slots=True)
class ViewStanding:
    """A view's health as numbers that do not depend on when a read happens.

    The view keeps one and replaces it whenever one of these numbers
    changes, so a read pays two subtractions for the view's health instead
    of a walk over every partition; :meth:`at` is the :class:`ViewHealth`
    of a read at ``now_us``.

    ``ticked_through_us``: every partition of ``invalidations`` has seen a
    WatermarkTick at least this new (the oldest of the partitions' newest
    ticks); None until every partition ticked. ``behind_since_us``: since
    when the partition that trails the log longest has been behind (None:
    every partition is at the log end).
    """

    caught_up: bool
    discontinuity: bool
    ticked_through_us: int | None
    behind_since_us: int | None
    failed: bool = False

    def tick_age_ms(self, now_us: int) -> int | None:
        """Age of the newest tick every partition saw, at ``now_us`` (None: none yet)."""
        ticked = self.ticked_through_us
        return None if ticked is None else max(0, (now_us - ticked) // 1000)

    def lag_ms(self, now_us: int) -> int:
        """How far the view trails the log at ``now_us`` (0 when at its end)."""
        behind = self.behind_since_us
        return 0 if behind is None else max(0, (now_us - behind) // 1000)

    def at(self, now_us: int) -> ViewHealth:
        """The view's health for a read at ``now_us``."""
        return ViewHealth(
            caught_up=self.caught_up,
            last_tick_age_ms=self.tick_age_ms(now_us),
            lag_ms=self.lag_ms(now_us),
            discontinuity=self.discontinuity,
            failed=self.failed,
        )

    @classmethod
    def of(cls, health: ViewHealth, now_us: int) -> ViewStanding:
        """The standing whose :meth:`at` ``now_us`` is exactly ``health``
        (its ages are whole milliseconds, so nothing is lost)."""
        tick = health.last_tick_age_ms
        return cls(
            caught_up=health.caught_up,
            discontinuity=health.discontinuity,
            failed=health.failed,
            ticked_through_us=None if tick is None else now_us - tick * 1000,
            behind_since_us=now_us - health.lag_ms * 1000 if health.lag_ms else None,
        )


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What the view knows about the current entry of a key; no plaintext.

    ``state`` is an :class:`EntryState` or its Avro symbol; ``sealed_schemes``
    the schemes of the verified seal covering the entry's event;
    ``confirmed_at_us`` the event time of the source's last freshness
    confirmation (contractual invalidation).

    Derived when the facts are made (a node's L1 keeps an entry's facts next
    to its plaintext, so once per cached entry, not once per read):
    ``parsed_state``, and ``verified_summary``, the signature summary a read
    that served this entry reports.
    """

    state: str
    fingerprint: bytes
    version: int
    written_at_us: int
    sealed_schemes: tuple[str, ...]
    key_set_id: str
    producer_id: str
    seal_seq: int
    namespace: str
    scope: str | None
    confirmed_at_us: int | None = None
    parsed_state: EntryState = field(init=False, repr=False, compare=False)
    verified_summary: SignatureSummary = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "parsed_state", EntryState.parse(self.state))
        object.__setattr__(
            self,
            "verified_summary",
            _verified_summary(
                self.sealed_schemes, self.key_set_id, self.producer_id, self.seal_seq
            ),
        )


@functools.lru_cache(maxsize=4096)
def _verified_summary(
    schemes: tuple[str, ...], key_set_id: str, producer_id: str, seal_seq: int
) -> SignatureSummary:
    """One (immutable) summary per seal, shared by every entry it covers: an
    L1 of N entries holds a few hundred summaries, not N more objects for the
    garbage collector to walk."""
    return SignatureSummary(
        status=VerificationStatus.VERIFIED,
        schemes=schemes,
        key_set_id=key_set_id,
        producer_id=producer_id,
        seal_seq=seal_seq,
    )


@dataclass(frozen=True, slots=True)
class ContractCheck:
    """A contract compiled for reads (:func:`compile_contract`): what
    :func:`judge_read` checks, derived once per contract, not once per read.

    ``required`` are the ids of the schemes the covering seal must carry, in
    the contract's order (for the miss detail); ``required_set`` the same ids
    for the subset test; ``contractual`` whether freshness runs from the
    source's last confirmation instead of the write.
    """

    name: str
    max_staleness_ms: int
    strict: bool
    contractual: bool
    required: tuple[str, ...]
    required_set: frozenset[str]


@functools.lru_cache(maxsize=256)
def compile_contract(contract: ContractConfig) -> ContractCheck:
    """``contract`` as :func:`judge_read` checks it. Raises ValueError for a
    negative ``max_staleness_ms`` (a programming error, not a stale read)."""
    if contract.max_staleness_ms < 0:
        raise ValueError(
            f"contract {contract.name!r}: max_staleness_ms must be >= 0, "
            f"got {contract.max_staleness_ms}"
        )
    # Enum .value is a descriptor call: once per contract, not three per read.
    required = tuple(s.value for s in contract.required_signatures)
    return ContractCheck(
        name=contract.name,
        max_staleness_ms=contract.max_staleness_ms,
        strict=contract.strict,
        contractual=contract.invalidation is InvalidationMode.CONTRACTUAL,
        required=required,
        required_set=frozenset(required),
    )


@dataclass(frozen=True, slots=True)
class ReadVerdict:
    """Hit or miss, with everything known about the entry at that point.

    A hit has no reason and carries the full freshness proof, signature
    summary, fingerprint and version. A miss carries its reason, and the
    facts established before the failing check (none for a view-health,
    not-found or scope miss, so those reveal nothing about the entry).
    """

    hit: bool
    reason: MissReason | None
    detail: str
    freshness: FreshnessProof | None
    signatures: SignatureSummary | None
    fingerprint: bytes | None
    version: int | None

    def __post_init__(self) -> None:
        if self.hit != (self.reason is None):
            raise ValueError("a hit has no miss reason and a miss has one")

    @property
    def reason_code(self) -> str:
        """What CacheRead.reason carries: ``served`` or the miss reason."""
        return SERVED if self.reason is None else self.reason.value


def _miss(
    reason: MissReason,
    detail: str,
    *,
    entry: EntryFacts | None = None,
    freshness: FreshnessProof | None = None,
    signatures: SignatureSummary | None = None,
) -> ReadVerdict:
    return ReadVerdict(
        hit=False,
        reason=reason,
        detail=detail,
        freshness=freshness,
        signatures=signatures,
        fingerprint=None if entry is None else entry.fingerprint,
        version=None if entry is None else entry.version,
    )


def _view_miss(check: ContractCheck, view: ViewStanding, now_us: int) -> ReadVerdict | None:
    if view.failed:
        return _miss(
            MissReason.VIEW_FAILED,
            "the view's store failed and the view stopped; it serves nothing until opened again",
        )
    if view.discontinuity:
        return _miss(
            MissReason.LOG_DISCONTINUITY,
            "the view skipped records (stored offset below the log's low watermark)",
        )
    if not view.caught_up:
        return _miss(
            MissReason.VIEW_CATCHING_UP,
            f"the view has not reached the high watermark yet (lag {view.lag_ms(now_us)} ms)",
        )
    if not check.strict:
        return None
    tick = view.tick_age_ms(now_us)
    if tick is None:
        return _miss(MissReason.VIEW_STALE, "no watermark tick seen: cut off from the log?")
    if tick > check.max_staleness_ms:
        return _miss(
            MissReason.VIEW_STALE,
            f"last watermark tick is {tick} ms old, older than contract "
            f"{check.name!r} allows ({check.max_staleness_ms} ms)",
        )
    return None


def _unverified(check: ContractCheck, entry: EntryFacts) -> ReadVerdict:
    carried = entry.sealed_schemes
    missing = [s for s in check.required if s not in carried]
    wanted = ", ".join(missing) if missing else "a verified seal"
    return _miss(
        MissReason.SIGNATURE_UNVERIFIED,
        f"contract {check.name!r} requires {wanted}; version {entry.version} has "
        f"{', '.join(carried) or 'no verified seal'}",
        entry=entry,
        signatures=SignatureSummary(
            status=VerificationStatus.UNVERIFIED,
            schemes=carried,
            key_set_id=entry.key_set_id,
            producer_id=entry.producer_id,
            seal_seq=entry.seal_seq,
        ),
    )


def _freshness_miss(check: ContractCheck, entry: EntryFacts, proof: FreshnessProof) -> ReadVerdict:
    what = "last source confirmation" if check.contractual else "value"
    return _miss(
        MissReason.FRESHNESS_UNCONFIRMED if check.contractual else MissReason.STALE,
        f"{what} age {proof.age_ms} ms + view lag {proof.view_lag_ms} ms exceeds "
        f"max staleness {proof.max_staleness_ms} ms of contract {check.name!r} "
        f"by {-proof.headroom_ms} ms",
        entry=entry,
        freshness=proof,
        signatures=entry.verified_summary,
    )


def judge_read(
    check: ContractCheck,
    entry: EntryFacts | None,
    expected_fingerprint: bytes | None,
    scope: str | None,
    view: ViewStanding,
    now_us: int,
) -> FreshnessProof | ReadVerdict:
    """The freshness proof when ``entry`` may be served under ``check``, else
    the miss (checks in the module doc's order; the first failure wins).

    The read path's form of :func:`evaluate_read`: a hit allocates only its
    proof (its signature summary is ``entry.verified_summary``; see
    :func:`served_verdict`), so a read builds no verdict it does not return.
    """
    if view.failed or view.discontinuity or not view.caught_up or check.strict:
        view_miss = _view_miss(check, view, now_us)
        if view_miss is not None:
            return view_miss
    if entry is None:
        return _miss(MissReason.NOT_FOUND, "no entry for this key")
    if entry.scope != scope:
        # No entry facts in this verdict: they belong to another scope.
        return _miss(MissReason.SCOPE_MISMATCH, "the entry belongs to a different scope")
    state = entry.parsed_state
    if state is not EntryState.ACTIVE:
        return _miss(
            _STATE_MISS[state],
            f"version {entry.version} is {entry.state}; only ACTIVE is served",
            entry=entry,
        )
    # Constant time: the comparison must not leak how much of a guessed
    # fingerprint matched.
    if expected_fingerprint is not None and not hmac.compare_digest(
        entry.fingerprint, expected_fingerprint
    ):
        return _miss(
            MissReason.FINGERPRINT_MISMATCH,
            f"version {entry.version} was computed from different inputs than expected",
            entry=entry,
        )
    # At least one scheme at all, and every scheme the contract requires.
    if not entry.sealed_schemes or not check.required_set.issubset(entry.sealed_schemes):
        return _unverified(check, entry)
    reference_us = entry.confirmed_at_us if check.contractual else entry.written_at_us
    if reference_us is None:
        return _miss(
            MissReason.FRESHNESS_UNCONFIRMED,
            f"contract {check.name!r} is contractual and the source has not "
            f"confirmed version {entry.version}",
            entry=entry,
            signatures=entry.verified_summary,
        )
    proof = freshness_proof(
        written_at_us=reference_us,
        now_us=now_us,
        max_staleness_ms=check.max_staleness_ms,
        view_lag_ms=view.lag_ms(now_us),
    )
    if proof.headroom_ms < 0:
        return _freshness_miss(check, entry, proof)
    return proof


def served_detail(version: int, proof: FreshnessProof) -> str:
    """What a hit says about itself (``CacheResponse.detail``)."""
    return f"served version {version} with {proof.headroom_ms} ms headroom"


def served_verdict(entry: EntryFacts, proof: FreshnessProof) -> ReadVerdict:
    """The hit verdict for ``entry``, which :func:`judge_read` served with ``proof``."""
    return ReadVerdict(
        hit=True,
        reason=None,
        detail=served_detail(entry.version, proof),
        freshness=proof,
        signatures=entry.verified_summary,
        fingerprint=entry.fingerprint,
        version=entry.version,
    )


def evaluate_read(
    *,
    contract: ContractConfig,
    entry: EntryFacts | None,
    expected_fingerprint: bytes | None,
    scope: str | None,
    view: ViewHealth,
    now_us: int,
) -> ReadVerdict:
    """Hit or miss for one read of ``entry`` under ``contract`` (see the module doc)."""
    judged = judge_read(
        compile_contract(contract),
        entry,
        expected_fingerprint,
        scope,
        ViewStanding.of(view, now_us),
        now_us,
    )
    if isinstance(judged, ReadVerdict):
        return judged
    assert entry is not None  # a proof is only ever made for an entry
    return served_verdict(entry, judged)
