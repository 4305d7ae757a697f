"""The examination export's tables, as the contract's FINRA fields ask."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from xml.etree import ElementTree

import fastavro
import pytest

from cachet.config import parse_config
from cachet.materializers.evidence import (
    EvidenceError,
    SignerError,
    UnknownContract,
    Window,
    WindowError,
    export_examination,
    parse_time_us,
)
from cachet.materializers.evidence.finra import ContractSource, finra_profile
from cachet.materializers.evidence.history import collect
from cachet.materializers.evidence.records import EvidenceRecord, SealProof
from cachet.materializers.evidence.tables import Column, ColumnType, Table
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.unit.materializers.evidence.conftest import (
    EXPORTER,
    SEC,
    T0,
    WINDOW,
    ListSource,
    h,
    sample_log,
)


def _rows(directory: Path, table: str) -> list[dict[str, str]]:
    return list(csv.DictReader(io.StringIO((directory / "tables" / f"{table}.csv").read_text())))


def test_reads_are_the_contracts_reads_in_the_window(make_export) -> None:
    result = make_export()
    reads = _rows(result.directory, "reads")
    # 3 AAPL + 3 MSFT + 1 IBM hits, one not_found and one stale miss; not the
    # other contract's read, not the read after the window.
    assert len(reads) == 9
    assert {r["reason"] for r in reads} == {"served", "not_found", "stale"}
    served = [r for r in reads if r["outcome"] == "HIT"]
    assert all(r["headroom_ms"] and r["max_staleness_ms"] == "1000" for r in served)
    assert {r["reader_role"] for r in reads} == {"owner", "regulator"}
    # Provenance: every row names its event and the seal that covers it.
    assert all(r["attestation"] == "sealed" and r["seal_seq"] and r["leaf_hash"] for r in reads)


def test_violations_transitions_and_fingerprints_are_the_contracts(make_export) -> None:
    directory = make_export().directory
    violations = _rows(directory, "violations")
    assert [v["key_hash"] for v in violations] == [h("AAPL").hex()]
    transitions = _rows(directory, "transitions")
    # MSFT and IBM written in the window, AAPL (written before it) revoked in
    # it: attributed to the contract through its earlier write.
    assert sorted((t["kind"], t["key_hash"]) for t in transitions) == sorted(
        [
            ("written", h("MSFT").hex()),
            ("written", h("IBM").hex()),
            ("transitioned", h("AAPL").hex()),
        ]
    )
    revoked = next(t for t in transitions if t["kind"] == "transitioned")
    assert revoked["to_state"] == "REVOKED" and revoked["authority"] == "KEY:ks-node-a:owner"
    operations = sorted(f["operation"] for f in _rows(directory, "fingerprints"))
    assert operations == ["read_hit"] * 7 + ["write"] * 2


def test_contracts_in_force_are_the_last_before_the_window_and_those_in_it(make_export) -> None:
    directory = make_export(regulatory_classification="quote").directory
    contracts = _rows(directory, "contracts")
    assert [c["contract"] for c in contracts] == ["quotes"]
    assert contracts[0]["regulatory_classification"] == "quote"
    assert contracts[0]["max_staleness_ms"] == "1000"  # not the superseded 2000 ms definition


def test_key_events_include_registrations_before_the_window(make_export) -> None:
    keys = _rows(make_export().directory, "key_events")
    assert [(k["action"], k["in_window"]) for k in keys] == [
        ("registered", "false"),
        ("revoked", "false"),
    ]
    assert keys[1]["revocation_reason"] == "key-compromise"
    assert keys[0]["attestation"] == "anchor_signed" and keys[0]["seal_seq"] == ""


@pytest.mark.parametrize(
    ("export_format", "extensions"),
    [
        (None, {"avro", "csv", "jsonl"}),
        ("csv", {"avro", "csv"}),
        ("json", {"avro", "jsonl"}),
        ("finra-xml", {"avro", "xml"}),
    ],
)
def test_the_export_format_decides_the_files(make_export, export_format, extensions) -> None:
    result = make_export(examination_export_format=export_format)
    written = {p.suffix[1:] for p in (result.directory / "tables").iterdir()}
    assert written == extensions
    assert result.manifest["parameters"]["contract"]["examination_export_format"] == export_format


def test_every_format_holds_the_same_rows(make_export) -> None:
    directory = make_export().directory / "tables"
    with (directory / "reads.avro").open("rb") as f:
        reader = fastavro.reader(f)
        avro_rows = list(reader)
        meta = reader.metadata
    assert meta["cachet.table"] == "reads"
    assert json.loads(meta["cachet.finra.contract"]) == "quotes"
    lines = (directory / "reads.jsonl").read_text().splitlines()
    assert [json.loads(line) for line in lines] == avro_rows
    assert len(avro_rows) == len(_rows(directory.parent, "reads"))


def test_finra_xml_is_well_formed_with_one_row_element_per_row(make_export) -> None:
    directory = make_export(examination_export_format="finra-xml").directory / "tables"
    root = ElementTree.parse(directory / "violations.xml").getroot()
    assert root.get("name") == "violations"
    assert len(root.findall("row")) == 1
    assert root.find("row/reason").text == "stale"


def test_supervisory_review_adds_the_review_queue(make_export) -> None:
    without = make_export("a").directory / "tables"
    assert not (without / "supervisory_review.csv").exists()
    result = make_export("b", supervisory_review=True, books_and_records_category="4511(c)")
    queue = _rows(result.directory, "supervisory_review")
    assert [(q["reason"], q["review_status"]) for q in queue] == [("stale", "pending")]
    assert _rows(result.directory, "violations")[0]["supervisory_review_required"] == "true"
    assert result.manifest["parameters"]["contract"]["books_and_records_category"] == "4511(c)"


def test_exports_are_deterministic(make_export) -> None:
    a, b = make_export("a").directory, make_export("b").directory
    for path in sorted((a / "tables").iterdir()):
        assert path.read_bytes() == (b / "tables" / path.name).read_bytes(), path.name


def test_contract_from_config_only_when_the_log_never_defined_it(
    anchor_keys, exporter_keys
) -> None:
    history = collect(sample_log(anchor_keys, exporter_keys).records, WINDOW)
    config = parse_config(
        {"contracts": {"late": {"max_staleness_ms": 500, "regulatory_classification": "order"}}},
        "test",
    )
    profile = finra_profile(history, "late", config.contracts["late"])
    assert profile.source is ContractSource.CONFIG
    assert profile.regulatory_classification == "order"
    assert finra_profile(history, "quotes", config.contracts["late"]).source is ContractSource.LOG
    with pytest.raises(UnknownContract, match="'nope' was never defined.*quotes"):
        finra_profile(history, "nope", None)


def test_refuses_a_non_empty_directory_and_an_unregistered_signer(
    tmp_path, anchor_keys, exporter_keys, other_keys
) -> None:
    log = sample_log(anchor_keys, exporter_keys)
    busy = tmp_path / "busy"
    busy.mkdir()
    (busy / "stray.txt").write_text("x")
    common = dict(contract="quotes", window=WINDOW, anchor=anchor_keys.public(), clock=lambda: T0)
    with pytest.raises(EvidenceError, match="not empty"):
        export_examination(
            ListSource(log.records), out=busy, identity=EXPORTER, keys=exporter_keys, **common
        )
    with pytest.raises(SignerError, match="no anchor-signed SigningKeyRegistered"):
        export_examination(
            ListSource(log.records),
            out=tmp_path / "x",
            identity=EXPORTER,
            keys=other_keys,
            **common,
        )


def test_a_revoked_exporter_signs_nothing(tmp_path, anchor_keys, exporter_keys) -> None:
    from cachet.ledger.registration import revocation_payload
    from cachet.schemas.events import EventType

    log = sample_log(anchor_keys, exporter_keys)
    log.registry(
        EventType.SIGNING_KEY_REVOKED,
        revocation_payload(EXPORTER, exporter_keys.key_set_id, T0, "key-compromise", anchor_keys),
        T0 + 300 * SEC,
    )
    with pytest.raises(SignerError, match="revoked"):
        export_examination(
            ListSource(log.records),
            contract="quotes",
            window=WINDOW,
            out=tmp_path / "x",
            identity=EXPORTER,
            keys=exporter_keys,
            anchor=anchor_keys.public(),
            clock=lambda: T0 + 500 * SEC,
        )


def test_window_and_times() -> None:
    assert parse_time_us("2026-12-01T14:32:00Z") == parse_time_us("2026-12-01T14:32:00")
    assert parse_time_us("2026-12-01T14:32:00+01:00") == parse_time_us("2026-12-01T13:32:00Z")
    assert parse_time_us("1790000000000000") == T0
    with pytest.raises(WindowError, match="neither ISO 8601"):
        parse_time_us("yesterday")
    with pytest.raises(WindowError, match="empty"):
        Window(T0, T0)
    assert T0 in WINDOW and (T0 + 100 * SEC) not in WINDOW


def test_records_and_tables_refuse_what_they_cannot_claim() -> None:
    from cachet.materializers.evidence.records import Attestation
    from cachet.schemas.events import Event, EventType
    from cachet.topics import Topic

    event = Event(EventType.CACHE_READ, {}, "e", T0, "p@1", 1)
    with pytest.raises(ValueError, match="needs seal proof"):
        EvidenceRecord(event, Topic.READS, 0, 0, b"", Attestation.SEALED)
    with pytest.raises(ValueError, match="takes no seal proof"):
        EvidenceRecord(
            event,
            Topic.READS,
            0,
            0,
            b"",
            Attestation.ANCHOR_SIGNED,
            SealProof("p", 1, 0, "k", 0, b""),
        )
    with pytest.raises(TypeError, match="t.n may not be null"):
        Table.of("t", "T", "", [Column("n", ColumnType.LONG)], [[None]])
    with pytest.raises(TypeError, match="is not long"):
        Table.of("t", "T", "", [Column("n", ColumnType.LONG)], [[True]])


def test_a_contract_definition_that_is_not_json_is_refused(anchor_keys, exporter_keys) -> None:
    log = sample_log(anchor_keys, exporter_keys)
    log.add(
        EventType.CONTRACT_DEFINED,
        {"name": "quotes", "definition_json": "[1]", "definition_hash": h("[1]")},
        T0 + SEC,
        Topic.CONTROL,
    )
    with pytest.raises(EvidenceError, match="ContractDefined .* of 'quotes': definition_json"):
        finra_profile(collect(log.records, WINDOW), "quotes", None)
