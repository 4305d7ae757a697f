"""The ``[archive]`` section of cachet.toml, and the settings the archive takes from it."""

from __future__ import annotations

from pathlib import Path

import pytest

from cachet.config import parse_config
from cachet.config.errors import ConfigError
from cachet.materializers.archive.archiver import ArchiveSettings


def test_defaults_and_archive_dir_from_audit() -> None:
    config = parse_config({"audit": {"archive_dir": "/data/archive"}})
    a = config.archive
    assert (a.backup_dir, a.segment_max_bytes, a.segment_max_age_ms, a.verify_interval_ms) == (None, 64 << 20, 60_000, 3_600_000)  # fmt: skip
    assert (a.identity, a.codec, a.health_port) == (None, "null", 0)
    s = ArchiveSettings.from_config(config)
    assert (s.directory, s.backup_dir, s.segment_max_age_s) == (Path("/data/archive"), None, 60.0)


def test_values_with_units() -> None:
    a = parse_config(
        {
            "archive": {
                "backup_dir": "/b",
                "segment_max_age": "2s",
                "verify_interval": "15m",
                "identity": "arch-1",
                "codec": "deflate",
            }
        }  # fmt: skip
    ).archive
    assert (a.backup_dir, a.segment_max_age_ms, a.verify_interval_ms, a.identity, a.codec) == (Path("/b"), 2000, 900_000, "arch-1", "deflate")  # fmt: skip
    assert parse_config({"archive": {"verify_interval": 0}}).archive.verify_interval_ms == 0


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"codec": "zstd"}, "archive.codec"),
        ({"segment_max_bytes": 10}, "archive.segment_max_bytes"),
        ({"identity": "bad id!"}, "archive.identity"),
        ({"segment_max_age": 0}, "archive.segment_max_age"),
        ({"backupdir": "/x"}, "archive.backupdir"),
    ],
)
def test_bad_values_are_named(table: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_config({"archive": table})
