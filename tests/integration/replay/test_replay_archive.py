"""Done when: write, archive, stop the broker (it forgets everything), then
``cachet replay --as-of`` from the archive alone reproduces the state hash the
live view had at each of several moments.

Everything is real: a private embedded broker for this test (stopping it must
not disturb the session's), a cache node with its RocksDB view and sealing
producer (ML-DSA, FN-DSA and SLH-DSA seals), a watermark ticker, the archive
consumer writing hash-chained Avro segments, and the replay verifying every
seal from the segment files after the broker is gone.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.cli.main import main
from cachet.config import CachetConfig, load_config
from cachet.crypto.keystore import Keystore, load_kek
from cachet.kafka.settings import create_topics
from cachet.ledger.anchor import load_anchor
from cachet.materializers.archive import list_segments
from cachet.materializers.archive.archiver import Archiver, ArchiveSettings
from cachet.materializers.replay import (
    ArchiveSource,
    ArchiveThenBroker,
    BrokerSource,
    PartitionEnd,
    ReplayTrust,
)
from cachet.materializers.replay.as_of import replay_as_of
from cachet.ops.broker import EmbeddedBroker
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.sealing import SealingProducer
from cachet.topics import TopicNames

pytestmark = pytest.mark.integration

NODE = "node-1"
TICKER = "ticker"


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[EmbeddedBroker]:
    """A broker of this test's own: the test stops it."""
    b = EmbeddedBroker(port=0, log_path=tmp_path / "tansu.log").start()
    yield b
    b.stop()


@pytest.fixture
def deployment(tmp_path: Path, broker: EmbeddedBroker) -> Iterator[dict]:
    servers = broker.bootstrap_servers
    names = TopicNames("replay.")
    create_topics(servers, names, partitions=3)
    cfg = tmp_path / "cachet.toml"
    cfg.write_text(
        f'[kafka]\nbootstrap_servers = "{servers}"\ntopic_prefix = "{names.prefix}"\n'
        f'[keys]\nkeystore_path = "{tmp_path}/keys/keystore.json"\n'
        "[attestation]\nseal_batch_max_ms = 10\nunsealed_timeout_ms = 3000\n"
        '[contracts.quotes]\nmax_staleness_ms = 30000\ninvalidation = "eager"\n'
    )
    kek = tmp_path / "kek"
    common = ["--config", str(cfg)]
    assert main(["keys", "init", *common, "--generate-kek", str(kek), "--identity", NODE, "--publish"]) == 0  # fmt: skip
    assert main(["keys", "register", *common, "--kek-file", str(kek), "--identity", TICKER]) == 0  # fmt: skip
    config = load_config(cfg)
    store = Keystore.open(tmp_path / "keys" / "keystore.json", load_kek(kek, None))
    keys = NodeKeys.from_keystore(store, NODE)
    node = CacheNode(config, servers, keys, tmp_path / "node", node_id=NODE)
    sp = SealingProducer.from_config(config, servers, TICKER, store.key_set(TICKER))
    ticker = WatermarkTicker(sp, 3, ticker_id=TICKER, interval_s=0.1)
    stop = threading.Event()
    thread = ticker.start(stop)
    closed: list[bool] = []

    def shutdown() -> None:
        """Stops the ticker and the node (once), while the broker still runs."""
        if closed:
            return
        closed.append(True)
        stop.set()
        thread.join(5)
        sp.close()
        node.close()
        vault = getattr(keys, "vault", None)
        if vault is not None:
            vault.close()

    yield {
        "cfg": cfg,
        "kek": kek,
        "config": config,
        "node": node,
        "names": names,
        "shutdown": shutdown,
    }
    shutdown()


def wait_for(cond, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    return cond()


def quiesce(node: CacheNode) -> tuple[int, bytes]:
    """Seal everything, let the view apply it, then note the time and the
    live view's state hash (writes resume only after this)."""
    node.producer.flush(10)
    last: list[bytes] = []

    def settled() -> bool:
        last.append(node.view.state_hash())
        waiting = node.view.consumer.verifier.waiting_count
        return waiting == 0 and len(last) >= 3 and last[-1] == last[-2] == last[-3]

    assert wait_for(lambda: (time.sleep(0.05), settled())[1], 20), "the live view did not settle"
    at_us = time.time_ns() // 1000
    state = node.view.state_hash()
    time.sleep(0.01)  # what follows occurs strictly later
    return at_us, state


def broker_ends(config: CachetConfig) -> dict[tuple[str, int], int]:
    return {
        (i.topic, i.partition): i.next_offset
        for i in BrokerSource.from_config(config).read()
        if isinstance(i, PartitionEnd)
    }


def test_replay_from_the_archive_alone_reproduces_every_snapshot(
    deployment: dict, broker: EmbeddedBroker, tmp_path: Path, capsys
) -> None:
    d = deployment
    node: CacheNode = d["node"]
    config: CachetConfig = d["config"]
    assert node.wait_caught_up(), "the node never caught up"
    client = CacheClient(node)
    snapshots: list[tuple[int, bytes, int]] = []  # (time, live state hash, reads so far)
    reads = 0

    for k in range(6):
        client.put(f"k{k}", b"v1-%d" % k, contract="quotes", wait=True)
    for k in (0, 1):
        assert client.get(f"k{k}", contract="quotes").hit
        reads += 1
    snapshots.append((*quiesce(node), reads))

    for k in range(3):
        client.put(f"k{k}", b"v2-%d" % k, contract="quotes", wait=True)
    client.revoke("k3")
    assert not client.get("k3", contract="quotes").hit
    reads += 1
    snapshots.append((*quiesce(node), reads))

    client.put("k6", b"v1-6", contract="quotes", wait=True)
    client.revoke("k5")
    for k in (1, 4):
        assert client.get(f"k{k}", contract="quotes").hit
        reads += 1
    snapshots.append((*quiesce(node), reads))
    reads_total = reads
    assert len({h for _, h, _ in snapshots}) == 3, "each phase changed the live state"
    node.producer.flush(10)

    # Archive every topic, then stop the broker: it forgets everything.
    archive = tmp_path / "archive"
    archiver = Archiver(
        broker.bootstrap_servers,
        d["names"],
        ArchiveSettings(directory=archive, segment_max_age_s=0.3),
    )
    stop = threading.Event()
    thread = threading.Thread(target=archiver.run, args=(stop,), daemon=True)
    thread.start()
    # Every record the reads above produced is in the log by now (the audit
    # queue drains within the quiesce); archive up to the ends seen now.
    assert wait_for(lambda: node.view.consumer.verifier.waiting_count == 0)
    ends = broker_ends(config)
    assert wait_for(
        lambda: all(archiver.positions.get(k, 0) >= end for k, end in ends.items()), 30
    ), "the archive did not catch up"
    stop.set()
    thread.join(30)
    assert len(list_segments(archive)) >= 1
    anchor = load_anchor(config.keys.keystore_path.parent / "anchor.json")
    trust = ReplayTrust.from_config(config, anchor)

    # While the broker still runs: the latest snapshot is "now", and the
    # broker alone, or the archive continued by the broker, give its hash.
    at_us, live_hash, _ = snapshots[-1]
    names = config.kafka.topic_names()
    for label, source in (
        ("broker", BrokerSource.from_config(config)),
        (
            "both",
            ArchiveThenBroker(ArchiveSource(archive, names), BrokerSource.from_config(config)),
        ),
    ):
        result = replay_as_of(
            source, at_us, work_dir=tmp_path / f"replay-{label}", config=config, trust=trust
        )
        assert result.state_hash == live_hash, f"{label}: replay differs from the live view"
    d["shutdown"]()
    broker.stop()
    for i, (at_us, live_hash, reads_before) in enumerate(snapshots):
        result = replay_as_of(
            ArchiveSource(archive, config.kafka.topic_names()),
            at_us,
            work_dir=tmp_path / f"replay-{i}",
            config=config,
            trust=trust,
        )
        assert result.refused == ()
        assert result.state_hash == live_hash, f"snapshot {i}: replay differs from the live view"
        assert len(result.reads) == reads_before
        assert {r.node_id for r in result.reads} == {NODE}
        assert all(r.index is not None for r in result.reads), "reads come in batches"

    # The CLI, from the archive alone, and a second run in the same work dir.
    at_us, live_hash, _ = snapshots[1]
    work = tmp_path / "replay-cli"
    argv = ["replay", "--config", str(d["cfg"]), "--as-of", str(at_us), "--archive", str(archive)]
    for _ in range(2):
        assert main([*argv, "--work-dir", str(work), "--json"]) == 0
        out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
        assert out["state_hash"] == live_hash.hex()
        assert out["entries_by_state"] == {"ACTIVE": 5, "REVOKED": 1}
    assert out["resumed"] is True

    # The examiner's questions, from the archive alone.
    base = ["--config", str(d["cfg"]), "--archive", str(archive), "--json"]
    history = [
        "replay", "key-history", "--key", "k3", "--namespace", "default", "--role", "regulator",
        "--kek-file", str(d["kek"]), *base,
    ]  # fmt: skip
    assert main(history) == 0
    items = json.loads(capsys.readouterr().out.strip().splitlines()[-1])["items"]
    kinds = [i["event"] for i in items]
    assert kinds[0] == "CacheWritten" and "StateTransitioned" in kinds
    # The node audits reads many to a CacheReadBatch: k3's read is one item,
    # named by its batch and its index there.
    (read,) = [i for i in items if i["event"] == "CacheReadBatch"]
    assert isinstance(read["read_index"], int) and "MISS" in read["detail"]
    assert "commitment" in items[0] and "plaintext" not in items[0]
    reads = ["replay", "reads", "--node", NODE, "--from", "0", "--to", str(snapshots[-1][0]), *base]
    assert main(reads) == 0
    served = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert served["count"] == reads_total
    # Each read once: (batch event, index) pairs are distinct, and each names a read.
    places = {(r["event_id"], r["read_index"]) for r in served["items"]}
    assert len(places) == reads_total and all(i is not None for _, i in places)
