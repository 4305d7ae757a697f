"""The design's guarantees, attacked and faulted with real node processes.

Each test runs `cachet node run` children against a broker it owns. The
attacker can produce any record to any topic with a plain client but holds no
signing key: it re-produces genuine records byte for byte, and forges
envelopes that decode but no seal covers. Faults are real signals (SIGTERM,
SIGKILL) and real restarts on the same data directory.

What must hold (DESIGN.md, "Invariants of the verifying consumer and the
views"):

* replay protection is durable: a revoked entry's genuine record
  re-produced after one or two restarts is refused and alerted;
* ready means caught up: a rebuilding node that says it is ready serves
  every acknowledged key at its last acknowledged version;
* verify before you remember: an unsigned record claiming a real producer
  (a node, the watermark ticker) changes nothing for that producer's real
  events;
* an unverified eager invalidation hides a key at most until its unsealed
  timeout, and never hides a version written after it;
* a clean restart raises zero integrity alerts.
"""

from __future__ import annotations

import base64
import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.crypto.identifiers import IdentifierHasher
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType, SealRef, new_event
from cachet.topics import Topic

from .logtools import (
    INTEGRITY_ALERTS,
    Alert,
    alerts_by,
    count_alerts,
    first,
    forge,
    produce_raw,
    read_alerts,
    read_events,
)
from .nodeproc import Cluster, NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.multinode]

# The cluster's unsealed timeout (start_cluster writes unsealed_timeout_ms = 3000).
UNSEALED_S = 3.0
# `quotes` values stay fresh for the whole test; `fresh` goes view_stale as
# soon as a node has seen no watermark tick for longer than the unsealed
# timeout plus a margin (so a record held back until its unsealed timeout
# does not by itself make reads view_stale).
FRESH_WINDOW_MS = 7000
CONTRACTS = (
    '[contracts.quotes]\nmax_staleness_ms = 600000\ninvalidation = "eager"\n'
    f'[contracts.fresh]\nmax_staleness_ms = {FRESH_WINDOW_MS}\ninvalidation = "eager"\n'
)
PARTITIONS = 3
HUGE_SEQ = 2**62
MISSING_SEAL = SealRef(2**40, 0)  # no producer will ever reach this seal


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(tmp_path, ["node-1", "node-2", "node-3"], CONTRACTS)
    try:
        for name in ("node-1", "node-2"):
            c.wait_healthy(c.start_node(name))
        yield c
    finally:
        c.close()


def _value(r: dict) -> bytes | None:
    return base64.b64decode(r["value_b64"]) if r.get("value_b64") else None


def _serving(node: NodeProcess, key: str, value: bytes, contract: str = "quotes") -> bool:
    r = node.get(key, contract)
    return bool(r["hit"]) and _value(r) == value


def _key_hash(c: Cluster, key: str) -> bytes:
    return IdentifierHasher(c.store.identifier_secret()).key("default", key)


def _fresh_epoch_id(identity: str) -> str:
    """A producer id of a registered identity, in an epoch nobody ran."""
    return f"{identity}@{os.urandom(8).hex()}"


# --------------------------------------------------------------------------- 1


@pytest.mark.parametrize(
    "restarts",
    [(signal.SIGTERM,), (signal.SIGKILL,), (signal.SIGTERM, signal.SIGKILL)],
    ids=["sigterm", "sigkill", "sigterm-then-sigkill"],
)
def test_revoked_entry_replayed_after_restart_is_refused_and_alerted(
    cluster: Cluster, restarts: tuple[int, ...]
) -> None:
    a, b = cluster.nodes
    a.put("R", b"secret-v1", "quotes", wait=True)
    assert wait_until(lambda: _serving(b, "R", b"secret-v1"), 20), b.get("R", "quotes")
    assert a.call("/v1/revoke", {"key": "R"})[1]["revoked"]
    assert wait_until(lambda: b.get("R", "quotes")["reason"] == "revoked", 20), b.get("R", "quotes")

    for sig in restarts:
        b = cluster.restart(b, sig)
        cluster.wait_healthy(b)
    assert b.get("R", "quotes")["reason"] == "revoked"

    # The attacker copies the revoked entry's genuine CacheWritten, byte for
    # byte with its key and headers, back onto its partition.
    kh = _key_hash(cluster, "R")
    codec = EventCodec()
    record, written = first(
        read_events(cluster.servers, cluster.names, Topic.ENTRIES, codec),
        lambda r, e: e.type is EventType.CACHE_WRITTEN and r.key == kh,
    )
    produce_raw(
        cluster.servers,
        cluster.names(Topic.ENTRIES),
        [(record.key, record.value, record.headers, record.partition)],
    )

    def refused_by_b() -> list[Alert]:
        return [
            x
            for x in alerts_by(
                read_alerts(cluster.servers, cluster.names, codec),
                identity="node-2",
                types={EventType.INTEGRITY_FAILURE},
            )
            if "duplicate_event" in x.statuses and x.about == written.producer_id
        ]

    served: list[dict] = []

    def settled() -> bool:
        r = b.get("R", "quotes")
        if r["hit"]:
            served.append(r)
            return True
        return bool(refused_by_b())

    wait_until(settled, 30)
    for node in (a, b):
        r = node.get("R", "quotes")
        assert not (r["hit"] and _value(r) == b"secret-v1"), (
            f"{node.name} serves the revoked value after the replay: {r}"
        )
    assert not served, f"node-2 served the revoked entry after a restart: {served}"
    assert refused_by_b(), "no IntegrityFailure(duplicate_event) from the restarted node"


# --------------------------------------------------------------------------- 2


def test_rebuilding_node_is_ready_only_when_every_acknowledged_key_is_served(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    n = 200
    expected: dict[str, bytes] = {}
    # Every put is acknowledged and visible on the writer before the next
    # (so later rounds are real new versions, superseding the previous one),
    # and each gets a seal of its own: the log holds hundreds of seals, more
    # than one fetch brings, as a long-lived deployment's log does.
    rounds = [range(n), range(0, n, 3), range(0, n, 9)]
    for version, keys in enumerate(rounds, start=1):
        for i in keys:
            value = f"v{version}-{i}".encode()
            a.put(f"k{i}", value, "quotes", wait=True)
            expected[f"k{i}"] = value
    # The ground truth: a node that was running all along serves all of it.
    for k, v in expected.items():
        assert wait_until(lambda k=k, v=v: _serving(b, k, v), 30), b.get(k, "quotes")

    # Newest writes first: those are the ones a premature "ready" misses.
    order = list(dict.fromkeys(f"k{i}" for r in reversed(rounds) for i in reversed(r)))
    versioned = [f"k{i}" for i in rounds[1]]

    # Rebuild from offset 0 a few times (fresh, empty data directories):
    # how far the view is when the broker's first fetch ends varies.
    early: list[tuple[str, dict]] = []
    wrong: list[tuple[int, str, str | None, bytes | None]] = []
    for attempt in range(3):
        c = cluster.start_node("node-3", cluster.root / f"node-3-rebuild-{attempt}")
        deadline = time.monotonic() + 120
        polls = 0
        while c.health()[0] != 200:
            assert time.monotonic() < deadline, c.health()
            polls += 1
            if polls % 4 == 0:
                # Before ready nothing may be served at an older version.
                k = versioned[(polls // 4) % len(versioned)]
                r = c.get(k, "quotes")
                if r["hit"] and _value(r) != expected[k]:
                    early.append((k, r))
        # Ready: every acknowledged key, at its last acknowledged value, now.
        for k in order:
            r = c.get(k, "quotes")
            if not (r["hit"] and _value(r) == expected[k]):
                wrong.append((attempt, k, r["reason"], _value(r)))
        c.terminate()
    assert not early, f"served older versions while catching up: {early[:5]}"
    assert not wrong, (
        f"/health said ready but {len(wrong)} reads (of {len(order)} keys x 3 rebuilds) "
        f"were not served at their last value, e.g. (rebuild, key, reason, value) {wrong[:5]}"
    )


# --------------------------------------------------------------------------- 5


def test_unsigned_record_claiming_a_node_does_not_poison_its_later_writes(
    cluster: Cluster,
) -> None:
    a, b = cluster.nodes
    a.put("seed", b"1", "quotes", wait=True)
    codec = EventCodec()
    record, genuine = first(
        read_events(cluster.servers, cluster.names, Topic.ENTRIES, codec),
        lambda r, e: e.type is EventType.CACHE_WRITTEN and e.producer_id.startswith("node-1@"),
    )
    # One record per partition claiming node-1's live producer id, with a
    # sequence number far ahead and a seal that will never exist.
    forged = forge(genuine, producer_seq=HUGE_SEQ, seal_ref=MISSING_SEAL, codec=codec)
    produce_raw(
        cluster.servers,
        cluster.names(Topic.ENTRIES),
        [(record.key, forged, (), p) for p in range(PARTITIONS)],
    )

    written = {f"after-{i}": f"w{i}".encode() for i in range(10)}
    for k, v in written.items():
        a.put(k, v, "quotes")
    for node in (a, b):
        missing = [
            k
            for k, v in written.items()
            if not wait_until(lambda n=node, k=k, v=v: _serving(n, k, v), 20)
        ]
        assert not missing, (
            f"{node.name} does not serve {len(missing)}/10 of node-1's writes after a forged "
            f"record claimed its producer id: {node.get(missing[0], 'quotes')}"
        )


def test_unsigned_tick_claiming_the_ticker_does_not_stop_ticks(cluster: Cluster) -> None:
    a, b = cluster.nodes
    codec = EventCodec()
    record, tick = first(
        read_events(cluster.servers, cluster.names, Topic.INVALIDATIONS, codec),
        lambda r, e: e.type is EventType.WATERMARK_TICK,
    )
    forged = forge(tick, producer_seq=HUGE_SEQ, seal_ref=MISSING_SEAL, codec=codec)
    produce_raw(
        cluster.servers,
        cluster.names(Topic.INVALIDATIONS),
        [(record.key, forged, (), p) for p in range(PARTITIONS)],
    )
    # Long enough for the forged ticks to time out unsealed AND for a node
    # that has stopped accepting the ticker's ticks to go view_stale.
    observe_s = UNSEALED_S + FRESH_WINDOW_MS / 1000 + 4
    bad: list[tuple[str, object]] = []
    end = time.monotonic() + observe_s
    while time.monotonic() < end:
        for node in (a, b):
            code, health = node.health()
            if code != 200:
                bad.append((node.name, health))
            r = node.get("anything", "fresh")
            if r["reason"] == "view_stale":
                bad.append((node.name, r))
        time.sleep(0.25)
    assert not bad, f"ticks stopped after a forged tick claimed the ticker: {bad[:4]}"
    # And the ticker's ticks are still applied: a fresh write is served.
    a.put("after-tick", b"x", "fresh")
    for node in (a, b):
        assert wait_until(lambda n=node: _serving(n, "after-tick", b"x", "fresh"), 20), node.get(
            "after-tick", "fresh"
        )


# --------------------------------------------------------------------------- 6


@pytest.mark.parametrize("forged_version", [None, HUGE_SEQ], ids=["version-null", "version-2^62"])
def test_forged_invalidation_hides_at_most_until_its_unsealed_timeout(
    cluster: Cluster, forged_version: int | None
) -> None:
    a, b = cluster.nodes
    a.put("F", b"f1", "quotes", wait=True)
    a.put("G", b"g1", "quotes", wait=True)
    for node in (a, b):
        assert wait_until(lambda n=node: _serving(n, "F", b"f1") and _serving(n, "G", b"g1"), 20)

    liar = _fresh_epoch_id("node-1")  # a registered identity; this epoch never ran
    codec = EventCodec()
    forged = []
    for seq, key in enumerate(("F", "G")):
        kh = _key_hash(cluster, key)
        event = new_event(
            EventType.INVALIDATED,
            {
                "key_hash": kh,
                "namespace": "default",
                "mode": "EAGER",
                "version": forged_version,
                "authority": {"kind": "KEY", "key_id": "ks-node-1", "role": "OWNER"},
                "reason": "forged",
            },
            producer_id=liar,
            producer_seq=seq,
            seal_ref=SealRef(0, seq),  # the seal that would cover it never comes
        )
        forged.append((kh, codec.encode(event), (), None))
    produce_raw(cluster.servers, cluster.names(Topic.INVALIDATIONS), forged)
    # A genuine version of G written after the forgery.
    a.put("G", b"g2", "quotes")

    # The forgeries never get a seal: every node times them out and alerts.
    def alerted_by(identity: str) -> bool:
        return any(
            x.about == liar
            for x in alerts_by(
                read_alerts(cluster.servers, cluster.names, codec),
                identity=identity,
                types={EventType.UNSEALED_TIMEOUT},
            )
        )

    for identity in ("node-1", "node-2"):
        assert wait_until(lambda i=identity: alerted_by(i), UNSEALED_S + 30), (
            f"{identity} did not alert the unsealed forged invalidations"
        )
    # After its unsealed timeout the forgery hides nothing: F is served
    # again, and so is the version of G written after the forgery.
    for node in (a, b):
        assert wait_until(lambda n=node: _serving(n, "F", b"f1"), 10), (
            f"{node.name} still hides F after the forged invalidation timed out: "
            f"{node.get('F', 'quotes')}"
        )
        assert wait_until(lambda n=node: _serving(n, "G", b"g2"), 10), (
            f"{node.name} hides a version written after the forged invalidation: "
            f"{node.get('G', 'quotes')}"
        )


# --------------------------------------------------------------------------- 8


def test_clean_restart_raises_no_integrity_alerts(cluster: Cluster) -> None:
    a, b = cluster.nodes
    for i in range(20):
        a.put(f"c{i}", b"v1", "quotes")
        if i % 4 == 0:
            a.put(f"c{i}", b"v2", "quotes", wait=True)
        if i % 5 == 0:
            a.call("/v1/revoke", {"key": f"c{i}"})
    a.put("before", b"1", "quotes", wait=True)
    assert wait_until(lambda: _serving(b, "before", b"1"), 20), b.get("before", "quotes")
    # Let the first run settle (its own coverage timeouts, if any, pass).
    time.sleep(UNSEALED_S + 1)
    codec = EventCodec()
    old_ids = {x.emitted_by for x in read_alerts(cluster.servers, cluster.names, codec)}
    old_ids |= {
        e.producer_id
        for _, e in read_events(cluster.servers, cluster.names, Topic.CONTROL, codec)
        if e.producer_id.startswith("node-2@")
    }

    b = cluster.restart(b, signal.SIGTERM)
    cluster.wait_healthy(b)
    a.put("after", b"2", "quotes", wait=True)
    assert wait_until(lambda: _serving(b, "after", b"2"), 20), b.get("after", "quotes")
    # Every timeout a restart could trip (unsealed, events missing from a
    # verified seal) fires within the unsealed timeout of startup.
    time.sleep(2 * UNSEALED_S + 2)
    b.put("marker", b"3", "quotes", wait=True)

    alerts = read_alerts(cluster.servers, cluster.names, codec)
    new = alerts_by(alerts, identity="node-2", types=INTEGRITY_ALERTS, exclude_emitters=old_ids)
    assert not new, (
        f"a clean restart of node-2 raised {len(new)} integrity alert(s): "
        f"{dict(count_alerts(new))}; first: {new[0].payload}"
    )
