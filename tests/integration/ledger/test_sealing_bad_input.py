"""Bad input never breaks the producer, on the real broker.

A rejected emit (a payload that does not encode, a record over the size
limit, a full client queue) must take no producer sequence, seal slot or
leaf index: the events after it are applied by a real verifying consumer
with zero sequence_gap / leaf_mismatch rejections. An event the broker
refuses after it was produced restarts the chain under a new epoch, which
the producer's health reports.
"""

from __future__ import annotations

import copy
import time

import pytest
from confluent_kafka import Producer

from cachet.kafka.settings import MAX_RECORD_BYTES, producer_settings
from cachet.producers.sealing import (
    EventNotDelivered,
    InvalidEvent,
    ProducerQueueFull,
    RecordTooLarge,
    SealingProducer,
    SealingSettings,
)
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType
from cachet.topics import Topic
from tests.integration.ledger_support import Ledger

pytestmark = pytest.mark.integration


def _written(i: int, **changes: object) -> dict:
    payload = copy.deepcopy(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    payload["key_hash"] = i.to_bytes(32, "big")
    for name, value in changes.items():
        if name == "ciphertext":
            payload["value"]["ciphertext"] = value
        else:
            payload[name] = value
    return payload


def _good(sp: SealingProducer, i: int) -> Event:
    payload = _written(i)
    return sp.emit(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])


def _producer(ledger: Ledger, identity: str, keys, client: Producer | None = None, **settings):
    """A producer whose batches close only by count (8) or at close(): no
    time window can close a batch between two looks at its position."""
    return SealingProducer(
        client or Producer(producer_settings(ledger.servers)),
        ledger.codec,
        ledger.names,
        identity,
        keys,
        SealingSettings(batch_max_events=8, batch_max_ms=3_600_000, **settings),
    )


def _assert_all_applied(ledger: Ledger, sent: list[Event]) -> None:
    run = ledger.verify(until=lambda r: len(r.applied) >= len(sent))
    assert not run.rejected, [(r.statuses, r.detail) for r in run.rejected]
    applied = sorted(run.applied, key=lambda a: a.event.producer_seq)
    assert [a.event.event_id for a in applied] == [e.event_id for e in sent]
    # Dense sequence numbers: no number was lost to a rejected call.
    assert [a.event.producer_seq for a in applied] == list(range(len(sent)))


def test_rejected_emits_take_no_number_and_later_events_apply(
    ledger: Ledger, producer_keys
) -> None:
    ledger.register("bad-input-a", producer_keys)
    sp = _producer(ledger, "bad-input-a", producer_keys)
    huge = b"\x00" * (MAX_RECORD_BYTES + 1)
    sent: list[Event] = []

    # Rejected as the very first call: no batch is open, so a seal slot
    # taken here would be a hole in the seal chain.
    before = sp.position
    with pytest.raises(InvalidEvent, match="ttl_ms"):
        sp.emit(EventType.CACHE_WRITTEN, _written(0, ttl_ms="x"))
    assert sp.position == before

    sent.append(_good(sp, 1))
    # Rejected in the middle of an open batch: a leaf taken here would shift
    # the leaf index of every later event of the batch.
    before = sp.position
    assert before.open_batch_events == 1
    with pytest.raises(RecordTooLarge) as too_large:
        sp.emit(EventType.CACHE_WRITTEN, _written(2, ciphertext=huge))
    assert too_large.value.size > too_large.value.limit == MAX_RECORD_BYTES
    assert str(MAX_RECORD_BYTES) in str(too_large.value)
    assert str(too_large.value.size) in str(too_large.value)
    assert sp.position == before
    with pytest.raises(InvalidEvent, match="unknown field"):
        sp.emit(EventType.CACHE_WRITTEN, {**_written(3), "surprise": 1})
    with pytest.raises(InvalidEvent, match="record key must be bytes"):
        sp.emit(EventType.CACHE_WRITTEN, _written(4), key="not-bytes")  # type: ignore[arg-type]
    assert sp.position == before

    sent += [_good(sp, i) for i in range(5, 12)]
    sp.close()
    assert sp.health().unacknowledged == 0
    _assert_all_applied(ledger, sent)


def test_refusals_by_the_client_give_the_numbers_back(ledger: Ledger, producer_keys) -> None:
    """Past our own checks: the client's size check and its full queue."""
    ledger.register("bad-input-b", producer_keys)
    client = Producer(
        producer_settings(
            ledger.servers,
            # One queued message fills the queue; the long linger keeps it
            # queued until acknowledge() flushes it.
            **{"queue.buffering.max.messages": 1, "linger.ms": 5000},
        )
    )
    # Our limit above the client's: only librdkafka refuses the record.
    sp = _producer(
        ledger, "bad-input-b", producer_keys, client, max_message_bytes=4 * MAX_RECORD_BYTES
    )
    sent = [_good(sp, 0)]
    before = sp.position
    with pytest.raises(ProducerQueueFull):
        _good(sp, 1)
    assert sp.position == before
    sp.acknowledge()
    with pytest.raises(RecordTooLarge, match="client"):
        sp.emit(EventType.CACHE_WRITTEN, _written(2, ciphertext=b"\x01" * (MAX_RECORD_BYTES + 1)))
    assert sp.position == before
    sent.append(_good(sp, 3))
    sp.acknowledge()  # past the linger: close() then only waits for the seal
    sp.close()
    _assert_all_applied(ledger, sent)


def test_a_delivery_failure_restarts_the_epoch_and_is_reported(
    ledger: Ledger, producer_keys
) -> None:
    ledger.register("bad-input-c", producer_keys)
    # The first session's broker is unreachable: its event fails delivery
    # asynchronously, after emit returned.
    lost = Producer(producer_settings("127.0.0.1:1", **{"message.timeout.ms": 1500}))
    sp = SealingProducer(
        lost,
        ledger.codec,
        ledger.names,
        "bad-input-c",
        producer_keys,
        SealingSettings(batch_max_events=4, batch_max_ms=30, ack_warn_ms=0),
        producer_factory=lambda: Producer(producer_settings(ledger.servers)),
    )
    first_id = sp.producer_id
    payload = _written(0)
    delivery = sp.emit_with_receipt(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])
    assert any("not acknowledged" in p for p in sp.problems())
    with pytest.raises(EventNotDelivered):
        delivery.wait(30)
    assert delivery.acknowledged is None

    deadline = time.monotonic() + 30
    while sp.health().epoch_restarts == 0 and time.monotonic() < deadline:
        time.sleep(0.01)
    health = sp.health()
    assert health.epoch_restarts == 1 and sp.producer_id != first_id
    (restart,) = health.recent_restarts
    assert restart.old_producer_id == first_id and restart.new_producer_id == sp.producer_id
    assert restart.unsealed_events == 1
    assert any("epoch restarted" in p and "delivery failure" in p for p in health.problems)
    assert not health.ok

    good = sp.emit_with_receipt(EventType.CACHE_WRITTEN, _written(1), key=(1).to_bytes(32, "big"))
    acked = good.wait(30)
    assert acked.offset >= 0 and acked.topic == ledger.names(Topic.ENTRIES)
    sp.close()
    _assert_all_applied(ledger, [good.event])
