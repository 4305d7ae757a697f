"""The read audit's batching: flush by count and by time, the record size
bound, blocking when full, failures counted per read, group commit.

No broker. Two kinds of producer under the audit: a real SealingProducer
whose client points at a closed port (it validates, encodes and size-checks
every event for real; nothing is ever acknowledged), and ``_Broker``, a
producer whose acknowledgements the test gives, one by one. The real broker
and the verifying consumer are in tests/integration/cache/test_read_audit.py.
"""

from __future__ import annotations

import gc
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from typing import Any

import pytest

from cachet.config import parse_config
from cachet.config.enums import AuditMode
from cachet.crypto.seal import PrivateKeySet
from cachet.producers.read_audit import ReadAudit, ReadNotAudited
from cachet.producers.sealing import (
    AcknowledgementTimeout,
    EventNotDelivered,
    SealingError,
    SealingProducer,
    SealingSettings,
)
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event
from cachet.topics import TopicNames

NOWHERE = "127.0.0.1:1"  # nothing listens: every event stays unacknowledged
READ = SAMPLE_PAYLOADS[EventType.CACHE_READ]
CODEC = EventCodec()


def _read(i: int, **changes: Any) -> dict[str, Any]:
    return {**READ, "key_hash": i.to_bytes(32, "big"), **changes}


def _eventually(predicate: Callable[[], object], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.002)


class _Answer:
    """A Delivery whose broker answer the test gives (ReadAudit only waits)."""

    def __init__(self, event: Event) -> None:
        self.event = event
        self._given = threading.Event()
        self._error: str | None = None

    def give(self, error: str | None = None) -> None:
        self._error = error
        self._given.set()

    def wait(self, timeout_s: float = 10.0) -> None:
        if not self._given.wait(timeout_s):
            raise AcknowledgementTimeout("no answer yet", self.event)
        if self._error is not None:
            raise EventNotDelivered(self._error, self.event)


class _Broker:
    """Stands in for the sealing producer: checks each event with the real
    codec, keeps it, and acknowledges it when told (or at once: ``auto``)."""

    def __init__(self, auto: bool = False) -> None:
        self.auto = auto
        self.events: list[Event] = []
        self.answers: list[_Answer] = []
        self.keys: list[bytes | None] = []
        self._lock = threading.Lock()

    def emit_with_receipt(
        self, event_type: EventType, payload: dict[str, Any], *, key: bytes | None = None
    ) -> _Answer:
        with self._lock:
            seq = len(self.events)
            # A copy: the audit empties its list once the producer took the bytes.
            payload = {**payload, "reads": list(payload["reads"])}
            event = new_event(
                event_type,
                payload,
                producer_id="node-a@1f",
                producer_seq=seq,
                seal_ref=SealRef(0, seq),
            )
            CODEC.encode(event)
            answer = _Answer(event)
            self.events.append(event)
            self.answers.append(answer)
            self.keys.append(key)
        if self.auto:
            answer.give()
        return answer

    def send_now(self, delivery: _Answer, timeout_s: float = 0.25) -> None:
        """The sync flush asks the client to send at once; answers come as given."""

    def reads(self) -> list[dict[str, Any]]:
        with self._lock:
            return [r for e in self.events for r in e.payload["reads"]]


@pytest.fixture
def audits() -> Iterator[list[ReadAudit]]:
    made: list[ReadAudit] = []
    yield made
    for audit in made:
        audit.close(0.2)


def _audit(made: list[ReadAudit], producer: Any, mode: AuditMode, **kw: Any) -> ReadAudit:
    audit = ReadAudit(producer, mode, node_id="node-a", **kw)
    made.append(audit)
    return audit


# --------------------------------------------------------------------------- async


def test_a_full_batch_is_flushed_at_once_and_the_rest_waits_for_its_time(audits) -> None:
    broker = _Broker(auto=True)
    audit = _audit(audits, broker, AuditMode.ASYNC, batch_max_reads=10, flush_interval_ms=60_000)
    reads = [_read(i) for i in range(15)]
    for r in reads[:10]:
        audit.record(r["key_hash"], r)
    _eventually(lambda: audit.acknowledged == 10)
    for r in reads[10:]:
        audit.record(r["key_hash"], r)
    assert [len(e.payload["reads"]) for e in broker.events] == [10]
    assert audit.pending == 5 and audit.emitted == 10  # counts reads, not events
    audit.close()  # flushes what waits for its window
    assert [len(e.payload["reads"]) for e in broker.events] == [10, 5]
    # One CacheReadBatch per flush, keyed by the node, every read once and in order.
    assert {e.type for e in broker.events} == {EventType.CACHE_READ_BATCH}
    assert {e.payload["node_id"] for e in broker.events} == {"node-a"}
    assert set(broker.keys) == {b"node-a"}
    assert broker.reads() == reads
    assert (audit.emitted, audit.acknowledged, audit.failed) == (15, 15, 0)


def test_a_batch_that_does_not_fill_is_flushed_by_time(audits) -> None:
    broker = _Broker(auto=True)
    audit = _audit(audits, broker, AuditMode.ASYNC, batch_max_reads=1000, flush_interval_ms=20)
    for i in range(3):
        audit.record(b"", _read(i))
    _eventually(lambda: audit.acknowledged == 3)  # no close: the window flushed it
    assert [len(e.payload["reads"]) for e in broker.events] == [3]


def test_a_full_buffer_is_flushed_without_waiting_for_its_window(audits) -> None:
    broker = _Broker(auto=True)
    audit = _audit(
        audits, broker, AuditMode.ASYNC, max_pending=5, batch_max_reads=1000,
        flush_interval_ms=60_000,
    )  # fmt: skip
    for i in range(5):
        audit.record(b"", _read(i))
    _eventually(lambda: audit.acknowledged == 5)  # no close, and the window is a minute
    assert [len(e.payload["reads"]) for e in broker.events] == [5]


def test_a_full_buffer_blocks_the_reader_until_the_emitter_takes_it(audits) -> None:
    broker = _Broker()  # nothing is acknowledged until the test says so
    audit = _audit(
        audits, broker, AuditMode.ASYNC, max_pending=4, batch_max_reads=4, flush_interval_ms=0
    )
    for i in range(4):
        audit.record(b"", _read(i))
    _eventually(lambda: len(broker.events) == 1)  # emitted; waits for its acknowledgement
    for i in range(4, 8):
        audit.record(b"", _read(i))  # the buffer holds max_pending reads now
    blocked = threading.Thread(target=audit.record, args=(b"", _read(8)))
    blocked.start()
    blocked.join(0.3)
    assert blocked.is_alive() and audit.pending == 4  # blocked, nothing dropped
    broker.answers[0].give()  # the flush is acknowledged: the emitter takes the next
    blocked.join(10)
    assert not blocked.is_alive()
    _eventually(lambda: len(broker.events) == 2)
    broker.answers[1].give()
    _eventually(lambda: len(broker.events) == 3)
    broker.answers[2].give()
    _eventually(lambda: audit.acknowledged == 9)
    assert [r["key_hash"] for r in broker.reads()] == [_read(i)["key_hash"] for i in range(9)]


def test_reads_of_a_batch_the_broker_refused_are_counted_and_reported(audits) -> None:
    broker = _Broker()
    audit = _audit(audits, broker, AuditMode.ASYNC, batch_max_reads=4, flush_interval_ms=0)
    audit.record(b"", _read(0))
    _eventually(lambda: len(broker.events) == 1)
    for i in range(1, 11):  # taken together once the first flush is answered
        audit.record(b"", _read(i))
    broker.answers[0].give()
    _eventually(lambda: len(broker.events) == 4)  # 10 reads: 4 + 4 + 2
    broker.answers[1].give()
    broker.answers[2].give("Broker: message timed out")
    broker.answers[3].give()
    _eventually(lambda: audit.acknowledged + audit.failed == 11)
    assert (audit.acknowledged, audit.failed) == (7, 4)  # per read, not per event
    (problem,) = audit.problems()
    assert "4 read audit record(s)" in problem and "timed out" in problem


def test_a_read_recorded_after_close_raises() -> None:
    audit = ReadAudit(_Broker(auto=True), AuditMode.ASYNC, node_id="node-a")
    audit.close()
    with pytest.raises(SealingError, match="closed"):
        audit.record(b"", _read(0))


# --------------------------------------------------------------------------- size and bad reads


@pytest.fixture
def nowhere() -> Iterator[Callable[..., SealingProducer]]:
    """Real sealing producers whose client never reaches a broker."""
    made: list[SealingProducer] = []

    def make(max_message_bytes: int = 4 * 1024 * 1024) -> SealingProducer:
        from confluent_kafka import Producer

        from cachet.kafka.settings import producer_settings

        producer = SealingProducer(
            Producer(producer_settings(NOWHERE, {"message.timeout.ms": 60_000})),
            CODEC,
            TopicNames("cachet."),
            "read-audit-test",
            PrivateKeySet.generate(),
            SealingSettings(max_message_bytes=max_message_bytes),
        )
        made.append(producer)
        return producer

    yield make
    for producer in made:
        with pytest.raises(SealingError):  # nothing is ever acknowledged
            producer.close(0.2)


class _Spy:
    """Forwards to a real producer and keeps what it accepted."""

    def __init__(self, producer: SealingProducer) -> None:
        self.producer = producer
        self.accepted: list[Event] = []

    def emit_with_receipt(self, event_type: EventType, payload: dict, **kw: Any) -> Any:
        delivery = self.producer.emit_with_receipt(event_type, payload, **kw)
        # A copy: the audit empties its list once the producer took the bytes.
        event = delivery.event
        self.accepted.append(replace(event, payload={**payload, "reads": list(payload["reads"])}))
        return delivery


def test_records_stay_under_the_producers_message_size_limit(audits, nowhere) -> None:
    limit = 4096
    spy = _Spy(nowhere(max_message_bytes=limit))
    # One flush of 300 reads (about 35 KB): the count, not the window, flushes it.
    audit = _audit(audits, spy, AuditMode.ASYNC, batch_max_reads=300, flush_interval_ms=60_000)
    reads = [_read(i) for i in range(300)]
    for r in reads:
        audit.record(b"", r)
    _eventually(lambda: audit.emitted == 300)
    # What the producer checks against its limit: key, value and framing.
    sizes = [len(CODEC.encode(e)) + len(b"node-a") + 64 for e in spy.accepted]
    assert max(sizes) <= limit
    assert len(spy.accepted) >= 300 * 100 // limit  # split, not truncated
    assert [r for e in spy.accepted for r in e.payload["reads"]] == reads
    assert audit.failed == 0


def test_a_read_that_does_not_encode_costs_only_itself(audits, nowhere) -> None:
    spy = _Spy(nowhere())
    audit = _audit(audits, spy, AuditMode.ASYNC, batch_max_reads=16, flush_interval_ms=60_000)
    reads = [_read(i) for i in range(16)]
    reads[11] = _read(11, outcome="MAYBE")
    for r in reads:
        audit.record(b"", r)
    _eventually(lambda: audit.emitted + audit.failed == 16)
    assert audit.failed == 1 and "outcome" in audit.problems()[0]
    assert [r for e in spy.accepted for r in e.payload["reads"]] == reads[:11] + reads[12:]


# --------------------------------------------------------------------------- sync


def test_sync_readers_share_acknowledgements(audits) -> None:
    broker = _Broker()
    audit = _audit(audits, broker, AuditMode.SYNC, batch_max_reads=1000)
    stop = threading.Event()

    def acknowledge() -> None:  # a broker that answers every few milliseconds
        while not stop.is_set():
            for answer in list(broker.answers):
                answer.give()
            time.sleep(0.005)

    acker = threading.Thread(target=acknowledge)
    acker.start()
    threads, per_thread = 8, 40
    errors: list[BaseException] = []

    def reader(t: int) -> None:
        try:
            for i in range(per_thread):
                audit.record(b"", _read(t * per_thread + i))
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(30)
    stop.set()
    acker.join(5)
    reads = threads * per_thread
    assert errors == [] and audit.acknowledged == reads
    # Every read returned only after its batch was acknowledged, and the
    # readers shared those acknowledgements: far fewer events than reads.
    assert len(broker.events) <= reads // 3, len(broker.events)
    assert sorted(r["key_hash"] for r in broker.reads()) == sorted(
        _read(i)["key_hash"] for i in range(reads)
    )


def test_a_sync_read_whose_batch_is_refused_raises(audits) -> None:
    broker = _Broker()
    audit = _audit(audits, broker, AuditMode.SYNC)
    outcome: list[BaseException | None] = []

    def read() -> None:
        try:
            audit.record(b"", _read(0))
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - checked below
            outcome.append(exc)

    t = threading.Thread(target=read)
    t.start()
    _eventually(lambda: len(broker.events) == 1)
    broker.answers[0].give("Broker: not enough in-sync replicas")
    t.join(10)
    (error,) = outcome
    assert isinstance(error, ReadNotAudited) and isinstance(error, SealingError)
    assert "in-sync" in str(error) and audit.failed == 1

    broker.auto = True
    audit.record(b"", _read(1))  # the next one is acknowledged, and returns
    assert audit.acknowledged == 1


# --------------------------------------------------------------------------- config


def test_batch_max_reads_comes_from_the_audit_section() -> None:
    assert parse_config({}, "t").audit.batch_max_reads == 1000
    assert parse_config({"audit": {"batch_max_reads": 250}}, "t").audit.batch_max_reads == 250
    with pytest.raises(Exception, match="batch_max_reads"):
        parse_config({"audit": {"batch_max_reads": 0}}, "t")


# --------------------------------------------------------------------------- flat proof


def test_a_flat_proof_is_emitted_nested_and_the_readers_dict_stays_untracked(audits) -> None:
    broker = _Broker(auto=True)
    audit = _audit(audits, broker, AuditMode.ASYNC, batch_max_reads=2, flush_interval_ms=60_000)
    proof = READ["freshness"]
    flat = {k: v for k, v in _read(1).items() if k != "freshness"}
    flat.update(freshness=None, **proof)
    assert not gc.is_tracked(flat)  # plain values only: the collector never walks it
    audit.record(b"", flat)
    audit.record(b"", _read(2))  # nested already: emitted as it is
    _eventually(lambda: audit.acknowledged == 2)
    assert broker.reads() == [_read(1), _read(2)]
    assert "age_ms" in flat and flat["freshness"] is None  # the reader's dict is not changed


def test_the_emitted_records_are_let_go_before_the_acknowledgement(audits) -> None:
    # Held until the broker answers, 1,000 tracked records a batch would be
    # promoted to the collector's oldest generation.
    broker = _Broker()  # answers only when told
    given: list[dict[str, Any]] = []
    emit = broker.emit_with_receipt

    def keep(event_type: EventType, payload: dict[str, Any], **kw: Any) -> _Answer:
        given.append(payload)
        return emit(event_type, payload, **kw)

    broker.emit_with_receipt = keep  # type: ignore[method-assign]
    audit = _audit(audits, broker, AuditMode.ASYNC, batch_max_reads=3, flush_interval_ms=60_000)
    for i in range(3):
        audit.record(b"", _read(i))
    _eventually(lambda: audit.emitted == 3)
    assert audit.acknowledged == 0 and given[0]["reads"] == []
    broker.answers[0].give()
    _eventually(lambda: audit.acknowledged == 3)
    assert broker.reads() == [_read(i) for i in range(3)]
