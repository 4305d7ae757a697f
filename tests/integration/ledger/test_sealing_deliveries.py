"""The broker's answers reach a sealing producer's deliveries without the
caller serving them: emit only produces, the producer's delivery thread
runs the client's callbacks. On the real broker."""

from __future__ import annotations

import time

import pytest
from confluent_kafka import Producer

from cachet.kafka.settings import producer_settings
from cachet.producers.sealing import SealingProducer, SealingSettings
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import Topic
from tests.integration.ledger_support import Ledger

pytestmark = pytest.mark.integration


def _no_window_producer(ledger: Ledger, identity: str, keys) -> SealingProducer:
    # Nothing seals before close(): the signer never waits on (and so never
    # polls for) these events' acknowledgements.
    return SealingProducer(
        Producer(producer_settings(ledger.servers)),
        ledger.codec,
        ledger.names,
        identity,
        keys,
        SealingSettings(batch_max_events=1000, batch_max_ms=3_600_000, max_delay_ms=3_600_000),
    )


def test_acknowledgements_arrive_while_the_caller_does_nothing(
    ledger: Ledger, producer_keys
) -> None:
    ledger.register("deliveries-a", producer_keys)
    sp = _no_window_producer(ledger, "deliveries-a", producer_keys)
    deliveries = []
    for i in range(5):
        payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
        payload["key_hash"] = i.to_bytes(32, "big")
        deliveries.append(
            sp.emit_with_receipt(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])
        )
    # The caller only looks (done, health); it never polls, waits or flushes.
    deadline = time.monotonic() + 30
    while not all(d.done for d in deliveries) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert all(d.done for d in deliveries)
    acked = [d.acknowledged for d in deliveries]
    assert all(a is not None and a.topic == ledger.names(Topic.ENTRIES) for a in acked)
    assert sp.health().unacknowledged == 0
    assert sp.position.open_batch_events == 5  # answered, not sealed: nothing polled for a seal
    sp.close()
    run = ledger.verify(until=lambda r: len(r.applied) >= 5, timeout_s=30)
    assert {a.event.event_id for a in run.applied} == {d.event.event_id for d in deliveries}
    assert not run.rejected
