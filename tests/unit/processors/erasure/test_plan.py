"""Planning an erasure stage: which groups are erased, which are held, and why."""

from __future__ import annotations

import dataclasses

import pytest

from cachet.config import parse_config
from cachet.config.contract import Retention
from cachet.materializers.view import EntryState, ViewEntry
from cachet.processors.erasure.plan import HoldCause, LegalHold, plan_erasure
from cachet.producers.data_keys import data_key_name

S = bytes(range(32))  # the subject
OTHER = bytes(32)
T0 = 1_800_000_000_000_000
SECOND = 1_000_000

CONTRACTS = parse_config(
    {
        "contracts": {
            "quotes": {},
            "trades": {"retention": "3s", "retention_ground": "FINRA 4511 / SEC 17a-4(f)"},
            "books": {"retention": "6y", "retention_ground": "SEC 17a-4(f)"},
        }
    },
    "test",
).contracts


def entry(
    n: int,
    namespace: str = "eu",
    contract: str = "quotes",
    *,
    subject: bytes = S,
    written_at_us: int = T0,
    state: EntryState = EntryState.ACTIVE,
    key_id: str | None = None,
) -> ViewEntry:
    return ViewEntry(
        key_hash=n.to_bytes(32, "big"),
        namespace=namespace,
        contract=contract,
        fingerprint=b"f" * 32,
        version=1,
        state=state,
        ciphertext=b"c",
        nonce=b"n" * 12,
        data_key_id=key_id or data_key_name(namespace, contract, subject) + "#1",
        commitment=b"m" * 32,
        aad_version=1,
        subject_hash=subject,
        classification="pii",
        written_at_us=written_at_us,
        ttl_ms=None,
        state_changed_at_us=written_at_us,
        state_reason="",
        authority="",
        event_hash=b"h" * 32,
        producer_id="node@e",
        seal_seq=0,
    )


def plan(entries, *, holds=(), now_us=T0 + SECOND, requested_at_us=T0 + SECOND, **kw):
    return plan_erasure(
        S, entries, CONTRACTS, holds, now_us=now_us, requested_at_us=requested_at_us, **kw
    )


def test_groups_without_obligation_are_erased_with_their_subject_key() -> None:
    p = plan([entry(1, "eu"), entry(2, "eu"), entry(3, "us")])
    assert [(g.namespace, g.contract) for g in p.erased] == [("eu", "quotes"), ("us", "quotes")]
    assert not p.held
    eu = p.erased[0]
    assert eu.key_name == data_key_name("eu", "quotes", S)
    assert [e.key_hash[-1] for e in eu.to_revoke] == [1, 2]
    assert p.held_entries == ()


def test_only_active_entries_are_revoked_but_the_key_still_goes() -> None:
    p = plan([entry(1, state=EntryState.REVOKED), entry(2, state=EntryState.EXPIRED)])
    (group,) = p.erased
    assert group.to_revoke == ()
    assert group.key_name == data_key_name("eu", "quotes", S)


def test_namespace_filter_and_other_subjects_are_left_alone() -> None:
    p = plan([entry(1, "eu"), entry(2, "us"), entry(3, "eu", subject=OTHER)], namespace="eu")
    (group,) = p.groups
    assert group.namespace == "eu"
    assert [e.key_hash[-1] for e in group.entries] == [1]


def test_entries_written_after_the_request_are_not_part_of_it() -> None:
    p = plan([entry(1), entry(2, written_at_us=T0 + 5 * SECOND)], requested_at_us=T0 + SECOND)
    assert [e.key_hash[-1] for e in p.groups[0].entries] == [1]


def test_retention_holds_the_group_until_the_latest_version_obligation_ends() -> None:
    entries = [
        entry(1, contract="trades", written_at_us=T0),
        entry(2, contract="trades", written_at_us=T0 + 2 * SECOND),
        entry(3),
    ]
    p = plan(entries, now_us=T0 + 3 * SECOND, requested_at_us=T0 + 3 * SECOND)
    (held,) = p.held
    assert held.held_by is HoldCause.RETENTION
    assert held.ground == "FINRA 4511 / SEC 17a-4(f)"
    # Entry 1's obligation ended at T0+3s, entry 2's ends at T0+5s: the key
    # encrypts both, so the group is held until the later one.
    assert held.held_until_us == T0 + 5 * SECOND
    assert held.to_revoke == ()
    assert {h.key_hash[-1] for h in p.held_entries} == {1, 2}
    assert all(h.held_until_us == T0 + 5 * SECOND for h in p.held_entries)
    assert [g.contract for g in p.erased] == ["quotes"]


def test_retention_ends_and_the_group_is_erased() -> None:
    entries = [entry(1, contract="trades", written_at_us=T0)]
    assert plan(entries, now_us=T0 + 3 * SECOND - 1).held
    later = plan(entries, now_us=T0 + 3 * SECOND)
    assert not later.held and [g.contract for g in later.erased] == ["trades"]


def test_retention_counts_calendar_years() -> None:
    feb29 = 1_709_164_800_000_000  # 2024-02-29T00:00:00Z
    assert Retention(6, 0).until_us(feb29) == 1_898_553_600_000_000  # 2030-03-01T00:00:00Z


@pytest.mark.parametrize(
    ("hold", "held"),
    [
        (LegalHold("h1", S, None, "matter 1"), {"eu", "us"}),
        (LegalHold("h2", None, "eu", "matter 2"), {"eu"}),
        (LegalHold("h3", S, "us", "matter 3"), {"us"}),
        (LegalHold("h4", OTHER, None, "another subject"), set()),
        (LegalHold("h5", None, None, "on nothing"), set()),
    ],
)
def test_legal_holds_cover_a_subject_a_namespace_or_both(hold: LegalHold, held: set) -> None:
    p = plan([entry(1, "eu"), entry(2, "us")], holds=[hold])
    assert {g.namespace for g in p.held} == held
    for g in p.held:
        assert g.held_by is HoldCause.LEGAL_HOLD
        assert g.held_until_us is None
        assert g.ground == f"legal hold {hold.hold_id}: {hold.reason}"
        assert all(h.held_until_us is None for h in g.held_entries())


def test_a_legal_hold_outranks_an_ended_or_running_retention() -> None:
    hold = LegalHold("h1", S, None, "litigation")
    p = plan([entry(1, contract="books")], holds=[hold])
    assert p.held[0].held_by is HoldCause.LEGAL_HOLD
    assert p.held[0].held_until_us is None
    lifted = plan([entry(1, contract="books")])
    assert lifted.held[0].held_by is HoldCause.RETENTION


def test_follow_up_stages_act_only_on_the_groups_held_before() -> None:
    entries = [entry(1, "eu"), entry(2, "us", contract="trades", written_at_us=T0)]
    p = plan(entries, now_us=T0 + 10 * SECOND, only_groups={("us", "trades")})
    assert [(g.namespace, g.contract) for g in p.groups] == [("us", "trades")]
    assert p.groups[0].erased


def test_a_key_that_is_not_the_subjects_own_is_reported_never_destroyed_as_theirs() -> None:
    legacy = entry(1, key_id="ns:eu#1")
    (group,) = plan([legacy, entry(2)]).groups
    assert group.erased
    assert group.foreign_key_ids == ("ns:eu#1",)
    assert group.key_name == data_key_name("eu", "quotes", S)


def test_unknown_contracts_are_named() -> None:
    p = plan([entry(1, contract="gone")])
    assert p.unknown_contracts == ("gone",)
    assert p.erased


def test_the_plan_is_a_pure_function_of_its_inputs() -> None:
    entries = [entry(2, "us"), entry(1, "eu", contract="trades"), entry(3, "eu")]
    a = plan(entries, now_us=T0 + 2 * SECOND)
    b = plan(list(reversed(entries)), now_us=T0 + 2 * SECOND)
    assert a == b
    assert dataclasses.replace(a) == a
