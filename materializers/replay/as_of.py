"""``replay_as_of``: the exact cache state at a moment, rebuilt from the log.

The state at TIME is what the verified log says up to TIME by *event time*
(``occurred_at``), never by wall clock or by when a source delivered a
record: each partition is applied up to its first event that occurred after
TIME (the cut, :mod:`cachet.materializers.replay.verified`), through the live
view's own apply logic (:mod:`cachet.materializers.replay.scratch`). Hence:

* the state hash is the live view's (``ViewStore.state_hash``): for TIME =
  now it equals a live node's, and every run of the same log gives the same
  hash;
* the reads served up to TIME are the reads of the verified read events up
  to the cut (each CacheRead event, each read of a CacheReadBatch:
  :mod:`cachet.ledger.reads`), each with its outcome, its freshness proof and
  its place (event, index in the batch);
* each entry's freshness is judged relative to TIME by the contract in force
  then (the last verified ContractDefined up to TIME; the config's contract
  when the log defines none).

The work dir keeps the scratch view, the replay's verifier checkpoint and
positions in the view's WriteBatch, and the time index. A run interrupted at
any point continues from its last commit; a run for a later TIME continues
from where an earlier one stood (the cut makes the earlier state a prefix
of the later one); a run for an earlier TIME starts over.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from cachet.config import CachetConfig
from cachet.freshness import freshness_proof
from cachet.ledger.checkpoint import VerifierCheckpoint
from cachet.ledger.reads import READ_EVENT_TYPES, AuditedRead, audited_reads
from cachet.materializers.replay.errors import ReplayWorkDirError
from cachet.materializers.replay.scratch import ScratchView
from cachet.materializers.replay.source import ReplaySource
from cachet.materializers.replay.time_index import TimeIndex
from cachet.materializers.replay.verified import (
    Refusal,
    ReplayTrust,
    VerifiedEvent,
    VerifiedReplay,
)
from cachet.materializers.view import EntryState, ViewEntry
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import FRESHNESS_CONFIRMED
from cachet.topics import Topic

__all__ = ["EntryAt", "ReadServed", "ReplayResult", "replay_as_of"]

log = logging.getLogger(__name__)

_FORMAT = 1
_STATE = "replay/state"
_VERIFIER = "replay/"  # + the verifier checkpoint's own row names
_READ = "replay/read/"
_WRITER = "replay/writer/"
_CONTRACT = "replay/contract/"
_COMMIT_EVERY = 20_000  # records between commits of a long run


@dataclass(frozen=True, slots=True)
class FreshnessAt:
    """An entry's freshness at TIME against its contract (no view lag: the
    replay has the whole log). ``fresh`` iff headroom >= 0."""

    age_ms: int
    max_staleness_ms: int
    headroom_ms: int

    @property
    def fresh(self) -> bool:
        return self.headroom_ms >= 0


@dataclass(frozen=True, slots=True)
class EntryAt:
    """One key's current version at TIME, as the view held it.

    ``writer`` is the producer identity whose sealed CacheWritten made this
    version, ``writer_seal`` that seal (producer id, seal seq); ``last_seal``
    covers the last event applied to the key (the head of its hash chain).
    ``freshness`` is None when the contract is not known.
    """

    key_hash: bytes
    namespace: str
    contract: str
    version: int
    state: EntryState
    state_reason: str
    authority: str
    written_at_us: int
    state_changed_at_us: int
    commitment: bytes
    writer: str
    writer_seal: tuple[str, int] | None
    last_seal: tuple[str, int]
    event_hash: bytes
    freshness: FreshnessAt | None


@dataclass(frozen=True, slots=True)
class ReadServed:
    """A verified read: who read what, the outcome, the freshness proof, and
    where it is in the log. ``topic``, ``partition``, ``offset`` and
    ``event_id`` name the event that holds it; ``index`` is its position in
    that CacheReadBatch (None: the event is a CacheRead, the read itself).
    ``occurred_at_us`` is the event's time: for a batch, when the node
    flushed it, at most its audit flush interval after the read."""

    occurred_at_us: int
    node_id: str
    reader_role: str
    key_hash: bytes
    namespace: str
    contract: str
    outcome: str
    reason: str
    version: int | None
    freshness: dict[str, int] | None
    producer_id: str
    topic: str
    partition: int
    offset: int
    event_id: str
    index: int | None

    @classmethod
    def of(
        cls, event: Event, audited: AuditedRead, topic: str, partition: int, offset: int
    ) -> ReadServed:
        """The read ``audited`` of ``event``, found at ``topic[partition]@offset``."""
        r = audited.read
        return cls(
            occurred_at_us=event.occurred_at_us,
            node_id=r.node_id,
            reader_role=r.reader_role,
            key_hash=r.key_hash,
            namespace=r.namespace,
            contract=r.contract,
            outcome=r.outcome.name,
            reason=r.reason,
            version=r.version,
            freshness=None if r.freshness is None else r.freshness.to_avro(),
            producer_id=event.producer_id,
            topic=topic,
            partition=partition,
            offset=offset,
            event_id=event.event_id,
            index=audited.index,
        )

    @property
    def order(self) -> tuple[int, str, int, int, int]:
        """Event time, then place in the log, then place in the batch."""
        index = -1 if self.index is None else self.index
        return (self.occurred_at_us, self.topic, self.partition, self.offset, index)


@dataclass(frozen=True, slots=True)
class ReplayResult:
    """The cache at ``as_of_us`` (event time), rebuilt and verified."""

    as_of_us: int
    state_hash: bytes
    entries: tuple[EntryAt, ...]
    reads: tuple[ReadServed, ...]
    refused: tuple[Refusal, ...]
    events_applied: int
    records_read: int
    resumed: bool

    def counts_by_state(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for e in self.entries:
            out[e.state.name] = out.get(e.state.name, 0) + 1
        return dict(sorted(out.items()))

    def reads_by_outcome(self) -> dict[str, int]:
        out: dict[str, int] = {}
        for r in self.reads:
            out[r.outcome] = out.get(r.outcome, 0) + 1
        return dict(sorted(out.items()))

    def summary(self) -> dict[str, object]:
        """What ``cachet replay --json`` prints."""
        return {
            "as_of_us": self.as_of_us,
            "state_hash": self.state_hash.hex(),
            "entries": len(self.entries),
            "entries_by_state": self.counts_by_state(),
            "reads_served": len(self.reads),
            "reads_by_outcome": self.reads_by_outcome(),
            "refused": len(self.refused),
            "events_applied": self.events_applied,
            "records_read": self.records_read,
            "resumed": self.resumed,
        }


@dataclass(frozen=True, slots=True)
class _Stored:
    as_of_us: int
    complete: bool
    prefix: str
    positions: dict[tuple[str, int], int]

    def encode(self) -> bytes:
        return json.dumps(
            {
                "format": _FORMAT,
                "as_of_us": self.as_of_us,
                "complete": self.complete,
                "prefix": self.prefix,
                "positions": [[t, p, o] for (t, p), o in sorted(self.positions.items())],
            },
            separators=(",", ":"),
        ).encode()

    @classmethod
    def decode(cls, raw: bytes, where: Path) -> _Stored:
        try:
            doc = json.loads(raw)
            if doc["format"] != _FORMAT:
                raise ReplayWorkDirError(where, f"replay state format {doc['format']}")
            return cls(
                int(doc["as_of_us"]),
                bool(doc["complete"]),
                str(doc["prefix"]),
                {(str(t), int(p)): int(o) for t, p, o in doc["positions"]},
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ReplayWorkDirError(where, f"unreadable replay state: {exc}") from exc


def _read_row(v: VerifiedEvent) -> tuple[str, bytes]:
    # Event time first: rows sort (and are listed) in the order reads happened.
    return f"{_READ}{v.occurred_at_us:020d}/{v.topic}/{v.partition}/{v.offset:020d}", v.raw


class _Run:
    """One replay run: feeds the scratch view and commits it periodically."""

    def __init__(
        self, view: ScratchView, replay: VerifiedReplay, index: TimeIndex, prefix: str
    ) -> None:
        self.view = view
        self.replay = replay
        self.index = index
        self.prefix = prefix
        self.meta: dict[str, bytes | None] = {}
        self.applied = 0
        self._since_commit = 0
        self._reads_topic = f"{prefix}{Topic.READS.value}"

    def feed(self, v: VerifiedEvent) -> None:
        self.index.observe(v.topic, v.partition, v.offset, v.occurred_at_us)
        self.applied += 1
        event = v.event
        if self.view.apply(v) and event.type is EventType.CACHE_WRITTEN and v.seal is not None:
            key = f"{_WRITER}{event.payload['key_hash'].hex()}/{event.payload['version']}"
            self.meta[key] = json.dumps([v.seal.producer_id, v.seal.seal_seq]).encode()
        elif event.type in READ_EVENT_TYPES and v.topic == self._reads_topic:
            # The event's exact bytes, once: a batch is expanded into its
            # reads when the result is read (_reads).
            name, raw = _read_row(v)
            self.meta[name] = raw
        elif event.type is EventType.CONTRACT_DEFINED:
            self.meta[f"{_CONTRACT}{event.payload['name']}"] = event.payload[
                "definition_json"
            ].encode()

    def record_done(self) -> None:
        self._since_commit += 1
        if self._since_commit >= _COMMIT_EVERY:
            self.commit(complete=False, as_of_us=self.replay.until_us or 0)

    def commit(self, *, complete: bool, as_of_us: int) -> None:
        rows = dict(self.meta)
        for name, value in self.replay.verifier.take_checkpoint().items():
            rows[_VERIFIER + name] = value
        rows[_STATE] = _Stored(as_of_us, complete, self.prefix, self.replay.positions()).encode()
        self.view.commit(rows)
        self.meta.clear()
        self._since_commit = 0


def _contracts(view: ScratchView, config: CachetConfig) -> dict[str, int]:
    """Contract name -> max staleness (ms): the log's definitions over the config's."""
    out = {name: c.max_staleness_ms for name, c in config.contracts.items()}
    for name, raw in view.store.meta_rows(_CONTRACT).items():
        try:
            out[name[len(_CONTRACT) :]] = int(json.loads(raw)["max_staleness_ms"])
        except (ValueError, KeyError, TypeError):
            log.warning("contract %s: definition without max_staleness_ms", name)
    return out


def _entry_at(
    e: ViewEntry, as_of_us: int, staleness: dict[str, int], writers: dict[str, bytes]
) -> EntryAt:
    basis = e.state_changed_at_us if e.state_reason == FRESHNESS_CONFIRMED else e.written_at_us
    limit = staleness.get(e.contract)
    freshness = None
    if limit is not None:
        proof = freshness_proof(
            written_at_us=basis, now_us=as_of_us, max_staleness_ms=limit, view_lag_ms=0
        )
        freshness = FreshnessAt(proof.age_ms, proof.max_staleness_ms, proof.headroom_ms)
    writer_row = writers.get(f"{_WRITER}{e.key_hash.hex()}/{e.version}")
    writer_seal = tuple(json.loads(writer_row)) if writer_row else None
    return EntryAt(
        key_hash=e.key_hash,
        namespace=e.namespace,
        contract=e.contract,
        version=e.version,
        state=e.state,
        state_reason=e.state_reason,
        authority=e.authority,
        written_at_us=e.written_at_us,
        state_changed_at_us=e.state_changed_at_us,
        commitment=e.commitment,
        writer=str(writer_seal[0]).partition("@")[0] if writer_seal else "",
        writer_seal=(str(writer_seal[0]), int(writer_seal[1])) if writer_seal else None,
        last_seal=(e.producer_id, e.seal_seq),
        event_hash=e.event_hash,
        freshness=freshness,
    )


def _reads(view: ScratchView, codec: EventCodec) -> Iterator[ReadServed]:
    for name, raw in sorted(view.store.meta_rows(_READ).items()):
        topic, partition, offset = name[len(_READ) :].split("/", 1)[1].rsplit("/", 2)
        event = codec.decode(raw)
        for audited in audited_reads(event):
            yield ReadServed.of(event, audited, topic, int(partition), int(offset))


def _open_view(
    work_dir: Path, config: CachetConfig, trust: ReplayTrust, as_of_us: int
) -> tuple[ScratchView, _Stored | None]:
    """The scratch view and what it stored, started over when it cannot continue."""
    path = work_dir / "view"
    view = ScratchView(path, config, trust.anchor)
    raw = view.store.get_meta(_STATE)
    stored = None if raw is None else _Stored.decode(raw, work_dir)
    if stored is not None and stored.prefix != config.kafka.topic_prefix:
        view.close()
        raise ReplayWorkDirError(
            work_dir,
            f"holds a replay of topics {stored.prefix!r}, not {config.kafka.topic_prefix!r}",
        )
    if stored is not None and stored.as_of_us > as_of_us:
        # A later state cannot be rolled back to an earlier one: start over.
        log.info("work dir %s holds a later state: replaying from the start", work_dir)
        view.close()
        shutil.rmtree(path)
        view, stored = ScratchView(path, config, trust.anchor), None
    return view, stored


def replay_as_of(
    source: ReplaySource,
    as_of_us: int,
    *,
    work_dir: Path,
    config: CachetConfig,
    trust: ReplayTrust,
    on_refused: Callable[[Refusal], None] | None = None,
    on_progress: Callable[[int], None] | None = None,
) -> ReplayResult:
    """Rebuild the cache as it was at ``as_of_us`` (event time, microseconds
    since the epoch) from ``source``, verifying every seal on the way.

    ``config`` supplies what a live view takes from it (topic names, history
    depth, contracts); ``trust`` the pinned anchor and required schemes.
    ``work_dir`` keeps the scratch view (resumable; see the module
    docstring). ``on_progress`` is called with the number of records read,
    every few thousand records.
    """
    work_dir = Path(work_dir)
    work_dir.mkdir(parents=True, exist_ok=True)
    index_path = work_dir / "time-index.json"
    index = TimeIndex.load(index_path)
    view, stored = _open_view(work_dir, config, trust, as_of_us)
    try:
        checkpoint = VerifierCheckpoint.from_rows(
            {
                k[len(_VERIFIER) :]: v
                for k, v in view.store.meta_rows(_VERIFIER + "verifier/").items()
            }
        )
        resumed = stored is not None
        codec = EventCodec()
        replay = VerifiedReplay(
            source,
            trust,
            until_us=as_of_us,
            codec=codec,
            checkpoint=checkpoint if resumed else None,
            start=stored.positions if stored else None,
            stop=index.stop_offsets(as_of_us),
            on_refused=on_refused,
        )
        run = _Run(view, replay, index, config.kafka.topic_prefix)
        progress_every = 5_000

        def record_done() -> None:
            run.record_done()
            if on_progress is not None and replay.read_count % progress_every == 0:
                on_progress(replay.read_count)

        replay.on_record_done = record_done
        if not (stored is not None and stored.complete and stored.as_of_us == as_of_us):
            for verified in replay.events():
                run.feed(verified)
            run.commit(complete=True, as_of_us=as_of_us)
            index.save(index_path)
        staleness = _contracts(view, config)
        writers = view.store.meta_rows(_WRITER)
        entries = tuple(_entry_at(e, as_of_us, staleness, writers) for e in view.store.entries())
        return ReplayResult(
            as_of_us=as_of_us,
            state_hash=view.state_hash(),
            entries=entries,
            reads=tuple(_reads(view, codec)),
            refused=tuple(replay.refused),
            events_applied=run.applied,
            records_read=replay.read_count,
            resumed=resumed,
        )
    finally:
        view.close()
