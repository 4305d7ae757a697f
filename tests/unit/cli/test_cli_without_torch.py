"""The CLI on a machine without the ``kvscrub`` extra (no torch).

``./run demo`` installs only the ``embedded`` extra: every command but the
scrub worker must work there, and the scrub worker must say which extra to
install instead of printing a traceback. torch is hidden from a child
process by a ``sitecustomize`` that refuses to import it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cachet.cli.main import SUBCOMMANDS, build_parser
from tests.unit.cli.test_main import _commands

HIDE_TORCH = '''
import sys


class _NoTorch:
    """Pretend the kvscrub extra is not installed."""

    def find_spec(self, name, path=None, target=None):
        if name.partition(".")[0] == "torch":
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _NoTorch())
'''

INSTALL_HINT = "pip install 'cachet-ledger[kvscrub]'"


def _env(tmp_path: Path, hide_torch: bool = True) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CACHET_")}
    if hide_torch:
        (tmp_path / "sitecustomize.py").write_text(HIDE_TORCH)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(tmp_path), env.get("PYTHONPATH")) if p)
    return env


def _cachet(tmp_path: Path, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cachet.cli.main", *args],
        cwd=tmp_path,
        env=_env(tmp_path),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _python(tmp_path: Path, code: str, hide_torch: bool = True) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env=_env(tmp_path, hide_torch),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_the_hiding_works(tmp_path: Path) -> None:
    out = _python(
        tmp_path,
        "try:\n    import torch\nexcept ImportError as e:\n    print('hidden', e.name)",
    )
    assert out.strip() == "hidden torch"


def test_importing_cachet_and_every_cli_module_does_not_import_torch(tmp_path: Path) -> None:
    # torch is NOT hidden here: an import of it would succeed and show.
    modules = ["cachet", "cachet.cli.main", *(c.module for c in SUBCOMMANDS)]
    code = (
        "import importlib, sys\n"
        f"for m in {modules!r}:\n"
        "    importlib.import_module(m)\n"
        "print(sorted(m for m in sys.modules if m.partition('.')[0] == 'torch'))"
    )
    assert _python(tmp_path, code, hide_torch=False).strip() == "[]"


def test_help_of_every_command_works_without_torch(tmp_path: Path) -> None:
    commands = [list(c) for c in _commands(build_parser())]
    assert ["kvscrub", "worker"] in commands and len(commands) > 10
    code = (
        "import contextlib, io, json, sys\n"
        "from cachet.cli.main import main\n"
        "results = {}\n"
        f"for cmd in {commands!r}:\n"
        "    out, err = io.StringIO(), io.StringIO()\n"
        "    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):\n"
        "        try:\n"
        "            main([*cmd, '--help'])\n"
        "            code = 'returned'\n"
        "        except SystemExit as e:\n"
        "            code = e.code\n"
        "    results[' '.join(cmd)] = [code, out.getvalue()[:14], err.getvalue()]\n"
        "print(json.dumps(results))\n"
    )
    results = json.loads(_python(tmp_path, code))
    assert len(results) == len(commands)
    for command, (code, out, err) in results.items():
        assert (code, out, err) == (0, "usage: cachet ", ""), command


def test_cachet_help_through_the_entry_point(tmp_path: Path) -> None:
    done = _cachet(tmp_path, "--help")
    assert done.returncode == 0, done.stderr
    assert "kvscrub" in done.stdout and "demo" in done.stdout


@pytest.mark.parametrize(
    "args",
    [("kvscrub", "worker"), ("kvscrub", "worker", "--device", "cpu"), ("bench", "scrub")],
    ids=" ".join,
)
def test_a_command_needing_torch_names_the_extra(tmp_path: Path, args: tuple[str, ...]) -> None:
    done = _cachet(tmp_path, *args)
    assert done.returncode == 2
    assert done.stdout == "", "nothing may run before the check (no keys, no broker)"
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1, done.stderr
    assert lines[0].startswith(f"cachet: error: cachet {args[0]} needs the 'kvscrub' extra")
    assert INSTALL_HINT in lines[0]


@pytest.mark.integration
def test_the_demo_runs_without_torch(tmp_path: Path, bootstrap_servers: str) -> None:
    done = _cachet(tmp_path, "demo", "--bootstrap-servers", bootstrap_servers, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "demo complete" in done.stdout
    assert "Traceback" not in done.stderr
