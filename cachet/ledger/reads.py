"""Audited reads, however the log holds them: one per CacheRead event (logs
written before schema set v4), many per CacheReadBatch event (since v4).

Every consumer of read audits (the replay's reads served and reads by node,
a key's history, the evidence exports) expands read events through
:func:`audited_reads`, so a batch's reads appear exactly as CacheRead events
did, in the batch's order, each with its place: the event that holds it
(its topic, partition, offset and event id, which the caller has) and its
``index`` in the batch's ``reads`` array. That pair, plus the batch's
inclusion proof in its seal, proves one read (a read bundle,
``docs/cab-format.md``).

``index`` is None for a CacheRead event: the event *is* the read, and its
own event bundle proves it. It is never 0 for one, so an index always names
a position in a CacheReadBatch and a reader can tell the two apart.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import CacheRead

__all__ = ["READ_EVENT_TYPES", "AuditedRead", "audited_reads"]

READ_EVENT_TYPES = frozenset({EventType.CACHE_READ, EventType.CACHE_READ_BATCH})
"""The event types that hold reads."""


@dataclass(frozen=True, slots=True)
class AuditedRead:
    """One read of a read event: ``payload`` is its CacheRead record (the Avro
    dict, exactly as a CacheRead event's payload); ``index`` its position in
    a CacheReadBatch, None when the event is a CacheRead."""

    index: int | None
    payload: Mapping[str, Any]

    @property
    def read(self) -> CacheRead:
        return CacheRead.from_avro(self.payload)


def audited_reads(event: Event) -> Iterator[AuditedRead]:
    """The reads ``event`` holds, in order: one for a CacheRead, each item of
    a CacheReadBatch, none for any other event."""
    if event.type is EventType.CACHE_READ:
        yield AuditedRead(None, event.payload)
    elif event.type is EventType.CACHE_READ_BATCH:
        for index, item in enumerate(event.payload["reads"]):
            yield AuditedRead(index, item)
