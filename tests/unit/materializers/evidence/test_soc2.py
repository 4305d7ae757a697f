"""The SOC 2 export: one folder per control, each file explained, signed."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import pytest

from cachet.materializers.evidence import CONTROLS, ManifestCheck, export_soc2, verify_export
from cachet.materializers.evidence.soc2_tables import _percentile
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import Topic
from tests.unit.materializers.evidence.conftest import (
    EXPORTER,
    SEC,
    T0,
    WINDOW,
    ListSource,
    sample_log,
)


@pytest.fixture
def soc2(tmp_path: Path, anchor_keys, exporter_keys) -> Path:
    log = sample_log(anchor_keys, exporter_keys)
    log.add(
        EventType.INTEGRITY_FAILURE,
        {
            "status": "signature_invalid.ml-dsa-65",
            "producer_id": "node-b@2",
            "seal_seq": 4,
            "producer_seq": None,
            "topic": "cachet.seals",
            "partition": 0,
            "offset": 9,
            "detail": "forged seal",
        },
        T0 + 8 * SEC,
        Topic.ALERTS,
    )
    log.add(
        EventType.ARCHIVE_SEGMENT_SEALED,
        SAMPLE_PAYLOADS[EventType.ARCHIVE_SEGMENT_SEALED],
        T0 + 9 * SEC,
        Topic.ARCHIVE,
    )
    export_soc2(
        ListSource(log.records),
        window=WINDOW,
        out=tmp_path / "soc2",
        identity=EXPORTER,
        keys=exporter_keys,
        anchor=anchor_keys.public(),
        clock=lambda: T0 + 500 * SEC,
        transport={"consumer_security_protocol": "ssl"},
    )
    return tmp_path / "soc2"


def _csv(path: Path) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


def test_one_folder_per_control_each_file_explained(soc2: Path) -> None:
    folders = sorted(p.name for p in soc2.iterdir() if p.is_dir() and p.name != "signer")
    assert folders == sorted(c.folder for c in CONTROLS)
    assert [c.name for c in CONTROLS] == [
        "Encryption at Rest",
        "Encryption in Transit",
        "Access Control",
        "Audit Logging",
        "Integrity Verification",
        "Availability Monitoring",
        "Change Management",
    ]
    for control in CONTROLS:
        readme = (soc2 / control.folder / "README.md").read_text()
        assert readme.startswith(f"# {control.id} {control.name}")
        for criterion in control.criteria:
            assert criterion in readme
        for artifact in (soc2 / control.folder).iterdir():
            if artifact.name != "README.md":
                assert f"`{artifact.name}`" in readme, (control.folder, artifact.name)


def test_processing_integrity_aggregates_and_violations(soc2: Path) -> None:
    folder = soc2 / "C5-integrity-verification"
    by_contract = {r["contract"]: r for r in _csv(folder / "freshness_aggregates.csv")}
    quotes = by_contract["quotes"]
    # 7 hits with proofs (headrooms 600,500,400,300,350,400,700), 2 misses, 1 violation.
    assert (quotes["hits_with_proof"], quotes["misses"], quotes["violations"]) == ("7", "2", "1")
    assert quotes["headroom_ms_min"] == "300" and quotes["hits_with_negative_headroom"] == "0"
    assert by_contract["other"]["violations"] == "1"
    assert len(_csv(folder / "violations.csv")) == 2
    assert json.loads((folder / "verification.json").read_text())["refused_records"] == 0


def test_access_monitoring_and_change_management(soc2: Path) -> None:
    reads = _csv(soc2 / "C3-access-control" / "reads_by_role.csv")
    assert {(r["reader_role"], r["outcome"]) for r in reads} >= {
        ("owner", "HIT"),
        ("regulator", "HIT"),
    }
    alerts = _csv(soc2 / "C6-availability-monitoring" / "alerts.csv")
    assert [(a["alert"], a["status"]) for a in alerts] == [
        ("IntegrityFailure", "signature_invalid.ml-dsa-65")
    ]
    keys = _csv(soc2 / "C7-change-management" / "key_events.csv")
    assert [k["action"] for k in keys] == ["registered", "revoked"]
    counts = _csv(soc2 / "C7-change-management" / "transition_counts.csv")
    assert counts == [
        {"from_state": "ACTIVE", "to_state": "REVOKED", "authority_kind": "KEY", "transitions": "2"}
    ]
    segments = _csv(soc2 / "C4-audit-logging" / "archive_segments.csv")
    sample = SAMPLE_PAYLOADS[EventType.ARCHIVE_SEGMENT_SEALED]
    assert [s["segment_hash"] for s in segments] == [sample["segment_hash"].hex()]
    writes = _csv(soc2 / "C1-encryption-at-rest" / "encrypted_writes.csv")
    assert len(writes) == 3 and all(w["nonce_bytes"] == "12" for w in writes)
    transport = json.loads((soc2 / "C2-encryption-in-transit" / "transport.json").read_text())
    assert transport == {"consumer_security_protocol": "ssl"}


def test_soc2_export_is_signed_and_tamper_evident(soc2: Path, anchor_keys) -> None:
    assert verify_export(soc2, pinned_anchor=anchor_keys.public()).ok
    readme = soc2 / "C5-integrity-verification" / "README.md"
    readme.write_text(readme.read_text() + "\nall good\n")
    report = verify_export(soc2, pinned_anchor=anchor_keys.public())
    assert {c.check for c in report.failures()} == {ManifestCheck.FILES}


def test_nearest_rank_percentile() -> None:
    assert _percentile([], 0.5) is None
    assert _percentile([5], 0.95) == 5
    assert _percentile(list(range(1, 101)), 0.95) == 95
    assert _percentile([3, 1, 2, 4], 0.5) == 2
