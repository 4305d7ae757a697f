"""A contract's FINRA fields: which contract drives an examination, and how.

The contract in force is read from the log (its ContractDefined events),
not from whoever runs the export: the latest definition published before
the window's end drives the export, and every definition in force over the
window is exported. Only when the log holds none is the local
configuration's contract used, and the manifest says so.

What the FINRA fields change:

* ``examination_export_format``: which machine-readable forms each table is
  written in besides Avro OCF (``csv``, ``json`` = JSONL, ``finra-xml``;
  unset: CSV and JSONL).
* ``supervisory_review``: adds the ``supervisory_review`` table (FINRA Rule
  3110: every violation awaiting a registered principal's review) and marks
  each violation row.
* ``regulatory_classification`` and ``books_and_records_category`` (FINRA
  Rule 4511 retention category): recorded in the manifest, in every Avro
  file's metadata and on the report's first lines.

The tables themselves: :mod:`.examination_tables`.
"""

from __future__ import annotations

import enum
import json
from dataclasses import dataclass
from typing import Any

from cachet.config.contract import ContractConfig
from cachet.materializers.evidence.errors import EvidenceError, UnknownContract
from cachet.materializers.evidence.history import History
from cachet.materializers.evidence.records import EvidenceRecord

__all__ = [
    "ContractSource",
    "FinraProfile",
    "OutputFormat",
    "contract_definition",
    "finra_profile",
]


class OutputFormat(enum.Enum):
    """A machine-readable form of every table (Avro OCF is always written)."""

    AVRO = "avro"
    CSV = "csv"
    JSONL = "jsonl"
    XML = "xml"


_FORMATS_OF = {
    None: (OutputFormat.AVRO, OutputFormat.CSV, OutputFormat.JSONL),
    "csv": (OutputFormat.AVRO, OutputFormat.CSV),
    "json": (OutputFormat.AVRO, OutputFormat.JSONL),
    "finra-xml": (OutputFormat.AVRO, OutputFormat.XML),
}


class ContractSource(enum.Enum):
    """Where the contract that drove an export came from."""

    LOG = "log"  # a verified ContractDefined event
    CONFIG = "config"  # the exporter's cachet.toml: the log holds no definition


@dataclass(frozen=True, slots=True)
class FinraProfile:
    """The contract fields that drive an examination export."""

    contract: str
    source: ContractSource
    definition_hash: str | None
    max_staleness_ms: int | None
    regulatory_classification: str | None
    books_and_records_category: str | None
    supervisory_review: bool
    examination_export_format: str | None

    @property
    def formats(self) -> tuple[OutputFormat, ...]:
        try:
            return _FORMATS_OF[self.examination_export_format]
        except KeyError:
            raise UnknownContract(
                f"contract {self.contract}: examination_export_format "
                f"{self.examination_export_format!r} is not one of csv, json, finra-xml"
            ) from None

    def as_json(self) -> dict[str, Any]:
        return {
            "contract": self.contract,
            "contract_source": self.source.value,
            "definition_sha3_256": self.definition_hash,
            "max_staleness_ms": self.max_staleness_ms,
            "regulatory_classification": self.regulatory_classification,
            "books_and_records_category": self.books_and_records_category,
            "supervisory_review": self.supervisory_review,
            "examination_export_format": self.examination_export_format,
            "formats": [f.value for f in self.formats],
        }


def contract_definition(record: EvidenceRecord) -> dict[str, Any]:
    """The published definition of a ContractDefined event, as a dict.

    Raises :class:`EvidenceError` naming the event when it is not a JSON
    object: guessing its fields would export under rules nobody published.
    """
    p = record.event.payload
    try:
        doc = json.loads(p["definition_json"])
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise EvidenceError(
            f"ContractDefined {record.event.event_id} of {p['name']!r}: "
            "definition_json is not a JSON object"
        )
    return doc


def finra_profile(history: History, contract: str, config: ContractConfig | None) -> FinraProfile:
    """The profile of ``contract`` as the log last defined it before the
    window's end; from ``config`` only when the log never defined it.
    Raises :class:`UnknownContract` when neither knows it."""
    defined = [r for r in history.contracts if r.event.payload["name"] == contract]
    if defined:
        last = defined[-1]
        doc = contract_definition(last)
        staleness = doc.get("max_staleness_ms")
        return FinraProfile(
            contract=contract,
            source=ContractSource.LOG,
            definition_hash=last.event.payload["definition_hash"].hex(),
            max_staleness_ms=staleness if isinstance(staleness, int) else None,
            regulatory_classification=doc.get("regulatory_classification"),
            books_and_records_category=doc.get("books_and_records_category"),
            supervisory_review=bool(doc.get("supervisory_review", False)),
            examination_export_format=doc.get("examination_export_format"),
        )
    if config is None:
        known = sorted({r.event.payload["name"] for r in history.contracts})
        raise UnknownContract(
            f"contract {contract!r} was never defined in the log before the window's end "
            f"and is not in the configuration (defined in the log: {', '.join(known) or 'none'})"
        )

    def value(v: enum.Enum | None) -> str | None:
        return None if v is None else str(v.value)

    return FinraProfile(
        contract=contract,
        source=ContractSource.CONFIG,
        definition_hash=None,
        max_staleness_ms=config.max_staleness_ms,
        regulatory_classification=value(config.regulatory_classification),
        books_and_records_category=config.books_and_records_category,
        supervisory_review=config.supervisory_review,
        examination_export_format=value(config.examination_export_format),
    )
