"""The FINRA examination export of one contract over one window.

``export_examination`` reads a verified source once, and writes into an
empty directory::

    tables/<table>.avro           Avro OCF of every table (always)
    tables/<table>.csv|.jsonl|.xml as the contract's examination_export_format asks
    report.html                   the self-contained evidence report
    signer/...                    the registration of the signing key (manifest.py)
    manifest.json, manifest.sig   every file's size and SHA3-256, signed

Tables: ``contracts`` (in force over the window), ``transitions``,
``fingerprints``, ``reads`` (with freshness proofs), ``violations``,
``key_events`` and, when the contract asks for supervisory review,
``supervisory_review`` (see :mod:`.finra`).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachet.config.contract import ContractConfig
from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.materializers.evidence.errors import EvidenceError
from cachet.materializers.evidence.examination_tables import examination_tables
from cachet.materializers.evidence.exporter import signer_from_log
from cachet.materializers.evidence.finra import FinraProfile, finra_profile
from cachet.materializers.evidence.formats import write_table
from cachet.materializers.evidence.history import collect
from cachet.materializers.evidence.manifest import sign_export
from cachet.materializers.evidence.records import EvidenceSource, Window
from cachet.materializers.evidence.report import render_report

__all__ = ["ExportResult", "export_examination", "prepare_directory"]

Progress = Callable[[str, int], None]


@dataclass(frozen=True, slots=True)
class ExportResult:
    """What an export wrote: its directory, its manifest, and ``rows``: the
    rows of each table (examination) or the files of each control (SOC 2)."""

    directory: Path
    manifest: dict[str, Any]
    rows: dict[str, int]
    profile: FinraProfile | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "out": str(self.directory),
            "kind": self.manifest["kind"],
            "files": len(self.manifest["files"]),
            "rows": self.rows,
            "verification": self.manifest["parameters"]["verification"],
            "signer": self.manifest["signer"],
        }


def prepare_directory(out: Path) -> None:
    """Create ``out``, or accept it empty: the manifest lists every file in
    it, so a stray file would be signed as part of the evidence."""
    if out.exists():
        if not out.is_dir():
            raise EvidenceError(f"export directory {out} exists and is not a directory")
        if any(out.iterdir()):
            raise EvidenceError(f"export directory {out} is not empty: export into a new one")
    out.mkdir(parents=True, exist_ok=True)


def export_examination(
    source: EvidenceSource,
    *,
    contract: str,
    window: Window,
    out: Path,
    identity: str,
    keys: PrivateKeySet,
    anchor: KeySet,
    clock: Callable[[], int],
    config_contract: ContractConfig | None = None,
    progress: Progress | None = None,
) -> ExportResult:
    """Export ``contract`` over ``window`` from ``source`` into ``out``, signed
    by ``identity``'s ``keys`` (registered under ``anchor`` in the source).

    ``clock`` gives the signing time (µs). Raises :class:`EvidenceError`
    subclasses naming what is wrong: an unknown contract, a non-empty
    directory, a signer the log does not vouch for.
    """
    prepare_directory(out)
    history = collect(
        source.records(), window, (lambda n: progress("verified", n)) if progress else None
    )
    profile = finra_profile(history, contract, config_contract)
    created_at_us = clock()
    signer = signer_from_log(history, identity, keys, anchor, created_at_us)
    tables = examination_tables(history, profile)
    metadata = {
        f"cachet.finra.{k}": json.dumps(v) for k, v in profile.as_json().items() if k != "formats"
    }
    directory = out / "tables"
    directory.mkdir()
    for i, table in enumerate(tables):
        for fmt in profile.formats:
            write_table(table, fmt, directory, metadata)
        if progress is not None:
            progress("tables", i + 1)
    by_name = {t.name: t for t in tables}
    summary = source.summary
    (out / "report.html").write_text(
        render_report(
            profile=profile,
            window=window,
            tables=by_name,
            summary=summary,
            signer=identity,
            created_at_us=created_at_us,
        ),
        "utf-8",
    )
    rows = {t.name: len(t.rows) for t in tables}
    manifest = sign_export(
        out,
        kind="examination",
        parameters={
            "contract": profile.as_json(),
            "window": window.as_json(),
            "verification": summary.as_json(),
            "rows": rows,
        },
        signer=signer,
        created_at_us=created_at_us,
    )
    return ExportResult(out, manifest, rows, profile)
