"""The file vault shared by real processes: creation races, and SIGKILL mid-write."""

from __future__ import annotations

import contextlib
import multiprocessing as mp
import os
import signal
import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from cachet.crypto.vault import FileVault, KeyDestroyed

pytestmark = pytest.mark.integration

_SPAWN = mp.get_context("spawn")


def _race(path: str, kek: bytes, names: list[str], barrier: Any, out: Any) -> None:
    vault = FileVault(Path(path), kek)
    barrier.wait()
    out.put({name: vault.current_key(name).key.hex() for name in names})
    vault.close()


def test_four_processes_racing_on_new_names_get_one_key_each(tmp_path: Path) -> None:
    path, kek = str(tmp_path / "vault.sqlite"), os.urandom(32)
    names = [f"subj:{i:02x}/ns:race" for i in range(25)]
    barrier, out = _SPAWN.Barrier(4), _SPAWN.Queue()
    procs = [
        # Each walks the names in another order, so the races are spread.
        _SPAWN.Process(target=_race, args=(path, kek, names[i:] + names[:i], barrier, out))
        for i in range(4)
    ]
    for p in procs:
        p.start()
    seen = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for name in names:
        assert len({got[name] for got in seen}) == 1, name
    conn = sqlite3.connect(path)
    assert conn.execute("SELECT count(*) FROM keys").fetchone()[0] == len(names)
    conn.close()


def _churn(path: str, kek: bytes, log_path: str) -> None:
    """Create and destroy keys forever, logging each result only after the vault returned it."""
    vault = FileVault(Path(path), kek)
    with open(log_path, "a", buffering=1) as log:
        i = 0
        while True:
            name = f"subj:{i:06x}/ns:crash"
            key = vault.current_key(name)
            log.write(f"created {key.key_id} {key.key.hex()}\n")
            if i % 3 == 0:
                log.write(f"destroying {name}\n")
                for key_id in vault.destroy(name, reason="churn"):
                    log.write(f"destroyed {key_id}\n")
            i += 1


def test_sigkill_mid_churn_leaves_a_consistent_vault(tmp_path: Path) -> None:
    path, kek, log_path = tmp_path / "vault.sqlite", os.urandom(32), tmp_path / "churn.log"
    proc = _SPAWN.Process(target=_churn, args=(str(path), kek, str(log_path)))
    proc.start()
    deadline = time.monotonic() + 120
    while not log_path.exists() or log_path.read_text().count("created") < 150:
        assert proc.is_alive() and time.monotonic() < deadline
        time.sleep(0.01)
    os.kill(proc.pid or 0, signal.SIGKILL)  # in the middle of whatever it was doing
    proc.join(30)
    assert proc.exitcode == -signal.SIGKILL

    conn = sqlite3.connect(path)  # rolls back a hot journal, if the kill left one
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    conn.close()
    created: dict[str, str] = {}
    destroyed: set[str] = set()
    in_flight: set[str] = set()  # destroy started, not seen to return
    for line in log_path.read_text().splitlines():
        parts = line.split(" ")
        if len(parts) == 3 and parts[0] == "created":
            created[parts[1]] = parts[2]
        elif len(parts) == 2 and parts[0] == "destroying":
            in_flight = {k for k in created if k.rpartition("#")[0] == parts[1]}
        elif len(parts) == 2 and parts[0] == "destroyed":
            destroyed.add(parts[1])
            in_flight.discard(parts[1])
    vault = FileVault(path, kek)
    for key_id, hexkey in created.items():
        if key_id in destroyed:
            with pytest.raises(KeyDestroyed):
                vault.key(key_id)
        elif key_id in in_flight:
            # Killed inside destroy: all or nothing, never a torn state.
            with contextlib.suppress(KeyDestroyed):
                assert vault.key(key_id).key.hex() == hexkey
        else:
            assert vault.key(key_id).key.hex() == hexkey, key_id
    # The vault still works after the crash: same keys, new ones, destroys.
    next_name = f"subj:{len(created) + 10:06x}/ns:crash"
    made = vault.current_key(next_name)
    assert vault.destroy(next_name, reason="after crash") == (made.key_id,)
    vault.close()
