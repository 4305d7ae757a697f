"""Tampering helpers: what an attacker with write access to the files does."""

from __future__ import annotations

from pathlib import Path

import fastavro

from cachet.materializers.archive.segment import PARSED_RECORD_SCHEMA, read_segment, segment_files
from cachet.materializers.archive.verify import verify_archive
from cachet.schemas.codec import EventCodec

from .conftest import ARCHIVER, NAMES


def verify(d: Path, anchor_keys, **kw):
    return verify_archive(d, anchor=anchor_keys.public(), names=NAMES, archive_identity=ARCHIVER, codec=EventCodec(), **kw)  # fmt: skip


def seg(d: Path, i: int) -> Path:
    return segment_files(d / "primary")[i]


def flip(path: Path, needle: bytes, at: int = 0) -> None:
    data = bytearray(path.read_bytes())
    pos = data.find(needle)
    assert pos >= 0 and data.find(needle, pos + 1) < 0, "needle must occur exactly once"
    data[pos + at] ^= 0x01
    path.write_bytes(bytes(data))


def rewrite(path: Path, edit, meta: dict[str, str] | None = None) -> None:
    """The attacker's segment: same header metadata (unless ``meta`` says
    otherwise), records edited, a valid OCF."""
    info, records = read_segment(path)
    with open(path, "rb") as fo:
        kept = {k: v for k, v in fastavro.reader(fo).metadata.items() if k.startswith("cachet.")}
    meta = {**kept, **(meta or {})}
    rows = [r.to_avro() for r in edit(records)]
    with open(path, "wb") as fo:
        fastavro.writer(fo, PARSED_RECORD_SCHEMA, rows, metadata=meta)
