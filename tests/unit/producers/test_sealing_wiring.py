"""How a sealing producer is built from configuration, and what its clock and
alerts promise. No broker: the client points at a closed port, so nothing
is ever acknowledged."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from dataclasses import replace
from types import MappingProxyType

import pytest

from cachet.clock import ManualClock
from cachet.config import CachetConfig, default_config
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.settings import MAX_RECORD_BYTES
from cachet.producers.sealing import (
    LedgerAlerts,
    SealingError,
    SealingProducer,
    SealingSettings,
)
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType

NOWHERE = "127.0.0.1:1"  # nothing listens: every event stays unacknowledged


@pytest.fixture(scope="module")
def key_set() -> PrivateKeySet:
    return PrivateKeySet.generate()


def _with_overrides(config: CachetConfig, **overrides: object) -> CachetConfig:
    return replace(
        config, kafka=replace(config.kafka, producer_overrides=MappingProxyType(overrides))
    )


def test_settings_come_from_attestation_and_the_client_limit() -> None:
    config = default_config()
    settings = SealingSettings.from_config(config)
    assert settings.batch_max_events == config.attestation.seal_batch_max_events
    assert settings.batch_max_ms == config.attestation.seal_batch_max_ms
    assert settings.max_message_bytes == MAX_RECORD_BYTES
    smaller = SealingSettings.from_config(_with_overrides(config, **{"message.max.bytes": 4096}))
    assert smaller.max_message_bytes == 4096
    # send_now flushes past a configured linger only (the default is none).
    assert settings.linger_ms == 0
    assert SealingSettings.from_config(_with_overrides(config, **{"linger.ms": 7})).linger_ms == 7


@pytest.fixture
def manual() -> Iterator[tuple[SealingProducer, ManualClock]]:
    clock = ManualClock(now_us=1_800_000_000_000_000)
    config = _with_overrides(default_config(), **{"message.timeout.ms": 60_000})
    producer = SealingProducer.from_config(
        config, NOWHERE, "wiring-test", PrivateKeySet.generate(), clock=clock
    )
    yield producer, clock
    with pytest.raises(SealingError, match="timed out"):  # nothing is ever acknowledged
        producer.close(0.2)


def test_from_config_stamps_events_with_its_clock(
    manual: tuple[SealingProducer, ManualClock],
) -> None:
    producer, clock = manual
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    event = producer.emit(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])
    assert event.occurred_at_us == clock.now_us()
    assert producer.max_message_bytes == MAX_RECORD_BYTES


def test_acknowledgement_age_is_measured_on_its_clock(
    manual: tuple[SealingProducer, ManualClock],
) -> None:
    producer, clock = manual
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
    producer.emit(EventType.CACHE_WRITTEN, payload, key=payload["key_hash"])
    assert producer.health().problems == ()
    clock.advance(SealingSettings().ack_warn_ms / 1000)
    health = producer.health()
    assert health.oldest_unacknowledged_s == pytest.approx(5.0)
    assert any("not acknowledged for 5.0s" in p for p in health.problems)


def test_ledger_alerts_never_raise(
    key_set: PrivateKeySet, caplog: pytest.LogCaptureFixture
) -> None:
    producer = SealingProducer.from_config(default_config(), NOWHERE, "alerts-test", key_set)
    producer.close(1)
    alerts = LedgerAlerts(producer, "node n1")
    with caplog.at_level(logging.ERROR, logger="cachet.producers.sealing"):
        alerts(EventType.INTEGRITY_FAILURE, {"status": "x"})  # closed: refused, logged
    assert any(
        "node n1: alert IntegrityFailure not emitted" in r.getMessage() for r in caplog.records
    )


def _open_events_after(
    producer: SealingProducer,
    clock: ManualClock,
    events: int,
    event_type: EventType = EventType.WATERMARK_TICK,
) -> int:
    """Emit ``events`` of ``event_type``, spend the whole signing budget,
    move past the batch window (not the delay bound), and let the window
    thread look twice."""
    payload = dict(SAMPLE_PAYLOADS[event_type])
    for i in range(events):
        if event_type is EventType.WATERMARK_TICK:
            producer.emit(event_type, {**payload, "tick_seq": i}, partition=0)
        else:
            producer.emit(event_type, {**payload, "version": i + 1}, key=payload["key_hash"])
    producer._budget.spend(60.0, clock.monotonic())  # a minute of signing owed
    clock.advance(SealingSettings().batch_max_ms / 1000 * 2)  # past the window
    time.sleep(0.3)  # the window thread wakes every few ms (no assertion on time)
    return producer.position.open_batch_events


def test_a_spent_budget_holds_a_few_writes_past_their_window(
    manual: tuple[SealingProducer, ManualClock],
) -> None:
    # A node's read batches are a few events a window that carry thousands
    # of reads: sealing them at every window would sign 20 times a second.
    producer, clock = manual
    assert _open_events_after(producer, clock, 3, EventType.CACHE_WRITTEN) == 3
    clock.advance(SealingSettings().max_delay_ms / 1000)  # the delay bound closes it
    deadline = time.monotonic() + 10
    while producer.position.open_batch_events and time.monotonic() < deadline:
        time.sleep(0.01)
    assert producer.position.open_batch_events == 0


def test_a_spent_budget_never_holds_a_batch_with_a_tick(
    manual: tuple[SealingProducer, ManualClock],
) -> None:
    # A round of ticks under a short freshness contract must not wait.
    producer, clock = manual
    deadline = time.monotonic() + 10
    opened = _open_events_after(producer, clock, 3)
    while opened and time.monotonic() < deadline:
        time.sleep(0.01)
        opened = producer.position.open_batch_events
    assert opened == 0
