"""The erasure processor: GDPR erasure as a flow of sealed events.

``cachet processors erasure`` runs it; ``docs/erasure.md`` describes the
flow, the stages (immediate, retention_end, hold_lifted) and what each
ErasureCompleted proves.

* :mod:`~cachet.processors.erasure.plan` -- which groups of a subject's
  entries are erased or held, and why (pure);
* :mod:`~cachet.processors.erasure.docket` -- requests, completed stages and
  legal holds, rebuilt from the log; what is due;
* :mod:`~cachet.processors.erasure.intake` -- verified records from allowed
  identities into the docket;
* :mod:`~cachet.processors.erasure.processor` -- carries out due stages;
* :mod:`~cachet.processors.erasure.proof` -- ``ErasureCompleted.proof_hash``.
"""

from __future__ import annotations

from cachet.processors.erasure.docket import DueStage, ErasureDocket
from cachet.processors.erasure.intake import ErasureIntake
from cachet.processors.erasure.plan import (
    ErasurePlan,
    GroupPlan,
    HoldCause,
    LegalHold,
    plan_erasure,
)
from cachet.processors.erasure.processor import ERASURE_AUTHORITY, ErasureProcessor, erasure_reason
from cachet.processors.erasure.proof import proof_hash

__all__ = [
    "ERASURE_AUTHORITY",
    "DueStage",
    "ErasureDocket",
    "ErasureIntake",
    "ErasurePlan",
    "ErasureProcessor",
    "GroupPlan",
    "HoldCause",
    "LegalHold",
    "erasure_reason",
    "plan_erasure",
    "proof_hash",
]
