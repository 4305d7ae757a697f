"""A schema set no codec ships, for the tests of learning schema sets."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from cachet.schemas.loader import SCHEMA_DIR

# The ScrubTrigger symbol the newer set appends.
NEW_SYMBOL = "POLICY_CHANGE"


def newer_schema_dir(root: Path) -> Path:
    """The current set, with ``NEW_SYMBOL`` appended to ScrubTrigger, under ``root``."""
    directory = root / "newer"
    directory.mkdir()
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, directory / path.name)
    trigger = directory / "ScrubTrigger.avsc"
    schema = json.loads(trigger.read_text(encoding="utf-8"))
    schema["symbols"].append(NEW_SYMBOL)
    trigger.write_text(json.dumps(schema), encoding="utf-8")
    return directory
