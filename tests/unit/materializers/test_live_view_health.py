"""LiveView.health(): maintained by the poll thread, O(1) for a read, truthful.

The view keeps its health as a :class:`~cachet.verdict.ViewStanding` that
whoever changes it rebuilds (records read, partitions at their log end,
verified ticks, a discontinuity), so a read walks no partition. These tests
hold it to what a walk over every partition says, step by step.

The view is real (its RocksDB store and verifying consumer, never polled: no
broker is reached). What the consumer hands a view is handed directly, in
the order a poll does it: records read (``_record``), verified events
(``_apply``, with the seal the verifier would have checked), then the log
ends the fetch reported (``consumer.eof``) and ``_eof``. The integration
tests (tests/integration/cache) cover the same through a real broker.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.clock import ManualClock
from cachet.config import InvalidationMode
from cachet.config.contract import ContractConfig
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet, SealHeader
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, VerifiedSeal
from cachet.materializers.live_view import DATA_TOPICS, LiveView
from cachet.schemas.events import EventType, new_event
from cachet.topics import Topic, TopicNames
from cachet.verdict import (
    EntryFacts,
    MissReason,
    ReadVerdict,
    ViewHealth,
    compile_contract,
    judge_read,
)

NAMES = TopicNames("unit.")
PARTITIONS = 3
MS = 1000
TICKS = NAMES(Topic.INVALIDATIONS)
CONTRACT = ContractConfig(
    name="fast",
    computation_type="quote",
    max_staleness_ms=400,
    required_signatures=(SignatureScheme.ML_DSA_65,),
    fingerprint_fields=("input",),
    audit_trail_depth_days=1,
    invalidation=InvalidationMode.EAGER,
    strict=True,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock()


@pytest.fixture
def view(tmp_path: Path, clock: ManualClock) -> Iterator[LiveView]:
    v = LiveView.open(
        tmp_path / "view",
        bootstrap_servers="127.0.0.1:9",  # never polled: nothing connects
        names=NAMES,
        anchor=PrivateKeySet.generate("anchor").public(),
        required=(SignatureScheme.ML_DSA_65,),
        alert=lambda *_: None,
        partitions=PARTITIONS,
        clock=clock,
    )
    yield v
    v.close()


def walked(view: LiveView, now_us: int) -> ViewHealth:
    """The view's health as a walk over every partition says it (what
    health() computed on every read before it was maintained)."""
    parts = view._parts.values()
    caught_up = view.consumer.registry_caught_up and all(p.reached_eof_once for p in parts)
    behind = [p.last_progress_us for p in parts if not p.at_eof]
    ticks = view._ticks
    return ViewHealth(
        caught_up=caught_up,
        last_tick_age_ms=(
            max(0, (now_us - min(ticks.values())) // MS) if len(ticks) >= PARTITIONS else None
        ),
        lag_ms=max(0, (now_us - min(behind)) // MS) if behind else 0,
        discontinuity=view.discontinuity is not None,
    )


class Feed:
    """Hands the view what its consumer would, with log offsets per partition."""

    def __init__(self, view: LiveView, clock: ManualClock) -> None:
        self.view = view
        self.clock = clock
        self.next_offset: dict[tuple[str, int], int] = {}
        self.seq = 0

    def _origin(self, topic: str, partition: int) -> RecordOrigin:
        offset = self.next_offset.get((topic, partition), 0)
        self.next_offset[(topic, partition)] = offset + 1
        return RecordOrigin(topic, partition, offset, None, 0, raw=b"record %d" % offset)

    def tick(self, partition: int, occurred_at_us: int) -> None:
        """A WatermarkTick read and verified at once (as when its seal is cached)."""
        self.seq += 1
        event = new_event(
            EventType.WATERMARK_TICK,
            {"ticker_id": "t", "partition": partition, "tick_seq": self.seq, "emitted_at_us": 0},
            producer_id="ticker/epoch-1",
            producer_seq=self.seq,
            occurred_at_us=occurred_at_us,
            clock=self.clock.now_us,
        )
        origin = self._origin(TICKS, partition)
        header = SealHeader(
            producer_id="ticker/epoch-1",
            seal_seq=self.seq,
            tree_size=1,
            first_producer_seq=self.seq,
            merkle_root=bytes(32),
            prev_seal_hash=bytes(32),
            key_set_id="ks-1",
            sealed_at_us=occurred_at_us,
        )
        seal = VerifiedSeal(
            header, (bytes(32),), (Topic.INVALIDATIONS.value,), bytes(32), event, None
        )
        self.view._record(event, origin)
        self.view._apply(Applied(event, origin, seal))

    def unsealed(self, topic: str, partition: int) -> None:
        """A record read whose seal has not come yet (it stays pending)."""
        self.seq += 1
        event = new_event(
            EventType.WATERMARK_TICK,
            {},
            producer_id="p/epoch-1",
            producer_seq=self.seq,
            clock=self.clock.now_us,
        )
        self.view._record(event, self._origin(topic, partition))

    def at_end(self, *keys: tuple[str, int]) -> None:
        """The fetch reported these partitions at their log end, then the
        poll's bookkeeping ran (``_eof``, as ``LiveView.poll`` does)."""
        for key in keys:
            self.view.consumer.eof[key] = self.next_offset.get(key, 0)
        self.view._eof()

    def registry_ready(self) -> None:
        self.view.consumer.verifier.on_registry_caught_up(0.0)
        self.view._eof()


def data_partitions() -> list[tuple[str, int]]:
    return [(NAMES(t), p) for t in DATA_TOPICS for p in range(PARTITIONS)]


def read(view: LiveView, clock: ManualClock) -> MissReason | None:
    """What a read of a fresh, sealed entry gets from this view now."""
    now = clock.now_us()
    facts = EntryFacts(
        state="ACTIVE",
        fingerprint=bytes(32),
        version=1,
        written_at_us=now,
        sealed_schemes=("ml-dsa-65",),
        key_set_id="",
        producer_id="p/epoch-1",
        seal_seq=1,
        namespace="default",
        scope=None,
    )
    judged = judge_read(compile_contract(CONTRACT), facts, None, None, view.standing(), now)
    return judged.reason if isinstance(judged, ReadVerdict) else None


def serving(view: LiveView, clock: ManualClock) -> Feed:
    """A view caught up, every partition at its end, ticked just now."""
    feed = Feed(view, clock)
    feed.registry_ready()
    for p in range(PARTITIONS):
        feed.tick(p, clock.now_us())
    feed.at_end(*data_partitions())
    assert read(view, clock) is None
    return feed


def test_health_matches_a_walk_over_every_partition_at_every_step(
    view: LiveView, clock: ManualClock
) -> None:
    feed = Feed(view, clock)
    rng = random.Random(12)
    parts = data_partitions()
    for step in range(400):
        action = rng.randrange(6)
        if action == 0:
            feed.unsealed(*rng.choice(parts))
        elif action == 1:
            feed.tick(rng.randrange(PARTITIONS), clock.now_us() - rng.randrange(2000) * MS)
        elif action == 2:
            feed.at_end(*rng.sample(parts, rng.randrange(1, len(parts) + 1)))
        elif action == 3 and step > 200:
            feed.registry_ready()
        else:
            clock.advance(rng.randrange(500) / 1000)
        assert view.health() == walked(view, clock.now_us()), f"step {step}"
        clock.advance(0.013)
        assert view.health() == walked(view, clock.now_us()), f"step {step}, later"


def test_not_caught_up_until_every_partition_reached_its_start_end(
    view: LiveView, clock: ManualClock
) -> None:
    feed = Feed(view, clock)
    clock.advance(0.25)
    assert view.health().lag_ms == 250  # behind since the view started
    assert read(view, clock) is MissReason.VIEW_CATCHING_UP
    feed.registry_ready()
    feed.at_end(*data_partitions()[:-1])
    assert read(view, clock) is MissReason.VIEW_CATCHING_UP
    feed.at_end(data_partitions()[-1])
    assert view.health().caught_up and view.health().lag_ms == 0
    assert read(view, clock) is MissReason.VIEW_STALE  # caught up, but no tick yet


def test_a_partition_that_falls_behind_shows_its_lag_at_once(
    view: LiveView, clock: ManualClock
) -> None:
    feed = serving(view, clock)
    entries = (NAMES(Topic.ENTRIES), 1)
    feed.unsealed(*entries)  # read mid-poll: no _eof yet
    clock.advance(0.3)
    assert view.health().lag_ms == 300
    for p in range(PARTITIONS):  # ticks go on arriving in the other partitions
        feed.tick(p, clock.now_us())
    feed.at_end(*((TICKS, p) for p in range(PARTITIONS)))
    assert view.health().lag_ms == 300
    # The lag eats into the contract's budget: 300 ms of lag (and a fresh
    # value) still fits 400 ms; 401 ms does not.
    assert read(view, clock) is None
    clock.advance(0.101)
    assert read(view, clock) is MissReason.STALE
    feed.at_end(entries)
    assert view.health().lag_ms == 0


def test_reads_fail_closed_once_ticks_stop(view: LiveView, clock: ManualClock) -> None:
    serving(view, clock)
    clock.advance(0.4)
    assert view.health().last_tick_age_ms == 400
    assert read(view, clock) is None  # exactly the contract's window still holds
    clock.advance(0.001)
    assert read(view, clock) is MissReason.VIEW_STALE
    assert view.health() == walked(view, clock.now_us())


def test_one_partition_without_new_ticks_holds_the_age(view: LiveView, clock: ManualClock) -> None:
    feed = serving(view, clock)
    clock.advance(0.35)
    feed.tick(0, clock.now_us())
    feed.tick(1, clock.now_us())
    clock.advance(0.1)
    # Partition 2's newest tick is 450 ms old: that is the view's tick age.
    assert view.health().last_tick_age_ms == 450
    assert read(view, clock) is MissReason.VIEW_STALE
    feed.tick(2, clock.now_us())
    feed.at_end(*((TICKS, p) for p in range(PARTITIONS)))
    assert view.health().last_tick_age_ms == 100
    assert read(view, clock) is None


def test_a_discontinuity_stops_every_read(view: LiveView, clock: ManualClock) -> None:
    serving(view, clock)
    view._discontinuity("entries[0]: view offset 5 is below the log start 9", "below_low_watermark")
    assert view.health().discontinuity
    assert read(view, clock) is MissReason.LOG_DISCONTINUITY
    assert view.health() == walked(view, clock.now_us())


def test_standing_is_one_immutable_value(view: LiveView, clock: ManualClock) -> None:
    before = view.standing()
    serving(view, clock)
    after = view.standing()
    assert before is not after and not before.caught_up and after.caught_up
    with pytest.raises(dataclasses.FrozenInstanceError):
        after.caught_up = False  # type: ignore[misc]
