"""The scrub worker's decisions without a broker: which requests it acts on,
what it emits, and that no payload or plaintext tenant id is in its events."""

from __future__ import annotations

from typing import Any, cast

import pytest
from prometheus_client import CollectorRegistry

from cachet.crypto.identifiers import IdentifierHasher
from cachet.processors.kvscrub.errors import ScrubRequestError
from cachet.processors.kvscrub.policy import SessionPolicy
from cachet.processors.kvscrub.pool import BlockPool
from cachet.processors.kvscrub.scrub import Scrubber
from cachet.processors.kvscrub.state import BlockState
from cachet.processors.kvscrub.worker import KvScrubWorker
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import Event, EventType, new_event

from .helpers import SMALL, FakeClock, SkipOneScrubber, block_is_zero, dirty

HASHER = IdentifierHasher(b"s" * 32)


class FakeLedger:
    """Records what would have gone through the sealing producer."""

    def __init__(self) -> None:
        self.events: list[tuple[EventType, dict[str, Any], bytes | None]] = []

    def emit(
        self, event_type: EventType, payload: dict[str, Any], *, key: bytes | None = None
    ) -> None:
        self.events.append((event_type, payload, key))


def make(
    clock: FakeClock, scrubber_cls: type[Scrubber] = Scrubber
) -> tuple[KvScrubWorker, FakeLedger, CollectorRegistry]:
    pool = BlockPool(SMALL, "cpu", clock=clock)
    ledger = FakeLedger()
    registry = CollectorRegistry()
    worker = KvScrubWorker(
        pool,
        scrubber_cls(pool),
        cast(SealingProducer, ledger),
        "w1",
        registry=registry,
        hasher=HASHER,
    )
    return worker, ledger, registry


def request(**payload: Any) -> Event:
    base = {
        "worker_id": None,
        "trigger": "REQUEST_FINISHED",
        "request_id": None,
        "tenant": HASHER.subject("acme").hex(),
        "subject_hash": None,
    }
    return new_event(
        EventType.KV_SCRUB_REQUESTED, {**base, **payload}, producer_id="t", producer_seq=0
    )


def erasure(subject: str, scope: str) -> Event:
    return new_event(
        EventType.ERASURE_REQUESTED,
        {
            "request_id": "er",
            "subject_hash": HASHER.subject(subject),
            "scope": scope,
            "requested_by": "dpo",
            "legal_basis": "GDPR",
        },
        producer_id="t",
        producer_seq=0,
    )


def test_requests_for_other_workers_are_ignored(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    blocks = worker.open_session("acme", "r1", 2)
    worker.on_scrub_requested(request(worker_id="w2", request_id="r1"))
    assert worker.drain() == [] and worker.pool.blocks_of("acme", "r1") == blocks
    worker.on_scrub_requested(request(worker_id="w1", request_id="r1"))
    (report,) = worker.drain()
    assert (
        sorted(report.verified) == sorted(blocks)
        and ledger.events[0][0] is EventType.KV_SCRUB_COMPLETED
    )


def test_plaintext_tenant_and_missing_request_id_are_refused(clock: FakeClock) -> None:
    worker, _, _ = make(clock)
    with pytest.raises(ScrubRequestError, match="keyed hash"):
        worker.on_scrub_requested(request(tenant="acme", request_id="r1"))
    with pytest.raises(ScrubRequestError, match="request_id"):
        worker.on_scrub_requested(request())


def test_events_carry_hashed_tenant_and_no_payload(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    blocks = worker.open_session("acme", "r1", 2)
    dirty(worker.pool, blocks)
    worker.on_erasure_requested(erasure("acme", "TENANT"))
    worker.drain()
    (etype, payload, key) = ledger.events[0]
    assert payload["tenant"] == HASHER.subject("acme").hex() and key == HASHER.subject("acme")
    assert "acme" not in repr(payload) and payload["trigger"] == "ERASURE"
    assert all(isinstance(v, (str, int, float, type(None))) for v in payload.values())


def test_subject_erasure_takes_only_the_subjects_sessions(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    mine = worker.open_session("acme", "r1", 2, subject="user-1")
    other = worker.open_session("acme", "r2", 2, subject="user-2")
    dirty(worker.pool, mine + other)
    worker.on_erasure_requested(erasure("user-1", "SUBJECT"))
    assert worker.pending == 1
    worker.drain()
    assert worker.pool.blocks_of("acme") == other
    assert all(block_is_zero(worker.pool, b) for b in mine)
    # The session's evidence, then the erasure's summary: named by the
    # erasure's request id and the subject's hash, with the blocks it took.
    assert [p["request_id"] for _, p, _ in ledger.events] == ["r1", "er"]
    summary = ledger.events[1][1]
    assert summary["tenant"] == HASHER.subject("user-1").hex()
    assert (summary["blocks"], summary["trigger"], summary["coverage"]) == (2, "ERASURE", 1.0)


def test_an_erasure_of_a_subject_this_worker_never_held_is_still_answered(
    clock: FakeClock,
) -> None:
    worker, ledger, _ = make(clock)
    worker.open_session("acme", "r1", 2, subject="user-1")
    worker.on_erasure_requested(erasure("nobody-here", "SUBJECT"))
    assert worker.pending == 0  # nothing to scrub, and the evidence is already out
    (summary,) = [p for _, p, _ in ledger.events]
    assert summary["request_id"] == "er"
    assert summary["tenant"] == HASHER.subject("nobody-here").hex()
    assert summary["blocks"] == 0


def test_quarantine_is_reported(clock: FakeClock) -> None:
    worker, ledger, registry = make(clock, SkipOneScrubber)
    blocks = worker.open_session("acme", "r1", 3)
    dirty(worker.pool, blocks)
    cast(SkipOneScrubber, worker.scrubber).skip = blocks[0]
    worker.on_scrub_requested(request(request_id="r1"))
    worker.drain()
    types = [t for t, _, _ in ledger.events]
    assert types == [EventType.KV_SCRUB_COMPLETED, EventType.KV_BLOCK_QUARANTINED]
    assert ledger.events[1][1]["blocks"] == 1
    assert worker.pool.state_of(blocks[0]) is BlockState.QUARANTINED
    assert (
        registry.get_sample_value("cachet_kvscrub_quarantined_blocks_total", {"device": "cpu"}) == 1
    )
    assert registry.get_sample_value("cachet_kvscrub_queue_depth") == 0


def test_tick_enforces_ttl(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    worker.open_session("acme", "r1", 2, policy=SessionPolicy(ttl_s=10))
    assert worker.tick() == []
    clock.advance(11)
    (report,) = worker.tick()
    assert report.trigger.value == "TTL_EXPIRED" and worker.pool.sessions() == []
    assert ledger.events[0][1]["trigger"] == "TTL_EXPIRED"


def test_finish_request_scrubs_in_process(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    mine = worker.open_session("acme", "r1", 2)
    other = worker.open_session("acme", "r2", 2)
    dirty(worker.pool, mine + other)
    worker.finish_request("acme", "r1")
    assert worker.pending == 1
    (report,) = worker.drain()
    assert (report.request_id, report.trigger.value) == ("r1", "REQUEST_FINISHED")
    assert all(block_is_zero(worker.pool, b) for b in mine)
    assert worker.pool.blocks_of("acme") == other
    assert [t for t, _, _ in ledger.events] == [EventType.KV_SCRUB_COMPLETED]


def test_alert_goes_through_the_ledger_and_never_raises(clock: FakeClock) -> None:
    worker, ledger, _ = make(clock)
    worker.alert(EventType.INTEGRITY_FAILURE, {"status": "unauthorized_requester"})
    assert ledger.events == [
        (EventType.INTEGRITY_FAILURE, {"status": "unauthorized_requester"}, None)
    ]

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("broker gone")

    ledger.emit = broken  # type: ignore[method-assign]
    worker.alert(EventType.INTEGRITY_FAILURE, {"status": "x"})  # logged, not raised
