"""A whole Cachet deployment for the erasure sweep: node and processor
processes, the KV-scrub worker's runner in this process, on the session
broker, with a real key vault (file or PostgreSQL)."""

from __future__ import annotations

import base64
import contextlib
import io
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from confluent_kafka import Producer
from prometheus_client import CollectorRegistry

from cachet.cli.main import main
from cachet.config import load_config
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.keystore import Keystore, load_kek
from cachet.kafka.control import register_key_set
from cachet.kafka.settings import create_topics, producer_settings
from cachet.processors.kvscrub.runner import run_worker
from cachet.processors.kvscrub.worker import KvScrubWorker
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.http.credentials import token_digest
from cachet.producers.sealing import SealingProducer, SealingSettings
from cachet.schemas.codec import EventCodec
from cachet.topics import TopicNames
from tests.integration.cache.nodeproc import NodeProcess, start_node, wait_until

REQUESTER, PROCESSOR, KV_WORKER, NODES = "dpo", "erasure", "kv-1", ("node-1", "node-2")
CONTRACT = "quotes"


@dataclass
class Deployment:
    """A running deployment: its root directory (config, keystore, vault
    file, every process's data directory and log), broker and topics."""

    root: Path
    servers: str
    names: TopicNames
    config: Path
    kek: Path
    pg_data_dir: Path | None
    nodes: list[NodeProcess] = field(default_factory=list)
    others: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    stop_ticker: threading.Event = field(default_factory=threading.Event)
    worker: KvScrubWorker | None = None
    worker_thread: threading.Thread | None = None
    log_handler: logging.Handler | None = None
    log_level: int = logging.WARNING

    @property
    def common(self) -> list[str]:
        return ["--config", str(self.config), "--bootstrap-servers", self.servers]

    def keystore(self) -> Keystore:
        return Keystore.open(self.root / "keys" / "keystore.json", load_kek(self.kek, None))

    def spawn(self, name: str, *argv: str) -> subprocess.Popen[str]:
        log = open(self.root / f"{name}.log", "a")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            [sys.executable, "-m", "cachet.cli.main", *argv, *self.common],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.others[name] = proc
        return proc

    def stop(self) -> None:
        """SIGTERM every process (each flushes and exits), then the ticker."""
        for proc in [n.proc for n in self.nodes] + list(self.others.values()):
            if proc.poll() is None:
                proc.send_signal(signal.SIGTERM)
        for proc in [n.proc for n in self.nodes] + list(self.others.values()):
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        for node in self.nodes:  # what a node printed after its first line
            if node.proc.stdout is not None and not node.proc.stdout.closed:
                (self.root / f"{node.name}.stdout").write_text(node.proc.stdout.read())
                node.proc.stdout.close()
        self.stop_ticker.set()
        if self.worker_thread is not None:
            self.worker_thread.join(15)
        if self.log_handler is not None:
            root = logging.getLogger()
            root.removeHandler(self.log_handler)
            root.setLevel(self.log_level)
            self.log_handler.close()
            self.log_handler = None


def _config_text(root: Path, names: TopicNames, vault: str, tokens: dict[str, str]) -> str:
    token_tables = "".join(
        f'[http.tokens.{subject}]\ntoken_sha256 = "{token_digest(token).hex()}"\n'
        f'role = "owner"\nscope = "{subject}"\n'
        for subject, token in tokens.items()
    )
    return (
        f'[kafka]\ntopic_prefix = "{names.prefix}"\n'
        f'[keys]\nkeystore_path = "{root}/keys/keystore.json"\n'
        "[attestation]\nseal_batch_max_ms = 10\nunsealed_timeout_ms = 3000\n"
        f'[erasure]\nallowed_requesters = ["{REQUESTER}"]\nprocessor_identity = "{PROCESSOR}"\n'
        f'[kvscrub]\nallowed_requesters = ["{REQUESTER}"]\ndevice = "cpu"\nnum_blocks = 64\n'
        + vault
        + token_tables
        + f'[contracts.{CONTRACT}]\nmax_staleness_ms = 30000\ninvalidation = "eager"\n'
    )


def _tick(d: Deployment, store: Keystore) -> None:
    def client() -> Producer:
        return Producer(producer_settings(d.servers, {"message.timeout.ms": 5000}))

    sp = SealingProducer(
        client(),
        EventCodec(),
        d.names,
        "ticker",
        store.key_set("ticker"),
        SealingSettings(64, 10),
        producer_factory=client,
    )
    WatermarkTicker(sp, 3, ticker_id="ticker", interval_s=0.1).run(d.stop_ticker)


def _start_kv_worker(d: Deployment) -> None:
    """The KV-scrub worker's runner in a thread of this process, its log
    records written under the deployment's root like every other log."""
    root = logging.getLogger()
    d.log_handler, d.log_level = logging.FileHandler(d.root / "test-process.log"), root.level
    root.addHandler(d.log_handler)
    root.setLevel(logging.INFO)
    store = d.keystore()
    ready = threading.Event()

    def on_ready(worker: KvScrubWorker) -> None:
        d.worker = worker
        ready.set()

    d.worker_thread = threading.Thread(
        target=run_worker,
        args=(load_config(d.config), d.servers, d.names, store.key_set(KV_WORKER), d.stop_ticker),
        kwargs={
            "anchor": store.anchor().public(),
            "hasher": IdentifierHasher(store.identifier_secret()),
            "worker_id": KV_WORKER,
            "device": "cpu",
            "on_ready": on_ready,
            "registry": CollectorRegistry(),
            "tick_interval_s": 0.2,
        },
        daemon=True,
    )
    d.worker_thread.start()
    assert ready.wait(30), "the KV-scrub worker never became ready"


def kv_session(worker: KvScrubWorker, subject: str, chat: str, content: bytes) -> list[int]:
    """A session of ``subject`` (its own tenant) whose blocks hold ``content``
    repeated: the KV cache of a conversation about it."""
    blocks = worker.open_session(subject, chat, 2, subject=subject)
    shape = worker.pool.shape
    raw = (content * (2 * shape.block_bytes // len(content) + 1))[: 2 * shape.block_bytes]
    values = torch.frombuffer(bytearray(raw), dtype=shape.dtype).reshape(2, *shape.block_dims)
    worker.pool.write(blocks, values)
    return blocks


def kv_bytes(worker: KvScrubWorker, blocks: list[int]) -> bytes:
    """The blocks' bytes as they are in the pool's memory, whatever their state."""
    rows = worker.pool.tensor[torch.tensor(blocks)].cpu().contiguous()
    return rows.view(torch.uint8).numpy().tobytes()


def deploy(root: Path, servers: str, vault: str, pg_data: Path | None, tokens) -> Deployment:
    names = TopicNames(f"sw{uuid.uuid4().hex[:10]}.")
    create_topics(servers, names, partitions=3)
    config = root / "cachet.toml"
    config.write_text(_config_text(root, names, vault, tokens))
    d = Deployment(root, servers, names, config, root / "kek", pg_data)
    init = ["keys", "init", *d.common, "--generate-kek", str(d.kek), "--identity", NODES[0]]
    assert main([*init, "--publish"]) == 0
    store = d.keystore()
    for identity in (*NODES[1:], REQUESTER, PROCESSOR, "ticker", KV_WORKER):
        register_key_set(servers, names, store, identity)  # what `keys register` does
    threading.Thread(target=_tick, args=(d, d.keystore()), daemon=True).start()
    kek = ["--kek-file", str(d.kek)]
    d.spawn(PROCESSOR, "processors", "erasure", *kek, "--data-dir", str(root / PROCESSOR))
    _start_kv_worker(d)
    for name in NODES:
        d.nodes.append(start_node(name, config, servers, d.kek, root / name, root))
    for node in d.nodes:
        assert wait_until(lambda n=node: n.health()[0] == 200, 60) is not None, node.health()
    return d


def call(node: NodeProcess, token: str, path: str, body: dict[str, Any]) -> dict[str, Any]:
    req = urllib.request.Request(
        f"http://127.0.0.1:{node.port}{path}",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        raise AssertionError(f"{path} on {node.name}: {exc.code} {exc.read()!r}") from exc


def served(node: NodeProcess, token: str, key: str, namespace: str) -> bytes | None:
    out = call(node, token, "/v1/get", {"key": key, "contract": CONTRACT, "namespace": namespace})
    return base64.b64decode(out["value_b64"]) if out.get("hit") else None


def run_json(argv: list[str]) -> dict[str, Any]:
    """Run a command in this process; its last stdout line as JSON."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        assert main(argv) == 0
    return json.loads(buf.getvalue().strip().splitlines()[-1])
