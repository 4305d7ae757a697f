"""Freshness contracts: ``[contracts.NAME]`` tables.

A contract is published as a ContractDefined event, so the log records which
contract was in force; :meth:`ContractConfig.canonical_json` is the stable
form that event carries.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass, fields
from typing import Any

from cachet.config.enums import (
    Classification,
    ExaminationExportFormat,
    InvalidationMode,
    MatchMode,
    RegulatoryClassification,
)
from cachet.config.sections import AiCacheConfig, AttestationConfig, AuditConfig, ContractDefaults
from cachet.config.values import Table, check_schemes, describe
from cachet.crypto.schemes import SignatureScheme

__all__ = ["CONTRACT_NAME_PATTERN", "ContractConfig", "build_contract", "build_contract_defaults"]

CONTRACT_NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_-]{0,127}"
# Semantic lookups share entries between similar prompts of different people:
# never for data about a person (DESIGN: "Privacy and access").
_NO_SEMANTIC = frozenset({Classification.PHI, Classification.PII})


@dataclass(frozen=True, slots=True)
class ContractConfig:
    """One freshness contract, with every default already applied."""

    name: str
    computation_type: str
    max_staleness_ms: int
    # Set semantics, kept in SignatureScheme order so equal sets compare equal.
    required_signatures: tuple[SignatureScheme, ...]
    fingerprint_fields: tuple[str, ...]
    audit_trail_depth_days: int
    invalidation: InvalidationMode
    strict: bool
    classification: Classification | None = None
    match: MatchMode = MatchMode.EXACT
    semantic_threshold: float | None = None
    # FINRA extensions
    regulatory_classification: RegulatoryClassification | None = None
    books_and_records_category: str | None = None
    supervisory_review: bool = False
    examination_export_format: ExaminationExportFormat | None = None

    def canonical_json(self) -> str:
        """The contract as JSON: sorted keys, no whitespace, enums by value.

        Depends only on the contract's values, never on the order the TOML
        file wrote them in, so the same contract always publishes the same
        bytes (and the same hash).
        """
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                value = [v.value if isinstance(v, enum.Enum) else v for v in value]
            elif isinstance(value, enum.Enum):
                value = value.value
            doc[f.name] = value
        return json.dumps(doc, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def build_contract_defaults(table: Table) -> ContractDefaults:
    """The scalar keys of ``[contracts]``: defaults for every contract."""
    base = ContractDefaults()
    return ContractDefaults(
        max_staleness_ms=table.duration_ms(
            {
                "default_max_staleness": 1,
                "default_max_staleness_ms": 1,
                "default_freshness_ms": 1,
                "default_freshness": 1,
            },
            base.max_staleness_ms,
        ),
        strict=table.bool_(("strict", "strict_mode"), base.strict),
        invalidation=table.enum_(("invalidation",), InvalidationMode, base.invalidation),
    )


def _signatures(table: Table, attestation: AttestationConfig) -> tuple[SignatureScheme, ...]:
    got = table.take("required_signatures", "verification")
    if got is None:
        return attestation.schemes
    schemes = check_schemes(table, got[0], got[1])
    for scheme in schemes:
        if scheme not in attestation.schemes:
            # No producer signs with it, so no read could ever satisfy it.
            raise table.error(
                got[0], f"{scheme.value} is not in attestation.schemes, so no seal carries it"
            )
    return schemes


def build_contract(
    table: Table,
    name: str,
    defaults: ContractDefaults,
    attestation: AttestationConfig,
    audit: AuditConfig,
    ai_cache: AiCacheConfig,
) -> ContractConfig:
    """Read one ``[contracts.NAME]`` table, filling gaps from the defaults."""
    classification: Classification | None = None
    got = table.take("classification")
    if got is not None:
        classification = table.check_enum(got[0], got[1], Classification)
    match = table.enum_(("match", "match_mode"), MatchMode, ai_cache.match)
    threshold_got = table.take("semantic_threshold")
    threshold: float | None = None
    if match is MatchMode.SEMANTIC:
        if classification in _NO_SEMANTIC:
            assert classification is not None
            raise table.error(
                "match",
                f"semantic lookup is refused for {classification.value} data: similar prompts "
                "of different people would share entries",
            )
        threshold = ai_cache.semantic_threshold
    if threshold_got is not None:
        if match is not MatchMode.SEMANTIC:
            raise table.error("semantic_threshold", "only meaningful with match = 'semantic'")
        value = threshold_got[1]
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
            raise table.error(
                "semantic_threshold", f"expected a number in (0, 1], got {describe(value)}"
            )
        threshold = float(value)

    regulatory: RegulatoryClassification | None = None
    got = table.take("regulatory_classification")
    if got is not None:
        regulatory = table.check_enum(got[0], got[1], RegulatoryClassification)
    export: ExaminationExportFormat | None = None
    got = table.take("examination_export_format")
    if got is not None:
        export = table.check_enum(got[0], got[1], ExaminationExportFormat)

    contract = ContractConfig(
        name=name,
        computation_type=table.str_(("computation_type",), name),
        max_staleness_ms=table.duration_ms(
            {"max_staleness": 1, "max_staleness_ms": 1}, defaults.max_staleness_ms
        ),
        required_signatures=_signatures(table, attestation),
        fingerprint_fields=table.str_list(("fingerprint_fields",), attestation.fingerprint_fields),
        audit_trail_depth_days=table.int_(("audit_trail_depth_days",), audit.retention_days, min=1),
        invalidation=table.enum_(("invalidation",), InvalidationMode, defaults.invalidation),
        strict=table.bool_(("strict", "strict_mode"), defaults.strict),
        classification=classification,
        match=match,
        semantic_threshold=threshold,
        regulatory_classification=regulatory,
        books_and_records_category=table.opt_str(("books_and_records_category",)),
        supervisory_review=table.bool_(
            ("supervisory_review", "supervisory_review_required"), False
        ),
        examination_export_format=export,
    )
    table.finish()
    return contract
