"""The erasure processor against the real broker and a real file vault.

Entries are written by a real node under per-subject vault keys; requests
and holds are sealed by registered identities; the processor (its own node,
identity ``erasure``) runs in this process. Every completion the tests look
at is one the processor's intake read back from the log and verified.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable

import pytest

from cachet.api import Cache, _NodeLease
from cachet.config import CachetConfig
from cachet.config.enums import Role, ScrubMethod
from cachet.crypto.vault import FileVault, KeyDestroyed
from cachet.ledger.identity import identity_of
from cachet.materializers.view import EntryState
from cachet.processors.erasure import ErasureProcessor, erasure_reason
from cachet.producers.cache_client import CacheClient, CacheError
from cachet.producers.cache_node import CacheNode
from cachet.producers.data_keys import data_key_name
from cachet.producers.erasure_request import (
    lift_legal_hold,
    request_erasure,
    set_legal_hold,
)
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import EventType
from cachet.schemas.payloads import (
    ErasureCompleted,
    ErasureRequested,
    ErasureScope,
    KvScrubCompleted,
    ScrubTrigger,
)
from cachet.topics import Topic, TopicNames
from tests.integration.cache.logtools import first, produce_raw, read_alerts, read_events

from .conftest import PROCESSOR, REQUESTER, RETENTION_S, ProcessorRunner, completion, wait_for

pytestmark = pytest.mark.integration

SUBJECT = "patient-4711"
OTHER = "patient-0815"


def write(node: CacheNode, subject: str, key: str, namespace: str, contract: str = "quotes"):
    client = CacheClient(node, scope=subject)
    receipt = client.put(
        key, f"{subject}:{key}".encode(), contract=contract, namespace=namespace, wait=True
    )
    return receipt.key_hash


def visible(node: CacheNode, key_hashes: list[bytes]) -> bool:
    return all(node.view.current(k) is not None for k in key_hashes)


def state(node: CacheNode, key_hash: bytes) -> EntryState | None:
    entry = node.view.current(key_hash)
    return entry.state if entry else None


def completions(
    bootstrap_servers: str, names: TopicNames, request_id: str
) -> list[tuple[str, str]]:
    """(stage, producer id) of every ErasureCompleted of the request on the log."""
    return [
        (e.payload["stage"], e.producer_id)
        for _, e in read_events(bootstrap_servers, names, Topic.ERASURE)
        if e.type is EventType.ERASURE_COMPLETED and e.payload["request_id"] == request_id
    ]


def test_erase_a_subject_in_two_namespaces(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    start_processor: Callable[..., ErasureProcessor],
    sealed_by: Callable[[str], SealingProducer],
    vault: FileVault,
    bootstrap_servers: str,
    topics: TopicNames,
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    mine = [write(writer, SUBJECT, f"k{i}", ns) for ns in ("eu", "us") for i in range(2)]
    theirs = write(writer, OTHER, "other-k0", "eu")
    processor = start_processor()
    assert wait_for(lambda: visible(processor.node, [*mine, theirs]))

    ticket = request_erasure(
        sealed_by(REQUESTER), writer.hasher, SUBJECT, requested_by="dpo@example.org"
    )
    done = completion(processor, ticket.request_id, "immediate")

    assert done.entries_revoked == 4
    assert done.data_keys_destroyed == 2
    assert set(done.destroyed_key_ids) == {
        writer.view.current(k).data_key_id
        for k in mine  # type: ignore[union-attr]
    }
    assert {name.rpartition("#")[0] for name in done.destroyed_key_ids} == {
        data_key_name(ns, "quotes", ticket.subject_hash) for ns in ("eu", "us")
    }
    assert done.l1_evictions == 4
    assert done.held == ()
    assert [s.name for s in done.steps] == ["revoke", "destroy_keys", "evict", "kv_scrub"]
    assert all(s.started_at_us <= s.finished_at_us for s in done.steps)
    assert done.steps[0].count == 4 and done.steps[1].count == 2
    # No KV-scrub worker runs here: recorded as not observed, not hidden.
    assert [f.split(":")[0] for f in done.failures] == ["kv_scrub_not_observed"]

    # Every node sees the revocations, sealed under the erasure authority.
    assert wait_for(lambda: all(state(writer, k) is EntryState.REVOKED for k in mine))
    for k in mine:
        entry = writer.view.current(k)
        assert entry is not None
        assert entry.state_reason == erasure_reason(ticket.request_id)
        assert entry.authority == "SYSTEM_ERASURE"
        # Crypto-shredded: the vault refuses the key for good.
        with pytest.raises(KeyDestroyed):
            vault.key(entry.data_key_id)
    # The other subject is untouched.
    assert state(writer, theirs) is EntryState.ACTIVE
    other = writer.view.current(theirs)
    assert other is not None and vault.key(other.data_key_id).key_id == other.data_key_id
    assert processor.latency.labels("immediate")._sum.get() > 0
    assert completions(bootstrap_servers, topics, ticket.request_id) == [
        ("immediate", processor.node.producer.producer_id)
    ]


def test_a_request_from_an_identity_not_allowed_is_refused_and_alerted(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    start_processor: Callable[..., ErasureProcessor],
    sealed_by: Callable[[str], SealingProducer],
    vault: FileVault,
    bootstrap_servers: str,
    topics: TopicNames,
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    mine = write(writer, SUBJECT, "k0", "eu")
    processor = start_processor()
    assert wait_for(lambda: visible(processor.node, [mine]))

    # A registered, validly sealing identity -- but not a data-protection one.
    # requested_by claims the DPO: a label, never a credential.
    ticket = request_erasure(sealed_by("mallory"), writer.hasher, SUBJECT, requested_by="dpo")

    def refused():
        return [
            a
            for a in read_alerts(bootstrap_servers, topics)
            if "unauthorized_requester" in a.statuses and identity_of(a.emitted_by) == PROCESSOR
        ]

    (alert,) = wait_for(refused)
    assert "mallory" in alert.payload["detail"]
    assert processor.docket.case(ticket.request_id) is None
    assert state(writer, mine) is EntryState.ACTIVE
    entry = writer.view.current(mine)
    assert entry is not None and vault.key(entry.data_key_id) is not None
    assert completions(bootstrap_servers, topics, ticket.request_id) == []

    # The same subject through the API, from the DPO's own node: only the
    # data_protection role may ask, and this identity is allowed.
    lease = _NodeLease(make_node(REQUESTER, config))
    owner = Cache(
        lease, role=Role.OWNER, scope=None, contract=None, namespace="eu", owns_node=False
    )
    with pytest.raises(CacheError, match="only the data_protection role"):
        owner.erase(SUBJECT)
    dpo = owner.as_role(Role.DATA_PROTECTION)
    allowed = dpo.erase(SUBJECT, namespace="eu", legal_basis="GDPR Art. 17(1)(b)")
    assert allowed.subject_hash == ticket.subject_hash and allowed.namespace == "eu"
    done = completion(processor, allowed.request_id, "immediate")
    assert done.entries_revoked == 1 and done.namespace == "eu"
    assert wait_for(lambda: state(writer, mine) is EntryState.REVOKED)


def test_a_forged_completion_a_retried_and_a_replayed_request_change_nothing(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    start_processor: Callable[..., ErasureProcessor],
    sealed_by: Callable[[str], SealingProducer],
    bootstrap_servers: str,
    topics: TopicNames,
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    mine = write(writer, SUBJECT, "k0", "eu")
    dpo = sealed_by(REQUESTER)
    # Before any processor runs: a request, and a "completion" of it sealed
    # by another registered identity. Believed, it would suppress the erasure.
    ticket = request_erasure(dpo, writer.hasher, SUBJECT, requested_by="dpo")
    forged = ErasureCompleted(
        request_id=ticket.request_id,
        subject_hash=ticket.subject_hash,
        entries_revoked=0,
        data_keys_destroyed=0,
        l1_evictions=0,
        kv_blocks_scrubbed=0,
        proof_hash=bytes(32),
    )
    mallory = sealed_by("mallory")
    mallory.emit_with_receipt(
        EventType.ERASURE_COMPLETED, forged.to_avro(), key=ticket.subject_hash
    ).wait(10)
    mallory.flush(10)
    processor = start_processor()
    done = completion(processor, ticket.request_id, "immediate")
    assert done.entries_revoked == 1
    assert wait_for(lambda: state(writer, mine) is EntryState.REVOKED)
    assert wait_for(
        lambda: [
            a
            for a in read_alerts(bootstrap_servers, topics)
            if "unauthorized_completion" in a.statuses and "mallory" in a.payload["detail"]
        ]
    )

    # Retried: the same request id in a new, genuinely sealed event.
    again = ErasureRequested(
        request_id=ticket.request_id,
        subject_hash=ticket.subject_hash,
        scope=ErasureScope.SUBJECT,
        requested_by="dpo",
        legal_basis="GDPR Art. 17(1)",
    )
    dpo.emit_with_receipt(
        EventType.ERASURE_REQUESTED, again.to_avro(), key=ticket.subject_hash
    ).wait(10)
    dpo.flush(10)
    # Replayed: the genuine record's exact bytes produced again.
    original, _ = first(
        read_events(bootstrap_servers, topics, Topic.ERASURE),
        lambda _, e: (
            e.type is EventType.ERASURE_REQUESTED
            and e.producer_seq == ticket.producer_seq
            and e.producer_id == ticket.producer_id
        ),
    )
    # Into another partition: read before the original by a fresh reader.
    produce_raw(
        bootstrap_servers,
        topics(Topic.ERASURE),
        [(original.key, original.value, original.headers, (original.partition + 1) % 3)],
    )
    # A restarted processor, reading the whole log again, does nothing either.
    restarted = start_processor(name="erasure")
    assert restarted.docket.case(ticket.request_id) is not None
    assert wait_for(
        lambda: (
            len(
                [
                    a
                    for a in read_alerts(bootstrap_servers, topics)
                    if "duplicate_event" in a.statuses
                ]
            )
            >= 1
        )
    )
    now = restarted._clock.now_us()
    assert restarted.docket.due(now) == [] and processor.docket.due(now) == []
    # The processor's one completion, beside the forged one.
    assert sorted(
        (stage, identity_of(pid))
        for stage, pid in completions(bootstrap_servers, topics, ticket.request_id)
    ) == [("immediate", PROCESSOR), ("immediate", "mallory")]


def test_retention_holds_then_erases_at_its_end_also_after_a_restart(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    processors: ProcessorRunner,
    sealed_by: Callable[[str], SealingProducer],
    vault: FileVault,
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    quote = write(writer, SUBJECT, "q", "eu")
    processor = processors.start()
    # Written last, so its (test-shortened) retention is still running.
    trade = write(writer, SUBJECT, "t", "us", contract="trades")
    assert wait_for(lambda: visible(processor.node, [quote, trade]) and visible(writer, [trade]))
    written_at = writer.view.current(trade).written_at_us  # type: ignore[union-attr]

    ticket = request_erasure(sealed_by(REQUESTER), writer.hasher, SUBJECT, requested_by="dpo")
    first = completion(processor, ticket.request_id, "immediate")
    assert first.entries_revoked == 1 and first.data_keys_destroyed == 1
    (held,) = first.held
    assert held.key_hash == trade
    assert (held.namespace, held.contract) == ("us", "trades")
    assert held.ground == "FINRA 4511 / SEC 17a-4(f)"
    assert held.held_until_us == written_at + RETENTION_S * 1_000_000
    # Held: still ACTIVE, key alive.
    assert state(writer, trade) is EntryState.ACTIVE
    trade_key = writer.view.current(trade).data_key_id  # type: ignore[union-attr]
    assert vault.key(trade_key).key_id == trade_key

    # Restarted while the entry is held: the schedule is rebuilt from the log.
    processors.stop(processor)
    processor = processors.start()
    assert processor.docket.next_retention_end_us() == held.held_until_us
    last = completion(processor, ticket.request_id, "retention_end", timeout_s=RETENTION_S + 30)
    assert last.entries_revoked == 1
    assert last.destroyed_key_ids == (trade_key,)
    assert last.held == ()
    assert last.steps[0].started_at_us >= held.held_until_us
    assert wait_for(lambda: state(writer, trade) is EntryState.REVOKED)
    with pytest.raises(KeyDestroyed):
        vault.key(trade_key)


def test_a_legal_hold_holds_until_it_is_lifted(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    start_processor: Callable[..., ErasureProcessor],
    sealed_by: Callable[[str], SealingProducer],
    vault: FileVault,
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    held_key = write(writer, SUBJECT, "k", "litigation")
    free_key = write(writer, SUBJECT, "k", "eu")
    processor = start_processor()
    assert wait_for(lambda: visible(processor.node, [held_key, free_key]))
    dpo = sealed_by(REQUESTER)
    hold = set_legal_hold(
        dpo,
        writer.hasher,
        subject=SUBJECT,
        namespace="litigation",
        reason="matter 26-cv-0142",
        changed_by="counsel",
    )

    ticket = request_erasure(dpo, writer.hasher, SUBJECT, requested_by="dpo")
    first = completion(processor, ticket.request_id, "immediate")
    assert first.entries_revoked == 1
    (held,) = first.held
    assert held.key_hash == held_key and held.held_until_us is None
    assert held.ground == f"legal hold {hold.hold_id}: matter 26-cv-0142"
    assert state(writer, held_key) is EntryState.ACTIVE

    # Lifting by an identity that may not: refused, still held.
    lift_legal_hold(sealed_by("mallory"), hold.hold_id, reason="x", changed_by="mallory")
    lift_legal_hold(dpo, hold.hold_id, reason="matter closed", changed_by="counsel")
    lifted = completion(processor, ticket.request_id, "hold_lifted")
    assert lifted.entries_revoked == 1 and lifted.data_keys_destroyed == 1
    assert wait_for(lambda: state(writer, held_key) is EntryState.REVOKED)
    with pytest.raises(KeyDestroyed):
        vault.key(writer.view.current(held_key).data_key_id)  # type: ignore[union-attr]
    assert processor.intake.refused >= 1


def test_request_ids_are_uuid7() -> None:
    from cachet.schemas.events import uuid7

    assert uuid.UUID(uuid7()).version == 7


def test_kv_scrub_evidence_of_the_subject_is_recorded(
    make_node: Callable[..., CacheNode],
    config: CachetConfig,
    start_processor: Callable[..., ErasureProcessor],
    sealed_by: Callable[[str], SealingProducer],
) -> None:
    writer = make_node("writer", config)
    assert writer.wait_caught_up(60, ticks=False)
    mine = write(writer, SUBJECT, "k0", "eu")
    processor = start_processor(kv_scrub_wait_s=20)
    assert wait_for(lambda: visible(processor.node, [mine]))
    ticket = request_erasure(sealed_by(REQUESTER), writer.hasher, SUBJECT, requested_by="dpo")
    # What a KV-scrub worker seals after scrubbing the subject's (tenant's)
    # blocks on the verified request; another tenant's scrub does not count.
    worker = sealed_by("kv-1")
    for tenant, blocks in ((bytes(32).hex(), 9), (ticket.subject_hash.hex(), 3)):
        scrub = KvScrubCompleted(
            worker_id="kv-1",
            tenant=tenant,
            trigger=ScrubTrigger.ERASURE,
            blocks=blocks,
            bytes=blocks * 4096,
            coverage=1.0,
            method=ScrubMethod.FULL,
            passes=1,
            duration_us=100,
            device="cpu",
        )
        worker.emit_with_receipt(EventType.KV_SCRUB_COMPLETED, scrub.to_avro()).wait(10)
    worker.flush(10)
    done = completion(processor, ticket.request_id, "immediate")
    assert done.kv_blocks_scrubbed == 3
    assert done.failures == ()
    (step,) = [s for s in done.steps if s.name == "kv_scrub"]
    assert step.count == 3
