"""The low-latency invalidation listener against the real broker.

A writer node (A) puts and revokes with real seals; the replica under test
is a live view and its listener driven by hand from the test thread, so
each race between the two is run in a chosen order rather than hoped for.
The view's clock is a ManualClock started at the real time: unsealed
timeouts pass when the test says so. The attacker writes the topic with a
plain client and holds no key (tests/integration/cache/logtools.py).

What must hold (materializers/unverified_invalidations.py, DESIGN.md "An
unverified eager invalidation may hide what existed when it arrived, only
until its unsealed timeout; then it is undone and alerted"):

* a genuine revoke is hidden by the listener before the view reads it,
  and the view's verification leaves no marker behind; read by the view
  first, the record is declined by the listener;
* a forged one hides at most until its unsealed timeout, is then undone
  and alerted, and never hides a version written after it arrived;
* a flood of forged ones is bounded in memory;
* after a restart, records applied or timed out before are declined
  however far back the listener reads, and a genuine record re-produced
  hides no version it did not hide the first time.
"""

from __future__ import annotations

import base64
import os
import signal
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, OFFSET_END, TopicPartition

from cachet.clock import SYSTEM_CLOCK, ManualClock
from cachet.config import CachetConfig
from cachet.config.enums import InvalidationMode, Role
from cachet.materializers.invalidation_listener import InvalidationListener
from cachet.materializers.live_view import LiveView
from cachet.materializers.unverified_invalidations import EarlySighting
from cachet.materializers.view import EntryState
from cachet.producers.cache_client import CacheClient
from cachet.producers.sealing import AcknowledgementTimeout
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType, SealRef, new_event
from cachet.schemas.payloads import Invalidated, TransitionAuthority
from cachet.topics import Topic

from .logtools import alerts_by, first, produce_raw, read_alerts, read_events
from .nodeproc import OWNER_TOKEN, Cluster, NodeProcess, start_cluster, wait_until

pytestmark = pytest.mark.integration

UNSEALED_S = 3.0  # make_config's unsealed_timeout_ms
_CODEC = EventCodec()
CONTRACT = "quotes"


@dataclass
class Replica:
    """A live view and its listener, polled by hand."""

    view: LiveView
    listener: InvalidationListener
    clock: ManualClock
    alerts: list[tuple[EventType, dict[str, Any]]] = field(default_factory=list)
    evicted: list[bytes] = field(default_factory=list)
    closed: bool = False
    listener_topic: str = ""
    # Sightings made while the fixture waited for the listener's position
    # (with OFFSET_BEGINNING it has one only once it consumed a record of
    # every partition): handed out first by listen(), never dropped.
    sighted: list[EarlySighting] = field(default_factory=list)

    def poll_until(self, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
        deadline = time.monotonic() + timeout_s
        while not cond():
            assert time.monotonic() < deadline, "the view did not get there in time"
            self.view.poll(0.05)

    def listen(self, want: int, timeout_s: float = 20.0) -> list[EarlySighting]:
        """The next ``want`` sightings of eager invalidations (ticks skipped)."""
        got, self.sighted = self.sighted[:want], self.sighted[want:]
        deadline = time.monotonic() + timeout_s
        while len(got) < want:
            assert time.monotonic() < deadline, f"listener saw {got}, wanted {want}"
            sighting = self.listener.poll(0.1)
            if sighting is not None:
                got.append(sighting)
        return got

    def read_all_invalidations(self) -> bool:
        """The view's consumer read every record of ``invalidations`` so far
        (its position at the high watermark of its own fetches)."""
        consumer = self.view.consumer.consumer
        topic = self.listener_topic
        for tp in consumer.position([TopicPartition(topic, p) for p in range(3)]):
            _, high = consumer.get_watermark_offsets(tp, cached=True)
            if high < 0 or tp.offset < high:
                return False
        return True

    def resolved_through(self, records: list[tuple[int, int]]) -> bool:
        """The view applied or refused everything of ``invalidations`` up to
        and including each (partition, offset): its committed offsets, where
        a restarted view starts reading, are past them."""
        committed = self.view.store.offsets()
        return all(committed.get((self.listener_topic, p), 0) > o for p, o in records)

    def markers(self) -> tuple[int, int]:
        return self.view.unverified_invalidations()

    def expire_unsealed(self) -> None:
        """Let the unsealed timeout pass on the view's clock."""
        self.clock.advance(UNSEALED_S + 1)

    def alerted(self, kind: EventType, about: str) -> bool:
        return any(t is kind and p.get("producer_id") == about for t, p in self.alerts)

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            self.listener.close()
            self.view.close()


@pytest.fixture
def writer(make_node, ticker) -> CacheClient:
    node = make_node("node-a")
    assert node.wait_caught_up(30)
    return CacheClient(node)


@pytest.fixture
def open_replica(
    make_config, anchor, bootstrap_servers: str, codec: EventCodec, tmp_path: Path
) -> Iterator[Callable[..., Replica]]:
    opened: list[Replica] = []

    def open_(
        name: str = "replica", *, start_offset: int = OFFSET_END, max_early: int = 4096
    ) -> Replica:
        config: CachetConfig = make_config()
        clock = ManualClock(SYSTEM_CLOCK.now_us(), time.monotonic())
        alerts: list[tuple[EventType, dict[str, Any]]] = []
        evicted: list[bytes] = []
        view = LiveView.open(
            tmp_path / name,
            bootstrap_servers=bootstrap_servers,
            names=config.kafka.topic_names(),
            anchor=anchor.public(),
            required=config.attestation.schemes,
            alert=lambda t, p: alerts.append((t, p)),
            unsealed_timeout_s=UNSEALED_S,
            on_change=evicted.append,
            clock=clock,
            codec=codec,
            max_early_invalidations=max_early,
        )
        listener = InvalidationListener(
            view,
            bootstrap_servers,
            config.kafka.topic_names(),
            codec,
            3,
            start_offset=start_offset,
        )
        topic = config.kafka.topic_names()(Topic.INVALIDATIONS)
        r = Replica(view, listener, clock, alerts, evicted, listener_topic=topic)
        opened.append(r)
        r.poll_until(lambda: view.health().caught_up)
        # The listener knows where it reads from before anything is produced.
        tps = [TopicPartition(topic, p) for p in range(3)]
        deadline = time.monotonic() + 10
        while any(tp.offset < 0 for tp in listener.consumer.position(tps)):
            assert time.monotonic() < deadline, "listener has no position"
            sighting = listener.poll(0.05)
            if sighting is not None:
                r.sighted.append(sighting)
        return r

    yield open_
    for r in opened:
        r.close()


def _kh(writer: CacheClient, key: str) -> bytes:
    return writer._node.key_hash("default", key)


def _version(r: Replica, kh: bytes) -> int:
    entry = r.view.current(kh)
    return entry.version if entry is not None else 0


def _forged_invalidation(kh: bytes, liar: str, seq: int, version: int | None) -> bytes:
    event = new_event(
        EventType.INVALIDATED,
        {
            "key_hash": kh,
            "namespace": "default",
            "mode": "EAGER",
            "version": version,
            "authority": {"kind": "KEY", "key_id": "ks-node-a", "role": "OWNER"},
            "reason": "forged",
        },
        producer_id=liar,
        producer_seq=seq,
        seal_ref=SealRef(0, seq),  # the seal that would cover it never comes
    )
    return _CODEC.encode(event)


def _liar() -> str:
    return f"node-a@{os.urandom(8).hex()}"  # a registered identity; this epoch never ran


def _invalidations(bootstrap_servers: str, topics) -> list[tuple[int, int]]:
    """(partition, offset) of every Invalidated in the log (ticks left out)."""
    return [
        (rec.partition, rec.offset)
        for rec, e in read_events(bootstrap_servers, topics, Topic.INVALIDATIONS)
        if e.type is EventType.INVALIDATED
    ]


def _written(writer: CacheClient, r: Replica, key: str, value: bytes) -> bytes:
    kh = _kh(writer, key)
    receipt = writer.put(key, value, contract=CONTRACT, wait=True)
    r.poll_until(lambda: _version(r, kh) >= receipt.version)
    return kh


# --------------------------------------------------------------------------


def test_listener_hides_first_and_the_views_verification_leaves_no_marker(
    writer: CacheClient, open_replica
) -> None:
    r = open_replica()
    kh = _written(writer, r, "K", b"k1")
    assert writer.revoke("K")
    assert r.listen(1) == [EarlySighting.HIDDEN]
    # Hidden and evicted before the view read anything of the revoke.
    assert r.view.invalidated(kh, 1)
    assert kh in r.evicted
    assert r.markers() == (1, 1)
    r.poll_until(lambda: r.view.current(kh).state is EntryState.REVOKED and r.markers() == (0, 0))
    assert not r.alerts


def test_read_by_the_view_first_the_listener_declines(writer: CacheClient, open_replica) -> None:
    r = open_replica()
    kh = _written(writer, r, "K", b"k1")
    assert writer.revoke("K")
    # Both of the revoke's records applied (the Invalidated is on its own
    # topic and may be sealed apart from the transition: read is not enough,
    # the view's own marker stands until its seal verifies).
    r.poll_until(
        lambda: (
            r.view.current(kh).state is EntryState.REVOKED
            and r.read_all_invalidations()
            and r.markers() == (0, 0)
        )
    )
    evictions = len(r.evicted)
    assert r.listen(1) == [EarlySighting.READ_BY_VIEW]
    assert r.markers() == (0, 0)  # declined: the listener added no marker
    assert len(r.evicted) == evictions  # declined: nothing evicted, nothing hidden


def test_forged_invalidation_hides_until_its_timeout_then_is_undone_and_alerted(
    writer: CacheClient, open_replica, bootstrap_servers: str, topics
) -> None:
    r = open_replica()
    kh = _written(writer, r, "F", b"f1")
    liar = _liar()
    produce_raw(
        bootstrap_servers,
        topics(Topic.INVALIDATIONS),
        [(kh, _forged_invalidation(kh, liar, 0, None), (), None)],
    )
    assert r.listen(1) == [EarlySighting.HIDDEN]
    assert r.view.invalidated(kh, 1)
    # A genuine version written after the forgery arrived is never hidden by it.
    _written(writer, r, "F", b"f2")
    assert not r.view.invalidated(kh, 2)
    assert r.markers()[0] >= 1  # the forgery's marker is still there, hiding only version 1
    # The view read the forgery too (serving f2 says nothing about the other
    # topic): its own timeout runs from then on the view's clock.
    r.poll_until(lambda: r.markers()[1] == 0)
    # Its unsealed timeout passes: undone (even before the view polls again) ...
    r.expire_unsealed()
    assert not r.view.invalidated(kh, 1)
    # ... and refused and alerted by the view, leaving nothing behind.
    r.poll_until(lambda: r.alerted(EventType.UNSEALED_TIMEOUT, liar))
    assert r.markers() == (0, 0)


def test_a_flood_of_forged_invalidations_is_bounded(
    writer: CacheClient, open_replica, bootstrap_servers: str, topics
) -> None:
    r = open_replica(max_early=20)
    kh = _written(writer, r, "F", b"f1")
    liar = _liar()
    flood = [(kh, _forged_invalidation(kh, liar, i, None), (), None) for i in range(200)]
    produce_raw(bootstrap_servers, topics(Topic.INVALIDATIONS), flood)
    seen = r.listen(200)
    assert seen.count(EarlySighting.HIDDEN) == 20
    assert seen.count(EarlySighting.AT_CAPACITY) == 180
    assert r.markers() == (20, 20)
    # The view reads them all (freeing the listener's share, a marker of its
    # own for each of the other 180: their timeouts run from then on the
    # view's clock), times them out, alerts.
    r.poll_until(lambda: r.markers() == (200, 0))
    r.expire_unsealed()
    r.poll_until(lambda: r.markers() == (0, 0))
    assert r.alerted(EventType.UNSEALED_TIMEOUT, liar)


def test_after_a_restart_nothing_old_is_hidden_again_and_a_genuine_replay_hides_nothing_new(
    writer: CacheClient, open_replica, bootstrap_servers: str, topics, codec: EventCodec
) -> None:
    r = open_replica("replica")
    # K: revoked (its genuine Invalidated verified and applied), then written again.
    kh = _written(writer, r, "K", b"k1")
    assert writer.revoke("K")
    revoke = _invalidations(bootstrap_servers, topics)
    assert len(revoke) == 1
    # Applied, not merely read: a genuine record still waiting for its seal
    # (sealing may lag under load) would be refused when the clock below
    # passes the unsealed timeout.
    r.poll_until(
        lambda: r.view.current(kh).state is EntryState.REVOKED and r.resolved_through(revoke)
    )
    assert not r.alerts
    _written(writer, r, "K", b"k2")
    # G: a forged invalidation that timed out and was alerted.
    gh = _written(writer, r, "G", b"g1")
    liar = _liar()
    produce_raw(
        bootstrap_servers,
        topics(Topic.INVALIDATIONS),
        [(gh, _forged_invalidation(gh, liar, 0, None), (), None)],
    )
    # The writer's own records sealed and read before the clock jumps: one
    # still waiting for its seal then would time out with the forgery.
    writer._node.producer.flush(10)
    r.poll_until(lambda: r.view.pending(gh) and r.read_all_invalidations())
    r.expire_unsealed()
    old = _invalidations(bootstrap_servers, topics)
    assert len(old) == 2
    # Both committed as resolved (a tick below one, still waiting for its
    # seal, would hold the committed offset back: the record would not count
    # as read before the restart).
    r.poll_until(lambda: r.alerted(EventType.UNSEALED_TIMEOUT, liar) and r.resolved_through(old))
    # Only the forgery timed out: the writer's genuine records were verified.
    assert {p.get("producer_id") for t, p in r.alerts} == {liar}
    r.close()

    # Restarted on the same directory, with a listener reading from offset 0:
    # every old record was applied or refused before, so none hides anything.
    r2 = open_replica("replica", start_offset=OFFSET_BEGINNING)
    assert r2.listen(len(old)) == [EarlySighting.READ_BY_VIEW] * len(old)
    assert r2.markers() == (0, 0)
    assert not r2.view.invalidated(kh, 2) and not r2.view.invalidated(gh, 1)

    # The attacker re-produces the genuine Invalidated of version 1 byte for byte.
    record, _ = first(
        read_events(bootstrap_servers, topics, Topic.INVALIDATIONS, codec),
        lambda rec, e: e.type is EventType.INVALIDATED and e.payload["key_hash"] == kh,
    )
    produce_raw(
        bootstrap_servers,
        topics(Topic.INVALIDATIONS),
        [(record.key, record.value, record.headers, record.partition)],
    )
    assert r2.listen(1) == [EarlySighting.HIDDEN]
    # It names version 1, hid version 1 the first time, and hides nothing else.
    assert not r2.view.invalidated(kh, 2)
    r2.poll_until(
        lambda: any(
            t is EventType.INTEGRITY_FAILURE and "duplicate_event" in p["status"]
            for t, p in r2.alerts
        )
    )
    assert r2.markers() == (0, 0)


def test_an_invalidation_leaves_at_once_whatever_the_producers_linger(
    make_node, make_config, bootstrap_servers: str, topics
) -> None:
    lingering = {"linger.ms": 10_000}
    config = make_config(
        kafka={
            "bootstrap_servers": bootstrap_servers,
            "topic_prefix": topics.prefix,
            "producer_overrides": lingering,
        }
    )
    node = make_node("node-l", config=config)
    invalidation = Invalidated(
        key_hash=b"k" * 32,
        namespace="default",
        mode=InvalidationMode.EAGER,
        version=1,
        authority=TransitionAuthority.by_key(node.keys.signing.key_set_id, Role.OWNER),
        reason="test",
    )
    # The producer holds events 10 s before sending them ...
    held = node.producer.emit_with_receipt(
        EventType.INVALIDATED, invalidation.to_avro(), key=invalidation.key_hash
    )
    with pytest.raises(AcknowledgementTimeout):
        held.wait(2)
    # ... but not an invalidation (nor what waited before it).
    node.emit_invalidation(invalidation).wait(5)
    assert held.done


# -------------------------------------------------------- node processes


def _metric(node: NodeProcess, name: str, labels: str) -> float:
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.port}/metrics", headers={"Authorization": f"Bearer {OWNER_TOKEN}"}
    )
    text = urllib.request.urlopen(req, timeout=10).read().decode()
    for line in text.splitlines():
        if line.startswith(f"{name}{{{labels}}}"):
            return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{{{labels}}} not in /metrics")


def _value(r: dict[str, Any]) -> bytes | None:
    return base64.b64decode(r["value_b64"]) if r.get("value_b64") else None


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(
        tmp_path,
        ["node-1", "node-2"],
        '[contracts.quotes]\nmax_staleness_ms = 600000\ninvalidation = "eager"\n',
    )
    try:
        for name in ("node-1", "node-2"):
            c.wait_healthy(c.start_node(name))
        yield c
    finally:
        c.close()


@pytest.mark.multinode
def test_node_processes_hide_on_arrival_and_a_restarted_node_ignores_a_replay(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    a.put("K", b"k1", CONTRACT, wait=True)
    assert wait_until(lambda: _value(b.get("K", CONTRACT)) == b"k1", 20) is not None
    code, out = a.call("/v1/revoke", {"key": "K"})
    assert code == 200 and out["revoked"], out
    assert wait_until(lambda: not b.get("K", CONTRACT)["hit"], 10) is not None

    # `cachet node run` runs the listener, from where the log ended when the
    # node started: it sighted the revoke (and hid the key on arrival, unless
    # a busy host let the view read the record first).
    def sighted() -> float:
        return sum(
            _metric(b, "cachet_early_invalidations_total", f'outcome="{outcome}"')
            for outcome in ("hidden", "read_by_view")
        )

    assert wait_until(lambda: sighted() >= 1, 10)
    a.put("K", b"k2", CONTRACT, wait=True)
    b = cluster.restart(b, signal.SIGTERM)
    cluster.wait_healthy(b)
    assert wait_until(lambda: _value(b.get("K", CONTRACT)) == b"k2", 20) is not None

    record, _ = first(
        read_events(cluster.servers, cluster.names, Topic.INVALIDATIONS),
        lambda rec, e: e.type is EventType.INVALIDATED,
    )
    produce_raw(
        cluster.servers,
        cluster.names(Topic.INVALIDATIONS),
        [(record.key, record.value, record.headers, record.partition)],
    )
    # The replay (version 1) never hides version 2: no read of K misses as revoked.
    deadline = time.monotonic() + 2.0
    while time.monotonic() < deadline:
        r = b.get("K", CONTRACT)
        assert r["reason"] != "revoked", r
        time.sleep(0.01)
    assert wait_until(lambda: _value(b.get("K", CONTRACT)) == b"k2", 10) is not None

    # ... and node-2's view refuses it as the duplicate it is, and says so.
    def duplicate_alerted() -> bool:
        alerts = alerts_by(read_alerts(cluster.servers, cluster.names), identity="node-2")
        return any("duplicate_event" in x.statuses for x in alerts)

    assert wait_until(duplicate_alerted, 20)
