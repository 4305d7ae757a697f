"""The expiry processor's decisions and bookkeeping, without a broker."""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from cachet.config import parse_config
from cachet.materializers.live_view import FRESHNESS_CONFIRMED
from cachet.materializers.view import EntryState, ViewEntry
from cachet.processors.expiry import ExpiryLimit, ExpiryProcessor, expiry_of
from cachet.schemas.events import EventType
from cachet.verdict import ViewHealth

MS = 1000  # microseconds
T0 = 1_800_000_000_000_000

CONTRACTS = parse_config(
    {
        "contracts": {
            "quotes": {"max_staleness_ms": 30_000, "invalidation": "eager"},
            "confirmed": {"max_staleness_ms": 2_000, "invalidation": "contractual"},
        }
    },
    "test",
).contracts


def entry(key: bytes = b"k", **changes: Any) -> ViewEntry:
    base = ViewEntry(
        key_hash=key.ljust(32, b"\0"),
        namespace="default",
        contract="quotes",
        fingerprint=b"\1" * 32,
        version=1,
        state=EntryState.ACTIVE,
        ciphertext=b"c",
        nonce=b"n" * 12,
        data_key_id="ns:default",
        commitment=b"\2" * 32,
        aad_version=1,
        subject_hash=None,
        classification="unclassified",
        written_at_us=T0,
        ttl_ms=None,
        state_changed_at_us=T0,
        state_reason="",
        authority="",
        event_hash=b"\3" * 32,
        producer_id="writer",
        seal_seq=0,
    )
    return dataclasses.replace(base, **changes)


class FakeStore:
    def __init__(self) -> None:
        self.rows: dict[bytes, ViewEntry] = {}

    def entries(self):
        return iter(sorted(self.rows.values(), key=lambda e: e.key_hash))


class FakeView:
    def __init__(self, *entries: ViewEntry) -> None:
        self.store = FakeStore()
        self.caught_up = True
        for e in entries:
            self.put(e)

    def put(self, e: ViewEntry) -> None:
        self.store.rows[e.key_hash] = e

    def health(self) -> ViewHealth:
        return ViewHealth(
            caught_up=self.caught_up, last_tick_age_ms=0, lag_ms=0, discontinuity=False
        )


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[tuple[EventType, dict[str, Any], bytes | None]] = []

    def emit(self, event_type: EventType, payload: dict[str, Any], key: bytes | None = None):
        self.sent.append((event_type, payload, key))


def processor(view: FakeView, **kw: Any) -> tuple[ExpiryProcessor, FakeProducer]:
    producer = FakeProducer()
    proc = ExpiryProcessor(view, producer, CONTRACTS, registry=CollectorRegistry(), **kw)  # type: ignore[arg-type]
    return proc, producer


# -- decisions -------------------------------------------------------------


def test_ttl_is_the_limit_when_set_even_past_max_staleness() -> None:
    e = entry(ttl_ms=60_000)
    assert expiry_of(e, CONTRACTS["quotes"], T0 + 45_000 * MS) is None
    d = expiry_of(e, CONTRACTS["quotes"], T0 + 60_001 * MS)
    assert d is not None and d.limit is ExpiryLimit.TTL
    assert d.reason == "ttl_exceeded: age 60001 ms > ttl 60000 ms"


def test_max_staleness_without_ttl_and_the_boundary() -> None:
    e = entry()
    assert expiry_of(e, CONTRACTS["quotes"], T0 + 30_000 * MS) is None  # not *past* it yet
    d = expiry_of(e, CONTRACTS["quotes"], T0 + 31_200 * MS)
    assert d is not None and d.limit is ExpiryLimit.MAX_STALENESS
    assert (
        d.reason == "max_staleness_exceeded: age 31200 ms > contract quotes max staleness 30000 ms"
    )


def test_contractual_age_counts_from_the_last_confirmation() -> None:
    confirmed = entry(
        contract="confirmed",
        state_reason=FRESHNESS_CONFIRMED,
        state_changed_at_us=T0 + 10_000 * MS,
    )
    assert expiry_of(confirmed, CONTRACTS["confirmed"], T0 + 11_000 * MS) is None
    d = expiry_of(confirmed, CONTRACTS["confirmed"], T0 + 12_500 * MS)
    assert d is not None and d.age_ms == 2_500
    unconfirmed = entry(contract="confirmed")
    assert expiry_of(unconfirmed, CONTRACTS["confirmed"], T0 + 2_001 * MS) is not None


def test_only_active_entries_and_known_limits() -> None:
    late = T0 + 10**9 * MS
    for state in (EntryState.EXPIRED, EntryState.REVOKED, EntryState.SUPERSEDED):
        assert expiry_of(entry(state=state, ttl_ms=1), CONTRACTS["quotes"], late) is None
    assert expiry_of(entry(contract="gone"), None, late) is None
    assert expiry_of(entry(contract="gone", ttl_ms=5), None, late) is not None


# -- scanning --------------------------------------------------------------


def test_scan_emits_the_transition_chained_to_the_entry() -> None:
    e = entry(ttl_ms=300, version=4)
    proc, producer = processor(FakeView(e, entry(b"fresh")))
    assert proc.scan(T0 + 301 * MS) == 1
    [(event_type, payload, key)] = producer.sent
    assert event_type is EventType.STATE_TRANSITIONED and key == e.key_hash
    assert payload == {
        "key_hash": e.key_hash,
        "namespace": "default",
        "version": 4,
        "from_state": "ACTIVE",
        "to_state": "EXPIRED",
        "authority": {"kind": "SYSTEM_EXPIRY", "key_id": None, "role": None},
        "reason": "ttl_exceeded: age 301 ms > ttl 300 ms",
        "prev_event_hash": e.event_hash,
    }
    assert (
        proc.registry.get_sample_value("cachet_expiry_transitions_total", {"limit": "ttl_exceeded"})
        == 1
    )


def test_no_second_emission_while_in_flight_then_forgotten_once_landed() -> None:
    e = entry(ttl_ms=300)
    view = FakeView(e)
    proc, producer = processor(view)
    now = T0 + 1_000 * MS
    assert proc.scan(now) == 1
    assert [proc.scan(now + i * MS) for i in range(1, 6)] == [0] * 5
    assert proc.in_flight == 1
    view.put(dataclasses.replace(e, state=EntryState.EXPIRED, event_hash=b"\4" * 32))
    assert proc.scan(now + 10 * MS) == 0
    assert proc.in_flight == 0 and len(producer.sent) == 1


def test_a_newer_version_is_its_own_expiry() -> None:
    e = entry(ttl_ms=300)
    view = FakeView(e)
    proc, producer = processor(view)
    assert proc.scan(T0 + 1_000 * MS) == 1
    v2 = entry(ttl_ms=300, version=2, written_at_us=T0 + 900 * MS)
    view.put(v2)  # v1 superseded before its expiry landed
    assert proc.scan(T0 + 1_000 * MS) == 0 and proc.in_flight == 0
    assert proc.scan(T0 + 1_201 * MS) == 1
    assert [p["version"] for _, p, _ in producer.sent] == [1, 2]


def test_lost_transition_is_emitted_again_after_retry_window() -> None:
    e = entry(ttl_ms=300)
    proc, producer = processor(FakeView(e), retry_after_s=5.0)
    now = T0 + 1_000 * MS
    assert proc.scan(now) == 1
    assert proc.scan(now + 4_999 * MS) == 0
    assert proc.scan(now + 5_000 * MS) == 1
    assert len(producer.sent) == 2


def test_no_scan_before_the_view_caught_up() -> None:
    view = FakeView(entry(ttl_ms=1))
    view.caught_up = False
    proc, producer = processor(view)
    assert proc.scan(T0 + 10**6 * MS) == 0 and producer.sent == []
    view.caught_up = True
    assert proc.scan(T0 + 10**6 * MS) == 1


@pytest.mark.parametrize("unknown_with_ttl", [False, True])
def test_unknown_contract(unknown_with_ttl: bool) -> None:
    e = entry(contract="gone", ttl_ms=10 if unknown_with_ttl else None)
    proc, producer = processor(FakeView(e))
    assert proc.scan(T0 + 10**9 * MS) == int(unknown_with_ttl)
