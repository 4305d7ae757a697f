"""Verified point-in-time replay: the cache as it was at any moment, from the
archive, the broker, or both, with every seal checked on the way.

* :func:`iter_verified` / :class:`VerifiedReplay`: verified events of a source
  (:mod:`.verified`).
* :class:`ArchiveSource`, :class:`BrokerSource`, :class:`ArchiveThenBroker`:
  where the log is read from (:mod:`.source`).

``docs/replay.md`` describes what a replay promises and how to run one.
"""

from __future__ import annotations

from cachet.materializers.replay.errors import ReplayError, ReplaySourceError, ReplayWorkDirError
from cachet.materializers.replay.source import (
    ArchiveSource,
    ArchiveThenBroker,
    BrokerSource,
    PartitionEnd,
    ReplaySource,
)
from cachet.materializers.replay.verified import (
    REPLAYED_TOPICS,
    Refusal,
    RefusalReason,
    ReplayTrust,
    SealProof,
    VerifiedEvent,
    VerifiedReplay,
    iter_verified,
)

__all__ = [
    "REPLAYED_TOPICS",
    "ArchiveSource",
    "ArchiveThenBroker",
    "BrokerSource",
    "PartitionEnd",
    "Refusal",
    "RefusalReason",
    "ReplayError",
    "ReplaySource",
    "ReplaySourceError",
    "ReplayTrust",
    "ReplayWorkDirError",
    "SealProof",
    "VerifiedEvent",
    "VerifiedReplay",
    "iter_verified",
]
