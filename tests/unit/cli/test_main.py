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
    good = Path(__file__).parents[2] / "fixtures" / "seeds" / "001_03aa5eb6891403bc_1.toml"
    assert main(["config", "check", str(good), "--json"]) == 0
    assert '"ok": true' in capsys.readouterr().out


def test_unknown_benchmark_is_refused(capsys) -> None:
    assert main(["bench", "nope"]) == 2
    assert "unknown benchmark 'nope'" in capsys.readouterr().err


@pytest.fixture
def clean_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """No cachet.toml in the working directory, no CACHET_* variables."""
    monkeypatch.chdir(tmp_path)
    for name in ("CACHET_CONFIG", "CACHET_BOOTSTRAP_SERVERS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


@pytest.mark.parametrize("before", [True, False], ids=["before", "after"])
def test_config_option_works_before_or_after_the_subcommand(
    clean_env: Path, capsys, before: bool
) -> None:
    bad = clean_env / "bad.toml"
    bad.write_text("[contracts.quotes]\nmax_staleness_ms = -5\n")
    option = ["--config", str(bad)]
    argv = [*option, "config", "check"] if before else ["config", "check", *option]
    assert main(argv) == 1
    assert str(bad) in capsys.readouterr().err


@pytest.mark.parametrize(
    ("argv", "servers"),
    [
        (["--bootstrap-servers", "a:1", "topics", "create"], "a:1"),
        (["topics", "--bootstrap-servers", "a:1", "create"], "a:1"),
        (["topics", "create", "--bootstrap-servers", "a:1"], "a:1"),
        (["--bootstrap-servers", "a:1", "topics", "create", "--bootstrap-servers", "b:2"], "b:2"),
        (["-v", "--bootstrap-servers", "a:1", "node", "run", "--http-port", "1"], "a:1"),
    ],
)
def test_bootstrap_servers_work_in_every_position(
    clean_env: Path, argv: list[str], servers: str
) -> None:
    from cachet.cli.context import CliContext

    args = build_parser().parse_args(argv)
    assert CliContext.from_args(args).bootstrap_servers == servers


def test_verbose_counts_before_the_subcommand(clean_env: Path) -> None:
    assert build_parser().parse_args(["-vv", "config", "check"]).verbose == 2
    assert build_parser().parse_args(["config", "check"]).verbose == 0


def test_an_impossible_http_port_is_one_line(clean_env: Path, capsys) -> None:
    assert main(["node", "run", "--http-port", "99999"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err == "cachet: error: --http-port 99999: not a TCP port (0-65535)"


def test_a_busy_http_port_is_one_line(clean_env: Path, capsys) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        assert main(["node", "run", "--http-port", str(port)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert f"--http-port {port}: cannot serve HTTP on 127.0.0.1:{port}" in err
    assert "in use" in err
