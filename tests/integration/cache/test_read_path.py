"""The lean read path on a real node: what it caches stays bounded and
truthful, and every guarantee a read gives still holds.

Real broker, real PQ-sealed events, a real RocksDB view and file vault.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator

import pytest

from cachet.config import CachetConfig
from cachet.crypto.aead import Committer
from cachet.crypto.seal import PrivateKeySet
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode
from cachet.verdict import MissReason
from tests.integration.ledger_support import Ledger

from .conftest import CONTRACTS
from .nodeproc import wait_for

pytestmark = pytest.mark.integration

SUBJECT = "patient-4711"


@pytest.fixture
def config(make_config: Callable[..., CachetConfig]) -> CachetConfig:
    return make_config(
        contracts={
            **CONTRACTS,
            "charts": {"max_staleness_ms": 600_000, "classification": "phi"},
            "ticked": {"max_staleness_ms": 1_500, "invalidation": "eager"},
        },
        node={"l1_max_entries": 4},
    )


class Ticks:
    """A WatermarkTicker that a test can stop and start again."""

    def __init__(self, ticker: WatermarkTicker) -> None:
        self._ticker = ticker
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        self._stop = threading.Event()
        self._thread = self._ticker.start(self._stop)

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)


@pytest.fixture
def ticks(
    ledger: Ledger, make_keys: Callable[[str], object], producer_keys: PrivateKeySet
) -> Iterator[Ticks]:
    make_keys("ticker")
    sp = ledger.sealing_producer("ticker", producer_keys, batch=64)
    t = Ticks(WatermarkTicker(sp, 3, ticker_id="ticker", interval_s=0.1))
    t.start()
    yield t
    t.stop()
    sp.close()


def test_reads_fail_closed_when_ticks_stop_and_serve_when_they_resume(
    make_node: Callable[..., CacheNode], ticks: Ticks, config: CachetConfig
) -> None:
    node = make_node("node-1", config)
    assert node.wait_caught_up(60)
    client = CacheClient(node)
    client.put("A", b"1", contract="ticked", wait=True)
    assert wait_for(lambda: client.get("A", contract="ticked").hit, 10)
    ticks.stop()
    # Nothing arrives any more: the view's health ages with the reader's
    # clock (no poll has to run for it), and reads fail closed.
    missed = wait_for(
        lambda: client.get("A", contract="ticked").reason is MissReason.VIEW_STALE, 10
    )
    assert missed, client.get("A", contract="ticked")
    health = node.view.health()
    assert health.last_tick_age_ms is not None and health.last_tick_age_ms > 1_500
    assert "last watermark tick is" in client.get("A", contract="ticked").detail
    ticks.start()
    client.put("A", b"2", contract="ticked", wait=True)
    served = wait_for(lambda: (r := client.get("A", contract="ticked")).hit and r.value == b"2", 10)
    assert served, client.get("A", contract="ticked")


def test_key_hashes_and_the_l1_stay_within_the_bound(
    make_node: Callable[..., CacheNode], ticks: Ticks, config: CachetConfig
) -> None:
    node = make_node("node-1", config)
    assert node.wait_caught_up(60)
    client = CacheClient(node)
    keys = [f"k{i}" for i in range(10)]
    client.put_many([(k, k.encode()) for k in keys], contract="quotes", wait=True)
    for _ in range(2):
        for k in keys:
            r = client.get(k, contract="quotes")
            assert r.hit and r.value == k.encode(), r
    assert len(node.l1) == 4  # l1_max_entries
    assert node._key_hashes.cache_info().currsize == 4
    assert node._key_hashes.cache_info().maxsize == 4
    assert all(node.key_hash("default", k) == node.hasher.key("default", k) for k in keys)


def test_a_verified_read_checks_an_l1_entry_once(
    make_node: Callable[..., CacheNode],
    ticks: Ticks,
    config: CachetConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("node-1", config)
    assert node.wait_caught_up(60)
    client = CacheClient(node, scope=SUBJECT)  # "charts" is PHI: ALWAYS_VERIFY
    receipt = client.put("chart", b"genuine", contract="charts", wait=True)
    checks: list[bytes] = []
    real = Committer.verify

    def counted(committer: Committer, commitment: bytes, plaintext: bytes) -> bool:
        checks.append(plaintext)
        return real(committer, commitment, plaintext)

    monkeypatch.setattr(Committer, "verify", counted)
    assert wait_for(lambda: client.get("chart", contract="charts").hit, 10)
    checks.clear()
    for _ in range(3):
        assert client.get("chart", contract="charts").value == b"genuine"
    # Cached with its check done: three verified reads, no recomputation.
    assert checks == []
    cached = node.l1.get(receipt.key_hash)
    assert cached is not None and cached.commitment_verified
    # A copy cached by anyone else is a new entry: checked on its first read
    # (and marked), then not again.
    node.l1.evict(receipt.key_hash)
    generation = node.l1_generation(receipt.key_hash)
    assert node.l1_put(cached.entry, b"genuine", cached.facts, generation)
    assert client.get("chart", contract="charts").value == b"genuine"
    assert client.get("chart", contract="charts").value == b"genuine"
    assert checks == [b"genuine"]
    again = node.l1.get(receipt.key_hash)
    assert again is not None and again.commitment_verified
