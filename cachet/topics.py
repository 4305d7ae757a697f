"""Topic names: one place that knows every topic Cachet uses.

The prefix is configurable (default ``cachet.``) so several deployments, or
several test runs, can share one broker without seeing each other's events.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

__all__ = ["Topic", "TopicNames", "BROADCAST_TOPICS"]


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
    ARCHIVE = "archive"
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
