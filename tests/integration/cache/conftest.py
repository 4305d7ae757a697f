"""Cache nodes against the real broker: keys, config, a running ticker."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from cachet.config import CachetConfig, parse_config
from cachet.crypto.seal import PrivateKeySet
from cachet.crypto.vault import FileVault
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.topics import TopicNames
from tests.integration.ledger_support import Ledger

CONTRACTS: dict[str, dict[str, Any]] = {
    "quotes": {"max_staleness_ms": 30_000, "invalidation": "eager"},
    "fast": {"max_staleness_ms": 400, "invalidation": "eager"},
    "confirmed": {"max_staleness_ms": 2_000, "invalidation": "contractual"},
}


@pytest.fixture(scope="session")
def shared_secrets() -> dict[str, bytes]:
    return {"identifier_secret": os.urandom(32)}


@pytest.fixture
def vault(tmp_path: Path) -> Iterator[FileVault]:
    """The host's key vault: one real file vault every node of a test shares."""
    v = FileVault(tmp_path / "vault" / "vault.sqlite", os.urandom(32))
    yield v
    v.close()


@pytest.fixture
def make_config(bootstrap_servers: str, topics: TopicNames) -> Callable[..., CachetConfig]:
    def make(**sections: Any) -> CachetConfig:
        doc: dict[str, Any] = {
            "kafka": {"bootstrap_servers": bootstrap_servers, "topic_prefix": topics.prefix},
            "attestation": {"seal_batch_max_ms": 10, "unsealed_timeout_ms": 3000},
            "contracts": CONTRACTS,
        }
        doc.update(sections)
        return parse_config(doc, "test")

    return make


@pytest.fixture
def make_keys(
    ledger: Ledger,
    anchor: PrivateKeySet,
    producer_keys: PrivateKeySet,
    shared_secrets: dict[str, bytes],
    vault: FileVault,
) -> Callable[[str], NodeKeys]:
    registered: set[str] = set()

    def make(identity: str) -> NodeKeys:
        if identity not in registered:
            ledger.register(identity, producer_keys)
            registered.add(identity)
        return NodeKeys(
            identity=identity,
            signing=producer_keys,
            anchor=anchor.public(),
            vault=vault,
            **shared_secrets,
        )

    return make


@pytest.fixture
def ticker(ledger: Ledger, make_keys, producer_keys) -> Iterator[WatermarkTicker]:
    make_keys("ticker")
    sp = ledger.sealing_producer("ticker", producer_keys, batch=64)
    t = WatermarkTicker(sp, 3, ticker_id="ticker", interval_s=0.1)
    stop = threading.Event()
    thread = t.start(stop)
    yield t
    stop.set()
    thread.join(5)
    sp.close()


@pytest.fixture
def make_node(
    tmp_path: Path, make_config, make_keys, bootstrap_servers: str
) -> Iterator[Callable[..., CacheNode]]:
    nodes: list[CacheNode] = []

    def make(
        name: str = "node-1", config: CachetConfig | None = None, data_dir: Path | None = None
    ) -> CacheNode:
        node = CacheNode(
            config or make_config(),
            bootstrap_servers,
            make_keys(name),
            data_dir or tmp_path,
            node_id=name,
        )
        nodes.append(node)
        return node

    yield make
    for n in nodes:
        with contextlib.suppress(Exception):  # already closed by the test
            n.close()
