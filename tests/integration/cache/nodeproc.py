"""Cache node processes for multi-node tests: `cachet node run` children."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachet.ops.node_process import owner_token_toml, start_node_process
from cachet.producers.http.credentials import new_token

# The owner credential every `cachet node run` of these tests accepts (the
# HTTP front authenticates every request but /health): add HTTP_TOKENS_TOML
# to a config written for `cachet node run`; NodeProcess.call sends the token.
OWNER_TOKEN = new_token()
HTTP_TOKENS_TOML = owner_token_toml(OWNER_TOKEN, "tests")


@dataclass
class NodeProcess:
    name: str
    proc: subprocess.Popen[str]
    port: int
    data_dir: Path | None = None

    def call(self, path: str, body: dict[str, Any] | None = None) -> tuple[int, dict[str, Any]]:
        data = json.dumps(body).encode() if body is not None else None
        req = urllib.request.Request(
            f"http://127.0.0.1:{self.port}{path}",
            data=data,
            method="POST" if data is not None else "GET",
            headers={"Authorization": f"Bearer {OWNER_TOKEN}", "Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                return resp.status, json.loads(resp.read())
        except urllib.error.HTTPError as exc:
            return exc.code, json.loads(exc.read())

    def put(self, key: str, value: bytes, contract: str, **kw: Any) -> dict[str, Any]:
        code, out = self.call(
            "/v1/put",
            {"key": key, "value_b64": base64.b64encode(value).decode(), "contract": contract, **kw},
        )
        assert code == 200, out
        return out

    def get(self, key: str, contract: str) -> dict[str, Any]:
        code, out = self.call("/v1/get", {"key": key, "contract": contract})
        assert code == 200, out
        return out

    def health(self) -> tuple[int, dict[str, Any]]:
        return self.call("/health")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30) -> None:
        """A clean stop (SIGTERM): the node flushes, seals and commits, then exits 0."""
        self.proc.send_signal(signal.SIGTERM)
        assert self.proc.wait(timeout_s) == 0, f"{self.name} exited {self.proc.returncode}"

    def state_hash(self) -> str | None:
        """The live view's state hash from /health (hex), None if not reported."""
        return self.health()[1].get("state_hash")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def start_node(
    name: str, config: Path, servers: str, kek: Path, data_dir: Path, log_dir: Path
) -> NodeProcess:
    """``cachet node run`` as ``name``, started as the benchmarks start it
    (:func:`cachet.ops.node_process.start_node_process`); this handle opens
    a connection per call, so the tests' threads may share it."""
    started = start_node_process(name, config, servers, kek, data_dir, log_dir, OWNER_TOKEN)
    return NodeProcess(name, started.proc, started.port, data_dir)


def wait_for(cond, timeout_s: float = 10.0):
    """The first truthy value of ``cond()`` within the timeout (else its last value)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.02)
    return cond()


def wait_until(cond, timeout_s: float, step_s: float = 0.05) -> float | None:
    """Seconds until ``cond()`` held, or None if it never did."""
    start = time.monotonic()
    while time.monotonic() - start < timeout_s:
        if cond():
            return time.monotonic() - start
        time.sleep(step_s)
    return None


@dataclass
class Cluster:
    """A broker this test owns, a keystore, a ticker, and node processes."""

    root: Path
    broker: Any
    names: Any
    config: Path
    kek: Path
    store: Any
    stop_ticker: Any
    nodes: list[NodeProcess]

    @property
    def servers(self) -> str:
        return self.broker.bootstrap_servers

    def start_node(self, name: str, data_dir: Path | None = None) -> NodeProcess:
        node = start_node(
            name, self.config, self.servers, self.kek, data_dir or self.root / name, self.root
        )
        self.nodes.append(node)
        return node

    def restart(self, node: NodeProcess, sig: int = signal.SIGTERM) -> NodeProcess:
        """Stop ``node`` with ``sig`` (SIGTERM: clean; SIGKILL: a crash) and
        start it again under the same name on the same data directory."""
        if sig == signal.SIGTERM:
            node.terminate()
        else:
            node.kill(sig)
        return self.start_node(node.name, node.data_dir)

    def wait_healthy(self, node: NodeProcess, timeout_s: float = 60) -> None:
        assert wait_until(lambda: node.health()[0] == 200, timeout_s) is not None, node.health()

    def restart_broker_empty(self) -> None:
        from cachet.kafka.settings import create_topics
        from cachet.ops.broker import EmbeddedBroker

        port = self.broker.port
        self.broker.stop()
        self.broker = EmbeddedBroker(port=port).start()
        create_topics(self.broker.bootstrap_servers, self.names, partitions=3)

    def close(self) -> None:
        self.stop_ticker.set()
        for n in self.nodes:
            n.stop()
        self.broker.stop()


def start_cluster(root: Path, identities: list[str], contracts: str) -> Cluster:
    """Broker, topics, keystore (``identities`` registered), a running ticker."""
    import threading

    from confluent_kafka import Producer

    from cachet.cli.main import main
    from cachet.crypto.keystore import Keystore, load_kek
    from cachet.kafka.settings import create_topics, producer_settings
    from cachet.ops.broker import EmbeddedBroker, free_port
    from cachet.processors.watermarks import WatermarkTicker
    from cachet.producers.sealing import SealingProducer, SealingSettings
    from cachet.schemas.codec import EventCodec
    from cachet.topics import TopicNames

    broker = EmbeddedBroker(port=free_port()).start()
    servers = broker.bootstrap_servers
    names = TopicNames("mn.")
    create_topics(servers, names, partitions=3)
    cfg = root / "cachet.toml"
    cfg.write_text(
        f'[kafka]\ntopic_prefix = "{names.prefix}"\n'
        f'[keys]\nkeystore_path = "{root}/keys/keystore.json"\n'
        "[attestation]\nseal_batch_max_ms = 10\nunsealed_timeout_ms = 3000\n"
        + HTTP_TOKENS_TOML
        + contracts
    )
    kek = root / "kek"
    common = ["--config", str(cfg), "--bootstrap-servers", servers]
    assert (
        main(
            [
                "keys",
                "init",
                *common,
                "--generate-kek",
                str(kek),
                "--identity",
                identities[0],
                "--publish",
            ]
        )
        == 0
    )
    for identity in [*identities[1:], "ticker"]:
        assert (
            main(["keys", "register", *common, "--kek-file", str(kek), "--identity", identity]) == 0
        )
    store = Keystore.open(root / "keys" / "keystore.json", load_kek(kek, None))
    stop = threading.Event()

    def tick() -> None:
        def client() -> Producer:
            return Producer(producer_settings(servers, {"message.timeout.ms": 5000}))

        sp = SealingProducer(
            client(),
            EventCodec(),
            names,
            "ticker",
            store.key_set("ticker"),
            SealingSettings(64, 10),
            producer_factory=client,
        )
        WatermarkTicker(sp, 3, ticker_id="ticker", interval_s=0.1).run(stop)

    threading.Thread(target=tick, daemon=True).start()
    return Cluster(root, broker, names, cfg, kek, store, stop, [])
