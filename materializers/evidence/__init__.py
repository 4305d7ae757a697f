"""Evidence exports: the FINRA examination export and the SOC 2 evidence export.

Both read verified events (:mod:`.records`: from the broker through
:mod:`.broker_source`, or from the archive through the point-in-time
replay), write machine-readable tables (Avro OCF, CSV, JSONL, XML) and, for
an examination, a self-contained HTML report, then sign a manifest of every
file's SHA3-256 with the exporting identity's key set (:mod:`.manifest`),
verifiable offline against the trust anchor. Format and checks:
``docs/evidence.md``.
"""

from __future__ import annotations

from cachet.materializers.evidence.errors import (
    EvidenceError,
    ExportSourceError,
    ManifestError,
    SignerError,
    UnknownContract,
    WindowError,
)
from cachet.materializers.evidence.examination import ExportResult, export_examination
from cachet.materializers.evidence.manifest import (
    ExportSigner,
    ManifestCheck,
    ManifestReport,
    verify_export,
)
from cachet.materializers.evidence.records import (
    Attestation,
    EvidenceRecord,
    EvidenceSource,
    SealProof,
    VerificationSummary,
    Window,
    parse_time_us,
)
from cachet.materializers.evidence.soc2 import CONTROLS, export_soc2

__all__ = [
    "CONTROLS",
    "Attestation",
    "EvidenceError",
    "EvidenceRecord",
    "EvidenceSource",
    "ExportResult",
    "ExportSigner",
    "ExportSourceError",
    "ManifestCheck",
    "ManifestError",
    "ManifestReport",
    "SealProof",
    "SignerError",
    "UnknownContract",
    "VerificationSummary",
    "Window",
    "WindowError",
    "export_examination",
    "export_soc2",
    "parse_time_us",
    "verify_export",
]
