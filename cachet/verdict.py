"""Evaluating one read against its contract.

:func:`evaluate_read` is pure: it takes what the node's view knows about the
entry and about its own health, plus the reader's clock, and decides hit or
miss. A miss carries a :class:`MissReason` the caller can match on and a
``detail`` that names the numbers; the caller turns it into a CacheRead
event, a ContractViolation event and a metric (DESIGN: "The cache").

Checks run in this order; the first failure wins:

1. View health, because a view that is cut off or behind cannot prove
   anything, not even absence: ``log_discontinuity``, ``view_catching_up``,
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
from dataclasses import dataclass
from enum import StrEnum

from cachet.config.contract import ContractConfig
from cachet.config.enums import InvalidationMode
from cachet.crypto.schemes import SignatureScheme
from cachet.freshness import FreshnessProof, freshness_proof

__all__ = [
    "EntryFacts",
    "EntryState",
    "MissReason",
    "ReadVerdict",
    "SERVED",
    "SignatureSummary",
    "VerificationStatus",
    "ViewHealth",
    "evaluate_read",
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
    whether a LogDiscontinuity was detected and not yet resolved.
    """

    caught_up: bool
    last_tick_age_ms: int | None
    lag_ms: int
    discontinuity: bool

    def __post_init__(self) -> None:
        if self.lag_ms < 0:
            raise ValueError(f"ViewHealth.lag_ms must be >= 0, got {self.lag_ms}")
        if self.last_tick_age_ms is not None and self.last_tick_age_ms < 0:
            raise ValueError(
                f"ViewHealth.last_tick_age_ms must be >= 0, got {self.last_tick_age_ms}"
            )


@dataclass(frozen=True, slots=True)
class EntryFacts:
    """What the view knows about the current entry of a key; no plaintext.

    ``state`` is an :class:`EntryState` or its Avro symbol; ``sealed_schemes``
    the schemes of the verified seal covering the entry's event;
    ``confirmed_at_us`` the event time of the source's last freshness
    confirmation (contractual invalidation).
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


def _view_miss(contract: ContractConfig, view: ViewHealth) -> ReadVerdict | None:
    if view.discontinuity:
        return _miss(
            MissReason.LOG_DISCONTINUITY,
            "the view skipped records (stored offset below the log's low watermark)",
        )
    if not view.caught_up:
        return _miss(
            MissReason.VIEW_CATCHING_UP,
            f"the view has not reached the high watermark yet (lag {view.lag_ms} ms)",
        )
    if not contract.strict:
        return None
    tick = view.last_tick_age_ms
    if tick is None:
        return _miss(MissReason.VIEW_STALE, "no watermark tick seen: cut off from the log?")
    if tick > contract.max_staleness_ms:
        return _miss(
            MissReason.VIEW_STALE,
            f"last watermark tick is {tick} ms old, older than contract "
            f"{contract.name!r} allows ({contract.max_staleness_ms} ms)",
        )
    return None


@functools.lru_cache(maxsize=64)
def _scheme_ids(schemes: tuple[SignatureScheme, ...]) -> tuple[str, ...]:
    # Enum .value is a descriptor call: once per contract, not three per read.
    return tuple(s.value for s in schemes)


def _signature_summary(
    contract: ContractConfig, entry: EntryFacts
) -> tuple[SignatureSummary, list[str]]:
    carried = entry.sealed_schemes
    missing = [s for s in _scheme_ids(contract.required_signatures) if s not in carried]
    ok = bool(entry.sealed_schemes) and not missing
    summary = SignatureSummary(
        status=VerificationStatus.VERIFIED if ok else VerificationStatus.UNVERIFIED,
        schemes=entry.sealed_schemes,
        key_set_id=entry.key_set_id,
        producer_id=entry.producer_id,
        seal_seq=entry.seal_seq,
    )
    return summary, missing


def _freshness_miss(
    contract: ContractConfig,
    entry: EntryFacts,
    view: ViewHealth,
    now_us: int,
    signatures: SignatureSummary,
) -> tuple[FreshnessProof | None, ReadVerdict | None]:
    contractual = contract.invalidation is InvalidationMode.CONTRACTUAL
    reference_us = entry.confirmed_at_us if contractual else entry.written_at_us
    if reference_us is None:
        return None, _miss(
            MissReason.FRESHNESS_UNCONFIRMED,
            f"contract {contract.name!r} is contractual and the source has not "
            f"confirmed version {entry.version}",
            entry=entry,
            signatures=signatures,
        )
    proof = freshness_proof(
        written_at_us=reference_us,
        now_us=now_us,
        max_staleness_ms=contract.max_staleness_ms,
        view_lag_ms=view.lag_ms,
    )
    if proof.fresh:
        return proof, None
    what = "last source confirmation" if contractual else "value"
    detail = (
        f"{what} age {proof.age_ms} ms + view lag {proof.view_lag_ms} ms exceeds "
        f"max staleness {proof.max_staleness_ms} ms of contract {contract.name!r} "
        f"by {-proof.headroom_ms} ms"
    )
    reason = MissReason.FRESHNESS_UNCONFIRMED if contractual else MissReason.STALE
    return proof, _miss(reason, detail, entry=entry, freshness=proof, signatures=signatures)


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
    view_miss = _view_miss(contract, view)
    if view_miss is not None:
        return view_miss
    if entry is None:
        return _miss(MissReason.NOT_FOUND, "no entry for this key")
    if entry.scope != scope:
        # No entry facts in this verdict: they belong to another scope.
        return _miss(MissReason.SCOPE_MISMATCH, "the entry belongs to a different scope")

    state = EntryState.parse(entry.state)
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
    signatures, missing = _signature_summary(contract, entry)
    if signatures.status is not VerificationStatus.VERIFIED:
        carried = ", ".join(entry.sealed_schemes) or "no verified seal"
        wanted = ", ".join(missing) if missing else "a verified seal"
        return _miss(
            MissReason.SIGNATURE_UNVERIFIED,
            f"contract {contract.name!r} requires {wanted}; version {entry.version} has {carried}",
            entry=entry,
            signatures=signatures,
        )
    proof, stale = _freshness_miss(contract, entry, view, now_us, signatures)
    if stale is not None:
        return stale
    assert proof is not None
    return ReadVerdict(
        hit=True,
        reason=None,
        detail=f"served version {entry.version} with {proof.headroom_ms} ms headroom",
        freshness=proof,
        signatures=signatures,
        fingerprint=entry.fingerprint,
        version=entry.version,
    )
