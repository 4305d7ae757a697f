"""``cachet bench invalidation``: how long until another node process stops serving.

Two cache nodes replicate the same log, each with its own RocksDB view and
L1, on one config file, one keystore and one broker. Node A is embedded in
this process, as a service embeds its node (it also runs the broker and the
watermark ticker). Node B runs in a process of its own (``cachet node
run``, as a deployment runs it: own interpreter, GIL and broker clients).
A third process, the watcher (:mod:`cachet.ops.bench._watcher`), reads B
over its kept-alive HTTP front every ``POLL_S`` (each read is audited by
B). For each of M keys (written through A, served and cached in B's L1
first), the watcher confirms B serves the old value, this process reads
``time.monotonic()`` and calls A, and the watcher reports when B first
answered without the old value, on the same host-wide monotonic clock: the
sample. No thread of A's process times B, so A's threads cannot delay a
sample's clock.

* ``revoke`` (headline, ``p50_ms``/``p99_ms``/``max_ms``): A revokes the
  key: an eager Invalidated, sent at once (no linger), plus a
  StateTransitioned. B's invalidation listener reads the Invalidated from
  the broadcast topic and hides the version at once, provisionally, until
  B's view verifies the seal covering it (or refuses it and alerts).
* ``supersede``: A puts a new version; B stops serving the old value once
  its view reads the new CacheWritten (its batch cycle: ``supersede_*``).

Baseline, same run: a Redis pub/sub round trip, PUBLISH on one connection
and a subscriber on another connection receiving it
(``redis_pubsub_p50_ms``/``redis_pubsub_p99_ms``).
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import functools
import json
import logging
import os
import secrets
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cachet.config import CachetConfig, default_config, load_config
from cachet.crypto.keystore import Keystore, load_kek
from cachet.ops.bench._node import (
    BENCH_CONTRACT,
    BenchLedger,
    BenchSetupError,
    bench_config,
    bench_keys,
    bench_ledger,
    bench_value,
    fill,
)
from cachet.ops.bench._redis import redis_server, require_redis
from cachet.ops.bench._support import percentile
from cachet.ops.node_process import (
    NodeProcess,
    NodeProcessError,
    owner_token_toml,
    start_node_process,
)
from cachet.processors.watermarks import tick_interval_ms
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.http.credentials import new_token
from cachet.topics import TopicNames

__all__ = ["format_report", "run"]

# Pause between two reads of B. Every read is an audited read in B and one
# HTTP round trip (~1 ms): polling back to back would load B's process with
# its own HTTP front and measure that instead of the propagation.
POLL_S = 0.001
TIMEOUT_S = 30.0
# A put of a new version can leave B serving the old one indefinitely (a
# stale L1 refill, see the report): give up on such a key sooner.
SUPERSEDE_TIMEOUT_S = 2.0
NODE_A, NODE_B = "bench-node-a", "bench-node-b"

log = logging.getLogger(__name__)


@dataclasses.dataclass(frozen=True)
class _Sample:
    """One change: ms from the call on A until B stopped serving the old
    value (None: B still served it at the timeout), and ms the call took."""

    stopped_ms: float | None
    call_ms: float


class _Watcher:
    """The watcher process (module docstring), reading node B."""

    def __init__(self, b: NodeProcess, token: str) -> None:
        self._proc = subprocess.Popen(
            [sys.executable, "-m", "cachet.ops.bench._watcher"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self._say({"port": b.port, "token": token, "contract": BENCH_CONTRACT, "poll_s": POLL_S})

    def _say(self, obj: dict[str, Any]) -> None:
        assert self._proc.stdin is not None
        self._proc.stdin.write(json.dumps(obj) + "\n")
        self._proc.stdin.flush()

    def _hear(self) -> dict[str, Any]:
        assert self._proc.stdout is not None
        line = self._proc.stdout.readline()
        if not line:
            raise BenchSetupError(f"the watcher exited ({self._proc.wait()}); see stderr")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def serves(self, key: str, old: bytes) -> bool:
        """Whether B serves ``old`` for ``key`` now (one read, no change)."""
        self._say({"key": key, "old_b64": base64.b64encode(old).decode(), "timeout_s": 0})
        serving = bool(self._hear()["serving"])
        self._hear()
        return serving

    def timed_change(
        self, key: str, old: bytes, change: Callable[[], object], timeout_s: float
    ) -> _Sample:
        """Run ``change`` (on A) once B is seen serving ``old``; B is read
        during the call too (A returns only once the broker acknowledged the
        change, and B may stop serving before that)."""
        self._say({"key": key, "old_b64": base64.b64encode(old).decode(), "timeout_s": timeout_s})
        if not self._hear()["serving"]:
            raise BenchSetupError(f"node B does not serve {key!r} before the change")
        t0 = time.monotonic()
        change()
        call_ms = (time.monotonic() - t0) * 1e3
        stopped_at = self._hear()["stopped_at"]
        if stopped_at is None:
            log.warning("node B still serves the old value of %r after %.0f s", key, timeout_s)
            return _Sample(None, call_ms)
        return _Sample((stopped_at - t0) * 1e3, call_ms)

    def close(self) -> None:
        if self._proc.stdin is not None:
            self._proc.stdin.close()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()


@dataclasses.dataclass(frozen=True)
class _Deployment:
    """What both nodes share on disk: one config file, keystore and KEK."""

    config_path: Path
    kek_path: Path
    keystore: Keystore
    servers: str
    token: str


def _deployment(ledger: BenchLedger, base: CachetConfig, root: Path) -> _Deployment:
    """The ledger's keys (anchor, identifier secret, the nodes' key set) in a
    keystore file, and one cachet.toml both nodes run on: the bench
    contract, async audit, and ``base``'s topic layout, fetch waits and sealing."""
    kek_path = root / "kek"
    kek_path.write_text(secrets.token_hex(32) + "\n")
    kek_path.chmod(0o600)
    (root / "keys").mkdir()
    store = Keystore.create(root / "keys" / "keystore.json", load_kek(kek_path, None))
    store.set_anchor(ledger.anchor)
    store.set_identifier_secret(ledger.secrets["identifier_secret"])
    for identity in (NODE_A, NODE_B):
        ledger.register(identity)  # signed by the ledger's anchor, with its key set
        store.add_key_set(identity, ledger.signing)
    contract = bench_config(base, ledger.servers, ledger.names).contracts[BENCH_CONTRACT]
    att, kafka = base.attestation, base.kafka
    token = new_token()
    schemes = ", ".join(f'"{s.value}"' for s in att.schemes)
    config_path = root / "cachet.toml"
    config_path.write_text(
        f'[kafka]\nbootstrap_servers = "{ledger.servers}"\n'
        f'topic_prefix = "{ledger.names.prefix}"\npartitions = {kafka.partitions}\n'
        f"view_fetch_wait_ms = {kafka.view_fetch_wait_ms}\n"
        f"invalidation_fetch_wait_ms = {kafka.invalidation_fetch_wait_ms}\n"
        f'[keys]\nkeystore_path = "{store.path}"\n'
        f"[attestation]\nschemes = [{schemes}]\n"
        f"seal_batch_max_events = {att.seal_batch_max_events}\n"
        f"seal_batch_max_ms = {att.seal_batch_max_ms}\n"
        f"seal_max_delay_ms = {att.seal_max_delay_ms}\n"
        f"sign_cpu_budget = {att.sign_cpu_budget}\n"
        f"unsealed_timeout_ms = {att.unsealed_timeout_ms}\n"
        '[audit]\nmode = "async"\n'
        + owner_token_toml(token, "bench")
        + f"[contracts.{BENCH_CONTRACT}]\nmax_staleness_ms = {contract.max_staleness_ms}\n"
        f'invalidation = "{contract.invalidation.value}"\n'
    )
    # The vault's KEK lives in the keystore: created once, before two
    # processes could race to create it.
    NodeKeys.from_keystore(store, NODE_A, load_config(config_path).vault).vault.close()
    return _Deployment(config_path, kek_path, store, ledger.servers, token)


@contextlib.contextmanager
def _node_a(d: _Deployment) -> Iterator[CacheNode]:
    """Node A in this process, on exactly the configuration file B reads."""
    config = load_config(d.config_path)
    keys = NodeKeys.from_keystore(d.keystore, NODE_A, config.vault)
    try:
        node = CacheNode(config, d.servers, keys, d.config_path.parent / "a", node_id=NODE_A)
        try:
            if not node.wait_caught_up(60):
                raise BenchSetupError(f"node {NODE_A} not caught up with ticks within 60s")
            yield node
        finally:
            node.close()
    finally:
        keys.vault.close()


@contextlib.contextmanager
def _node_b(d: _Deployment) -> Iterator[tuple[NodeProcess, _Watcher]]:
    """``cachet node run`` as B, ready (caught up, ticks seen), and its watcher."""
    root = d.config_path.parent
    try:
        node = start_node_process(
            NODE_B, d.config_path, d.servers, d.kek_path, root / "b", root, d.token
        )
    except NodeProcessError as exc:
        raise BenchSetupError(str(exc)) from exc
    try:
        try:
            node.wait_ready(120)
        except NodeProcessError as exc:
            raise BenchSetupError(str(exc)) from exc
        watcher = _Watcher(node, d.token)
        try:
            yield node, watcher
        finally:
            watcher.close()
    finally:
        node.stop()


def _view_version(b: NodeProcess, key: str) -> int | None:
    """The newest version B's view holds (from /v1/history)."""
    code, r = b.call("/v1/history", {"key": key})
    versions = r.get("versions") if code == 200 else None
    return max((v["version"] for v in versions), default=None) if versions else None


def _fill(a: CacheNode, watcher: _Watcher, keys: list[str], value: bytes) -> None:
    """Write every key through A; return once B serves each (B's L1 then holds it)."""
    fill(a, keys, value)
    deadline = time.monotonic() + 120
    for k in keys:
        while not watcher.serves(k, value):
            if time.monotonic() > deadline:
                raise BenchSetupError(f"node B does not serve {k!r} within 120s")
            time.sleep(0.01)


def _revoke(a: CacheClient, key: str) -> None:
    if not a.revoke(key, reason="bench"):
        raise BenchSetupError(f"node A could not revoke {key!r}")


def _tick_interval_s(base: CachetConfig) -> float:
    config = bench_config(base, base.kafka.bootstrap_servers, TopicNames(base.kafka.topic_prefix))
    contracts = config.contracts.values()
    return tick_interval_ms(contracts, config.contract_defaults.max_staleness_ms) / 1000


def _redis_pubsub(samples: int) -> list[float]:
    with redis_server() as server:
        publisher, subscriber = server.client(), server.client()
        pubsub = subscriber.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe("cachet-bench")
        while pubsub.get_message(timeout=1.0) is None and not pubsub.subscribed:
            pass
        latencies = []
        for i in range(samples + 5):  # the first 5 warm the connections up
            payload = f"invalidate:{i}"
            t0 = time.perf_counter()
            publisher.publish("cachet-bench", payload)
            while True:
                msg = pubsub.get_message(timeout=TIMEOUT_S)
                if msg is None:
                    raise BenchSetupError("redis pub/sub: message not received")
                if msg["type"] == "message" and msg["data"] == payload.encode():
                    break
            if i >= 5:
                latencies.append((time.perf_counter() - t0) * 1e3)
        pubsub.close()
        publisher.close()
        subscriber.close()
    return latencies


def run(
    quick: bool = False,
    config: CachetConfig | None = None,
    bootstrap_servers: str | None = None,
) -> dict[str, Any]:
    require_redis("invalidation")  # before minutes of setup: fail fast with the fix
    base = config or default_config()
    m = 40 if quick else 200
    keys = bench_keys(2 * m, prefix="inv")
    revoked, superseded = keys[:m], keys[m:]
    old, new = bench_value(64), bench_value(65)[1:]

    with (
        # Ticks as the deployment's contracts set them (bench_config adds the
        # bench contract): every tick round is a triple-signed seal, and a
        # 2-core host running a broker and two nodes has no CPU to spare.
        bench_ledger(base, bootstrap_servers, tick_interval_s=_tick_interval_s(base)) as ledger,
        tempfile.TemporaryDirectory(prefix="cachet-bench-inv-") as tmp,
    ):
        d = _deployment(ledger, base, Path(tmp))
        with _node_a(d) as node_a, _node_b(d) as (process_b, watcher):
            _fill(node_a, watcher, keys, old)
            a = CacheClient(node_a)
            revokes = [
                watcher.timed_change(k, old, functools.partial(_revoke, a, k), TIMEOUT_S)
                for k in revoked
            ]
            supersedes: list[_Sample] = []
            stale_l1 = 0
            for k in superseded:
                put = functools.partial(a.put, k, new, contract=BENCH_CONTRACT)
                sample = watcher.timed_change(k, old, put, SUPERSEDE_TIMEOUT_S)
                supersedes.append(sample)
                if sample.stopped_ms is None and (_view_version(process_b, k) or 0) >= 2:
                    stale_l1 += 1  # B's view has the new version, its L1 the old one

    redis_ms = _redis_pubsub(m)
    revoke_ms = [x.stopped_ms for x in revokes if x.stopped_ms is not None]
    supersede_ms = [x.stopped_ms for x in supersedes if x.stopped_ms is not None]
    return {
        "benchmark": "invalidation",
        "quick": quick,
        "nodes_in_one_process": False,
        "samples": len(revoke_ms),
        "poll_interval_ms": POLL_S * 1e3,
        "listener_fetch_wait_ms": base.kafka.invalidation_fetch_wait_ms,
        "view_fetch_wait_ms": base.kafka.view_fetch_wait_ms,
        "seal_batch_max_ms": base.attestation.seal_batch_max_ms,
        "tick_interval_ms": round(_tick_interval_s(base) * 1000),
        "p50_ms": percentile(revoke_ms, 50),
        "p99_ms": percentile(revoke_ms, 99),
        "max_ms": max(revoke_ms, default=0.0),
        "revoke_call_p50_ms": percentile([x.call_ms for x in revokes], 50),
        "revoke_stuck": len(revokes) - len(revoke_ms),
        "supersede_samples": len(supersede_ms),
        "supersede_p50_ms": percentile(supersede_ms, 50),
        "supersede_p99_ms": percentile(supersede_ms, 99),
        "supersede_max_ms": max(supersede_ms, default=0.0),
        "supersede_stuck": len(supersedes) - len(supersede_ms),
        "supersede_stuck_with_stale_l1": stale_l1,
        "supersede_timeout_s": SUPERSEDE_TIMEOUT_S,
        "redis_pubsub_p50_ms": percentile(redis_ms, 50),
        "redis_pubsub_p99_ms": percentile(redis_ms, 99),
        "ratio_p50": percentile(revoke_ms, 50) / max(percentile(redis_ms, 50), 1e-9),
        "target_p99_ms": 20.0,
        "host_cpus": os.cpu_count(),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        "cachet bench invalidation" + (" (quick)" if r["quick"] else ""),
        "node A embedded in this process changes a key; node B (`cachet node run`, own "
        f"process) is read every {r['poll_interval_ms']:.0f} ms over HTTP by a watcher process "
        f"until it stops serving the old value; {r['samples']} keys per mode; listener fetch wait "
        f"{r['listener_fetch_wait_ms']} ms, view's {r['view_fetch_wait_ms']} ms; seals every {r['seal_batch_max_ms']} ms at most; "
        f"A's revoke() call takes {r['revoke_call_p50_ms']:.1f} ms (p50)",
        f"{'':<36} {'p50 ms':>9} {'p99 ms':>9} {'max ms':>9}",
        f"{'cachet revoke (eager Invalidated)':<36} {r['p50_ms']:>9.2f} {r['p99_ms']:>9.2f} "
        f"{r['max_ms']:>9.2f}   (target p99 <= {r['target_p99_ms']:.0f})",
        f"{'cachet put of a new version':<36} {r['supersede_p50_ms']:>9.2f} "
        f"{r['supersede_p99_ms']:>9.2f} {r['supersede_max_ms']:>9.2f}",
        f"{'redis pub/sub round trip (baseline)':<36} {r['redis_pubsub_p50_ms']:>9.2f} "
        f"{r['redis_pubsub_p99_ms']:>9.2f}",
        f"p50 ratio cachet/redis: {r['ratio_p50']:.0f}x",
    ]
    if r["revoke_stuck"] or r["supersede_stuck"]:
        lines.append(
            f"NOT PROPAGATED: B still served the old value of {r['revoke_stuck']} revoked key(s) "
            f"after {TIMEOUT_S:.0f} s and of {r['supersede_stuck']} superseded key(s) after "
            f"{r['supersede_timeout_s']:.0f} s (excluded from the percentiles); "
            f"{r['supersede_stuck_with_stale_l1']} of those: B's view had the new version, "
            "its L1 still held the old one"
        )
    return "\n".join(lines)
