"""The expiry processor on the real broker: entries expire in the ledger
whether or not anyone reads them, once per (key, version)."""

from __future__ import annotations

import hashlib
import json
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

from cachet.cli.main import main
from cachet.config import CachetConfig
from cachet.materializers.live_view import LiveView
from cachet.materializers.view import EntryState, ViewEntry
from cachet.processors.expiry import ExpiryProcessor
from cachet.producers.cache_client import CacheClient
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import Event, EventType
from cachet.topics import Topic
from cachet.verdict import MissReason
from tests.integration.ledger_support import Ledger, LedgerRun

from .nodeproc import wait_for

pytestmark = pytest.mark.integration


@dataclass
class Harness:
    proc: ExpiryProcessor
    view: LiveView
    producer: SealingProducer

    def wait_caught_up(self, timeout_s: float = 30.0) -> bool:
        """Until then the processor does not scan (the first catch-up of a
        fresh view on the embedded broker takes seconds)."""
        return bool(wait_for(lambda: self.view.health().caught_up, timeout_s))

    def scans(self) -> float:
        return self.proc.registry.get_sample_value("cachet_expiry_scans_total") or 0.0


@pytest.fixture
def make_expiry(
    tmp_path: Path, make_config, make_keys, ledger: Ledger, producer_keys, bootstrap_servers: str
) -> Iterator[Callable[..., Harness]]:
    """An expiry processor with its own view replica; ``run=True`` starts its
    loop on a thread, else the test polls its view and scans by hand."""
    started: list[tuple[threading.Event, threading.Thread | None, Harness]] = []

    def make(
        config: CachetConfig | None = None, *, run: bool = True, name: str = "expiry"
    ) -> Harness:
        config = config or make_config()
        keys = make_keys(name)
        producer = ledger.sealing_producer(name, producer_keys)
        view = LiveView.from_config(
            config,
            bootstrap_servers,
            keys.anchor,
            tmp_path / f"view-{name}",
            alert=lambda event_type, payload: None,
        )
        proc = ExpiryProcessor(
            view, producer, config.contracts, scan_interval_s=0.1, registry=CollectorRegistry()
        )
        stop = threading.Event()
        thread = None
        if run:
            thread = threading.Thread(target=proc.run, args=(stop,), daemon=True)
            thread.start()
        harness = Harness(proc, view, producer)
        started.append((stop, thread, harness))
        return harness

    yield make
    for stop, thread, h in started:
        stop.set()
        if thread is not None:
            thread.join(5)
        h.producer.close(5)
        h.view.close()


def expiry_events(
    ledger: Ledger, want: int, settle_s: float = 0.0
) -> tuple[LedgerRun, list[Event]]:
    """Verified StateTransitioned events with SYSTEM_EXPIRY authority on ``entries``."""

    def expired(run: LedgerRun) -> list[Event]:
        return [
            a.event
            for a in run.applied
            if a.event.type is EventType.STATE_TRANSITIONED
            and a.event.payload["authority"]["kind"] == "SYSTEM_EXPIRY"
        ]

    run = ledger.verify(
        until=lambda r: len(expired(r)) >= want, topics=(Topic.ENTRIES,), settle_s=settle_s
    )
    return run, expired(run)


def written_hash(run: LedgerRun, key_hash: bytes, version: int) -> bytes:
    """SHA3-256 of the exact bytes of the CacheWritten of (key, version)."""
    for a in run.applied:
        p = a.event.payload
        if (
            a.event.type is EventType.CACHE_WRITTEN
            and p["key_hash"] == key_hash
            and p["version"] == version
        ):
            return hashlib.sha3_256(a.origin.raw).digest()
    raise AssertionError("CacheWritten not found")


def state_of(view: LiveView, key_hash: bytes, state: EntryState) -> ViewEntry | None:
    entry = view.current(key_hash)
    return entry if entry is not None and entry.state is state else None


def test_ttl_expires_an_entry_nobody_reads(make_node, make_expiry, ticker, ledger) -> None:
    node = make_node()
    assert node.wait_caught_up()
    assert make_expiry().wait_caught_up()
    client = CacheClient(node)
    receipt = client.put("AAPL", b"189.12", contract="quotes", ttl_ms=300, wait=True)
    # Nobody reads it: the view still turns EXPIRED, from the ledger.
    entry = wait_for(lambda: state_of(node.view, receipt.key_hash, EntryState.EXPIRED), 15)
    assert entry is not None, "the entry did not expire"
    assert entry.authority == "SYSTEM_EXPIRY"
    assert entry.state_reason.startswith("ttl_exceeded: age ")
    assert entry.state_reason.endswith("> ttl 300 ms")

    run, events = expiry_events(ledger, 1)
    assert len(events) == 1
    p = events[0].payload
    assert p["key_hash"] == receipt.key_hash and p["version"] == receipt.version
    assert (str(p["from_state"]), str(p["to_state"])) == ("ACTIVE", "EXPIRED")
    assert p["authority"] == {"kind": "SYSTEM_EXPIRY", "key_id": None, "role": None}
    # The per-key hash chain: the transition follows the write.
    assert p["prev_event_hash"] == written_hash(run, receipt.key_hash, receipt.version)

    r = client.get("AAPL", contract="quotes")
    assert not r.hit and r.reason is MissReason.EXPIRED


def test_max_staleness_expires_an_entry_without_ttl(make_node, make_expiry, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    assert make_expiry().wait_caught_up()
    client = CacheClient(node)
    receipt = client.put("Q", b"1", contract="fast", wait=True)  # 400 ms max staleness
    entry = wait_for(lambda: state_of(node.view, receipt.key_hash, EntryState.EXPIRED), 15)
    assert entry is not None, "the entry did not expire"
    assert entry.authority == "SYSTEM_EXPIRY"
    assert entry.state_reason.startswith("max_staleness_exceeded: age ")
    assert entry.state_reason.endswith("> contract fast max staleness 400 ms")
    assert client.get("Q", contract="fast").reason is MissReason.EXPIRED


def test_entries_within_their_window_stay_active(make_node, make_expiry, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    h = make_expiry()
    assert h.wait_caught_up()
    client = CacheClient(node)
    no_ttl = client.put("A", b"1", contract="quotes", wait=True)  # 30 s max staleness
    long_ttl = client.put("B", b"2", contract="quotes", ttl_ms=60_000, wait=True)
    # "fast" allows 400 ms, but the entry's own TTL is its limit.
    ttl_over_contract = client.put("C", b"3", contract="fast", ttl_ms=60_000, wait=True)
    assert wait_for(lambda: h.view.current(ttl_over_contract.key_hash) is not None)
    scans = h.scans()
    assert wait_for(lambda: h.scans() >= scans + 5)  # over half a second of scans
    for receipt in (no_ttl, long_ttl, ttl_over_contract):
        assert state_of(node.view, receipt.key_hash, EntryState.ACTIVE) is not None
        assert state_of(h.view, receipt.key_hash, EntryState.ACTIVE) is not None
    assert h.proc.in_flight == 0
    assert wait_for(lambda: client.get("A", contract="quotes").hit)
    assert wait_for(lambda: client.get("B", contract="quotes").hit)


def test_one_transition_per_key_version_across_scans_and_restart(
    make_node, make_expiry, ledger
) -> None:
    node = make_node()
    assert node.wait_caught_up(ticks=False)
    receipt = CacheClient(node).put("K", b"v", contract="quotes", ttl_ms=1_000, wait=True)
    h = make_expiry(run=False)
    proc, view = h.proc, h.view

    def poll_until(cond) -> object:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            view.poll(0.05)
            if value := cond():
                return value
        return cond()

    entry = poll_until(
        lambda: view.health().caught_up and state_of(view, receipt.key_hash, EntryState.ACTIVE)
    )
    assert entry
    late = entry.written_at_us + 5_000_000  # a clock past the 1 s TTL
    assert proc.scan(late) == 1
    # In flight: however often it scans, it does not emit again.
    assert [proc.scan(late + i) for i in range(5)] == [0] * 5
    assert proc.in_flight == 1
    assert poll_until(lambda: state_of(view, receipt.key_hash, EntryState.EXPIRED))
    assert proc.scan(late + 10) == 0 and proc.in_flight == 0

    # A restarted processor (nothing remembered) over the caught-up view.
    restarted = ExpiryProcessor(view, h.producer, node.contracts, registry=CollectorRegistry())
    assert restarted.scan(late + 20) == 0

    _, events = expiry_events(ledger, 1, settle_s=1.5)
    assert [(e.payload["key_hash"], e.payload["version"]) for e in events] == [
        (receipt.key_hash, receipt.version)
    ]


# -- the CLI ---------------------------------------------------------------


def _cli_config(tmp_path: Path, prefix: str, health_port: int = 0) -> list[str]:
    cfg = tmp_path / "cachet.toml"
    cfg.write_text(
        f'[kafka]\ntopic_prefix = "{prefix}"\n'
        f'[keys]\nkeystore_path = "{tmp_path}/keys/keystore.json"\n'
        f'[node]\nnode_id = "edge-1"\ndata_dir = "{tmp_path}/var"\nhealth_port = {health_port}\n'
        "[attestation]\nseal_batch_max_ms = 10\n"
        '[contracts.fast]\nmax_staleness_ms = 400\ninvalidation = "eager"\n'
    )
    return ["--config", str(cfg)]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_cli_refuses_an_identity_without_keys(
    tmp_path: Path, bootstrap_servers: str, topics, capsys
) -> None:
    common = [*_cli_config(tmp_path, topics.prefix), "--bootstrap-servers", bootstrap_servers]
    kek = tmp_path / "kek"
    assert main(["keys", "init", *common, "--generate-kek", str(kek), "--identity", "edge-1"]) == 0
    capsys.readouterr()
    assert main(["processors", "run", *common, "--kek-file", str(kek)]) == 2
    err = capsys.readouterr().err
    assert "cachet keys register --identity edge-1-processors" in err


def test_cli_runs_ticker_and_expiry_with_health(
    tmp_path: Path, bootstrap_servers: str, topics, capsys
) -> None:
    port = _free_port()
    common = [*_cli_config(tmp_path, topics.prefix, port), "--bootstrap-servers", bootstrap_servers]
    kek = tmp_path / "kek"
    assert main(["keys", "init", *common, "--generate-kek", str(kek), "--identity", "edge-1"]) == 0
    keyopts = ["--kek-file", str(kek)]
    assert main(["keys", "register", *common, *keyopts, "--identity", "edge-1-processors"]) == 0
    capsys.readouterr()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachet.cli.main",
            "processors",
            "run",
            *common,
            *keyopts,
            "--tick-interval-ms",
            "100",
        ],  # fmt: skip
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:

        def health() -> tuple[int, dict] | None:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                    return r.status, json.loads(r.read())
            except urllib.error.HTTPError as exc:
                return exc.code, json.loads(exc.read())
            except OSError:
                return None

        ok = wait_for(lambda: (h := health()) is not None and h[0] == 200 and h, 60)
        assert ok, f"never healthy: {health()}"
        body = ok[1]
        assert body["ok"] and body["caught_up"] and body["parts"] == ["expiry", "ticker"]
        assert body["identity"] == "edge-1-processors" and body["tick_seq"] > 0
        assert (tmp_path / "var" / "view-processors").is_dir()
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=30)
    assert proc.returncode == 0
    assert "processors edge-1-processors stopped" in out
