"""SIGKILL of the erasure processor mid-erasure, then a restart: done once.

``cachet processors erasure`` runs as a real process with its own keystore
identity, file vault and view; a writer node in this process wrote the
subject's entries into the same vault. The processor's seals are kept small
(8 events) so its revocations reach the log over several seals: the kill
lands after the first of them is visible and before the last. The restarted
process learns from the log what was done, revokes the rest, destroys the
keys and reports the erasure -- and the verified log holds exactly one
revocation per entry and exactly one ErasureCompleted.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from collections import Counter
from pathlib import Path

import pytest

from cachet.cli.main import main
from cachet.config.load import resolve_config
from cachet.crypto.keystore import Keystore, load_kek
from cachet.crypto.vault import KeyDestroyed
from cachet.ledger.verifier import Applied
from cachet.materializers.view import EntryState
from cachet.ops.broker import free_port
from cachet.processors.erasure import erasure_reason
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.erasure_request import request_erasure
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames
from tests.integration.ledger_support import Ledger, LedgerRun

from .conftest import wait_for

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ENTRIES = 96
SUBJECT = "patient-4711"


def _config(root: Path, topics: TopicNames, name: str, extra: str = "") -> Path:
    path = root / name
    path.write_text(
        f'[kafka]\ntopic_prefix = "{topics.prefix}"\n'
        f'[keys]\nkeystore_path = "{root}/keys/keystore.json"\n'
        f'[vault]\npath = "{root}/vault.sqlite"\n'
        "[attestation]\nseal_batch_max_ms = 10\nunsealed_timeout_ms = 3000\n"
        + extra
        + '[erasure]\nallowed_requesters = ["dpo"]\nprocessor_identity = "erasure"\n'
        "[contracts.quotes]\nmax_staleness_ms = 60000\n"
    )
    return path


def _start(cfg: Path, servers: str, kek: Path, data_dir: Path, log: Path, port: int):
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "cachet.cli.main",
            "processors",
            "erasure",
            "--config",
            str(cfg),
            "--bootstrap-servers",
            servers,
            "--kek-file",
            str(kek),
            "--data-dir",
            str(data_dir),
            "--kv-scrub-wait-ms",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=log.open("a"),
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("erasure processor erasure:"), f"{line!r}; see {log}"

    def healthy() -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as r:
                return r.status == 200
        except (urllib.error.URLError, OSError):
            return False

    assert wait_for(healthy, 60), f"erasure processor never ready; see {log}"
    return proc


def _revocations(run: LedgerRun, request_id: str) -> Counter[bytes]:
    return Counter(
        a.event.payload["key_hash"]
        for a in run.applied
        if a.event.type is EventType.STATE_TRANSITIONED
        and a.event.payload["reason"] == erasure_reason(request_id)
    )


def _completions(run: LedgerRun, request_id: str) -> list[Applied]:
    return [
        a
        for a in run.applied
        if a.event.type is EventType.ERASURE_COMPLETED
        and a.event.payload["request_id"] == request_id
    ]


def test_sigkill_mid_erasure_then_restart_completes_exactly_once(
    tmp_path: Path, bootstrap_servers: str, topics: TopicNames, capsys: pytest.CaptureFixture
) -> None:
    kek = tmp_path / "kek"
    port = free_port()
    cfg = _config(tmp_path, topics, "cachet.toml")
    # The processor's own file: small seals, and a health port to wait on.
    proc_cfg = _config(
        tmp_path,
        topics,
        "processor.toml",
        f"seal_batch_max_events = 8\n[node]\nhealth_port = {port}\n",
    )
    common = ["--config", str(cfg), "--bootstrap-servers", bootstrap_servers]
    assert (
        main(
            [
                "keys",
                "init",
                *common,
                "--generate-kek",
                str(kek),
                "--identity",
                "erasure",
                "--publish",
            ]
        )
        == 0
    )
    for identity in ("dpo", "writer"):
        assert (
            main(["keys", "register", *common, "--kek-file", str(kek), "--identity", identity]) == 0
        )
    store = Keystore.open(tmp_path / "keys" / "keystore.json", load_kek(kek, None))
    config, _ = resolve_config(cfg, bootstrap_servers, {})
    keys = NodeKeys.from_keystore(store, "writer", config.vault)
    writer = CacheNode(config, bootstrap_servers, keys, tmp_path / "writer", node_id="writer")
    dpo = SealingProducer.from_config(config, bootstrap_servers, "dpo", store.key_set("dpo"))
    proc = None
    try:
        assert writer.wait_caught_up(60, ticks=False)
        client = CacheClient(writer, scope=SUBJECT)
        pending = [
            client.put_async(
                f"k{i}", f"marker-{i}".encode(), contract="quotes", namespace=("eu", "us")[i % 2]
            )
            for i in range(ENTRIES)
        ]
        mine = [p.acknowledged(30).key_hash for p in pending]
        assert wait_for(lambda: all(writer.view.current(k) for k in mine), 60)

        # A legal hold set and lifted through the command (on a namespace the
        # subject has nothing in: the erasure below is not held by it).
        hold_cli = ["erase", "hold", *common, "--kek-file", str(kek), "--json"]
        capsys.readouterr()
        assert (
            main(
                [
                    *hold_cli[:2],
                    "set",
                    *hold_cli[2:],
                    "--namespace",
                    "other",
                    "--reason",
                    "matter 26-cv-0142",
                ]
            )
            == 0
        )
        hold_id = json.loads(capsys.readouterr().out.splitlines()[-1])["hold_id"]
        assert main([*hold_cli[:2], "lift", hold_id, *hold_cli[2:], "--reason", "closed"]) == 0

        log = tmp_path / "processor.log"
        proc = _start(proc_cfg, bootstrap_servers, kek, tmp_path / "proc", log, port)
        ticket = request_erasure(dpo, writer.hasher, SUBJECT, requested_by="dpo")
        dpo.flush(10)

        def revoked() -> int:
            return sum(
                1
                for k in mine
                if (e := writer.view.current(k)) is not None and e.state is EntryState.REVOKED
            )

        assert wait_for(lambda: revoked() > 0, 60), f"no revocation seen; see {log}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
        at_kill = revoked()
        # Mid-erasure: some revocations landed, not all.
        assert 0 < at_kill < ENTRIES, at_kill
        killed_epoch = next(
            e.producer_id
            for k in mine
            if (e := writer.view.current(k)) is not None and e.state is EntryState.REVOKED
        )

        proc = _start(proc_cfg, bootstrap_servers, kek, tmp_path / "proc", log, port)
        assert wait_for(lambda: revoked() == ENTRIES, 60), revoked()

        run = Ledger(bootstrap_servers, topics, EventCodec(), store.anchor()).verify(
            until=lambda r: (
                len(_completions(r, ticket.request_id)) >= 1
                and sum(_revocations(r, ticket.request_id).values()) >= ENTRIES
            ),
            timeout_s=60,
            # Past the unsealed timeout: a late duplicate would show.
            settle_s=4.0,
            topics=(Topic.ENTRIES, Topic.ERASURE),
        )
        (completed,) = _completions(run, ticket.request_id)
        per_key = _revocations(run, ticket.request_id)
        assert set(per_key) == set(mine)
        assert set(per_key.values()) == {1}, "an entry was revoked twice"
        # The restarted process finished the erasure the killed one began.
        assert completed.event.producer_id != killed_epoch
        revokers = {
            a.event.producer_id for a in run.applied if a.event.type is EventType.STATE_TRANSITIONED
        }
        assert killed_epoch in revokers <= {killed_epoch, completed.event.producer_id}
        holds = [
            (a.event.payload["hold_id"], a.event.payload["action"], a.seal.header.producer_id)
            for a in run.applied
            if a.event.type is EventType.LEGAL_HOLD_CHANGED
        ]
        assert [(h, act) for h, act, _ in holds] == [(hold_id, "SET"), (hold_id, "LIFTED")]
        assert all(pid.startswith("dpo@") for _, _, pid in holds)
        payload = completed.event.payload
        assert payload["stage"] == "immediate"
        assert payload["entries_revoked"] == ENTRIES
        assert payload["data_keys_destroyed"] == 2
        for key_id in payload["destroyed_key_ids"]:
            with pytest.raises(KeyDestroyed):
                keys.vault.key(key_id)
    finally:
        if proc is not None and proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
        dpo.close(10)
        writer.close()
        keys.vault.close()
