"""KV-cache scrubbing on inference workers.

A :class:`BlockPool` holds the paged KV cache (one contiguous tensor, block
tables per tenant and request, a tenant-scoped prefix cache); a
:class:`Scrubber` makes released blocks unreachable, zeroizes them in one
fused indexed op, verifies them on the device and frees only verified
blocks, quarantining the rest. The Kafka worker builds on this API.
"""

from processors.kvscrub.errors import (
    BlockStateError,
    KvScrubError,
    PolicyViolation,
    PoolExhausted,
    ScrubRequestError,
    UnscrubbedFree,
    WorkerSetupError,
)
from processors.kvscrub.metrics import ScrubMetrics
from processors.kvscrub.policy import (
    ExpiredSession,
    ExpiryReason,
    SessionKey,
    SessionPolicy,
)
from processors.kvscrub.pool import BlockPool, BlockState, PoolShape, QuarantineReason
from processors.kvscrub.scrub import (
    Scrubber,
    ScrubConfigError,
    ScrubMethod,
    ScrubReport,
    ScrubSettings,
    ScrubTrigger,
    sample_positions,
)

__all__ = [
    "BlockPool",
    "BlockState",
    "BlockStateError",
    "ExpiredSession",
    "ExpiryReason",
    "KvScrubError",
    "PolicyViolation",
    "PoolExhausted",
    "PoolShape",
    "QuarantineReason",
    "ScrubConfigError",
    "ScrubMethod",
    "ScrubMetrics",
    "ScrubReport",
    "ScrubRequestError",
    "ScrubSettings",
    "ScrubTrigger",
    "Scrubber",
    "SessionKey",
    "SessionPolicy",
    "UnscrubbedFree",
    "WorkerSetupError",
    "sample_positions",
]
