"""Topic names: one place that knows every topic Cachet uses.

The prefix is configurable (default ``cachet.``) so several deployments, or
several test runs, can share one broker without seeing each other's events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from schemas.events import EventType

__all__ = ["Topic", "TopicNames", "BROADCAST_TOPICS", "TOPIC_OF_EVENT"]


class Topic(enum.Enum):
    """Every topic of the design card, by its suffix."""

    ENTRIES = "entries"
    READS = "reads"
    INVALIDATIONS = "invalidations"
    CONTROL = "control"
    ERASURE = "erasure"
    KVSCRUB = "kvscrub"
    SEALS = "seals"
    ALERTS = "alerts"
    DEADLETTER = "deadletter"


# Read by every node with assign() over all partitions, never through a group:
# each node must see every record, and group rebalances are the failure mode
# we designed out.
BROADCAST_TOPICS = frozenset({Topic.INVALIDATIONS, Topic.CONTROL, Topic.SEALS})


@dataclass(frozen=True, slots=True)
class TopicNames:
    """Maps :class:`Topic` to the full topic name under one prefix."""

    prefix: str = "cachet."

    def __call__(self, topic: Topic) -> str:
        return f"{self.prefix}{topic.value}"

    def all(self) -> dict[Topic, str]:
        return {t: self(t) for t in Topic}


# Where each event type lives (DESIGN.md, "Topics").
TOPIC_OF_EVENT: dict[EventType, Topic] = {
    EventType.CACHE_WRITTEN: Topic.ENTRIES,
    EventType.STATE_TRANSITIONED: Topic.ENTRIES,
    EventType.CACHE_READ: Topic.READS,
    EventType.INVALIDATED: Topic.INVALIDATIONS,
    EventType.WATERMARK_TICK: Topic.INVALIDATIONS,
    EventType.CONTRACT_DEFINED: Topic.CONTROL,
    EventType.SIGNING_KEY_REGISTERED: Topic.CONTROL,
    EventType.SIGNING_KEY_ROTATED: Topic.CONTROL,
    EventType.SIGNING_KEY_REVOKED: Topic.CONTROL,
    EventType.ROLE_GRANTED: Topic.CONTROL,
    EventType.ERASURE_REQUESTED: Topic.ERASURE,
    EventType.ERASURE_COMPLETED: Topic.ERASURE,
    EventType.KV_SCRUB_REQUESTED: Topic.KVSCRUB,
    EventType.KV_SCRUB_COMPLETED: Topic.KVSCRUB,
    EventType.KV_BLOCK_QUARANTINED: Topic.KVSCRUB,
    EventType.SEAL: Topic.SEALS,
    EventType.CONTRACT_VIOLATION: Topic.ALERTS,
    EventType.INTEGRITY_FAILURE: Topic.ALERTS,
    EventType.UNSEALED_TIMEOUT: Topic.ALERTS,
    EventType.LOG_DISCONTINUITY: Topic.ALERTS,
}
