"""Where a replay reads the log from: the archive, the broker, or both.

A source yields the log's records exactly as they were written (a
:class:`~cachet.ledger.record.RecordOrigin`: coordinates, key, broker
timestamp, headers and the exact value bytes a seal's leaf hash covers), in
log order within each partition, and a :class:`PartitionEnd` once it has
nothing more of a partition. Order across partitions is the source's own
(archive order, or whatever the broker's fetches return): the replay's
verifier judges every seal and event independently of that interleaving
(:mod:`cachet.materializers.replay.verified`), so two sources of one log give
the same verified events per partition, in the same order.

* :class:`ArchiveSource` reads the hash-chained archive
  (:mod:`cachet.materializers.archive`); the chain is checked as it is read.
* :class:`BrokerSource` reads every partition of every topic from offset 0
  (or from where a resumed replay stood) to the end it observes (a partition
  EOF), never through a consumer group.
* :class:`ArchiveThenBroker` reads the archive, then the broker from the
  offsets after the archive's last ones: the archive holds what the broker
  no longer retains, the broker what the archive has not closed yet.
"""

from __future__ import annotations

import hmac
import logging
import time
import uuid
from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition

from cachet.config import CachetConfig
from cachet.errors import CachetError
from cachet.kafka.settings import consumer_settings
from cachet.ledger.record import RecordOrigin
from cachet.materializers.replay.errors import ReplaySourceError
from cachet.topics import Topic, TopicNames

__all__ = [
    "ArchiveSource",
    "ArchiveThenBroker",
    "BrokerSource",
    "PartitionEnd",
    "Position",
    "ReplaySource",
    "SourceItem",
]

log = logging.getLogger(__name__)

Position = Mapping[tuple[str, int], int]
"""Per (topic, partition): the next offset to read."""


@dataclass(frozen=True, slots=True)
class PartitionEnd:
    """The source holds nothing more of this partition: ``next_offset`` is
    where it ends (one past its last record)."""

    topic: str
    partition: int
    next_offset: int


SourceItem = RecordOrigin | PartitionEnd


class ReplaySource(Protocol):
    """What a replay reads. ``names`` are the deployment's topic names."""

    names: TopicNames
    label: str

    def partitions(self) -> frozenset[tuple[str, int]]:
        """Every partition the source holds records of (may read an index)."""
        ...

    def control_records(self) -> Iterator[RecordOrigin]:
        """Every record of ``control`` from its start (the key registry and
        schema sets are read first). May skip the source's own integrity
        checks: what a replay takes from here is anchor-signed, and the main
        read checks everything again."""
        ...

    def read(
        self,
        *,
        topics: Collection[str] | None = None,
        start: Position | None = None,
        stop: Position | None = None,
        until_ms: int | None = None,
    ) -> Iterator[SourceItem]:
        """The records of ``topics`` (full names; None: all), each partition
        from ``start`` (default 0) and, where ``stop`` names it, up to that
        offset (then a :class:`PartitionEnd` at it). ``until_ms`` is a hint: a
        source with a time index may stop once everything left was written
        later than it (every partition then ends)."""
        ...


# --------------------------------------------------------------------- archive


class ArchiveSource:
    """The archive in ``directory`` (segment files of
    :mod:`cachet.materializers.archive`), read in chain order.

    ``verify_chain`` (default) checks each segment's link (sequence, archive
    id, previous segment hash) before its records are used; a broken chain
    raises :class:`ReplaySourceError` naming the segment. Seals and leaves are
    checked by the replay's verifier, not here.
    """

    def __init__(
        self, directory: Path, names: TopicNames | None = None, *, verify_chain: bool = True
    ) -> None:
        self.directory = Path(directory)
        self.names = names or TopicNames()
        self.label = f"archive {self.directory}"
        self._verify_chain = verify_chain
        self._segments: list[Any] | None = None
        if not self.directory.is_dir():
            raise ReplaySourceError(self.label, "no such directory")

    def _list(self) -> list[Any]:
        """The segment index (per segment: offset ranges, first/last broker
        timestamps), read once per source."""
        if self._segments is None:
            from cachet.materializers.archive.segment import list_segments

            try:
                self._segments = list_segments(self.directory, verify_chain=self._verify_chain)
            except CachetError as exc:
                raise ReplaySourceError(self.label, str(exc)) from exc
        return self._segments

    def partitions(self) -> frozenset[tuple[str, int]]:
        return frozenset((r.topic, r.partition) for s in self._list() for r in s.ranges)

    def ends(self) -> dict[tuple[str, int], int]:
        """Per partition, the offset after its last archived record."""
        out: dict[tuple[str, int], int] = {}
        for segment in self._list():
            for r in segment.ranges:
                key = (r.topic, r.partition)
                out[key] = max(out.get(key, 0), r.last_offset + 1)
        return out

    def control_records(self) -> Iterator[RecordOrigin]:
        """``control``'s records straight from the segment files: the Avro
        records are read as dicts and only control's are built, which halves
        the cost of this first pass over the whole archive. The chain is not
        checked here (the main read checks it; registry statements and schema
        sets carry the anchor's signatures)."""
        import fastavro

        from cachet.materializers.archive.segment import segment_files

        control = self.names(Topic.CONTROL)
        for path in segment_files(self.directory):
            try:
                with path.open("rb") as fo:
                    for d in fastavro.reader(fo):
                        r = cast(dict[str, Any], d)
                        if r["topic"] != control:
                            continue
                        yield RecordOrigin(
                            control,
                            r["partition"],
                            r["offset"],
                            r["key"] or b"",
                            r["timestamp_ms"],
                            tuple((h["key"], h["value"] or b"") for h in r["headers"]),
                            r["value"] or b"",
                        )
            except (OSError, ValueError, EOFError) as exc:
                raise ReplaySourceError(self.label, f"{path.name}: {exc}") from exc

    def read(
        self,
        *,
        topics: Collection[str] | None = None,
        start: Position | None = None,
        stop: Position | None = None,
        until_ms: int | None = None,
    ) -> Iterator[SourceItem]:
        wanted = None if topics is None else frozenset(topics)
        if start is None and stop is None and until_ms is None:
            yield from self._read_all(wanted)
            return
        yield from self._read_indexed(wanted, dict(start or {}), dict(stop or {}), until_ms)

    def _read_all(self, wanted: frozenset[str] | None) -> Iterator[SourceItem]:
        """One pass over every segment, no index: the fast path of a full replay."""
        from cachet.materializers.archive.segment import iter_archive

        ends: dict[tuple[str, int], int] = {}
        try:
            for record in iter_archive(self.directory, verify_chain=self._verify_chain):
                if wanted is not None and record.topic not in wanted:
                    continue
                ends[(record.topic, record.partition)] = record.offset + 1
                yield record.origin()
        except CachetError as exc:
            raise ReplaySourceError(self.label, str(exc)) from exc
        for (topic, partition), end in sorted(ends.items()):
            yield PartitionEnd(topic, partition, end)

    def _read_indexed(
        self,
        wanted: frozenset[str] | None,
        start: dict[tuple[str, int], int],
        stop: dict[tuple[str, int], int],
        until_ms: int | None,
    ) -> Iterator[SourceItem]:
        """Reads only segments that hold a wanted record: none wholly below
        ``start``, none that began after ``until_ms``."""
        from cachet.materializers.archive.segment import iter_segment_records, segment_hash

        segments = self._list()
        limit = dict(self.ends())
        for key, offset in stop.items():
            limit[key] = min(limit.get(key, offset), offset)
        parts = {k: v for k, v in limit.items() if wanted is None or k[0] in wanted}
        open_parts = {k for k, end in parts.items() if start.get(k, 0) < end}
        for key in sorted(set(parts) - open_parts):
            yield PartitionEnd(key[0], key[1], max(start.get(key, 0), parts[key]))
        for segment in segments:
            if not open_parts:
                break
            if (
                until_ms is not None
                and segment.first_timestamp_ms is not None
                and segment.first_timestamp_ms > until_ms
            ):
                break  # written after the time asked for, and so is every later segment
            if not any(
                (r.topic, r.partition) in open_parts
                and r.last_offset >= start.get((r.topic, r.partition), 0)
                for r in segment.ranges
            ):
                continue
            data = segment.path.read_bytes()
            # The index was built from these bytes: a file changed since is refused.
            if not hmac.compare_digest(segment_hash(data), segment.hash):
                raise ReplaySourceError(self.label, f"{segment.name} changed while being read")
            try:
                for record in iter_segment_records(data, segment.path):
                    key = (record.topic, record.partition)
                    if key not in open_parts or record.offset < start.get(key, 0):
                        continue
                    if record.offset >= parts[key]:
                        continue
                    yield record.origin()
                    if record.offset + 1 >= parts[key]:
                        open_parts.discard(key)
                        yield PartitionEnd(key[0], key[1], parts[key])
            except CachetError as exc:
                raise ReplaySourceError(self.label, str(exc)) from exc
        # Partitions cut short by ``until_ms``: nothing more is wanted of them.
        for key in sorted(open_parts):
            yield PartitionEnd(key[0], key[1], -1)


# ---------------------------------------------------------------------- broker


class BrokerSource:
    """Every partition of every topic under ``names`` on the broker, from
    offset 0 to the end observed while reading (each partition's first EOF).

    Read with ``assign()`` (no consumer group, no committed offsets). The
    partitions are the broker's metadata, not the config's, so a topic a
    deployment never created is simply absent. ``idle_timeout_s`` bounds how
    long a broker may stay silent before the read fails.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        names: TopicNames,
        *,
        consumer_overrides: Mapping[str, Any] | None = None,
        idle_timeout_s: float = 15.0,
    ) -> None:
        self.bootstrap_servers = bootstrap_servers
        self.names = names
        self.label = f"broker {bootstrap_servers}"
        self._overrides = dict(consumer_overrides or {})
        self._idle_timeout_s = idle_timeout_s
        self._partitions: frozenset[tuple[str, int]] | None = None

    @classmethod
    def from_config(cls, config: CachetConfig, **kwargs: Any) -> BrokerSource:
        """The broker and topic names ``config`` deploys."""
        return cls(config.kafka.bootstrap_servers, config.kafka.topic_names(), **kwargs)

    def _consumer(self) -> Consumer:
        settings = consumer_settings(
            self.bootstrap_servers,
            group_id=f"cachet-replay-{uuid.uuid4().hex[:8]}",
            overrides={"auto.offset.reset": "error", **self._overrides},
        )
        return Consumer(settings)

    def partitions(self) -> frozenset[tuple[str, int]]:
        if self._partitions is None:
            consumer = self._consumer()
            try:
                meta = consumer.list_topics(timeout=self._idle_timeout_s)
            except KafkaException as exc:
                raise ReplaySourceError(self.label, f"no metadata: {exc}") from exc
            finally:
                consumer.close()
            full = {self.names(t) for t in self.names.all()}
            self._partitions = frozenset(
                (name, p)
                for name, topic in meta.topics.items()
                if name in full and topic.error is None
                for p in topic.partitions
            )
        return self._partitions

    def control_records(self) -> Iterator[RecordOrigin]:
        for item in self.read(topics=[self.names(Topic.CONTROL)]):
            if not isinstance(item, PartitionEnd):
                yield item

    def read(
        self,
        *,
        topics: Collection[str] | None = None,
        start: Position | None = None,
        stop: Position | None = None,
        until_ms: int | None = None,
    ) -> Iterator[SourceItem]:
        del until_ms  # no time index of its own: ``stop`` carries the replay's
        begin, limit = dict(start or {}), dict(stop or {})
        parts = sorted(k for k in self.partitions() if topics is None or k[0] in topics)
        live: set[tuple[str, int]] = set()
        for key in parts:
            if key in limit and begin.get(key, 0) >= limit[key]:
                yield PartitionEnd(key[0], key[1], begin.get(key, 0))
            else:
                live.add(key)
        if not live:
            return
        consumer = self._consumer()
        try:
            consumer.assign([TopicPartition(t, p, begin.get((t, p), 0)) for t, p in sorted(live)])
            last_progress = time.monotonic()
            while live:
                messages = consumer.consume(1000, 0.5)
                if messages:
                    last_progress = time.monotonic()
                elif time.monotonic() - last_progress > self._idle_timeout_s:
                    raise ReplaySourceError(
                        self.label,
                        f"no answer for {self._idle_timeout_s:.0f}s with "
                        f"{len(live)} partition(s) not read to their end",
                    )
                for msg in messages:
                    key = (msg.topic() or "", msg.partition() or 0)
                    if key not in live:
                        continue
                    error = msg.error()
                    if error is not None:
                        if error.code() == KafkaError._PARTITION_EOF:
                            live.discard(key)
                            yield PartitionEnd(key[0], key[1], msg.offset() or 0)
                            continue
                        raise ReplaySourceError(self.label, f"{key[0]}[{key[1]}]: {error.str()}")
                    origin = RecordOrigin.of(msg)
                    if key in limit and origin.offset >= limit[key]:
                        live.discard(key)
                        consumer.pause([TopicPartition(key[0], key[1])])
                        yield PartitionEnd(key[0], key[1], limit[key])
                        continue
                    yield origin
        finally:
            consumer.close()


# ------------------------------------------------------------------------ both


class ArchiveThenBroker:
    """The archive first, then the broker from the offsets after the
    archive's last ones (each partition continues where the archive ends)."""

    def __init__(self, archive: ArchiveSource, broker: BrokerSource) -> None:
        self.archive = archive
        self.broker = broker
        self.names = broker.names
        self.label = f"{archive.label} + {broker.label}"

    def partitions(self) -> frozenset[tuple[str, int]]:
        return self.archive.partitions() | self.broker.partitions()

    def control_records(self) -> Iterator[RecordOrigin]:
        after: dict[int, int] = {}
        for record in self.archive.control_records():
            after[record.partition] = record.offset + 1
            yield record
        control = self.names(Topic.CONTROL)
        start = {(control, p): o for p, o in after.items()}
        for item in self.broker.read(topics=[control], start=start):
            if not isinstance(item, PartitionEnd):
                yield item

    def read(
        self,
        *,
        topics: Collection[str] | None = None,
        start: Position | None = None,
        stop: Position | None = None,
        until_ms: int | None = None,
    ) -> Iterator[SourceItem]:
        after = dict(start or {})
        for item in self.archive.read(topics=topics, start=start, stop=stop, until_ms=until_ms):
            if isinstance(item, PartitionEnd):
                if item.next_offset >= 0:
                    after[(item.topic, item.partition)] = max(
                        after.get((item.topic, item.partition), 0), item.next_offset
                    )
                continue  # not the end: the broker continues it
            after[(item.topic, item.partition)] = item.offset + 1
            yield item
        yield from self.broker.read(topics=topics, start=after, stop=stop, until_ms=until_ms)
