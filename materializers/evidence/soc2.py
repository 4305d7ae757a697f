"""The SOC 2 evidence export: one folder per control, signed.

The controls are the seven of the SOC 2 cache mapping in the design seeds
(``seeds/000_*``: encryption at rest, encryption in transit, access control,
audit logging, integrity verification, availability monitoring, change
management), each tied to the Trust Services Criteria it supports (the
five sections of ``seeds/003_*``). Each folder holds the artifacts that
back its control, built from verified events of the window, and a
README.md saying what each file shows; the whole export is signed like an
examination export (:mod:`.manifest`).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.materializers.evidence.examination import ExportResult, prepare_directory
from cachet.materializers.evidence.examination_tables import fingerprint_log, key_events_table
from cachet.materializers.evidence.exporter import signer_from_log
from cachet.materializers.evidence.finra import OutputFormat
from cachet.materializers.evidence.formats import render
from cachet.materializers.evidence.history import History, collect
from cachet.materializers.evidence.manifest import sign_export
from cachet.materializers.evidence.records import EvidenceSource, Window, iso
from cachet.materializers.evidence.soc2_tables import (
    alerts_table,
    archive_segments_table,
    authority_table,
    contracts_table,
    encrypted_writes_table,
    freshness_table,
    reads_by_role_table,
    role_grants_table,
    transition_counts_table,
    violations_table,
)
from cachet.materializers.evidence.tables import Table

__all__ = ["CONTROLS", "Control", "export_soc2"]


@dataclass(frozen=True, slots=True)
class Control:
    """One control of the seeds' SOC 2 mapping and the criteria it supports."""

    id: str
    slug: str
    name: str
    criteria: tuple[str, ...]
    claim: str

    @property
    def folder(self) -> str:
        return f"{self.id}-{self.slug}"


CONTROLS: tuple[Control, ...] = (
    Control(
        "C1",
        "encryption-at-rest",
        "Encryption at Rest",
        ("Security", "Confidentiality"),
        "Every cached value is AES-256-GCM ciphertext in every event; no plaintext reaches the log.",
    ),
    Control(
        "C2",
        "encryption-in-transit",
        "Encryption in Transit",
        ("Security", "Confidentiality"),
        "Broker connections use the transport security the deployment configures.",
    ),
    Control(
        "C3",
        "access-control",
        "Access Control",
        ("Security", "Confidentiality", "Privacy"),
        "Reads and changes are made under roles (Owner, Regulator, Auditor); grants are anchor-signed.",
    ),
    Control(
        "C4",
        "audit-logging",
        "Audit Logging",
        ("Security", "Processing Integrity"),
        "Every write and read is a sealed event naming its computation fingerprint.",
    ),
    Control(
        "C5",
        "integrity-verification",
        "Integrity Verification",
        ("Processing Integrity",),
        "Every served value carried a freshness proof; every contract breach missed and was recorded.",
    ),
    Control(
        "C6",
        "availability-monitoring",
        "Availability Monitoring",
        ("Availability",),
        "Integrity failures, unsealed events and log discontinuities raise sealed alerts.",
    ),
    Control(
        "C7",
        "change-management",
        "Change Management",
        ("Security",),
        "Keys, contracts and entry states change only through signed, attributed events.",
    ),
)


def _csv(folder: Path, table: Table) -> tuple[str, str]:
    (folder / f"{table.name}.csv").write_bytes(render(table, OutputFormat.CSV, {}))
    return f"{table.name}.csv", f"{table.title}: {table.doc} ({len(table.rows)} rows)"


def _json(folder: Path, name: str, doc: Mapping[str, Any], what: str) -> tuple[str, str]:
    text = json.dumps(doc, indent=2, sort_keys=True) + "\n"
    (folder / name).write_text(text, "utf-8")
    return name, what


def _artifacts(
    control: Control,
    folder: Path,
    history: History,
    verification: Mapping[str, Any],
    transport: Mapping[str, Any],
) -> list[tuple[str, str]]:
    if control.id == "C1":
        writes = encrypted_writes_table(history)
        erased = [
            r
            for r in history.in_window(history.erasures)
            if r.event.type.value == "ErasureCompleted"
        ]
        return [
            _csv(folder, writes),
            _json(
                folder,
                "summary.json",
                {
                    "writes": len(writes.rows),
                    "writes_with_ciphertext_and_96_bit_nonce": sum(
                        1
                        for w in writes.dicts()
                        if w["nonce_bytes"] == 12
                        and isinstance(w["ciphertext_bytes"], int)
                        and w["ciphertext_bytes"] > 0
                    ),
                    "data_keys": len(set(writes.column("data_key_id"))),
                    "erasures_completed": len(erased),
                    "data_keys_destroyed": sum(
                        r.event.payload["data_keys_destroyed"] for r in erased
                    ),
                },
                "Counts: writes, writes whose value is ciphertext with a 96-bit nonce, data keys, "
                "erasures (crypto-shredded data keys).",
            ),
        ]
    if control.id == "C2":
        return [
            _json(
                folder,
                "transport.json",
                transport,
                "The exporter's configured broker transport security (the log does not "
                "record transport settings: this is configuration, not a log fact).",
            )
        ]
    if control.id == "C3":
        return [
            _csv(folder, role_grants_table(history)),
            _csv(folder, reads_by_role_table(history)),
            _csv(folder, authority_table(history)),
        ]
    if control.id == "C4":
        return [
            _csv(folder, fingerprint_log(history)),
            _csv(folder, archive_segments_table(history)),
        ]
    if control.id == "C5":
        return [
            _csv(folder, freshness_table(history)),
            _csv(folder, violations_table(history)),
            _json(
                folder,
                "verification.json",
                verification,
                "How the exported events were verified: events verified, records refused by "
                "reason (refused records are never exported).",
            ),
        ]
    if control.id == "C6":
        alerts = alerts_table(history)
        counts = Counter(str(kind) for kind in alerts.column("alert"))
        return [
            _csv(folder, alerts),
            _json(
                folder,
                "alert_counts.json",
                dict(sorted(counts.items())),
                "Alerts in the window by type.",
            ),
        ]
    return [
        _csv(folder, key_events_table(history)),
        _csv(folder, contracts_table(history)),
        _csv(folder, transition_counts_table(history)),
    ]


def _readme(control: Control, window: Window, files: list[tuple[str, str]]) -> str:
    rows = "\n".join(f"| `{name}` | {what} |" for name, what in files)
    return (
        f"# {control.id} {control.name}\n\n"
        f"Trust Services Criteria: {', '.join(control.criteria)}.\n\n"
        f"Control: {control.claim}\n\n"
        f"Window: {iso(window.from_us)} to {iso(window.to_us)} (event time, UTC). Every row "
        "comes from an event whose seal (or, for key statements, whose trust-anchor "
        "signatures) verified; its provenance columns locate it in the log.\n\n"
        "| file | what it shows |\n| --- | --- |\n" + rows + "\n"
    )


def export_soc2(
    source: EvidenceSource,
    *,
    window: Window,
    out: Path,
    identity: str,
    keys: PrivateKeySet,
    anchor: KeySet,
    clock: Callable[[], int],
    transport: Mapping[str, Any] | None = None,
    progress: Callable[[str, int], None] | None = None,
) -> ExportResult:
    """Write the SOC 2 evidence of ``window`` into the empty directory ``out``, signed."""
    prepare_directory(out)
    history = collect(
        source.records(), window, (lambda n: progress("verified", n)) if progress else None
    )
    created_at_us = clock()
    signer = signer_from_log(history, identity, keys, anchor, created_at_us)
    verification = source.summary.as_json()
    index = []
    files_per_control: dict[str, int] = {}
    for i, control in enumerate(CONTROLS):
        folder = out / control.folder
        folder.mkdir()
        files = _artifacts(control, folder, history, verification, transport or {})
        (folder / "README.md").write_text(_readme(control, window, files), "utf-8")
        files_per_control[control.folder] = len(files) + 1
        index.append(
            f"* [{control.id} {control.name}]({control.folder}/README.md): "
            f"{', '.join(control.criteria)}"
        )
        if progress is not None:
            progress("controls", i + 1)
    (out / "README.md").write_text(
        "# SOC 2 evidence\n\n"
        f"Window {iso(window.from_us)} to {iso(window.to_us)}; exported by {identity}. "
        "One folder per control of the SOC 2 cache mapping; `manifest.json` lists every file "
        "with its SHA3-256 and is signed (`cachet export verify DIR --anchor ANCHOR.json`).\n\n"
        + "\n".join(index)
        + "\n",
        "utf-8",
    )
    manifest = sign_export(
        out,
        kind="soc2",
        parameters={
            "window": window.as_json(),
            "verification": verification,
            "controls": [
                {"id": c.id, "name": c.name, "criteria": list(c.criteria)} for c in CONTROLS
            ],
        },
        signer=signer,
        created_at_us=created_at_us,
    )
    return ExportResult(out, manifest, files_per_control)
