"""replay_as_of over an in-memory signed log, through the live view's own
apply logic into a real scratch RocksDB: state at a time, determinism,
resumption, freshness relative to the time, reads served."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachet.config import CachetConfig, parse_config
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.materializers.replay import ReplayTrust
from cachet.materializers.replay.as_of import replay_as_of
from cachet.materializers.view import EntryState
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import Topic
from tests.unit.materializers.replay.memlog import NAMES, T0, ListSource, MemoryLog, key, written

S = 1_000_000  # one second in microseconds


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="module")
def keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def config() -> CachetConfig:
    return parse_config(
        {
            "kafka": {"topic_prefix": NAMES.prefix},
            "contracts": {"finra_quotes": {"max_staleness_ms": 10_000}},
        },
        "test",
    )


@pytest.fixture
def trust(anchor: PrivateKeySet) -> ReplayTrust:
    return ReplayTrust(anchor.public(), frozenset(SignatureScheme))


@pytest.fixture(scope="module")
def history(anchor, keys) -> MemoryLog:
    """Key 1 written at T0 (v1) and T0+5s (v2); key 2 written at T0+1s and
    revoked at T0+8s; a read of key 1 at T0+2s; sealed after each step."""
    log = MemoryLog(EventCodec(), anchor, keys)
    log.register()
    written(log, 1, T0, version=1)
    log.seal(T0 + S // 2)
    written(log, 2, T0 + S, version=1, partition=1)
    log.emit(EventType.CACHE_READ, T0 + 2 * S, key_hash=key(1), version=1, node_id="node-1")
    log.seal(T0 + 2 * S + 1)
    written(log, 1, T0 + 5 * S, version=2)
    log.seal(T0 + 5 * S + 1)
    log.emit(
        EventType.STATE_TRANSITIONED,
        T0 + 8 * S,
        1,
        key_hash=key(2),
        version=1,
        from_state="ACTIVE",
        to_state="REVOKED",
    )
    log.seal(T0 + 8 * S + 1)
    return log


def replay(history: MemoryLog, at: int, work: Path, config, trust):
    return replay_as_of(ListSource(history.records), at, work_dir=work, config=config, trust=trust)


def test_state_at_a_time_by_event_time(history, tmp_path, config, trust) -> None:
    at3 = replay(history, T0 + 3 * S, tmp_path / "a", config, trust)
    assert at3.refused == ()
    by_key = {e.key_hash: e for e in at3.entries}
    assert (by_key[key(1)].version, by_key[key(1)].state) == (1, EntryState.ACTIVE)
    assert by_key[key(2)].state is EntryState.ACTIVE
    assert by_key[key(1)].writer == history.identity
    assert by_key[key(1)].writer_seal == (history.pid, 0)
    # Freshness relative to the time asked for: 3 s old, 10 s allowed.
    assert by_key[key(1)].freshness.age_ms == 3_000
    assert by_key[key(1)].freshness.headroom_ms == 7_000
    assert [(r.node_id, r.outcome, r.version) for r in at3.reads] == [("node-1", "HIT", 1)]

    at9 = replay(history, T0 + 9 * S, tmp_path / "b", config, trust)
    by_key = {e.key_hash: e for e in at9.entries}
    assert by_key[key(1)].version == 2
    assert by_key[key(2)].state is EntryState.REVOKED
    assert at9.counts_by_state() == {"ACTIVE": 1, "REVOKED": 1}
    assert at9.state_hash != at3.state_hash


def test_every_run_gives_the_same_hash(history, tmp_path, config, trust) -> None:
    hashes = {
        replay(history, T0 + 6 * S, tmp_path / str(i), config, trust).state_hash for i in range(2)
    }
    assert len(hashes) == 1


def test_a_later_time_continues_and_an_earlier_one_starts_over(
    history, tmp_path, config, trust
) -> None:
    direct = {
        t: replay(history, T0 + t * S, tmp_path / f"direct{t}", config, trust) for t in (3, 9)
    }
    work = tmp_path / "shared"
    first = replay(history, T0 + 3 * S, work, config, trust)
    assert not first.resumed and first.state_hash == direct[3].state_hash
    later = replay(history, T0 + 9 * S, work, config, trust)
    assert later.resumed and later.state_hash == direct[9].state_hash
    assert later.refused == ()  # nothing re-applied, nothing refused as a duplicate
    again = replay(history, T0 + 9 * S, work, config, trust)
    assert again.resumed and again.state_hash == direct[9].state_hash
    back = replay(history, T0 + 3 * S, work, config, trust)
    assert not back.resumed and back.state_hash == direct[3].state_hash


def test_an_unsealed_write_is_not_in_the_state(anchor, keys, tmp_path, config, trust) -> None:
    log = MemoryLog(EventCodec(), anchor, keys)
    log.register()
    written(log, 1, T0)
    log.seal(T0 + 1)
    written(log, 2, T0 + 2)  # its seal never comes
    result = replay(log, T0 + S, tmp_path, config, trust)
    assert [e.key_hash for e in result.entries] == [key(1)]
    assert [r.reason.value for r in result.refused] == ["unsealed"]


class Crash(Exception):
    """Stands for the process dying mid-replay."""


class CrashingSource(ListSource):
    """Dies after ``after`` records of the main read."""

    def __init__(self, records, after: int) -> None:
        super().__init__(records)
        self.after = after

    def read(self, **kw):
        for n, item in enumerate(super().read(**kw)):
            if n == self.after:
                raise Crash
            yield item


def test_an_interrupted_run_continues_from_its_last_commit(
    history, tmp_path, config, trust, monkeypatch
) -> None:
    from cachet.materializers.replay import as_of

    at = T0 + 9 * S
    fresh = replay(history, at, tmp_path / "fresh", config, trust)
    monkeypatch.setattr(as_of, "_COMMIT_EVERY", 2)  # commit every two records
    work = tmp_path / "work"
    with pytest.raises(Crash):
        replay_as_of(
            CrashingSource(history.records, after=7), at, work_dir=work, config=config, trust=trust
        )
    again = replay_as_of(ListSource(history.records), at, work_dir=work, config=config, trust=trust)
    assert again.resumed
    assert again.refused == ()  # nothing applied twice, nothing refused as a duplicate
    assert again.state_hash == fresh.state_hash
    assert len(again.reads) == len(fresh.reads) == 1


def _read(n: int, node: str = "node-1", **fields: object) -> dict[str, object]:
    payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_READ])
    payload.update(key_hash=key(n), version=1, node_id=node, **fields)
    return payload


@pytest.fixture(scope="module")
def batched(anchor, keys) -> MemoryLog:
    """An old log's CacheRead at T0+1s, then two CacheReadBatch events (the
    reads of a v4 node, three and two reads) at T0+2s and T0+4s."""
    log = MemoryLog(EventCodec(), anchor, keys)
    log.register()
    written(log, 1, T0, version=1)
    written(log, 2, T0, version=1, partition=1)
    log.emit(EventType.CACHE_READ, T0 + S, key_hash=key(1), version=1, node_id="node-1")
    log.seal(T0 + S + 1)
    first = [_read(1), _read(2, outcome="MISS", reason="not_found", freshness=None), _read(1)]
    log.emit(EventType.CACHE_READ_BATCH, T0 + 2 * S, 1, node_id="node-1", reads=first)
    log.emit(EventType.CACHE_READ_BATCH, T0 + 4 * S, 2, node_id="node-1", reads=[_read(2)] * 2)
    log.seal(T0 + 4 * S + 1)
    return log


def test_reads_served_are_each_read_of_every_batch(batched, tmp_path, config, trust) -> None:
    """A batch's reads appear as CacheRead events did, in batch order, each
    with its event and its index; an old CacheRead has index None."""
    at3 = replay(batched, T0 + 3 * S, tmp_path / "a", config, trust)
    assert at3.refused == ()
    rows = [(r.index, r.key_hash, r.outcome, r.reason) for r in at3.reads]
    assert rows == [
        (None, key(1), "HIT", "served"),
        (0, key(1), "HIT", "served"),
        (1, key(2), "MISS", "not_found"),
        (2, key(1), "HIT", "served"),
    ]
    old, *batch = at3.reads
    batch_record = next(
        r for r in batched.records if r.topic == NAMES(Topic.READS) and r.partition == 1
    )
    batch_event = EventCodec().decode(batch_record.raw)
    assert {(r.event_id, r.topic, r.partition, r.offset) for r in batch} == {
        (batch_event.event_id, batch_record.topic, 1, batch_record.offset)
    }
    assert old.event_id != batch_event.event_id and old.partition == 0
    assert all(r.occurred_at_us == T0 + 2 * S for r in batch)  # the batch's time
    assert at3.summary()["reads_served"] == 4
    assert at3.reads_by_outcome() == {"HIT": 3, "MISS": 1}
    # The second batch is behind the cut at T0+3s; at T0+5s it is in.
    at5 = replay(batched, T0 + 5 * S, tmp_path / "b", config, trust)
    assert [r.index for r in at5.reads] == [None, 0, 1, 2, 0, 1]
    assert at5.reads[:4] == at3.reads


def test_a_batch_replays_to_the_same_reads_and_hash_every_time(
    batched, tmp_path, config, trust
) -> None:
    runs = [replay(batched, T0 + 5 * S, tmp_path / str(i), config, trust) for i in range(2)]
    assert runs[0].state_hash == runs[1].state_hash
    assert runs[0].reads == runs[1].reads
    # Continuing a work dir from an earlier time gives the same reads too.
    work = tmp_path / "shared"
    replay(batched, T0 + 3 * S, work, config, trust)
    later = replay(batched, T0 + 5 * S, work, config, trust)
    assert later.resumed and later.reads == runs[0].reads
    assert later.state_hash == runs[0].state_hash
