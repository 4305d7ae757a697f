"""The live view when its own RocksDB fails, against the real broker.

An operator's worst moment, not an attacker's: the database under a view
goes away (a disk error, or the view being closed while other threads use
it). What must hold (materializers/view/rows.py, LiveView.poll):

* the record being applied is not dead-lettered and the view does not go on
  with half of it applied: it stops, commits nothing more, serves nothing,
  and says why; a view opened again on the same directory applies the
  record (nothing was lost);
* a transient failure (one I/O error mid-batch, the database itself fine)
  leaves nothing half-applied on disk, even when the view is closed after
  it: reopened, it equals a view rebuilt from the log;
* a view closed while readers read fails them closed with the store's own
  error, never with a bare RocksDB error from a database closed under them;
* a view closed while its poll is still running on another thread commits
  nothing of that poll (its consumer's position is already past records it
  has not handled yet): nothing is lost.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from cachet.errors import StateFailure
from cachet.ledger.verifier import SealVerifier
from cachet.materializers import live_view
from cachet.materializers.live_view import LiveView
from cachet.materializers.view import (
    ViewDatabaseError,
    ViewFailedError,
    ViewStore,
    ViewStoreError,
    codec,
)
from cachet.materializers.view.rows import ViewRows
from cachet.producers.cache_client import CacheClient
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic
from cachet.verdict import MissReason

from .logtools import produce_raw, read_topic
from .nodeproc import wait_for

pytestmark = pytest.mark.integration


@pytest.fixture
def open_view(
    make_config, anchor, bootstrap_servers: str, codec: EventCodec
) -> Callable[[Path, list[Any]], LiveView]:
    def open_(path: Path, alerts: list[Any], alert: Callable[..., None] | None = None) -> LiveView:
        config = make_config()
        return LiveView.open(
            path,
            bootstrap_servers=bootstrap_servers,
            names=config.kafka.topic_names(),
            anchor=anchor.public(),
            required=config.attestation.schemes,
            alert=alert or (lambda t, p: alerts.append((t, p))),
            codec=codec,
            name="replica",
        )

    return open_


def _poll_until(view: LiveView, cond: Callable[[], bool], timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not cond():
        assert time.monotonic() < deadline, "the view did not get there in time"
        view.poll(0.05)


def _version(view: LiveView, key_hash: bytes) -> int | None:
    entry = view.current(key_hash)
    return None if entry is None else entry.version


def _replica_serving_k(
    make_node, open_view, path: Path, alerts: list[Any] | None = None
) -> tuple[CacheClient, bytes, LiveView]:
    """A writer node that put K v1, and a replica view at ``path`` serving it."""
    node = make_node("node-a")
    assert node.wait_caught_up(30)
    client = CacheClient(node)
    client.put("K", b"v1", contract="quotes", wait=True)
    kh = node.hasher.key("default", "K")
    view = open_view(path, [] if alerts is None else alerts)
    _poll_until(view, lambda: _version(view, kh) == 1)
    return client, kh, view


def test_a_store_failure_stops_the_view_and_a_reopened_view_applies_what_it_missed(
    make_node, ticker, open_view, bootstrap_servers: str, topics, tmp_path: Path
) -> None:
    alerts: list[Any] = []
    path = tmp_path / "replica"
    client, kh, view = _replica_serving_k(make_node, open_view, path, alerts)

    view.store.close()  # the database goes away under the view
    client.put("K", b"v2", contract="quotes", wait=True)
    with pytest.raises(StateFailure, match="RocksDB"):
        _poll_until(view, lambda: False)

    # Stopped, and says why: no read is served, no poll goes on.
    assert view.failure is not None and "RocksDB" in view.failure
    health = view.health()
    assert health.failed and not health.caught_up
    with pytest.raises(ViewFailedError, match="restart"):
        view.poll(0.05)
    # Nothing was blamed on the records: no dead letter, no integrity alert.
    assert not [t for t, _ in alerts if t is EventType.INTEGRITY_FAILURE]
    assert read_topic(bootstrap_servers, topics(Topic.DEADLETTER)) == []
    view.close()

    # Opened again on the same directory: the write it missed is applied.
    again = open_view(path, alerts)
    try:
        _poll_until(again, lambda: _version(again, kh) == 2)
        assert not again.health().failed
    finally:
        again.close()


def test_a_node_whose_view_failed_is_not_ready_and_serves_nothing(make_node, ticker) -> None:
    writer = CacheClient(a := make_node("node-a"))
    b = make_node("node-b")
    assert a.wait_caught_up(30) and b.wait_caught_up(30)
    writer.put("K", b"v1", contract="quotes", wait=True)
    reader = CacheClient(b)
    assert wait_for(lambda: reader.get("K", contract="quotes").hit)

    b.view.store.close()  # under the node's own poll thread
    writer.put("K", b"v2", contract="quotes", wait=True)
    assert b.view_stopped.wait(10)  # its poll loop stopped: the process may exit
    assert b.view.failure is not None
    health = b.health()
    assert not health.ready
    assert any(p.startswith("view_failed: RocksDB") for p in health.problems)
    assert reader.get("K", contract="quotes").reason is MissReason.VIEW_FAILED


def test_one_io_error_mid_batch_leaves_nothing_half_applied_even_after_a_close(
    make_node, ticker, open_view, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, kh, view = _replica_serving_k(make_node, open_view, tmp_path / "replica")

    # One read of K's row by this view fails, as an I/O error would; RocksDB
    # stays open (the writer node's own view reads through the same class).
    real_get = ViewRows.get
    failed = threading.Event()
    replica_rows = view.store._rows

    def get_failing_once(rows: ViewRows, key: bytes) -> bytes | None:
        if rows is replica_rows and key == codec.current_key(kh) and not failed.is_set():
            failed.set()
            raise ViewDatabaseError("get", OSError(5, "Input/output error"))
        return real_get(rows, key)

    monkeypatch.setattr(ViewRows, "get", get_failing_once)
    client.put("A", b"a1", contract="quotes")
    client.put("K", b"v2", contract="quotes", wait=True)
    with pytest.raises(StateFailure, match="Input/output error"):
        _poll_until(view, lambda: False)
    view.close()  # must not commit the half-applied batch
    monkeypatch.setattr(ViewRows, "get", real_get)

    again = open_view(tmp_path / "replica", [])
    rebuilt = open_view(tmp_path / "rebuilt", [])
    try:
        for v in (again, rebuilt):
            _poll_until(v, lambda v=v: _version(v, kh) == 2 and v.health().caught_up)
        assert again.state_hash() == rebuilt.state_hash()
    finally:
        again.close()
        rebuilt.close()


def test_a_bug_part_way_through_verifying_stops_the_view(
    make_node, ticker, open_view, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An error outside any one record's handling (here the verifier's
    unsealed-timeout sweep) may leave the view's memory half-updated: the
    view stops rather than go on from there."""
    node = make_node("node-a")
    assert node.wait_caught_up(30)
    view = open_view(tmp_path / "replica", [])
    _poll_until(view, lambda: view.health().caught_up)

    def expire_with_a_bug(verifier: SealVerifier, now: float) -> list[Any]:
        raise KeyError("a bug in the sweep")

    monkeypatch.setattr(SealVerifier, "expire", expire_with_a_bug)
    with pytest.raises(KeyError, match="a bug in the sweep"):
        view.poll(0.05)
    assert view.failure == "KeyError: 'a bug in the sweep'"
    assert view.standing().failed
    view.close()


def test_any_error_that_stops_a_commit_stops_the_view(
    make_node, ticker, open_view, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Not only the store's errors: a commit that does not happen leaves the
    view answering from its last commit while ticks keep arriving."""
    client, kh, view = _replica_serving_k(make_node, open_view, tmp_path / "replica")

    replica_store = view.store
    real_commit = ViewStore.commit

    def commit_with_a_bug(store: ViewStore, batch: Any) -> None:
        if store is replica_store:
            raise ValueError("a bug in the commit")
        real_commit(store, batch)

    monkeypatch.setattr(ViewStore, "commit", commit_with_a_bug)
    client.put("K", b"v2", contract="quotes", wait=True)
    with pytest.raises(ValueError, match="a bug"):
        _poll_until(view, lambda: False)
    assert view.failure == "ValueError: a bug in the commit"
    assert view.standing().failed
    with pytest.raises(ViewFailedError):
        view.poll(0.05)
    assert _version(view, kh) == 1  # nothing of v2 was written
    monkeypatch.setattr(ViewStore, "commit", real_commit)
    view.close()


def test_closing_the_view_while_readers_read_fails_them_with_the_stores_error(
    make_node, ticker, open_view, tmp_path: Path
) -> None:
    _, kh, view = _replica_serving_k(make_node, open_view, tmp_path / "replica")

    stop = threading.Event()
    wrong: list[BaseException] = []
    refused = [0]

    def read() -> None:
        while not stop.is_set():
            try:
                view.current(kh)
            except ViewStoreError:
                refused[0] += 1  # closed: the store says so
            except BaseException as exc:  # noqa: BLE001 - what the test looks for
                wrong.append(exc)

    readers = [threading.Thread(target=read) for _ in range(4)]
    for t in readers:
        t.start()
    time.sleep(0.05)
    view.close()
    time.sleep(0.05)
    stop.set()
    for t in readers:
        t.join(5)
    assert wrong == []
    assert refused[0] > 0  # the readers did read after the close
    view.close()  # again: nothing to do, and a clean close is no failure
    assert view.failure is None
    assert view.poll(0.05) == 0  # a poll after the close does nothing


def test_a_close_while_a_poll_runs_commits_nothing_of_it_and_loses_nothing(
    make_node,
    ticker,
    open_view,
    bootstrap_servers: str,
    topics,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    node = make_node("node-a")
    assert node.wait_caught_up(30)
    client = CacheClient(node)
    # A bad record first in every entries partition, genuine writes behind
    # it: the view's first consume takes both, and its poll stops on the bad
    # one's alert until the test lets it go on.
    produce_raw(
        bootstrap_servers,
        topics(Topic.ENTRIES),
        [(b"junk", b"\x17 not an event", (), p) for p in range(3)],
    )
    keys = [f"K{i}" for i in range(6)]
    for k in keys:
        client.put(k, b"v1", contract="quotes", wait=k == keys[-1])
    hashes = [node.hasher.key("default", k) for k in keys]

    in_poll, go_on = threading.Event(), threading.Event()

    def alert(event_type: EventType, payload: dict[str, Any]) -> None:
        if str(payload.get("status", "")).startswith("dead_letter") and not in_poll.is_set():
            in_poll.set()
            go_on.wait(30)

    path = tmp_path / "replica"
    view = open_view(path, [], alert)

    def poll_on() -> None:
        while not go_on.is_set() or view.failure is None:
            try:
                view.poll(0.05)
            except Exception:  # noqa: BLE001 - closed under it: that is the test
                return

    poller = threading.Thread(target=poll_on)
    poller.start()
    assert in_poll.wait(30), "the view never read the bad record"
    monkeypatch.setattr(live_view, "_CLOSE_WAIT_S", 0.2)
    view.close()  # its owner did not stop the poll in time
    go_on.set()
    poller.join(30)

    again = open_view(path, [])
    try:
        _poll_until(again, lambda: all(_version(again, h) == 1 for h in hashes))
    finally:
        again.close()
