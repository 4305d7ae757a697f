"""``import cachet`` stays light; its public names load on first use (PEP 562)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

import cachet

HEAVY = ("confluent_kafka", "rocksdict", "torch")


def _modules_after(code: str) -> list[str]:
    """The modules loaded in a fresh interpreter after running ``code``."""
    probe = f"import sys\n{code}\nimport json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True, timeout=60
    )
    return json.loads(out.stdout.splitlines()[-1])


def test_import_cachet_imports_no_kafka_client_rocksdb_or_torch() -> None:
    loaded = set(_modules_after("import cachet"))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    # Nothing of the facade or the layers below it either: only the package.
    assert sorted(m for m in loaded if m.startswith("cachet.")) == []


def test_a_light_name_stays_light_and_the_facade_loads_on_use() -> None:
    loaded = set(_modules_after("import cachet\ncachet.Role\ncachet.MissReason"))
    assert not loaded & set(HEAVY), sorted(loaded & set(HEAVY))
    loaded = set(_modules_after("import cachet\ncachet.open"))
    assert {"cachet.api", "confluent_kafka"} <= loaded


def test_every_public_name_resolves_to_its_home() -> None:
    for name in cachet.__all__:
        value = getattr(cachet, name)
        assert getattr(value, "__name__", name) == name, name
    assert cachet.open.__module__ == "cachet.api"
    assert cachet.Cache.__module__ == "cachet.api"


def test_an_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        cachet.no_such_name  # noqa: B018 - the lookup is the test


def test_type_checking_block_all_and_lazy_table_agree() -> None:
    """What type checkers see, what ``*`` exports and what loads lazily are
    the same names: one cannot drift from the others."""
    source = Path(cachet.__file__).read_text()
    tree = ast.parse(source)
    checked: set[str] = set()
    for node in tree.body:
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for imp in node.body:
                assert isinstance(imp, ast.ImportFrom)
                checked |= {a.asname or a.name for a in imp.names}
                for a in imp.names:
                    assert cachet._HOME[a.asname or a.name] == imp.module, a.name
    assert checked == set(cachet.__all__) == set(cachet._HOME)
    assert set(dir(cachet)) >= set(cachet.__all__)
