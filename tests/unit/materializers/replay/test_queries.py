"""The examiner's queries: a key's history per role, reads by node,
violations of a contract; and the CLI's time parsing."""

from __future__ import annotations

import argparse

import pytest

from cachet.cli.replay import parse_time
from cachet.config.enums import Role
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.materializers.replay import ReplayError, ReplayTrust
from cachet.materializers.replay.queries import (
    ValueView,
    key_history,
    reads_by_node,
    violations,
)
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from tests.unit.materializers.replay.memlog import T0, ListSource, MemoryLog, key, written

S = 1_000_000
COMMITMENT = SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN]["value"]["commitment"]


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="module")
def log(anchor) -> MemoryLog:
    log = MemoryLog(EventCodec(), anchor, PrivateKeySet.generate())
    log.register()
    written(log, 1, T0)
    written(log, 2, T0 + 1)
    log.emit(EventType.CACHE_READ, T0 + S, key_hash=key(1), node_id="node-a")
    log.emit(EventType.CACHE_READ, T0 + 2 * S, key_hash=key(1), node_id="node-b")
    log.emit(EventType.CACHE_READ, T0 + 3 * S, key_hash=key(2), node_id="node-a")
    log.emit(EventType.CONTRACT_VIOLATION, T0 + 2 * S, key_hash=key(1), contract="finra_quotes")
    log.emit(EventType.CONTRACT_VIOLATION, T0 + 2 * S, key_hash=key(2), contract="other")
    log.seal(T0 + 4 * S)
    written(log, 1, T0 + 5 * S)  # never sealed: never in any answer
    return log


@pytest.fixture
def trust(anchor) -> ReplayTrust:
    return ReplayTrust(anchor.public(), frozenset(SignatureScheme))


def test_a_regulator_sees_commitments_never_plaintext(log, trust) -> None:
    history = key_history(ListSource(log.records), key(1), trust=trust, role=Role.REGULATOR)
    assert [h.event_type for h in history] == [
        EventType.CACHE_WRITTEN,
        EventType.CACHE_READ,
        EventType.CACHE_READ,
    ]
    assert (history[0].value_view, history[0].value) == (ValueView.COMMITMENT, COMMITMENT)
    assert history[0].seal is not None and history[0].seal.producer_id == log.pid
    with pytest.raises(ReplayError, match="only an owner"):
        key_history(
            ListSource(log.records), key(1), trust=trust, role=Role.AUDITOR, reveal=lambda w: b"x"
        )


def test_an_owner_gets_plaintext_only_when_asking(log, trust) -> None:
    plain = key_history(
        ListSource(log.records),
        key(1),
        trust=trust,
        role=Role.OWNER,
        reveal=lambda w: b"opened:" + w.value.nonce,
    )
    assert (plain[0].value_view, plain[0].value) == (ValueView.PLAINTEXT, b"opened:" + bytes(12))
    unasked = key_history(ListSource(log.records), key(1), trust=trust, role=Role.OWNER)
    assert unasked[0].value_view is ValueView.COMMITMENT


def test_roles_that_read_no_values_get_no_history(log, trust) -> None:
    with pytest.raises(ReplayError, match="may not read"):
        key_history(ListSource(log.records), key(1), trust=trust, role=Role.DATA_PROTECTION)


def test_reads_by_node_in_a_window(log, trust) -> None:
    reads = reads_by_node(ListSource(log.records), "node-a", T0, T0 + 2 * S, trust=trust)
    assert [(r.node_id, r.key_hash, r.outcome) for r in reads] == [("node-a", key(1), "HIT")]
    wider = reads_by_node(ListSource(log.records), "node-a", T0, T0 + 3 * S, trust=trust)
    assert len(wider) == 2
    with pytest.raises(ReplayError, match="before it starts"):
        reads_by_node(ListSource(log.records), "node-a", T0 + S, T0, trust=trust)


def test_violations_of_one_contract(log, trust) -> None:
    found = violations(ListSource(log.records), "finra_quotes", T0, T0 + 4 * S, trust=trust)
    assert [(v.contract, v.key_hash) for v in found] == [("finra_quotes", key(1))]
    assert violations(ListSource(log.records), "finra_quotes", T0, T0 + S, trust=trust) == []


def test_times_parse_as_iso_integers_or_now() -> None:
    assert parse_time("1970-01-01T00:00:01Z") == 1_000_000
    assert parse_time("1970-01-01T00:00:01") == 1_000_000  # no zone: UTC
    assert parse_time("1970-01-01T01:00:01+01:00") == 1_000_000
    assert parse_time("1234") == 1234
    assert parse_time("now") > T0
    with pytest.raises(argparse.ArgumentTypeError, match="ISO 8601"):
        parse_time("yesterday")


def _read(n: int, node: str, **fields: object) -> dict[str, object]:
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_READ])
    payload.update(key_hash=key(n), node_id=node, **fields)
    return payload


@pytest.fixture(scope="module")
def batched(anchor) -> MemoryLog:
    """A v4 node's reads: node-a's batch of three (key 1, key 2, key 1) at
    T0+1s, node-b's batch at T0+2s, and one old CacheRead of node-a at T0+3s."""
    log = MemoryLog(EventCodec(), anchor, PrivateKeySet.generate())
    log.register()
    written(log, 1, T0)
    reads = [
        _read(1, "node-a"),
        _read(2, "node-a", outcome="MISS", reason="stale"),
        _read(1, "node-a"),
    ]
    log.emit(EventType.CACHE_READ_BATCH, T0 + S, node_id="node-a", reads=reads)
    log.emit(EventType.CACHE_READ_BATCH, T0 + 2 * S, node_id="node-b", reads=[_read(1, "node-b")])
    log.emit(EventType.CACHE_READ, T0 + 3 * S, key_hash=key(1), node_id="node-a")
    log.seal(T0 + 4 * S)
    return log


def test_reads_by_node_expands_batches(batched, trust) -> None:
    source = ListSource(batched.records)
    reads = reads_by_node(source, "node-a", T0, T0 + 4 * S, trust=trust)
    assert [(r.index, r.key_hash, r.reason) for r in reads] == [
        (0, key(1), "served"),
        (1, key(2), "stale"),
        (2, key(1), "served"),
        (None, key(1), "served"),
    ]
    batch = batched.codec.decode(batched.records[2].raw)
    assert batch.type is EventType.CACHE_READ_BATCH
    assert {(r.event_id, r.offset) for r in reads[:3]} == {
        (batch.event_id, batched.records[2].offset)
    }
    assert reads[3].event_id != batch.event_id
    only_b = reads_by_node(source, "node-b", T0, T0 + 4 * S, trust=trust)
    assert [(r.node_id, r.index) for r in only_b] == [("node-b", 0)]
    # The window is by the batch's event time.
    assert reads_by_node(source, "node-a", T0 + S + 1, T0 + 4 * S, trust=trust)[0].index is None


def test_key_history_lists_each_read_of_the_key_in_a_batch(batched, trust) -> None:
    history = key_history(ListSource(batched.records), key(1), trust=trust, role=Role.REGULATOR)
    assert [(h.event_type, h.read_index) for h in history] == [
        (EventType.CACHE_WRITTEN, None),
        (EventType.CACHE_READ_BATCH, 0),
        (EventType.CACHE_READ_BATCH, 2),  # read 1 of the batch is key 2's
        (EventType.CACHE_READ_BATCH, 0),
        (EventType.CACHE_READ, None),
    ]
    assert history[1].detail == "read by node-a as owner: HIT (served)"
    assert all(h.seal is not None for h in history)
    other = key_history(ListSource(batched.records), key(2), trust=trust, role=Role.AUDITOR)
    assert [(h.read_index, h.detail) for h in other] == [
        (1, "read by node-a as owner: MISS (stale)")
    ]
