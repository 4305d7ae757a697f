"""Crash safety of the live view, with real processes and a real SIGKILL.

A node is killed (SIGKILL, no chance to clean up) while writes stream in,
restarted on the same data directory, and left to catch up. A third node
then rebuilds the view from offset 0. Both views must hold exactly the same
state (same state hash): nothing applied twice, nothing skipped. The same
holds for a node whose disk refuses a write mid-stream.
"""

from __future__ import annotations

import random
import resource
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from cachet.materializers.view import ViewStore

from .nodeproc import start_cluster, wait_until

pytestmark = [pytest.mark.integration, pytest.mark.multinode, pytest.mark.slow]

CONTRACTS = '[contracts.quotes]\nmax_staleness_ms = 600000\ninvalidation = "eager"\n'
# The largest file the disk-full victim may write (its RocksDB log outgrows it).
_DISK_BYTES = 1 << 20


def _state_hash(data_dir: Path, node_id: str) -> bytes:
    with ViewStore.open(data_dir / f"view-{node_id}", create=False) as store:
        return store.state_hash()


def test_sigkill_resumes_exactly_once_and_rebuild_matches(tmp_path: Path, record_property) -> None:
    c = start_cluster(tmp_path, ["writer", "victim", "rebuilt"], CONTRACTS)
    try:
        writer, victim = c.start_node("writer"), c.start_node("victim")
        c.wait_healthy(writer)
        c.wait_healthy(victim)
        n_keys = 60
        done = threading.Event()

        def write() -> None:
            for i in range(n_keys):
                writer.put(f"k{i}", f"v1-{i}".encode(), "quotes")
                if i % 3 == 0:  # a second version: supersedes the first
                    writer.put(f"k{i}", f"v2-{i}".encode(), "quotes")
                if i % 7 == 0:
                    writer.call("/v1/revoke", {"key": f"k{i}"})
            writer.put("done", b"1", "quotes", wait=True)
            done.set()

        t = threading.Thread(target=write)
        t.start()
        rng = random.Random(7)
        kills = 0
        while not done.is_set() and kills < 3:
            done.wait(rng.uniform(0.3, 1.5))
            victim.kill(signal.SIGKILL)
            kills += 1
            victim = c.start_node("victim")
        t.join(120)
        assert done.is_set()
        record_property("sigkills", kills)

        def serves_done(node) -> bool:
            r = node.get("done", "quotes")
            return r["hit"]

        assert wait_until(lambda: serves_done(victim), 60) is not None, victim.get("done", "quotes")
        victim.stop()

        rebuilt = c.start_node("rebuilt")
        assert wait_until(lambda: serves_done(rebuilt), 60) is not None, rebuilt.get(
            "done", "quotes"
        )
        rebuilt.stop()
        writer.stop()

        live = _state_hash(tmp_path / "victim", "victim")
        fresh = _state_hash(tmp_path / "rebuilt", "rebuilt")
        writer_view = _state_hash(tmp_path / "writer", "writer")
        assert live == fresh == writer_view
    finally:
        c.close()


def test_a_node_whose_disk_refuses_writes_exits_3_and_its_restart_loses_nothing(
    tmp_path: Path,
) -> None:
    """A real I/O error (RLIMIT_FSIZE: RocksDB's log cannot grow, "File too
    large"): the node stops serving, exits 3 for its supervisor, and started
    again it serves every write and equals a rebuilt view."""
    c = start_cluster(tmp_path, ["writer", "victim", "rebuilt"], CONTRACTS)
    try:
        writer = c.start_node("writer")
        soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
        # Inherited by the child only: restored as soon as it started.
        resource.setrlimit(resource.RLIMIT_FSIZE, (_DISK_BYTES, hard))
        try:
            victim = c.start_node("victim")
        finally:
            resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
        c.wait_healthy(writer)
        c.wait_healthy(victim)
        value = bytes(range(256)) * 32  # 8 KiB: the victim's log fills after ~100
        n_keys = 3 * _DISK_BYTES // len(value)
        for i in range(n_keys):
            writer.put(f"k{i}", value, "quotes")
        writer.put("done", b"1", "quotes", wait=True)

        assert victim.proc.wait(60) == 3
        log = (tmp_path / "victim.log").read_text()  # its stderr (start_node_process)
        assert "its view failed" in log and "File too large" in log

        victim = c.start_node("victim")  # no limit now
        assert wait_until(lambda: victim.get("done", "quotes")["hit"], 60) is not None
        assert all(victim.get(f"k{i}", "quotes")["hit"] for i in range(0, n_keys, 7))
        victim.stop()
        rebuilt = c.start_node("rebuilt")
        assert wait_until(lambda: rebuilt.get("done", "quotes")["hit"], 60) is not None
        rebuilt.stop()
        writer.stop()
        assert _state_hash(tmp_path / "victim", "victim") == _state_hash(
            tmp_path / "rebuilt", "rebuilt"
        )
    finally:
        c.close()


def test_processors_whose_disk_refuses_writes_exit_3(tmp_path: Path) -> None:
    """The expiry processor's own view under the same I/O error: the
    processors stop and exit 3 for their supervisor, naming the failure."""
    c = start_cluster(tmp_path, ["writer", "edge-processors"], CONTRACTS)
    try:
        writer = c.start_node("writer")
        c.wait_healthy(writer)
        cmd = [sys.executable, "-m", "cachet.cli.main", "processors", "run", "--no-ticker"]
        cmd += ["--config", str(c.config), "--bootstrap-servers", c.servers]
        cmd += ["--kek-file", str(c.kek), "--identity", "edge-processors"]
        cmd += ["--data-dir", str(tmp_path / "edge")]
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: resource.setrlimit(
                resource.RLIMIT_FSIZE, (_DISK_BYTES, _DISK_BYTES)
            ),
        )
        try:
            value = bytes(range(256)) * 32
            for i in range(3 * _DISK_BYTES // len(value)):
                writer.put(f"k{i}", value, "quotes")
            _, err = proc.communicate(timeout=90)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 3, err[-2000:]
        assert "processors edge-processors stopped: its view failed" in err
        assert "File too large" in err
    finally:
        c.close()
