"""The lifecycle of one KV-cache block: where it is, and why it left circulation.

    FREE -> ALLOCATED -> PENDING_SCRUB -> VERIFIED_CLEAN -> FREE
                              \\-> QUARANTINED (verification failed)

:class:`~cachet.processors.kvscrub.pool.BlockPool` moves blocks between these
states; errors and metrics name them. Plain values, so every module of the
package can import them without importing the pool (or torch).
"""

from __future__ import annotations

import enum

__all__ = ["BlockState", "QuarantineReason"]


class BlockState(enum.Enum):
    """Where a block is in its lifecycle."""

    FREE = "FREE"
    ALLOCATED = "ALLOCATED"
    PENDING_SCRUB = "PENDING_SCRUB"
    VERIFIED_CLEAN = "VERIFIED_CLEAN"
    QUARANTINED = "QUARANTINED"


class QuarantineReason(enum.Enum):
    """Why a block was taken out of circulation for good."""

    VERIFY_FAILED = "VERIFY_FAILED"
    UNSCRUBBED_FREE = "UNSCRUBBED_FREE"
    TTL_NONPOSITIVE = "TTL_NONPOSITIVE"
