"""`cachet export verify` (offline) and the export commands' argument checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachet.cli.main import main
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.cab import anchor_fingerprint


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "cachet.toml"
    path.write_text('[node]\nnode_id = "exporter-1"\n')
    return path


@pytest.mark.tamper
def test_verify_exits_0_for_a_genuine_export_and_1_after_one_byte(
    make_export, anchor_keys, config, tmp_path, capsys
) -> None:
    directory = make_export().directory
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(anchor_keys.public()))
    argv = [
        "export",
        "verify",
        str(directory),
        "--anchor",
        str(anchor_file),
        "--config",
        str(config),
    ]
    assert main(argv) == 0
    assert capsys.readouterr().out.strip().endswith("VERIFIED")
    report = directory / "report.html"
    data = bytearray(report.read_bytes())
    data[100] ^= 0x20
    report.write_bytes(bytes(data))
    assert main([*argv, "--json"]) == 1
    out = json.loads(capsys.readouterr().out)
    assert out["ok"] is False
    assert [c["check"] for c in out["checks"] if not c["passed"]] == ["files"]


def test_verify_pins_by_fingerprint_and_says_when_nothing_is_pinned(
    make_export, anchor_keys, config, capsys
) -> None:
    directory = make_export().directory
    base = ["export", "verify", str(directory), "--config", str(config)]
    fingerprint = anchor_fingerprint(anchor_keys.public())
    assert main([*base, "--anchor-fingerprint", fingerprint]) == 0
    capsys.readouterr()
    assert main(base) == 1
    assert "no anchor pinned" in capsys.readouterr().out


def test_bad_times_and_missing_directories_are_one_line_errors(config, tmp_path, capsys) -> None:
    assert main(["export", "verify", str(tmp_path / "nope"), "--config", str(config)]) == 2
    assert "does not exist" in capsys.readouterr().err
    argv = ["export", "soc2", "--from", "yesterday", "--to", "now", "--out", str(tmp_path / "o")]
    # The window is checked before anything is read (no broker, no keystore here).
    assert main([*argv, "--config", str(config), "--anchor-file", str(tmp_path / "none.json")]) == 2
    assert "time 'yesterday' is neither ISO 8601" in capsys.readouterr().err
