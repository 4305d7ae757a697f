"""Evidence exports read CacheReadBatch events as they read CacheRead events:
one row per read, the same cells, plus the read's index in its batch."""

from __future__ import annotations

import csv
import io
from pathlib import Path

import pytest

from cachet.materializers.evidence import export_examination, export_soc2
from cachet.materializers.evidence.history import collect
from cachet.materializers.evidence.tables import PROVENANCE
from cachet.schemas.events import EventType
from tests.unit.materializers.evidence.conftest import (
    EXPORTER,
    SEC,
    T0,
    WINDOW,
    ListSource,
    batched_reads,
    h,
    sample_log,
)

# Cells that say where a row's event is: they differ between the two logs.
WHERE = {c.name for c in PROVENANCE} | {"read_index"}


def _rows(directory: Path, table: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((directory / "tables" / f"{table}.csv").read_text())))


def _soc2_rows(directory: Path, control: str, table: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((directory / control / f"{table}.csv").read_text())))


def _what(rows: list[dict[str, str]]) -> list[dict[str, str]]:
    return [{k: v for k, v in row.items() if k not in WHERE} for row in rows]


@pytest.fixture
def logs(anchor_keys, exporter_keys):
    log = sample_log(anchor_keys, exporter_keys)
    batched = batched_reads(log.records)
    n_reads = sum(1 for r in log.records if r.event.type is EventType.CACHE_READ)
    n_batches = sum(1 for r in batched if r.event.type is EventType.CACHE_READ_BATCH)
    assert n_batches < n_reads and not any(r.event.type is EventType.CACHE_READ for r in batched)
    return log.records, batched


def _exam(records, out: Path, exporter_keys, anchor_keys) -> Path:
    return export_examination(
        ListSource(records),
        contract="quotes",
        window=WINDOW,
        out=out,
        identity=EXPORTER,
        keys=exporter_keys,
        anchor=anchor_keys.public(),
        clock=lambda: T0 + 500 * SEC,
    ).directory


def test_history_keeps_reads_not_read_events(logs) -> None:
    old, batched = logs
    reads = collect(batched, WINDOW).reads
    assert [r.payload for r in reads] == [r.payload for r in collect(old, WINDOW).reads]
    first = [r for r in reads if r.event.occurred_at_us == T0 + 2 * SEC]
    assert [(r.index, r.payload["key_hash"]) for r in first] == [(0, h("AAPL")), (1, h("MSFT"))]
    assert len({r.event.event_id for r in first}) == 1
    assert all(r.index is None for r in collect(old, WINDOW).reads)


def test_examination_rows_are_the_same_reads_with_their_index(
    logs, tmp_path, exporter_keys, anchor_keys
) -> None:
    old, batched = logs
    before = _exam(old, tmp_path / "old", exporter_keys, anchor_keys)
    after = _exam(batched, tmp_path / "new", exporter_keys, anchor_keys)
    for table in ("reads", "fingerprints"):
        assert _what(_rows(after, table)) == _what(_rows(before, table)), table
    reads = _rows(after, "reads")
    assert len(reads) == 9
    assert all(r["read_index"] == "" for r in _rows(before, "reads"))
    # Each row names its batch (event id, offset, leaf hash) and its place in it.
    by_event: dict[str, list[str]] = {}
    for r in reads:
        by_event.setdefault(r["event_id"], []).append(r["read_index"])
        assert r["attestation"] == "sealed" and r["leaf_hash"] and r["seal_seq"]
    # The batch of T0+3s holds AAPL, MSFT, IBM and the other contract's ZZZ
    # (index 3, not in this contract's export); rows keep batch order.
    assert sorted(by_event.values()) == [["0"], ["0", "1"], ["0", "1", "2"], ["0", "1", "2"]]
    fingerprints = _rows(after, "fingerprints")
    assert {r["read_index"] for r in fingerprints if r["operation"] == "write"} == {""}
    assert {r["read_index"] for r in fingerprints if r["operation"] == "read_hit"} >= {"0", "1"}


def test_soc2_aggregates_count_reads_not_events(logs, tmp_path, exporter_keys, anchor_keys) -> None:
    old, batched = logs
    out = {}
    for name, records in (("old", old), ("new", batched)):
        export_soc2(
            ListSource(records),
            window=WINDOW,
            out=tmp_path / name,
            identity=EXPORTER,
            keys=exporter_keys,
            anchor=anchor_keys.public(),
            clock=lambda: T0 + 500 * SEC,
        )
        out[name] = tmp_path / name
    for control, table in (
        ("C3-access-control", "reads_by_role"),
        ("C5-integrity-verification", "freshness_aggregates"),
        ("C4-audit-logging", "fingerprint_log"),
    ):
        new_rows = _soc2_rows(out["new"], control, table)
        assert _what(new_rows) == _what(_soc2_rows(out["old"], control, table)), table
        assert new_rows, table
    by_role = _soc2_rows(out["new"], "C3-access-control", "reads_by_role")
    assert sum(int(r["reads"]) for r in by_role) == 10  # 9 of quotes, 1 of other
