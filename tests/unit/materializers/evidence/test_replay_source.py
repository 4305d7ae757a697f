"""The evidence source over the verified replay: real seals, exact bytes, refusals counted."""

from __future__ import annotations

import pytest

from cachet.crypto.merkle import leaf_hash
from cachet.crypto.schemes import SignatureScheme
from cachet.ledger.record import RecordOrigin
from cachet.materializers.evidence import Attestation
from cachet.materializers.evidence.replay_source import ReplayEvidenceSource
from cachet.materializers.replay import ReplayTrust
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.unit.materializers.replay.memlog import T0, ListSource, MemoryLog, written


@pytest.fixture
def log(anchor_keys, exporter_keys) -> MemoryLog:
    log = MemoryLog(EventCodec(), anchor_keys, exporter_keys)
    log.register()
    written(log, 1, T0)
    log.emit(EventType.CACHE_READ, T0 + 10)
    log.seal(T0 + 20)
    return log


def _source(log: MemoryLog, records: list[RecordOrigin], anchor_keys) -> ReplayEvidenceSource:
    trust = ReplayTrust(anchor_keys.public(), frozenset(SignatureScheme))
    return ReplayEvidenceSource(ListSource(records), trust)


def test_verified_records_keep_their_bytes_place_and_seal(log, anchor_keys) -> None:
    source = _source(log, log.records, anchor_keys)
    records = list(source.records())
    assert source.summary.ok and source.summary.verified == 3
    registration, write, read = records
    assert registration.attestation is Attestation.ANCHOR_SIGNED and registration.seal is None
    assert registration.topic is Topic.CONTROL
    assert write.attestation is Attestation.SEALED and write.topic is Topic.ENTRIES
    assert write.seal is not None and write.seal.producer_id == log.pid
    assert (write.seal.seal_seq, write.seal.leaf_index, read.seal.leaf_index) == (0, 0, 1)
    assert write.leaf_hash == leaf_hash(log.records[1].raw)


@pytest.mark.tamper
def test_a_tampered_record_is_refused_and_counted_not_exported(log, anchor_keys) -> None:
    records = list(log.records)
    genuine = records[2]  # the read
    flipped = bytearray(genuine.raw)
    flipped[-1] ^= 0x01
    records[2] = RecordOrigin(
        genuine.topic,
        genuine.partition,
        genuine.offset,
        genuine.key,
        genuine.timestamp_ms,
        genuine.headers,
        bytes(flipped),
    )
    source = _source(log, records, anchor_keys)
    exported = list(source.records())
    assert [r.event.type for r in exported] == [
        EventType.SIGNING_KEY_REGISTERED,
        EventType.CACHE_WRITTEN,
    ]
    assert not source.summary.ok and not source.summary.intact
    assert source.summary.as_json()["refused_records"] >= 1


def test_an_unsealed_tail_is_counted_apart(log, anchor_keys) -> None:
    written(log, 2, T0 + 30)  # no seal follows: the log's tail
    source = _source(log, log.records, anchor_keys)
    assert len(list(source.records())) == 3
    assert not source.summary.ok and source.summary.intact
    assert len(source.summary.unsealed) == 1
