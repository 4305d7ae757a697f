"""The replay's own time index: event time -> offset, per partition.

The broker's ``offsets_for_times`` cannot be trusted (the embedded broker
answers it wrong) and an archive has no such call, so a replay keeps its own:
every ``every`` records of a partition it samples the highest event time
seen so far in that partition and the offset after it. Because the sampled
time is a running maximum, the first sample above a time T marks an offset
that the replay's cut at T (each partition up to its first event after T)
never passes: reading may stop there. The index is kept as JSON in the
replay's work dir and grows with every run.

The archive adds a coarser index for free: each segment's first and last
broker timestamps (:class:`~cachet.materializers.archive.segment.SegmentInfo`),
which :class:`~cachet.materializers.replay.source.ArchiveSource` uses to skip
segments written after the time asked for.
"""

from __future__ import annotations

import bisect
import json
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["TimeIndex"]

_FORMAT = 1


@dataclass
class TimeIndex:
    """Sparse per-partition samples ``(running max event time, next offset)``."""

    every: int = 1000
    samples: dict[tuple[str, int], list[tuple[int, int]]] = field(default_factory=dict)
    _count: dict[tuple[str, int], int] = field(default_factory=dict)
    _max: dict[tuple[str, int], int] = field(default_factory=dict)

    def observe(self, topic: str, partition: int, offset: int, occurred_at_us: int) -> None:
        """A record of ``topic[partition]`` at ``offset`` occurred at this time."""
        key = (topic, partition)
        top = max(self._max.get(key, occurred_at_us), occurred_at_us)
        self._max[key] = top
        n = self._count.get(key, 0) + 1
        self._count[key] = n
        if n % self.every == 0:
            points = self.samples.setdefault(key, [])
            if not points or points[-1][1] < offset + 1:
                points.append((top, offset + 1))

    def stop_offsets(self, until_us: int) -> dict[tuple[str, int], int]:
        """Per indexed partition: an offset a read cut at ``until_us`` never
        passes (the first sample whose running maximum is later)."""
        out: dict[tuple[str, int], int] = {}
        for key, points in self.samples.items():
            i = bisect.bisect_right([t for t, _ in points], until_us)
            if i < len(points):
                out[key] = points[i][1]
        return out

    def save(self, path: Path) -> None:
        """Write the index to ``path`` (atomically: a crash keeps the old one)."""
        doc = {
            "format": _FORMAT,
            "every": self.every,
            "partitions": [
                [topic, partition, points]
                for (topic, partition), points in sorted(self.samples.items())
            ],
        }
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, separators=(",", ":")))
        os.replace(tmp, path)

    @classmethod
    def load(cls, path: Path) -> TimeIndex:
        """The index at ``path``, or an empty one when there is none (or it is
        not this format: the index only ever speeds a read up)."""
        try:
            doc = json.loads(path.read_text())
            if doc.get("format") != _FORMAT:
                return cls()
            index = cls(every=int(doc["every"]))
            for topic, partition, points in doc["partitions"]:
                index.samples[(topic, int(partition))] = [(int(t), int(o)) for t, o in points]
            return index
        except (OSError, ValueError, KeyError, TypeError):
            return cls()
