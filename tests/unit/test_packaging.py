"""The distribution installs one import name, `cachet`, and nothing else.

`producers/`, `processors/`, `materializers/`, `schemas/` and `ops/` are
top-level folders of the repository (the design card's layout) but install as
`cachet.producers`, ...: `ops`, `schemas` and `processors` are names of other
PyPI projects, and whichever of two distributions owning a name is installed
last silently overwrites the other.
"""

from __future__ import annotations

import importlib.metadata
import os
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
MAPPED = ("producers", "processors", "materializers", "schemas", "ops")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_package_list_covers_every_package_in_the_tree() -> None:
    """A package missing from the explicit list would silently not install."""
    tool = _pyproject()["tool"]["setuptools"]
    package_dir: dict[str, str] = tool["package-dir"]
    found = set()
    for name, folder in package_dir.items():
        for init in (ROOT / folder).rglob("__init__.py"):
            rel = init.parent.relative_to(ROOT / folder)
            if any(part in {"__pycache__"} for part in rel.parts):
                continue
            dotted = ".".join((name, *rel.parts)) if rel.parts else name
            # A subfolder of cachet/ that is itself mapped elsewhere is not ours here.
            if not any(
                dotted.startswith(other + ".") or dotted == other
                for other in package_dir
                if other != name and other.startswith(name + ".")
            ):
                found.add(dotted)
    assert set(tool["packages"]) == found
    assert {f"cachet.{m}" for m in MAPPED} <= set(package_dir)


def test_installed_distribution_has_one_top_level_name() -> None:
    dist = importlib.metadata.distribution("cachet-ledger")
    top_level = (dist.read_text("top_level.txt") or "").split()
    assert top_level == ["cachet"]


@pytest.mark.slow
def test_built_wheel_holds_only_the_cachet_package(tmp_path: Path) -> None:
    """What `pip install cachet-ledger` puts into site-packages: only cachet/."""
    src = tmp_path / "src"
    files = subprocess.run(
        ["git", "ls-files", "-co", "--exclude-standard"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    for f in files:
        if (ROOT / f).is_file():
            (src / f).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / f, src / f)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--quiet",
            "--no-deps",
            "--no-build-isolation",
            "-w",
            str(tmp_path / "dist"),
            str(src),
        ],
        check=True,
        capture_output=True,
    )
    (wheel,) = (tmp_path / "dist").glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    tops = {n.split("/", 1)[0] for n in names}
    assert tops == {"cachet", "cachet_ledger-0.1.0.dist-info"}
    for mapped in MAPPED:
        assert any(n.startswith(f"cachet/{mapped}/") for n in names), mapped
    assert "cachet/py.typed" in names
    assert "cachet/schemas/Envelope.avsc" in names
    assert any(n.startswith("cachet/schemas/history/") and n.endswith(".avsc") for n in names)


def test_old_top_level_names_are_not_importable(tmp_path: Path) -> None:
    """Outside the repository, `import ops` (Canonical's ops, say) is not ours."""
    code = (
        "import importlib.util, json, sys\n"
        f"names = {list(MAPPED)!r}\n"
        "out = {}\n"
        "for n in names:\n"
        "    spec = importlib.util.find_spec(n)\n"
        "    out[n] = spec.origin if spec else None\n"
        "print(json.dumps(out))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    res = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert res.returncode == 0, res.stderr
    import json

    for name, origin in json.loads(res.stdout).items():
        assert origin is None or not str(origin).startswith(str(ROOT)), (name, origin)
