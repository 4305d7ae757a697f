"""cachet.freshness and cachet.verdict: one read against its contract."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from cachet.config import InvalidationMode
from cachet.config.contract import ContractConfig
from cachet.crypto.schemes import SignatureScheme
from cachet.freshness import FreshnessProof, freshness_proof
from cachet.verdict import (
    EntryFacts,
    EntryState,
    MissReason,
    ReadVerdict,
    SignatureSummary,
    VerificationStatus,
    ViewHealth,
    ViewStanding,
    compile_contract,
    evaluate_read,
    judge_read,
)

MS = 1000  # microseconds per millisecond
NOW = 1_700_000_000_000_000
FP = bytes(range(32))

# -- freshness ----------------------------------------------------------------


def test_proof_numbers_and_payload() -> None:
    proof = freshness_proof(
        written_at_us=NOW - 300 * MS, now_us=NOW, max_staleness_ms=1000, view_lag_ms=50
    )
    assert proof == FreshnessProof(
        age_ms=300, max_staleness_ms=1000, headroom_ms=650, view_lag_ms=50
    )
    assert proof.fresh
    assert proof.to_payload() == {
        "age_ms": 300,
        "max_staleness_ms": 1000,
        "headroom_ms": 650,
        "view_lag_ms": 50,
    }


def test_view_lag_eats_the_budget() -> None:
    in_log = freshness_proof(
        written_at_us=NOW - 900 * MS, now_us=NOW, max_staleness_ms=1000, view_lag_ms=0
    )
    lagging = freshness_proof(
        written_at_us=NOW - 900 * MS, now_us=NOW, max_staleness_ms=1000, view_lag_ms=101
    )
    assert in_log.fresh
    assert not lagging.fresh
    assert lagging.headroom_ms == -1


def test_zero_headroom_is_fresh_and_ages_round_up() -> None:
    exact = freshness_proof(
        written_at_us=NOW - 1000 * MS, now_us=NOW, max_staleness_ms=1000, view_lag_ms=0
    )
    assert exact.headroom_ms == 0 and exact.fresh
    # 1000.001 ms is older than 1000 ms: rounding must not hide that.
    over = freshness_proof(
        written_at_us=NOW - 1000 * MS - 1, now_us=NOW, max_staleness_ms=1000, view_lag_ms=0
    )
    assert over.age_ms == 1001 and not over.fresh


def test_future_event_time_is_clamped_but_detectable() -> None:
    proof = freshness_proof(
        written_at_us=NOW + 250 * MS, now_us=NOW, max_staleness_ms=1000, view_lag_ms=0
    )
    assert proof.age_ms == 0
    assert proof.clock_skew_ms == 250
    # Skew never extends the window beyond the contract.
    assert proof.headroom_ms == 1000
    assert "clock_skew_ms" not in proof.to_payload()


def test_negative_inputs_are_programming_errors() -> None:
    with pytest.raises(ValueError, match="view_lag_ms"):
        freshness_proof(written_at_us=NOW, now_us=NOW, max_staleness_ms=1, view_lag_ms=-1)
    with pytest.raises(ValueError, match="max_staleness_ms"):
        freshness_proof(written_at_us=NOW, now_us=NOW, max_staleness_ms=-1, view_lag_ms=0)


# -- verdicts -----------------------------------------------------------------

CONTRACT = ContractConfig(
    name="quotes",
    computation_type="quote",
    max_staleness_ms=1000,
    required_signatures=(SignatureScheme.ML_DSA_65, SignatureScheme.SLH_DSA_SHA2_128F),
    fingerprint_fields=("input", "computation", "parameters", "version"),
    audit_trail_depth_days=30,
    invalidation=InvalidationMode.EAGER,
    strict=True,
)
ENTRY = EntryFacts(
    state="ACTIVE",
    fingerprint=FP,
    version=3,
    written_at_us=NOW - 200 * MS,
    sealed_schemes=("ml-dsa-65", "fn-dsa-512", "slh-dsa-sha2-128f"),
    key_set_id="ks-1",
    producer_id="producer-a/epoch-1",
    seal_seq=42,
    namespace="quotes",
    scope="tenant-a",
)
VIEW = ViewHealth(caught_up=True, last_tick_age_ms=100, lag_ms=20, discontinuity=False)


def read(
    *,
    contract: dict[str, Any] | None = None,
    entry: dict[str, Any] | None = None,
    view: dict[str, Any] | None = None,
    missing: bool = False,
    expected: bytes | None = FP,
    scope: str | None = "tenant-a",
) -> ReadVerdict:
    return evaluate_read(
        contract=dataclasses.replace(CONTRACT, **(contract or {})),
        entry=None if missing else dataclasses.replace(ENTRY, **(entry or {})),
        expected_fingerprint=expected,
        scope=scope,
        view=dataclasses.replace(VIEW, **(view or {})),
        now_us=NOW,
    )


def test_hit_carries_proof_and_signatures() -> None:
    verdict = read()
    assert verdict.hit and verdict.reason is None
    assert verdict.reason_code == "served"
    assert verdict.freshness == FreshnessProof(
        age_ms=200, max_staleness_ms=1000, headroom_ms=780, view_lag_ms=20
    )
    assert verdict.signatures == SignatureSummary(
        status=VerificationStatus.VERIFIED,
        schemes=("ml-dsa-65", "fn-dsa-512", "slh-dsa-sha2-128f"),
        key_set_id="ks-1",
        producer_id="producer-a/epoch-1",
        seal_seq=42,
    )
    assert verdict.fingerprint == FP
    assert verdict.version == 3


def test_hit_without_expected_fingerprint_and_without_scope() -> None:
    assert read(expected=None).hit
    assert read(entry={"scope": None}, scope=None).hit


CONTRACTUAL = {"invalidation": InvalidationMode.CONTRACTUAL}

MISSES: list[tuple[MissReason, dict[str, Any], str]] = [
    (MissReason.VIEW_FAILED, {"view": {"failed": True}}, "store failed"),
    (MissReason.LOG_DISCONTINUITY, {"view": {"discontinuity": True}}, "low watermark"),
    (MissReason.VIEW_CATCHING_UP, {"view": {"caught_up": False, "lag_ms": 5000}}, "5000 ms"),
    (MissReason.VIEW_STALE, {"view": {"last_tick_age_ms": None}}, "no watermark tick"),
    (MissReason.VIEW_STALE, {"view": {"last_tick_age_ms": 1001}}, "1001 ms old"),
    (MissReason.NOT_FOUND, {"missing": True}, "no entry"),
    (MissReason.SCOPE_MISMATCH, {"scope": "tenant-b"}, "different scope"),
    (MissReason.SCOPE_MISMATCH, {"scope": None}, "different scope"),
    (MissReason.REVOKED, {"entry": {"state": "REVOKED"}}, "version 3 is REVOKED"),
    (MissReason.EXPIRED, {"entry": {"state": EntryState.EXPIRED}}, "EXPIRED"),
    (MissReason.SUPERSEDED, {"entry": {"state": "SUPERSEDED"}}, "SUPERSEDED"),
    (MissReason.STATE_UNKNOWN, {"entry": {"state": "QUARANTINED"}}, "QUARANTINED"),
    (MissReason.FINGERPRINT_MISMATCH, {"expected": bytes(32)}, "different inputs"),
    (MissReason.FINGERPRINT_MISMATCH, {"expected": FP[:31]}, "different inputs"),
    (
        MissReason.SIGNATURE_UNVERIFIED,
        {"entry": {"sealed_schemes": ("ml-dsa-65", "fn-dsa-512")}},
        "requires slh-dsa-sha2-128f",
    ),
    (
        MissReason.SIGNATURE_UNVERIFIED,
        {"entry": {"sealed_schemes": ()}, "contract": {"required_signatures": ()}},
        "no verified seal",
    ),
    (
        MissReason.STALE,
        {"entry": {"written_at_us": NOW - 990 * MS}},
        "age 990 ms + view lag 20 ms exceeds max staleness 1000 ms of contract 'quotes' by 10 ms",
    ),
    (
        MissReason.FRESHNESS_UNCONFIRMED,
        {"contract": CONTRACTUAL, "entry": {"confirmed_at_us": None}},
        "not confirmed version 3",
    ),
    (
        MissReason.FRESHNESS_UNCONFIRMED,
        {"contract": CONTRACTUAL, "entry": {"confirmed_at_us": NOW - 2000 * MS}},
        "last source confirmation age 2000 ms",
    ),
]


@pytest.mark.parametrize(
    ("reason", "setup", "detail"), MISSES, ids=[f"{m[0].value}-{i}" for i, m in enumerate(MISSES)]
)
def test_miss(reason: MissReason, setup: dict[str, Any], detail: str) -> None:
    verdict = read(**setup)
    assert not verdict.hit
    assert verdict.reason is reason
    assert verdict.reason_code == reason.value
    assert detail in verdict.detail


def test_every_evaluated_reason_has_a_case() -> None:
    # The client decides these after the verdict: a key the vault no longer
    # has (erased), a value that does not decrypt, a contract it does not know.
    produced_elsewhere = {
        MissReason.DECRYPT_FAILED,
        MissReason.CONTRACT_UNKNOWN,
        MissReason.ERASED,
    }
    assert {m[0] for m in MISSES} == set(MissReason) - produced_elsewhere


def test_view_health_comes_first() -> None:
    # A view behind the log cannot even prove absence.
    assert read(missing=True, view={"caught_up": False}).reason is MissReason.VIEW_CATCHING_UP
    assert (
        read(view={"discontinuity": True, "caught_up": False}).reason
        is MissReason.LOG_DISCONTINUITY
    )
    # A view whose store failed says so before anything else.
    assert (
        read(view={"failed": True, "discontinuity": True, "caught_up": False}).reason
        is MissReason.VIEW_FAILED
    )


def test_scope_mismatch_reveals_nothing_about_the_entry() -> None:
    verdict = read(scope="tenant-b", entry={"state": "REVOKED"})
    assert verdict.reason is MissReason.SCOPE_MISMATCH
    assert verdict.fingerprint is None and verdict.version is None
    assert verdict.signatures is None and verdict.freshness is None


def test_stale_miss_carries_the_failing_proof() -> None:
    verdict = read(entry={"written_at_us": NOW - 5000 * MS})
    assert verdict.freshness is not None and verdict.freshness.headroom_ms == -4020
    assert verdict.signatures is not None
    assert verdict.signatures.status is VerificationStatus.VERIFIED


def test_unverified_miss_says_so() -> None:
    verdict = read(entry={"sealed_schemes": ("fn-dsa-512",)})
    assert verdict.signatures is not None
    assert verdict.signatures.status is VerificationStatus.UNVERIFIED


def test_non_strict_skips_only_the_tick_check() -> None:
    lax = {"strict": False}
    assert read(contract=lax, view={"last_tick_age_ms": None}).hit
    assert read(contract=lax, view={"caught_up": False}).reason is MissReason.VIEW_CATCHING_UP
    stale = read(contract=lax, entry={"written_at_us": NOW - 5000 * MS})
    assert stale.reason is MissReason.STALE


def test_contractual_freshness_runs_from_the_confirmation() -> None:
    # Written long ago, confirmed by the source 100 ms ago: served.
    verdict = read(
        contract=CONTRACTUAL,
        entry={"written_at_us": NOW - 60_000 * MS, "confirmed_at_us": NOW - 100 * MS},
    )
    assert verdict.hit
    assert verdict.freshness is not None and verdict.freshness.age_ms == 100


def test_verdict_shape_is_consistent() -> None:
    with pytest.raises(ValueError):
        ReadVerdict(
            hit=True,
            reason=MissReason.STALE,
            detail="",
            freshness=None,
            signatures=None,
            fingerprint=None,
            version=None,
        )


def test_view_health_refuses_negative_lag() -> None:
    with pytest.raises(ValueError, match="lag_ms"):
        ViewHealth(caught_up=True, last_tick_age_ms=0, lag_ms=-1, discontinuity=False)


# -- the read path's form -----------------------------------------------------


@pytest.mark.parametrize(
    "health",
    [
        VIEW,
        ViewHealth(caught_up=False, last_tick_age_ms=None, lag_ms=0, discontinuity=True),
        ViewHealth(caught_up=True, last_tick_age_ms=0, lag_ms=7, discontinuity=False),
    ],
)
def test_a_standing_is_its_health_at_every_moment(health: ViewHealth) -> None:
    standing = ViewStanding.of(health, NOW)
    assert standing.at(NOW) == health
    later = standing.at(NOW + 250 * MS + 999)
    # Ticks and lag age with the reader's clock, in whole milliseconds.
    assert later.last_tick_age_ms == (
        None if health.last_tick_age_ms is None else health.last_tick_age_ms + 250
    )
    assert later.lag_ms == (health.lag_ms + 250 if health.lag_ms else 0)
    # A reader's clock behind the view's numbers never makes an age negative.
    assert standing.at(NOW - 10_000 * MS).lag_ms == 0


def test_a_hit_allocates_only_its_proof() -> None:
    facts = dataclasses.replace(ENTRY)
    judged = judge_read(
        compile_contract(CONTRACT), facts, FP, "tenant-a", ViewStanding.of(VIEW, NOW), NOW
    )
    assert isinstance(judged, FreshnessProof) and judged == read().freshness
    # The summary a hit reports was made with the facts, once.
    assert facts.verified_summary is facts.verified_summary
    assert facts.verified_summary == read().signatures


def test_facts_derive_their_state_and_summary_when_made() -> None:
    odd = dataclasses.replace(ENTRY, state="quarantined", sealed_schemes=("fn-dsa-512",))
    assert odd.parsed_state is EntryState.UNKNOWN
    assert odd.verified_summary.schemes == ("fn-dsa-512",)
    assert odd == dataclasses.replace(odd)  # derived fields take no part in equality


def test_contracts_compile_once() -> None:
    check = compile_contract(CONTRACT)
    assert compile_contract(dataclasses.replace(CONTRACT)) is check
    assert check.required == ("ml-dsa-65", "slh-dsa-sha2-128f")
    assert check.required_set == frozenset(check.required)
    assert not check.contractual and check.strict and check.max_staleness_ms == 1000
    with pytest.raises(ValueError, match="max_staleness_ms"):
        compile_contract(dataclasses.replace(CONTRACT, max_staleness_ms=-1))


def test_a_proof_is_the_frozen_dataclass_its_fields_say() -> None:
    proof = freshness_proof(
        written_at_us=NOW + 3 * MS, now_us=NOW, max_staleness_ms=500, view_lag_ms=7
    )
    same = FreshnessProof(
        age_ms=0, max_staleness_ms=500, headroom_ms=493, view_lag_ms=7, clock_skew_ms=3
    )
    assert proof == same and hash(proof) == hash(same) and repr(proof) == repr(same)
    with pytest.raises(dataclasses.FrozenInstanceError):
        proof.age_ms = 1  # type: ignore[misc]


def test_entries_of_one_seal_share_their_signature_summary() -> None:
    # One object per seal, not per cached entry (fewer for the GC to walk).
    other_key = dataclasses.replace(ENTRY, fingerprint=b"\x01" * 32, version=9)
    next_seal = dataclasses.replace(ENTRY, seal_seq=43)
    assert other_key.verified_summary is ENTRY.verified_summary
    assert next_seal.verified_summary is not ENTRY.verified_summary
    assert next_seal.verified_summary.seal_seq == 43
    assert ENTRY.verified_summary.status is VerificationStatus.VERIFIED
