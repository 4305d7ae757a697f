"""Freshness contracts: ``[contracts.NAME]`` tables.

A contract is published as a ContractDefined event, so the log records which
contract was in force; :meth:`ContractConfig.canonical_json` is the stable
form that event carries.
"""

from __future__ import annotations

import datetime
import enum
import json
import re
from dataclasses import dataclass, fields
from typing import Any

from cachet.config.enums import (
    Classification,
    ExaminationExportFormat,
    InvalidationMode,
    MatchMode,
    RegulatoryClassification,
)
from cachet.config.errors import ConfigError
from cachet.config.sections import AiCacheConfig, AttestationConfig, AuditConfig, ContractDefaults
from cachet.config.values import Table, check_schemes, describe
from cachet.crypto.schemes import SignatureScheme

__all__ = [
    "CONTRACT_NAME_PATTERN",
    "ContractConfig",
    "Retention",
    "build_contract",
    "build_contract_defaults",
    "parse_retention",
]

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
    # Retention obligation (erasure meets retention): entries are held from
    # erasure until written_at + retention, on the named legal ground.
    retention: Retention | None = None
    retention_ground: str | None = None

    def canonical_json(self) -> str:
        """The contract as JSON: sorted keys, no whitespace, enums by value.

        Depends only on the contract's values, never on the order the TOML
        file wrote them in, so the same contract always publishes the same
        bytes (and the same hash).
        """
        doc: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.name in _OMITTED_WHEN_UNSET and value is None:
                # Added later: a contract without them publishes the bytes
                # (and hash) it published before they existed.
                continue
            if isinstance(value, Retention):
                value = value.text
            elif isinstance(value, tuple):
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
        **_retention(table),
    )
    table.finish()
    return contract


# -- retention obligations ----------------------------------------------------

_OMITTED_WHEN_UNSET = frozenset({"retention", "retention_ground"})
_RETENTION_PART = re.compile(r"(\d+)(ms|y|d|h|m|s)")
_RETENTION_UNIT_MS = {"d": 86_400_000, "h": 3_600_000, "m": 60_000, "s": 1000, "ms": 1}


@dataclass(frozen=True, slots=True)
class Retention:
    """How long a contract's entries must be kept: whole calendar ``years``
    plus ``extra_ms``. Calendar years, not 365-day ones: "six years" of FINRA
    4511 ends on the anniversary, never a day or two early (29 February
    moves to 1 March). ``text`` is the canonical spelling (``"6y"``,
    ``"6y30d"``, ``"3s"``)."""

    years: int
    extra_ms: int

    @property
    def text(self) -> str:
        parts = [f"{self.years}y"] if self.years else []
        rest = self.extra_ms
        for unit in ("d", "h", "m", "s", "ms"):
            n, rest = divmod(rest, _RETENTION_UNIT_MS[unit])
            if n:
                parts.append(f"{n}{unit}")
        return "".join(parts)

    def until_us(self, written_at_us: int) -> int:
        """When the obligation for a value written at ``written_at_us`` ends."""
        start = _EPOCH + datetime.timedelta(microseconds=written_at_us)
        try:
            end = start.replace(year=start.year + self.years)
        except ValueError:  # 29 February in a year without one
            end = start.replace(year=start.year + self.years, month=3, day=1)
        return (end - _EPOCH) // datetime.timedelta(microseconds=1) + self.extra_ms * 1000


_EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def parse_retention(value: Any, key: str) -> Retention:
    """A retention period: integer milliseconds, or number+unit parts with
    units ``y`` (calendar years), ``d``, ``h``, ``m``, ``s``, ``ms``
    (``"6y"``, ``"2555d"``, ``"3s"``). Positive, whole numbers only: an
    obligation must mean one thing. Raises :class:`ConfigError` naming ``key``."""
    expected = (
        "expected a retention period (integer milliseconds, or a string like '6y', '90d', '3s')"
    )
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(None, key, f"{expected}, got {describe(value)}")
    if isinstance(value, int):
        if value <= 0:
            raise ConfigError(None, key, f"a retention period must be positive, got {value}")
        return Retention(0, value)
    text = value.strip().lower()
    years, extra_ms, pos = 0, 0, 0
    while pos < len(text):
        match = _RETENTION_PART.match(text, pos)
        if match is None:
            raise ConfigError(None, key, f"{expected}, got {describe(value)}")
        n, unit = int(match.group(1)), match.group(2)
        if unit == "y":
            years += n
        else:
            extra_ms += n * _RETENTION_UNIT_MS[unit]
        pos = match.end()
    if not text:
        raise ConfigError(None, key, f"{expected}, got {describe(value)}")
    if years == 0 and extra_ms == 0:
        raise ConfigError(None, key, f"a retention period must be positive, got {describe(value)}")
    return Retention(years, extra_ms)


def _retention(table: Table) -> dict[str, Any]:
    """``retention`` and ``retention_ground`` of a contract: both or neither."""
    got = table.take("retention")
    ground = table.opt_str(("retention_ground",))
    if got is None:
        if ground is not None:
            raise table.error("retention_ground", "set without 'retention': a ground for what?")
        return {}
    retention = parse_retention(got[1], table.key(got[0]))
    if ground is None or not ground.strip():
        raise table.error(
            got[0],
            "a retention obligation must name its legal ground: set retention_ground, "
            "e.g. 'FINRA 4511 / SEC 17a-4(f)'",
        )
    return {"retention": retention, "retention_ground": ground.strip()}
