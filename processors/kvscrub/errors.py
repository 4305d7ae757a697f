"""Typed errors of KV-cache scrubbing.

Every error names what a person needs to find the problem (tenant, request
id, block ids, states, counts) and never a payload byte: messages end up in
logs and dead letters.
"""

from __future__ import annotations

from collections.abc import Sequence

from cachet.errors import CachetError
from cachet.processors.kvscrub.policy import ExpiryReason, SessionKey
from cachet.processors.kvscrub.state import BlockState

__all__ = [
    "BlockStateError",
    "KvScrubError",
    "PolicyViolation",
    "PoolExhausted",
    "ScrubRequestError",
    "UnscrubbedFree",
    "WorkerSetupError",
]


class KvScrubError(CachetError):
    """Root of the KV-cache scrubbing errors."""


# ----------------------------------------------------------------------- pool
class PoolExhausted(KvScrubError):
    """Not enough free blocks for an allocation."""

    def __init__(self, tenant: str, request_id: str, requested: int, available: int) -> None:
        super().__init__(
            f"KV block pool exhausted: tenant={tenant!r} request={request_id!r} "
            f"requested={requested} blocks, free={available}"
        )
        self.tenant = tenant
        self.request_id = request_id
        self.requested = requested
        self.available = available


class UnscrubbedFree(KvScrubError):
    """``free`` was given blocks not verified clean; they are now quarantined."""

    def __init__(self, block_ids: Sequence[int], states: Sequence[BlockState]) -> None:
        pairs = ", ".join(f"{b}:{s.value}" for b, s in zip(block_ids, states, strict=True))
        super().__init__(
            f"refusing to free {len(block_ids)} block(s) not VERIFIED_CLEAN; "
            f"quarantined them: {pairs}"
        )
        self.block_ids = tuple(block_ids)
        self.states = tuple(states)


class BlockStateError(KvScrubError):
    """An operation met a block in a state it does not accept."""

    def __init__(self, operation: str, block_id: int, state: BlockState, expected: str) -> None:
        super().__init__(f"{operation}: block {block_id} is {state.value}, expected {expected}")
        self.operation = operation
        self.block_id = block_id
        self.state = state


class PolicyViolation(KvScrubError):
    """A session policy forbids the operation (e.g. ``ttl_s <= 0``)."""

    def __init__(
        self, key: SessionKey, reason: ExpiryReason, block_ids: Sequence[int] = ()
    ) -> None:
        super().__init__(
            f"policy {reason.value} for tenant={key.tenant!r} request={key.request_id!r}"
            + (f"; quarantined {len(block_ids)} block(s)" if block_ids else "")
        )
        self.key = key
        self.reason = reason
        self.block_ids = tuple(block_ids)


# --------------------------------------------------------------------- worker
class ScrubRequestError(KvScrubError, ValueError):
    """A scrub or erasure request the worker cannot act on (dead-lettered)."""


class WorkerSetupError(KvScrubError):
    """The worker cannot start as configured (device, topics)."""
