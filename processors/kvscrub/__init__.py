"""KV-cache scrubbing on inference workers.

A :class:`BlockPool` holds the paged KV cache (one contiguous tensor, block
tables per tenant and request, a tenant-scoped prefix cache); a
:class:`Scrubber` makes released blocks unreachable, zeroizes them in one
fused indexed op, verifies them on the device and frees only verified
blocks, quarantining the rest. The Kafka worker builds on this API.
"""

from cachet.processors.kvscrub.errors import (
    BlockStateError,
    KvScrubError,
    PolicyViolation,
    PoolExhausted,
    ScrubRequestError,
    UnscrubbedFree,
    WorkerSetupError,
)
from cachet.processors.kvscrub.metrics import ScrubMetrics
from cachet.processors.kvscrub.policy import (
    ExpiredSession,
    ExpiryReason,
    SessionKey,
    SessionPolicy,
)
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.report import ScrubMethod, ScrubReport, ScrubTrigger
from cachet.processors.kvscrub.scrub import (
    Scrubber,
    ScrubConfigError,
    ScrubSettings,
    sample_positions,
)
from cachet.processors.kvscrub.state import BlockState, QuarantineReason

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
