"""The RocksDB store under the live view: semantics, format, state hash, crashes."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import random
import signal
import struct
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rocksdict import AccessType, Options, Rdict

from cachet.errors import StateFailure
from cachet.materializers.view import (
    VIEW_FORMAT_VERSION,
    EntryState,
    ViewBatchError,
    ViewCorruptError,
    ViewDatabaseError,
    ViewEntry,
    ViewFormatError,
    ViewMissingError,
    ViewStore,
    codec,
)
from tests.unit.materializers import _apply_forever as forever

REPO_ROOT = Path(__file__).resolve().parents[3]


def _h(label: str) -> bytes:
    return hashlib.sha3_256(label.encode()).digest()


def make_entry(
    key: str = "k1", version: int = 1, *, subject: str | None = None, tag: str = ""
) -> ViewEntry:
    return ViewEntry(
        key_hash=_h(f"key:{key}"),
        namespace="quotes",
        contract="finra_quotes",
        fingerprint=_h(f"fp:{key}:{version}{tag}"),
        version=version,
        state=EntryState.ACTIVE,
        ciphertext=_h(f"ct:{key}:{version}{tag}") * 2,
        nonce=bytes(12),
        data_key_id="dk-1",
        commitment=_h(f"commit:{key}:{version}"),
        aad_version=1,
        subject_hash=None if subject is None else _h(f"subject:{subject}"),
        classification="financial",
        written_at_us=1_000 + version,
        ttl_ms=30_000,
        state_changed_at_us=1_000 + version,
        state_reason="",
        authority="",
        event_hash=_h(f"event:{key}:{version}{tag}"),
        producer_id="svc",
        seal_seq=version,
    )


def expire(batch: Any, key_hash: bytes, version: int, n: int = 0) -> ViewEntry | None:
    result: ViewEntry | None = batch.transition(
        key_hash,
        version,
        EntryState.EXPIRED,
        at_us=9_000 + n,
        reason="ttl_elapsed",
        authority="SYSTEM_EXPIRY",
        event_hash=_h(f"event:expire:{n}"),
        producer_id="expiry",
        seal_seq=77 + n,
    )
    return result


@pytest.fixture
def store(tmp_path: Path) -> Iterator[ViewStore]:
    with ViewStore.open(tmp_path / "view") as s:
        yield s


def put_all(store: ViewStore, *entries: ViewEntry, depth: int = 3) -> None:
    batch = store.begin()
    for entry in entries:
        batch.put(entry, history_depth=depth)
    store.commit(batch)


# --------------------------------------------------------------------------- semantics


def test_put_current_history_subjects_offsets(store: ViewStore) -> None:
    v1, v2 = make_entry(version=1, subject="alice"), make_entry(version=2, subject="alice")
    other = make_entry("k2", 1, subject="alice")
    batch = store.begin()
    batch.put(v1, history_depth=3)
    batch.put(other, history_depth=3)
    batch.set_offset("entries", 2, 17)
    store.commit(batch)
    assert store.current(v1.key_hash) == v1
    assert store.history(v1.key_hash) == []

    batch = store.begin()
    batch.put(v2, history_depth=3)
    batch.set_offset("entries", 2, 18)
    batch.set_offset("invalidations", 0, 5)
    store.commit(batch)
    assert store.current(v1.key_hash) == v2
    assert store.history(v1.key_hash) == [v1]
    assert sorted(store.keys_of_subject(_h("subject:alice"))) == sorted(
        [v1.key_hash, other.key_hash]
    )
    assert store.keys_of_subject(_h("subject:bob")) == []
    assert store.offsets() == {("entries", 2): 18, ("invalidations", 0): 5}
    assert [e.key_hash for e in store.entries()] == sorted([v1.key_hash, other.key_hash])
    assert store.current(_h("key:absent")) is None


def test_history_is_trimmed_to_depth_newest_first(store: ViewStore) -> None:
    for version in range(1, 7):
        put_all(store, make_entry(version=version), depth=2)
    key = _h("key:k1")
    assert store.current(key) == make_entry(version=6)
    assert [e.version for e in store.history(key)] == [5, 4]
    put_all(store, make_entry(version=7), depth=0)
    assert store.history(key) == []


def test_same_version_replaces_and_older_version_lands_in_history(store: ViewStore) -> None:
    put_all(store, make_entry(version=5))
    put_all(store, make_entry(version=5, tag="redelivered"))
    key = _h("key:k1")
    assert store.current(key) == make_entry(version=5, tag="redelivered")
    assert store.history(key) == []
    put_all(store, make_entry(version=3))  # out of order: older than current
    assert store.current(key) == make_entry(version=5, tag="redelivered")
    assert store.history(key) == [make_entry(version=3)]


def test_subject_index_follows_every_stored_version(store: ViewStore) -> None:
    put_all(store, make_entry(version=1, subject="alice"), depth=1)
    put_all(store, make_entry(version=2, subject="bob"), depth=1)
    key = _h("key:k1")
    # v1 (alice) is still in history: erasure of alice must find this key.
    assert store.keys_of_subject(_h("subject:alice")) == [key]
    assert store.keys_of_subject(_h("subject:bob")) == [key]
    put_all(store, make_entry(version=3), depth=1)  # v1 trimmed away
    assert store.keys_of_subject(_h("subject:alice")) == []
    assert store.keys_of_subject(_h("subject:bob")) == [key]
    batch = store.begin()
    assert batch.delete_subject_index(_h("subject:bob")) == [key]
    store.commit(batch)
    assert store.keys_of_subject(_h("subject:bob")) == []


def test_transition_of_current_entry(store: ViewStore) -> None:
    entry = make_entry(version=1)
    put_all(store, entry)
    batch = store.begin()
    changed = expire(batch, entry.key_hash, 1)
    store.commit(batch)
    assert changed is not None
    assert store.current(entry.key_hash) == changed
    assert changed == dataclasses.replace(
        entry,
        state=EntryState.EXPIRED,
        state_changed_at_us=9_000,
        state_reason="ttl_elapsed",
        authority="SYSTEM_EXPIRY",
        event_hash=_h("event:expire:0"),
        producer_id="expiry",
        seal_seq=77,
    )


def test_transition_of_historical_version_moves_chain_head(store: ViewStore) -> None:
    put_all(store, make_entry(version=1), make_entry(version=2))
    key = _h("key:k1")
    batch = store.begin()
    changed = expire(batch, key, 1)
    assert expire(batch, key, 9) is None  # unknown version
    assert expire(batch, _h("key:absent"), 1) is None  # unknown key
    store.commit(batch)
    assert changed is not None and changed.version == 1
    assert store.history(key) == [changed]
    current = store.current(key)
    assert current is not None
    assert current.state is EntryState.ACTIVE and current.version == 2
    # The transition is the key's last event: the hash chain head moved.
    assert (current.event_hash, current.producer_id, current.seal_seq) == (
        _h("event:expire:0"),
        "expiry",
        77,
    )


def test_reads_inside_a_batch_see_its_own_changes(store: ViewStore) -> None:
    put_all(store, make_entry(version=1, subject="alice"))
    key = _h("key:k1")
    batch = store.begin()
    batch.put(make_entry(version=2, subject="bob"), history_depth=3)
    assert batch.current(key) == make_entry(version=2, subject="bob")
    assert batch.history(key) == [make_entry(version=1, subject="alice")]
    assert batch.keys_of_subject(_h("subject:bob")) == [key]
    changed = expire(batch, key, 2)  # composes with the put above
    assert changed is not None and batch.current(key) == changed
    batch.set_offset("t", 0, 3)
    assert batch.offset("t", 0) == 3
    # ...while the committed view does not see them yet.
    assert store.current(key) == make_entry(version=1, subject="alice")
    assert store.offsets() == {}
    store.commit(batch)
    assert store.current(key) == changed


def test_uncommitted_batch_leaves_nothing_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "view"
    with ViewStore.open(path) as store:
        put_all(store, make_entry(version=1))
        before = store.state_hash()
        batch = store.begin()
        batch.put(make_entry(version=2), history_depth=3)
        batch.put(make_entry("k2", 1), history_depth=3)
        batch.set_offset("t", 0, 99)
        batch.put_meta("log_identity", b"cluster-x")
    with ViewStore.open(path, create=False) as store:
        assert store.current(_h("key:k1")) == make_entry(version=1)
        assert store.current(_h("key:k2")) is None
        assert store.offsets() == {}
        assert store.get_meta("log_identity") is None
        assert store.state_hash() == before


def test_batch_misuse_is_refused(store: ViewStore) -> None:
    batch = store.begin()
    batch.set_offset("t", 0, 1)
    store.commit(batch)
    with pytest.raises(ViewBatchError):
        store.commit(batch)
    with pytest.raises(ViewBatchError):
        batch.put(make_entry(), history_depth=1)
    stale, fresh = store.begin(), store.begin()
    fresh.set_offset("t", 0, 2)
    store.commit(fresh)
    stale.set_offset("t", 0, 5)
    with pytest.raises(ViewBatchError, match="stale"):
        store.commit(stale)
    assert store.offsets() == {("t", 0): 2}
    with pytest.raises(ValueError):
        store.begin().put(make_entry(), history_depth=-1)
    with pytest.raises(ValueError):
        store.begin().put(make_entry(version=-1), history_depth=1)


def test_meta_round_trips_and_format_name_is_reserved(store: ViewStore) -> None:
    before = store.state_hash()
    batch = store.begin()
    store.put_meta(batch, "log_identity", b"\x01cluster")
    store.commit(batch)
    assert store.get_meta("log_identity") == b"\x01cluster"
    assert store.state_hash() == before
    with pytest.raises(ValueError):
        store.begin().put_meta("format_version", struct.pack(">I", 2))


# --------------------------------------------------------------------------- format


def _raw_put(path: Path, key: bytes, value: bytes) -> None:
    db = Rdict(str(path), Options(raw_mode=True))
    db.put(key, value)
    db.close()


@pytest.mark.tamper
def test_other_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "view"
    with ViewStore.open(path) as store:
        put_all(store, make_entry())
    _raw_put(path, b"m/format_version", struct.pack(">I", VIEW_FORMAT_VERSION + 1))
    with pytest.raises(ViewFormatError) as info:
        ViewStore.open(path)
    err = info.value
    assert (err.path, err.found, err.expected) == (
        path,
        VIEW_FORMAT_VERSION + 1,
        VIEW_FORMAT_VERSION,
    )
    assert str(path) in str(err) and f"format version {VIEW_FORMAT_VERSION + 1}" in str(err)
    _raw_put(path, b"m/format_version", b"\xff")
    with pytest.raises(ViewFormatError):
        ViewStore.open(path)


@pytest.mark.tamper
def test_data_without_format_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "foreign"
    _raw_put(path, b"e/\x01x", b"not ours")
    with pytest.raises(ViewFormatError, match="no format version"):
        ViewStore.open(path)


def test_open_without_create_needs_an_existing_view(tmp_path: Path) -> None:
    with pytest.raises(ViewMissingError):
        ViewStore.open(tmp_path / "absent", create=False)
    with ViewStore.open(tmp_path / "v"):
        pass
    with ViewStore.open(tmp_path / "v", create=False) as store:
        assert store.get_meta("format_version") == struct.pack(">I", VIEW_FORMAT_VERSION)


# --------------------------------------------------------------------------- codec


entries_st = st.builds(
    ViewEntry,
    key_hash=st.binary(min_size=1, max_size=40),
    namespace=st.text(max_size=8),
    contract=st.text(max_size=8),
    fingerprint=st.binary(max_size=40),
    version=st.integers(0, 2**63 - 1),
    state=st.sampled_from(EntryState),
    ciphertext=st.binary(max_size=64),
    nonce=st.binary(max_size=12),
    data_key_id=st.text(max_size=8),
    commitment=st.binary(max_size=32),
    aad_version=st.integers(-(2**31), 2**31 - 1),
    subject_hash=st.none() | st.binary(min_size=1, max_size=32),
    classification=st.text(max_size=8),
    written_at_us=st.integers(-(2**63), 2**63 - 1),
    ttl_ms=st.none() | st.integers(-(2**63), 2**63 - 1),
    state_changed_at_us=st.integers(-(2**63), 2**63 - 1),
    state_reason=st.text(max_size=8),
    authority=st.text(max_size=8),
    event_hash=st.binary(max_size=32),
    producer_id=st.text(max_size=8),
    seal_seq=st.integers(-(2**63), 2**63 - 1),
)


@given(entries_st)
def test_entry_codec_round_trips_and_is_strict(entry: ViewEntry) -> None:
    raw = codec.encode_entry(entry)
    assert codec.decode_entry(b"k", raw) == entry
    assert codec.encode_entry(codec.decode_entry(b"k", raw)) == raw
    with pytest.raises(ViewCorruptError):
        codec.decode_entry(b"k", raw + b"\0")
    with pytest.raises(ViewCorruptError):
        codec.decode_entry(b"k", raw[:-1])


@pytest.mark.tamper
def test_corrupt_row_is_reported(tmp_path: Path) -> None:
    path = tmp_path / "view"
    entry = make_entry()
    with ViewStore.open(path) as store:
        put_all(store, entry)
    # A valid entry of another key copied under k1's row.
    _raw_put(path, codec.current_key(entry.key_hash), codec.encode_entry(make_entry("k2")))
    with ViewStore.open(path) as store, pytest.raises(ViewCorruptError):
        store.current(entry.key_hash)


def test_a_failing_database_is_the_views_own_failure_naming_the_operation(
    tmp_path: Path,
) -> None:
    """What RocksDB raises (bare Exception, RuntimeError) comes out as a
    StateFailure naming the operation: a consume loop must never mistake it
    for a bad record."""
    path = tmp_path / "view"
    entry = make_entry()
    with ViewStore.open(path) as store:
        put_all(store, entry)
    # Read-only: reads work, the commit's write is refused by RocksDB.
    read_only = ViewStore(Rdict(str(path), access_type=AccessType.read_only()), path)
    try:
        assert read_only.current(entry.key_hash) == entry
        batch = read_only.begin()
        batch.put(make_entry(version=2), history_depth=3)
        with pytest.raises(ViewDatabaseError, match="RocksDB write failed") as raised:
            read_only.commit(batch)
        assert isinstance(raised.value, StateFailure)
    finally:
        read_only.close()
    # Closed under the store (the database gone): every door says which one failed.
    store = ViewStore.open(path)
    pending = store.begin()
    store.close()
    for operation, call in (
        ("get", lambda: store.current(entry.key_hash)),
        ("get", lambda: pending.current(entry.key_hash)),
        ("scan", store.offsets),
        ("scan", lambda: pending.history(entry.key_hash)),
        ("latest_sequence_number", store.begin),
    ):
        with pytest.raises(ViewDatabaseError, match=f"RocksDB {operation} failed"):
            call()


# --------------------------------------------------------------------------- state hash

# One op: ("put", key, version, subject, tag, depth) | ("transition", key,
# version, state) | ("offset", partition, offset) | ("delsub", subject).
ops_st = st.lists(
    st.one_of(
        st.tuples(
            st.just("put"),
            st.integers(0, 3),
            st.integers(0, 6),
            st.none() | st.integers(0, 2),
            st.integers(0, 2),
            st.integers(0, 3),
        ),
        st.tuples(
            st.just("transition"),
            st.integers(0, 3),
            st.integers(0, 6),
            st.sampled_from(EntryState),
        ),
        st.tuples(st.just("offset"), st.integers(0, 2), st.integers(0, 1000)),
        st.tuples(st.just("delsub"), st.integers(0, 2)),
    ),
    max_size=25,
)


def _apply_op(batch: Any, n: int, op: tuple[Any, ...]) -> None:
    if op[0] == "put":
        _, key, version, subject, tag, depth = op
        subj = None if subject is None else str(subject)
        batch.put(make_entry(str(key), version, subject=subj, tag=str(tag)), history_depth=depth)
    elif op[0] == "transition":
        _, key, version, state = op
        batch.transition(
            _h(f"key:{key}"),
            version,
            state,
            at_us=n,
            reason=f"r{n}",
            authority="SYSTEM_CONTRACT",
            event_hash=_h(f"t{n}"),
            producer_id="p",
            seal_seq=n,
        )
    elif op[0] == "offset":
        batch.set_offset("entries", op[1], op[2])
    else:
        batch.delete_subject_index(_h(f"subject:{op[1]}"))


def _build(path: Path, ops: list[tuple[Any, ...]], cuts: set[int]) -> tuple[bytes, Any]:
    """Apply ``ops`` committing after every index in ``cuts``; the hash and full state."""
    with ViewStore.open(path) as store:
        batch = store.begin()
        for n, op in enumerate(ops):
            _apply_op(batch, n, op)
            if n in cuts:
                store.commit(batch)
                batch = store.begin()
        store.commit(batch)
        keys = [_h(f"key:{k}") for k in range(4)]
        state = (
            list(store.entries()),
            [store.history(k) for k in keys],
            [store.keys_of_subject(_h(f"subject:{s}")) for s in range(3)],
        )
        return store.state_hash(), state


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(ops=ops_st, cuts=st.sets(st.integers(0, 25)))
def test_state_hash_is_independent_of_batch_grouping(
    ops: list[tuple[Any, ...]], cuts: set[int]
) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        one_by_one = _build(Path(tmp) / "a", ops, set(range(len(ops))))
        one_batch = _build(Path(tmp) / "b", ops, set())
        grouped = _build(Path(tmp) / "c", ops, cuts)
    assert one_by_one == one_batch == grouped


def _mutated(value: Any) -> Any:
    if isinstance(value, EntryState):
        return EntryState.REVOKED if value is not EntryState.REVOKED else EntryState.ACTIVE
    if isinstance(value, bytes):
        return value[:-1] + bytes([value[-1] ^ 1])
    if isinstance(value, str):
        return value + "x"
    if isinstance(value, int):
        return value + 1
    assert value is None
    return _h("subject:new")


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(ViewEntry)])
def test_state_hash_changes_with_any_field(tmp_path: Path, field: str) -> None:
    base = make_entry(version=2, subject=None)
    changed = dataclasses.replace(base, **{field: _mutated(getattr(base, field))})
    hashes = []
    for name, entry in (("base", base), ("changed", changed)):
        with ViewStore.open(tmp_path / name) as store:
            # Also as a history version, so both row kinds are covered.
            older = dataclasses.replace(entry, key_hash=_h("key:h"), version=1)
            put_all(store, older, make_entry("h", 2), entry)
            hashes.append(store.state_hash())
    assert hashes[0] != hashes[1]


def test_state_hash_ignores_offsets(tmp_path: Path) -> None:
    hashes = []
    for name, offset in (("a", 1), ("b", 500)):
        with ViewStore.open(tmp_path / name) as store:
            batch = store.begin()
            batch.put(make_entry(), history_depth=1)
            batch.set_offset("entries", 0, offset)
            store.commit(batch)
            hashes.append(store.state_hash())
    assert hashes[0] == hashes[1]


# --------------------------------------------------------------------------- kill test

KILL_TOTAL = 3000
KILL_ROUNDS = 8


def _clean_hashes(path: Path) -> list[bytes]:
    """state_hash after 0..KILL_TOTAL batches of an uninterrupted run."""
    with ViewStore.open(path) as store:
        hashes = [store.state_hash()]
        for i in range(KILL_TOTAL):
            batch = store.begin()
            forever.apply_batch(batch, i)
            store.commit(batch)
            hashes.append(store.state_hash())
    return hashes


def _start_child(path: Path) -> tuple[subprocess.Popen[str], int]:
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT)}
    child = subprocess.Popen(
        [sys.executable, forever.__file__, str(path), str(KILL_TOTAL)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=REPO_ROOT,
    )
    assert child.stdout is not None
    line = child.stdout.readline().split()
    assert line[:1] == ["ready"], line
    return child, int(line[1])


def _check_consistent(store: ViewStore, clean: list[bytes]) -> int:
    n = store.offsets().get((forever.TOPIC, 0), 0)
    assert 0 <= n <= KILL_TOTAL
    # Exactly batches 0..n-1: the state equals the clean run's after n batches.
    assert store.state_hash() == clean[n], f"view after kill is not the state of {n} batches"
    if n:
        last = forever.entry_for(n - 1)
        current = store.current(last.key_hash)
        assert current is not None and current.version == last.version
    return n


@pytest.mark.slow
def test_sigkill_at_random_moments_resumes_exactly_once(tmp_path: Path) -> None:
    clean = _clean_hashes(tmp_path / "clean")
    path = tmp_path / "killed"
    rng = random.Random(20260921)
    seen, mid_run = 0, 0
    for _ in range(KILL_ROUNDS):
        child, resumed_at = _start_child(path)
        assert resumed_at == seen
        time.sleep(rng.uniform(0.02, 0.3))
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
        with ViewStore.open(path, create=False) as store:
            n = _check_consistent(store, clean)
        assert n >= seen  # a committed batch never disappears
        mid_run += 0 < n < KILL_TOTAL and n > seen
        seen = n
        if n == KILL_TOTAL:
            break
    assert mid_run >= 3, "too few kills landed mid-run to mean anything"
    child, resumed_at = _start_child(path)
    assert resumed_at == seen
    out, _ = child.communicate(timeout=60)
    assert child.returncode == 0 and out.strip() == "done"
    with ViewStore.open(path, create=False) as store:
        assert _check_consistent(store, clean) == KILL_TOTAL
        assert store.state_hash() == clean[-1]
