"""Fixtures for the erasure processor's tests: real broker, real file vault,
real PQ-sealed events, nodes and the processor in this process (built on the
cache tests' node fixtures)."""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from cachet.config import CachetConfig
from cachet.crypto.seal import PrivateKeySet
from cachet.processors.erasure import ErasureProcessor
from cachet.producers.cache_node import CacheNode
from cachet.producers.sealing import SealingProducer
from cachet.schemas.payloads import ErasureCompleted
from tests.integration.cache import conftest as cache_fixtures
from tests.integration.ledger_support import Ledger

REQUESTER = "dpo"
PROCESSOR = "erasure"
RETENTION_S = 4

# The cache tests' node fixtures, shared: one real file vault per test, nodes
# whose keys are registered on the test's control topic.
CONTRACTS = cache_fixtures.CONTRACTS
shared_secrets = cache_fixtures.shared_secrets
vault = cache_fixtures.vault
make_config = cache_fixtures.make_config
make_keys = cache_fixtures.make_keys
make_node = cache_fixtures.make_node

ERASURE_CONTRACTS: dict[str, dict[str, Any]] = {
    **CONTRACTS,
    "trades": {
        "max_staleness_ms": 60_000,
        # Test-shortened: FINRA 4511 asks six years.
        "retention": f"{RETENTION_S}s",
        "retention_ground": "FINRA 4511 / SEC 17a-4(f)",
    },
}


def wait_for(predicate: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """The first truthy value of ``predicate()`` within the timeout, else its last."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.02)
    return predicate()


@pytest.fixture
def config(make_config: Callable[..., CachetConfig]) -> CachetConfig:
    return make_config(
        contracts=ERASURE_CONTRACTS,
        erasure={"allowed_requesters": [REQUESTER], "processor_identity": PROCESSOR},
    )


@pytest.fixture
def sealed_by(
    ledger: Ledger, make_keys: Callable[[str], object], producer_keys: PrivateKeySet
) -> Iterator[Callable[[str], SealingProducer]]:
    """A sealing producer of a registered identity (a requester, an intruder)."""
    made: dict[str, SealingProducer] = {}

    def make(identity: str) -> SealingProducer:
        if identity not in made:
            make_keys(identity)  # registers it
            made[identity] = ledger.sealing_producer(identity, producer_keys, window_ms=10)
        return made[identity]

    yield make
    for sp in made.values():
        with contextlib.suppress(Exception):
            sp.close(10)


class ProcessorRunner:
    """Erasure processors of one test, each with its own node (identity
    ``erasure``) and data directory; stopped at the end of the test."""

    def __init__(self, make_node, config: CachetConfig, bootstrap_servers: str, root) -> None:
        self._make_node = make_node
        self._config = config
        self._servers = bootstrap_servers
        self._root = root
        self._running: dict[int, tuple[ErasureProcessor, threading.Event, list]] = {}
        self._started = 0

    def start(self, *, kv_scrub_wait_s: float = 0.0, name: str = PROCESSOR) -> ErasureProcessor:
        node = self._make_node(name, self._config, self._root / f"processor-{self._started}")
        self._started += 1
        processor = ErasureProcessor(
            node,
            bootstrap_servers=self._servers,
            allowed_requesters=self._config.erasure.allowed_requesters,
            kv_scrub_wait_s=kv_scrub_wait_s,
        )
        stop = threading.Event()
        self._running[id(processor)] = (processor, stop, processor.start(stop))
        assert wait_for(lambda: processor.ready, 60), "erasure processor never ready"
        return processor

    def stop(self, processor: ErasureProcessor) -> None:
        """A clean stop: threads end, the intake and the node close."""
        _, stop, threads = self._running.pop(id(processor))
        stop.set()
        for t in threads:
            t.join(10)
        processor.close()
        processor.node.close()

    def close(self) -> None:
        for processor, stop, threads in self._running.values():
            stop.set()
            for t in threads:
                t.join(10)
            processor.close()


@pytest.fixture
def processors(
    make_node: Callable[..., CacheNode], config: CachetConfig, bootstrap_servers: str, tmp_path
) -> Iterator[ProcessorRunner]:
    runner = ProcessorRunner(make_node, config, bootstrap_servers, tmp_path)
    yield runner
    runner.close()


@pytest.fixture
def start_processor(processors: ProcessorRunner) -> Callable[..., ErasureProcessor]:
    """Start an erasure processor (its own node, identity ``erasure``)."""
    return processors.start


def completion(
    processor: ErasureProcessor, request_id: str, stage: str, timeout_s: float = 30.0
) -> ErasureCompleted:
    """The verified ErasureCompleted of (request, stage), as the processor's
    intake read it back from the log."""

    def seen() -> ErasureCompleted | None:
        case = processor.docket.case(request_id)
        return case.completions.get(stage) if case is not None else None

    found = wait_for(seen, timeout_s)
    assert found is not None, f"no verified ErasureCompleted for {request_id} stage {stage}"
    return found
