"""The README's "In a service" section runs as written, so it cannot rot.

The section holds three code blocks: a ``cachet.toml``, the shell steps that
prepare a deployment, and the Python a service runs. This test takes all
three from README.md: it writes the toml (adding only this test's topic
prefix), runs every ``cachet ...`` step against the session's broker (the
``cachet broker`` step is the one it skips: the broker is the fixture's; a
step ending in ``&`` runs in the background for the whole test) and then the
Python block in a fresh interpreter. Any failing step fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from cachet.topics import TopicNames

pytestmark = pytest.mark.integration

README = Path(__file__).resolve().parents[2] / "README.md"
SECTION = "### In a service"
CLI = [sys.executable, "-m", "cachet.cli.main"]


def readme_blocks() -> dict[str, str]:
    """The section's code blocks by language (exactly one of each)."""
    text = README.read_text()
    start = text.index(SECTION) + len(SECTION)
    end = min(
        (i for i in (text.find("\n## ", start), text.find("\n### ", start)) if i != -1),
        default=len(text),
    )
    blocks: dict[str, str] = {}
    for lang, body in re.findall(r"```(\w+)\n(.*?)```", text[start:end], re.DOTALL):
        assert lang not in blocks, f"two {lang} blocks in the README's {SECTION!r} section"
        blocks[lang] = body
    assert set(blocks) == {"toml", "sh", "python"}, sorted(blocks)
    return blocks


def shell_steps(script: str) -> list[tuple[list[str], bool]]:
    """Each ``cachet`` command of the sh block: (argv after ``cachet``, background)."""
    steps = []
    for line in script.splitlines():
        argv = shlex.split(line, comments=True)
        if not argv:
            continue
        background = argv[-1] == "&"
        argv = argv[:-1] if background else argv
        assert argv[0] == "cachet", f"README step is not a cachet command: {line!r}"
        steps.append((argv[1:], background))
    return steps


@pytest.fixture
def deployment(
    tmp_path: Path, bootstrap_servers: str, topics: TopicNames
) -> Iterator[tuple[Path, dict[str, str]]]:
    """A working directory prepared by the README's own steps; yields it and
    the environment the snippet runs in."""
    blocks = readme_blocks()
    # The README's toml plus the one thing only this test knows: its own
    # topics on the shared broker (a [kafka] table in the README would make
    # this a duplicate table, and the test would say so).
    (tmp_path / "cachet.toml").write_text(
        blocks["toml"] + f'\n[kafka]\ntopic_prefix = "{topics.prefix}"\n'
    )
    env = {
        **os.environ,
        "CACHET_BOOTSTRAP_SERVERS": bootstrap_servers,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("CACHET_CONFIG", None)
    env.pop("CACHET_KEK", None)
    background: list[subprocess.Popen[bytes]] = []
    try:
        for argv, in_background in shell_steps(blocks["sh"]):
            if argv[0] == "broker":
                continue  # the session's broker stands in for it
            log = tmp_path / f"{'-'.join(argv[:2])}.log"
            if in_background:
                background.append(
                    subprocess.Popen(
                        [*CLI, *argv],
                        cwd=tmp_path,
                        env=env,
                        stdout=log.open("wb"),
                        stderr=subprocess.STDOUT,
                    )
                )
                continue
            done = subprocess.run(
                [*CLI, *argv], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
            )
            assert done.returncode == 0, (
                f"README step `cachet {shlex.join(argv)}` failed:\n{done.stdout}{done.stderr}"
            )
        yield tmp_path, env
        for proc in background:
            assert proc.poll() is None, f"README background step {proc.args} exited early"
    finally:
        for proc in background:
            proc.terminate()
            try:
                proc.wait(20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_the_service_snippet_runs_as_written(deployment: tuple[Path, dict[str, str]]) -> None:
    cwd, env = deployment
    snippet = readme_blocks()["python"]
    done = subprocess.run(
        [sys.executable, "-c", snippet],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.returncode == 0, f"the README snippet failed:\n{done.stdout}\n{done.stderr}"
    # The hit branch ran: the owner read back the plaintext it wrote.
    assert done.stdout.startswith("b'189.12' FreshnessProof("), done.stdout


def test_the_snippet_uses_the_documented_entry_point() -> None:
    snippet = readme_blocks()["python"]
    assert "cachet.open(" in snippet
    # The snippet is the public API only: no reaching into the layers below.
    assert not re.search(r"^\s*(from|import) cachet\.", snippet, re.MULTILINE), snippet
