"""Two node processes and a ticker against one broker the test owns.

A write on one node is served by the other; a revoke on one stops the other
within the contract's window; a frozen broker (SIGSTOP) makes both fail
closed and SIGCONT brings them back; a broker restarted empty is a
LogDiscontinuity, alerted, and no node serves from a view whose log vanished.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cachet.kafka.settings import consumer_settings
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic

from .nodeproc import Cluster, NodeProcess, start_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.multinode]

WINDOW_MS = 3000


@pytest.fixture
def cluster(tmp_path: Path) -> Iterator[Cluster]:
    c = start_cluster(
        tmp_path,
        ["node-1", "node-2"],
        f'[contracts.quotes]\nmax_staleness_ms = {WINDOW_MS}\ninvalidation = "eager"\n',
    )
    try:
        for name in ("node-1", "node-2"):
            c.wait_healthy(c.start_node(name))
        yield c
    finally:
        c.close()


def _serving(node: NodeProcess, key: str, value: bytes) -> bool:
    import base64

    r = node.get(key, "quotes")
    return r["hit"] and base64.b64decode(r["value_b64"]) == value


def test_multinode_write_revoke_freeze_and_vanished_log(cluster: Cluster, record_property) -> None:
    a, b = cluster.nodes

    # A write on one node is served by the other.
    a.put("AAPL", b"189.12", "quotes", wait=True)
    assert wait_until(lambda: _serving(b, "AAPL", b"189.12"), 20) is not None, b.get(
        "AAPL", "quotes"
    )

    # A revoke on one stops the other within the window.
    assert a.call("/v1/revoke", {"key": "AAPL"})[1]["revoked"]
    took = wait_until(lambda: b.get("AAPL", "quotes")["reason"] == "revoked", WINDOW_MS / 1000)
    assert took is not None, b.get("AAPL", "quotes")
    record_property("revoke_propagation_s", round(took, 3))

    # Freeze the broker: both nodes fail closed within the window (plus one
    # tick interval and a poll), and come back after SIGCONT.
    a.put("MSFT", b"410.5", "quotes", wait=True)
    assert wait_until(lambda: _serving(b, "MSFT", b"410.5"), 20) is not None, b.get(
        "MSFT", "quotes"
    )
    cluster.broker.freeze()
    try:
        for node in (a, b):
            took = wait_until(
                lambda n=node: n.get("MSFT", "quotes")["reason"] == "view_stale",
                WINDOW_MS / 1000 + 2,
            )
            assert took is not None, node.get("MSFT", "quotes")
    finally:
        cluster.broker.thaw()
    # Back: ticks flow again (the old value has meanwhile outlived its window,
    # so it is honestly "stale"; a fresh write is served by both).
    for node in (a, b):
        assert (
            wait_until(lambda n=node: n.get("MSFT", "quotes")["reason"] != "view_stale", 30)
            is not None
        ), node.get("MSFT", "quotes")
    a.put("MSFT", b"411.0", "quotes", wait=True)
    for node in (a, b):
        assert wait_until(lambda n=node: _serving(n, "MSFT", b"411.0"), 30) is not None, node.get(
            "MSFT", "quotes"
        )

    # A broker restarted empty: the log the views were built from is gone.
    cluster.restart_broker_empty()
    for node in (a, b):
        took = wait_until(
            lambda n=node: n.get("MSFT", "quotes")["reason"] == "log_discontinuity", 30
        )
        assert took is not None, node.get("MSFT", "quotes")
        code, health = node.health()
        assert code == 503 and any("log_discontinuity" in p for p in health["problems"])
    assert not _serving(a, "MSFT", b"411.0") and not _serving(b, "MSFT", b"411.0")

    # ... and alerted: LogDiscontinuity events on the (new) alerts topic.
    c = Consumer(consumer_settings(cluster.broker.bootstrap_servers))
    c.assign([TopicPartition(cluster.names(Topic.ALERTS), p, 0) for p in range(3)])
    codec, kinds = EventCodec(), []
    deadline = time.monotonic() + 15
    while len({k.split("@")[0] for k in kinds}) < 2 and time.monotonic() < deadline:
        for m in c.consume(50, 0.3):
            if m.error() is None:
                e = codec.decode(m.value())
                if e.type is EventType.LOG_DISCONTINUITY:
                    kinds.append(e.producer_id)
    c.close()
    assert len({k.split("@")[0] for k in kinds}) == 2, kinds
