"""What one scrub did, and the enums it reports in.

:class:`ScrubReport` carries ids, counts and timings, never payload; the
scrubber returns it, the metrics record it, the worker signs it into the
ledger. Its enums are the ``ScrubMethod`` and ``ScrubTrigger`` Avro enums,
re-exported: one enum per concept, ScrubMethod in ``cachet.config.enums``
(it is configured), ScrubTrigger in ``cachet.schemas.payloads`` (it only
travels). Plain values: this module imports neither the pool nor torch.
"""

from __future__ import annotations

import builtins
from dataclasses import dataclass

from cachet.config.enums import ScrubMethod
from cachet.schemas.payloads import ScrubTrigger

__all__ = ["ScrubMethod", "ScrubReport", "ScrubTrigger"]


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What one scrub did; carries ids, counts and timings, never payload.

    ``bytes``: bytes zeroized per pass. ``coverage``: fraction of each block's
    bytes verified. ``method``: the verification actually run (FULL after a
    sampled fallback). ``nonce``: the sampling nonce (empty for FULL), so an
    auditor with the key can recompute the positions checked.
    """

    tenant: str
    request_id: str | None
    trigger: ScrubTrigger
    blocks: int
    bytes: int
    coverage: float
    method: ScrubMethod
    passes: int
    duration_us: int
    verified: tuple[int, ...]
    quarantined: tuple[int, ...]
    device: str
    # `bytes` is a field name above, hence the qualified type.
    nonce: builtins.bytes = b""
    sampled_fallback: bool = False

    @property
    def clean(self) -> bool:
        """True when every block verified zero."""
        return not self.quarantined
