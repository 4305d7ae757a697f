"""The command line: every subcommand has working --help; errors are one
line naming what was wrong."""

from __future__ import annotations

import argparse
from pathlib import Path

import pytest

from cachet.cli.main import build_parser, main


def _commands(
    parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()
) -> list[tuple[str, ...]]:
    found = [prefix]
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                found += _commands(sub, (*prefix, name))
    return found


COMMANDS = _commands(build_parser())


def test_the_tree_has_every_documented_command() -> None:
    top = {c[0] for c in COMMANDS if c}
    assert {
        "broker",
        "topics",
        "config",
        "keys",
        "node",
        "processors",
        "kvscrub",
        "cab",
        "demo",
        "bench",
    } <= top
    assert ("keys", "rotate") in COMMANDS and ("cab", "verify") in COMMANDS


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "cachet")
def test_help(command: tuple[str, ...], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([*command, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: cachet") and "--config" in out


def test_bad_config_is_one_line_naming_file_and_key(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "cachet.toml"
    bad.write_text("[contracts.quotes]\nmax_staleness_ms = -5\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert str(bad) in err and "contracts.quotes.max_staleness_ms" in err


def test_unknown_key_suggests_the_right_one(tmp_path: Path, capsys) -> None:
    bad = tmp_path / "cachet.toml"
    bad.write_text("[kafka]\nbootstrap_server = 'x:1'\n")
    assert main(["config", "check", str(bad)]) == 1
    err = capsys.readouterr().err
    assert "kafka.bootstrap_server" in err and "bootstrap_servers" in err


def test_good_config_checks(tmp_path: Path, capsys) -> None:
    good = Path(__file__).parents[1] / "fixtures" / "seeds" / "001_03aa5eb6891403bc_1.toml"
    assert main(["config", "check", str(good), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_unknown_benchmark_is_refused(capsys) -> None:
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err
