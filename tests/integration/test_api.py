"""``cachet.open`` and the :class:`cachet.Cache` handle against the real broker."""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import cachet
from cachet.config import CachetConfig, parse_config
from cachet.crypto.keystore import Keystore, KeystoreError, load_kek
from cachet.crypto.seal import PrivateKeySet
from cachet.processors.watermarks import WatermarkTicker
from cachet.topics import TopicNames
from tests.integration.ledger_support import Ledger

pytestmark = pytest.mark.integration

NODE_ID = "svc-1"
CONTRACTS: dict[str, dict[str, Any]] = {
    "quotes": {"max_staleness_ms": 30_000, "invalidation": "eager"},
    "confirmed": {"max_staleness_ms": 30_000, "invalidation": "contractual"},
}


@pytest.fixture
def config(
    tmp_path: Path, bootstrap_servers: str, topics: TopicNames, anchor: PrivateKeySet
) -> CachetConfig:
    """A deployment's config and keystore (anchor, identifier secret; no
    key set for the node yet: ``register=True`` makes it)."""
    kek_file = tmp_path / "kek"
    fd = os.open(kek_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(secrets.token_hex(32))
    keystore_path = tmp_path / "keys" / "keystore.json"
    keystore_path.parent.mkdir()
    store = Keystore.create(keystore_path, load_kek(kek_file, None))
    store.set_anchor(anchor)
    store.set_identifier_secret(secrets.token_bytes(32))
    return parse_config(
        {
            "kafka": {"bootstrap_servers": bootstrap_servers, "topic_prefix": topics.prefix},
            "keys": {"keystore_path": str(keystore_path), "kek_file": str(kek_file)},
            "node": {"node_id": NODE_ID, "data_dir": str(tmp_path / "var")},
            "attestation": {"seal_batch_max_ms": 10, "unsealed_timeout_ms": 3000},
            "contracts": CONTRACTS,
        },
        "test",
    )


@pytest.fixture
def ticker(ledger: Ledger, producer_keys: PrivateKeySet) -> Iterator[None]:
    """The deployment's watermark ticker (registered under the same anchor)."""
    ledger.register("ticker", producer_keys)
    sp = ledger.sealing_producer("ticker", producer_keys, batch=64)
    stop = threading.Event()
    thread = WatermarkTicker(sp, 3, ticker_id="ticker", interval_s=0.1).start(stop)
    yield
    stop.set()
    thread.join(5)
    sp.close()


@pytest.fixture
def open_cache(config: CachetConfig) -> Iterator[Callable[..., cachet.Cache]]:
    """``cachet.open`` on this test's deployment; every handle closed at the end."""
    opened: list[cachet.Cache] = []

    def open_(**kw: Any) -> cachet.Cache:
        cache = cachet.open(config, **{"register": True, **kw})
        opened.append(cache)
        return cache

    yield open_
    for cache in opened:
        cache.close()


def test_open_put_get_through_bound_handles(config: CachetConfig, ticker, open_cache) -> None:
    cache = open_cache(wait_ready=True, ready_timeout_s=60)
    assert cache.health().ready, cache.health().problems
    assert (cache.node_id, cache.role, cache.namespace) == (NODE_ID, cachet.Role.OWNER, "default")
    # Two contracts configured and none named: the handle is bound to none,
    # and a call says how to bind one instead of guessing.
    assert cache.contract is None
    with pytest.raises(cachet.InvalidArgument, match="cache.bound") as unbound:
        cache.get("AAPL")
    assert unbound.value.argument == "contract"

    quotes = cache.bound(contract="quotes")
    receipt = quotes.put("AAPL", b"189.12")
    assert isinstance(receipt, cachet.PutReceipt) and receipt.acknowledged
    r = quotes.get("AAPL")  # put waited until this node serves it
    assert isinstance(r, cachet.CacheResponse)
    assert r.hit and r.value == b"189.12" and r.version == receipt.version == 1
    assert r.status is cachet.VerificationStatus.VERIFIED
    assert r.freshness is not None and r.freshness.max_staleness_ms == 30_000

    # The namespace is part of the key: another namespace does not see it.
    other = quotes.bound(namespace="tenant-b")
    assert (other.contract, other.namespace) == ("quotes", "tenant-b")
    assert other.get("AAPL").reason is cachet.MissReason.NOT_FOUND

    computed = other.get_or_compute("AAPL", lambda: b"190.00")
    assert computed.computed and computed.value == b"190.00"
    assert computed.reason is cachet.MissReason.NOT_FOUND

    confirmed = cache.bound(contract="confirmed")
    confirmed.put("K", b"v")
    assert confirmed.confirm_freshness("K")
    assert quotes.revoke("AAPL", reason="source correction")
    assert quotes.get("AAPL").reason is cachet.MissReason.REVOKED

    # register=True created the node's key set in the keystore.
    store = Keystore.open(config.keys.keystore_path, load_kek(config.keys.kek_file, None))
    assert store.key_set(NODE_ID).key_set_id

    cache.close()
    with pytest.raises(cachet.CacheClosed):
        quotes.get("AAPL")
    cache.close()  # idempotent


def test_regulator_handle_never_sees_plaintext(ticker, open_cache) -> None:
    owner = open_cache(contract="quotes", wait_ready=True, ready_timeout_s=60)
    owner.put("AAPL", b"189.12")
    regulator = owner.as_role(cachet.Role.REGULATOR, scope=None)
    assert (regulator.role, regulator.contract) == (cachet.Role.REGULATOR, "quotes")
    r = regulator.get("AAPL")
    # The proofs and metadata, never the value.
    assert r.hit and r.value is None and r.version == 1 and r.commitment is not None
    assert b"189.12" not in repr(r).encode()
    assert regulator.get_or_compute("AAPL", lambda: b"x").value is None  # a hit: no value
    with pytest.raises(cachet.CacheError, match="regulator may not write"):
        regulator.put("AAPL", b"forged")
    regulator.close()  # a derived handle: the node keeps running
    assert owner.get("AAPL").value == b"189.12"


def test_wait_ready_timeout_names_what_is_missing(config: CachetConfig) -> None:
    # No watermark ticker runs: the node can never be ready.
    with pytest.raises(cachet.NotReady) as caught:
        cachet.open(config, register=True, wait_ready=True, ready_timeout_s=3)
    err = caught.value
    assert err.node_id == NODE_ID and err.timeout_s == 3
    assert any(p.startswith("no_watermark_tick") for p in err.problems), err.problems
    assert "no_watermark_tick" in str(err)
    # The node was closed: its view (a RocksDB directory lock) opens again.
    with cachet.open(config, wait_ready=False) as again:
        assert not again.health().ready


def test_unknown_contract_is_refused_at_open(config: CachetConfig) -> None:
    with pytest.raises(cachet.InvalidArgument, match="unknown contract 'nope'.*confirmed, quotes"):
        cachet.open(config, register=True, contract="nope")
    # Refused before keys were touched: register=True created no key set.
    store = Keystore.open(config.keys.keystore_path, load_kek(config.keys.kek_file, None))
    with pytest.raises(KeystoreError):
        store.key_set(NODE_ID)
    with cachet.open(config, register=True, contract="quotes") as cache:
        assert cache.contract == "quotes"
    with pytest.raises(cachet.InvalidArgument, match="role"):
        cachet.open(config, role="regulator")  # type: ignore[arg-type]


def test_a_missing_key_set_names_the_way_to_make_one(config: CachetConfig) -> None:
    with pytest.raises(KeystoreError, match=f"cachet keys register --identity {NODE_ID}"):
        cachet.open(config)
