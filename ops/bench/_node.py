"""Cache nodes for the benchmarks: one ledger, keys, a ticker, nodes on demand.

The setup mirrors tests/integration/cache/conftest.py: one trust anchor, one
producer key set registered (signed by the anchor) on the control topic for
every identity, the deployment-wide secrets and one file key vault shared
by every node, and a
WatermarkTicker running all along (a node serves only while it sees ticks).
Everything a run creates (broker, topics, RocksDB directories, threads) is
gone when the ``bench_ledger`` block exits.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from confluent_kafka import Producer

from cachet.config import CachetConfig, parse_config
from cachet.config.enums import AuditMode
from cachet.crypto.seal import PrivateKeySet
from cachet.crypto.vault import FileVault
from cachet.errors import CachetError
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.ledger.registration import registration_payload
from cachet.ops.bench._support import bench_broker
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames

__all__ = [
    "BENCH_CONTRACT",
    "BenchLedger",
    "BenchSetupError",
    "bench_config",
    "bench_ledger",
    "bench_keys",
    "bench_value",
    "fill",
    "wait_until",
    "wait_visible",
]

# The contract every benchmark reads and writes under: eager invalidation and
# a staleness window far longer than any run, so no read misses as STALE.
BENCH_CONTRACT = "bench"
_BENCH_CONTRACT_BODY = {"max_staleness_ms": 600_000, "invalidation": "eager"}
TICK_INTERVAL_S = 0.1


class BenchSetupError(CachetError):
    """A benchmark's cache node did not become ready (broker, seals, ticks)."""


def bench_config(
    base: CachetConfig,
    servers: str,
    names: TopicNames,
    *,
    audit: AuditMode | None = None,
) -> CachetConfig:
    """``base`` (the user's cachet.toml) pointed at the bench broker and topics,
    with the bench contract added and, when given, the audit mode replaced.
    """
    contract = parse_config({"contracts": {BENCH_CONTRACT: _BENCH_CONTRACT_BODY}}, "<bench>")
    contracts = dict(base.contracts)
    contracts[BENCH_CONTRACT] = contract.contracts[BENCH_CONTRACT]
    overrides = dict(base.kafka.producer_overrides)
    return dataclasses.replace(
        base,
        kafka=dataclasses.replace(
            base.kafka,
            bootstrap_servers=servers,
            topic_prefix=names.prefix,
            producer_overrides=MappingProxyType(overrides),
        ),
        audit=base.audit if audit is None else dataclasses.replace(base.audit, mode=audit),
        contracts=MappingProxyType(contracts),
    )


@dataclass
class BenchLedger:
    """Fresh topics on a broker, the keys of one deployment, and its nodes."""

    servers: str
    names: TopicNames
    base: CachetConfig
    data_dir: Path
    anchor: PrivateKeySet = field(default_factory=lambda: PrivateKeySet.generate("bench-anchor"))
    signing: PrivateKeySet = field(default_factory=PrivateKeySet.generate)
    secrets: dict[str, bytes] = field(default_factory=lambda: {"identifier_secret": os.urandom(32)})
    nodes: list[CacheNode] = field(default_factory=list)
    # The host's key vault: one file every node of the run shares (opened on first use).
    vault: FileVault | None = None
    _codec: EventCodec = field(default_factory=EventCodec)
    _registered: set[str] = field(default_factory=set)

    def register(self, identity: str) -> None:
        """SigningKeyRegistered for ``identity``, signed by the anchor."""
        if identity in self._registered:
            return
        producer = Producer(producer_settings(self.servers))
        payload = registration_payload(identity, self.signing.public(), 0, self.anchor)
        publish_control(
            producer, self._codec, self.names, EventType.SIGNING_KEY_REGISTERED, payload
        )
        self._registered.add(identity)

    def sealing_producer(self, identity: str) -> SealingProducer:
        self.register(identity)
        config = bench_config(self.base, self.servers, self.names)
        return SealingProducer.from_config(
            config, self.servers, identity, self.signing, codec=self._codec
        )

    def node(
        self, name: str, *, audit: AuditMode | None = None, ready_timeout_s: float = 60.0
    ) -> CacheNode:
        """A started node, caught up with the log and seeing ticks."""
        self.register(name)
        if self.vault is None:
            self.vault = FileVault(self.data_dir / "vault.sqlite", os.urandom(32))
        keys = NodeKeys(
            identity=name,
            signing=self.signing,
            anchor=self.anchor.public(),
            vault=self.vault,
            **self.secrets,
        )
        config = bench_config(
            self.base,
            self.servers,
            self.names,
            audit=audit,
        )
        node = CacheNode(config, self.servers, keys, self.data_dir, node_id=name)
        self.nodes.append(node)
        if not node.wait_caught_up(ready_timeout_s):
            raise BenchSetupError(
                f"node {name} not caught up with ticks within {ready_timeout_s}s "
                f"(broker {self.servers}, topics {self.names.prefix}*)"
            )
        return node

    def close_node(self, node: CacheNode) -> None:
        """Close one node now (its threads would otherwise skew the next figure)."""
        if node in self.nodes:
            self.nodes.remove(node)
            node.close()

    def close(self) -> None:
        while self.nodes:
            self.nodes.pop().close()
        if self.vault is not None:
            self.vault.close()
            self.vault = None


@contextlib.contextmanager
def bench_ledger(
    base: CachetConfig,
    bootstrap_servers: str | None = None,
    *,
    tick_interval_s: float = TICK_INTERVAL_S,
) -> Iterator[BenchLedger]:
    """A broker (embedded unless given), fresh topics, keys and a running
    ticker; every node made through the ledger is closed at the end."""
    partitions = base.kafka.partitions_for(Topic.INVALIDATIONS)
    with (
        bench_broker(bootstrap_servers, partitions=base.kafka.partitions) as (servers, names),
        tempfile.TemporaryDirectory(prefix="cachet-bench-") as tmp,
    ):
        ledger = BenchLedger(servers, names, base, Path(tmp))
        ticker_producer = ledger.sealing_producer("bench-ticker")
        ticker = WatermarkTicker(
            ticker_producer, partitions, ticker_id="bench-ticker", interval_s=tick_interval_s
        )
        stop = threading.Event()
        thread = ticker.start(stop)
        try:
            yield ledger
        finally:
            try:
                ledger.close()
            finally:
                stop.set()
                thread.join(5)
                ticker_producer.close(10)


def wait_until(
    predicate: Callable[[], object], timeout_s: float, poll_s: float = 0.0005
) -> float | None:
    """Seconds (perf_counter) at which ``predicate()`` first held, or None."""
    deadline = time.perf_counter() + timeout_s
    while True:
        if predicate():
            return time.perf_counter()
        if time.perf_counter() > deadline:
            return None
        if poll_s:
            time.sleep(poll_s)


def bench_keys(n: int, prefix: str = "key") -> list[str]:
    """n distinct cache keys, the same strings for Cachet and for Redis."""
    return [f"{prefix}:{i:08d}" for i in range(n)]


def bench_value(size: int = 64) -> bytes:
    """A value of ``size`` bytes (the same one for Cachet and for Redis)."""
    return (b"cachet-bench-value-" * (size // 19 + 1))[:size]


def fill(node: CacheNode, keys: list[str], value: bytes, timeout_s: float = 120.0) -> float:
    """put() every key, then wait until this node's view holds every one of
    them; returns the seconds from the first put to the last key visible."""
    client = CacheClient(node)
    start = time.perf_counter()
    pending = [client.put_async(k, value, contract=BENCH_CONTRACT) for k in keys]
    receipts = [p.acknowledged(60.0) for p in pending]
    wait_visible(node, [(r.key_hash, r.version) for r in receipts], timeout_s)
    return time.perf_counter() - start


def wait_visible(node: CacheNode, versions: list[tuple[bytes, int]], timeout_s: float) -> float:
    """Wait until the node's view holds at least each (key hash, version);
    returns the perf_counter time at which the last one was seen."""
    deadline = time.perf_counter() + timeout_s
    seen_at = time.perf_counter()
    for key_hash, version in versions:
        while True:
            entry = node.view.current(key_hash)
            if entry is not None and entry.version >= version:
                seen_at = time.perf_counter()
                break
            if time.perf_counter() > deadline:
                missing = sum(
                    1 for kh, v in versions if (e := node.view.current(kh)) is None or e.version < v
                )
                raise BenchSetupError(
                    f"node {node.node_id}: {missing} of {len(versions)} writes not materialized "
                    f"within {timeout_s}s (are seals verifying? is the broker up?)"
                )
            time.sleep(0.001)
    return seen_at
