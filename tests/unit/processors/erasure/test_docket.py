"""The docket: which stages are due, from what the log said (pure, no broker)."""

from __future__ import annotations

from cachet.processors.erasure.docket import ErasureDocket, KvScrubEvidence
from cachet.schemas.payloads import (
    ErasureCompleted,
    ErasureRequested,
    ErasureScope,
    ErasureStage,
    HeldEntry,
    LegalHoldAction,
    LegalHoldChanged,
)

S = b"s" * 32
T0 = 1_800_000_000_000_000


def request(rid: str = "r1", subject: bytes = S) -> ErasureRequested:
    return ErasureRequested(
        request_id=rid,
        subject_hash=subject,
        scope=ErasureScope.SUBJECT,
        requested_by="dpo",
        legal_basis="GDPR Art. 17(1)",
    )


def completed(stage: ErasureStage, *held: HeldEntry, rid: str = "r1") -> ErasureCompleted:
    return ErasureCompleted(
        request_id=rid,
        subject_hash=S,
        entries_revoked=0,
        data_keys_destroyed=0,
        l1_evictions=0,
        kv_blocks_scrubbed=0,
        proof_hash=bytes(32),
        stage=stage.value,
        held=held,
    )


def held(ns: str, contract: str, until: int | None, ground: str = "g") -> HeldEntry:
    return HeldEntry(
        key_hash=b"k" * 32, namespace=ns, contract=contract, ground=ground, held_until_us=until
    )


def hold(action: LegalHoldAction, hold_id: str = "h1", namespace: str | None = "eu"):
    return LegalHoldChanged(
        hold_id=hold_id, action=action, namespace=namespace, reason="matter", changed_by="dpo"
    )


def stages(docket: ErasureDocket, now: int) -> list[tuple[str, str]]:
    return [(d.request.request_id, d.stage.value) for d in docket.due(now)]


def test_a_request_is_due_at_once_and_a_retry_of_it_adds_nothing() -> None:
    d = ErasureDocket()
    assert d.add_request(request(), T0, "dpo")
    assert not d.add_request(request(), T0 + 5, "dpo")
    assert stages(d, T0) == [("r1", "immediate")]
    assert d.pending() == 1


def test_a_completed_request_is_never_due_again_and_a_second_report_is_ignored() -> None:
    d = ErasureDocket()
    d.add_request(request(), T0, "dpo")
    assert d.add_completion(completed(ErasureStage.IMMEDIATE))
    assert not d.add_completion(completed(ErasureStage.IMMEDIATE))
    assert stages(d, T0 + 10**12) == []
    assert d.pending() == 0


def test_retention_end_is_due_once_at_the_latest_held_until() -> None:
    d = ErasureDocket()
    d.add_request(request(), T0, "dpo")
    d.add_completion(
        completed(ErasureStage.IMMEDIATE, held("eu", "trades", T0 + 3), held("us", "books", T0 + 9))
    )
    assert d.next_retention_end_us() == T0 + 9
    assert stages(d, T0 + 8) == []
    (due,) = d.due(T0 + 9)
    assert due.stage is ErasureStage.RETENTION_END
    assert due.only_groups == {("eu", "trades"), ("us", "books")}
    d.add_completion(completed(ErasureStage.RETENTION_END))
    assert stages(d, T0 + 100) == [] and d.next_retention_end_us() is None


def test_hold_lifted_is_due_when_no_hold_covers_the_held_groups() -> None:
    d = ErasureDocket()
    d.hold_changed(hold(LegalHoldAction.SET, "h1"))
    d.hold_changed(hold(LegalHoldAction.SET, "h2", namespace=None))  # on nothing: holds nothing
    d.add_request(request(), T0, "dpo")
    d.add_completion(completed(ErasureStage.IMMEDIATE, held("eu", "quotes", None)))
    assert stages(d, T0 + 1) == []
    assert d.pending() == 1
    d.hold_changed(hold(LegalHoldAction.LIFTED, "h1"))
    (due,) = d.due(T0 + 1)
    assert due.stage is ErasureStage.HOLD_LIFTED
    assert due.only_groups == {("eu", "quotes")}
    d.add_completion(completed(ErasureStage.HOLD_LIFTED))
    assert stages(d, T0 + 2) == []


def test_after_retention_end_a_group_still_under_a_hold_waits_for_the_lift() -> None:
    d = ErasureDocket()
    d.hold_changed(hold(LegalHoldAction.SET, "h1"))
    d.add_request(request(), T0, "dpo")
    d.add_completion(
        completed(ErasureStage.IMMEDIATE, held("us", "trades", T0 + 3), held("eu", "q", None))
    )
    assert stages(d, T0 + 3) == [("r1", "retention_end")]
    d.add_completion(completed(ErasureStage.RETENTION_END, held("eu", "q", None)))
    assert stages(d, T0 + 4) == []
    d.hold_changed(hold(LegalHoldAction.LIFTED, "h1"))
    assert stages(d, T0 + 5) == [("r1", "hold_lifted")]


def test_unknown_hold_actions_and_lifts_of_unknown_holds_change_nothing() -> None:
    d = ErasureDocket()
    d.hold_changed(hold(LegalHoldAction.SET, "h1"))
    d.hold_changed(hold(LegalHoldAction.UNKNOWN, "h1"))
    d.hold_changed(hold(LegalHoldAction.LIFTED, "h9"))
    assert [h.hold_id for h in d.holds()] == ["h1"]


def test_a_completion_for_an_unknown_request_is_not_recorded() -> None:
    d = ErasureDocket()
    assert not d.add_completion(completed(ErasureStage.IMMEDIATE, rid="nope"))


def test_kv_scrub_evidence_is_matched_by_tenant_and_time() -> None:
    d = ErasureDocket()
    d.note_kv_scrub(KvScrubEvidence("w1", S.hex(), 4, T0 - 1))
    d.note_kv_scrub(KvScrubEvidence("w1", S.hex(), 7, T0 + 1))
    d.note_kv_scrub(KvScrubEvidence("w2", "ab" * 32, 9, T0 + 1))
    assert [s.blocks for s in d.kv_scrubs(S.hex(), T0)] == [7]


def test_a_workers_summary_of_the_request_is_the_evidence_counted_once() -> None:
    d = ErasureDocket()
    # The session's own evidence (its tenant happens to be the subject) and
    # the worker's summary of the erasure: the summary alone counts.
    d.note_kv_scrub(KvScrubEvidence("w1", S.hex(), 2, T0 + 1, "session-7"))
    d.note_kv_scrub(KvScrubEvidence("w1", S.hex(), 2, T0 + 2, "er-1"))
    d.note_kv_scrub(KvScrubEvidence("w2", S.hex(), 0, T0 + 3, "er-1"))
    d.note_kv_scrub(KvScrubEvidence("w2", S.hex(), 5, T0 + 3, "er-other"))
    assert sorted((s.worker_id, s.blocks) for s in d.kv_scrubs(S.hex(), T0, "er-1")) == [
        ("w1", 2),
        ("w2", 0),
    ]
