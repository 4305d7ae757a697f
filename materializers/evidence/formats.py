"""Writing tables: Avro Object Container Files, CSV, JSON Lines, XML.

Every file is deterministic for its table: the Avro sync marker is derived
from the table's name and rows (fastavro would draw a random one), CSV and
JSONL follow the column order, so the same history exports the same bytes
and the manifest's hashes can be recomputed by anyone who re-runs it.

* Avro OCF (``<table>.avro``): the table's schema (every column documented),
  null codec, metadata ``cachet.table``, ``cachet.title`` and whatever the
  export adds (the contract's FINRA fields).
* CSV (``<table>.csv``): RFC 4180, a header row, ``\\r\\n`` line ends, empty
  cell for null, ``true``/``false`` for booleans.
* JSONL (``<table>.jsonl``): one JSON object per row, keys in column order.
* XML (``<table>.xml``, the contract's ``finra-xml``): ``<table name=...>``
  with one ``<row>`` per row and one element per non-null cell.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
from collections.abc import Mapping
from pathlib import Path
from xml.etree import ElementTree

import fastavro

from cachet.materializers.evidence.finra import OutputFormat
from cachet.materializers.evidence.tables import Table, Value

__all__ = ["EXTENSIONS", "render", "write_table"]

EXTENSIONS = {
    OutputFormat.AVRO: "avro",
    OutputFormat.CSV: "csv",
    OutputFormat.JSONL: "jsonl",
    OutputFormat.XML: "xml",
}


def _sync_marker(table: Table) -> bytes:
    digest = hashlib.sha3_256(b"cachet/evidence-avro-sync/v1\x00" + table.name.encode())
    for row in table.rows:
        digest.update(json.dumps(row, separators=(",", ":")).encode())
    return digest.digest()[:16]


def _avro(table: Table, metadata: Mapping[str, str]) -> bytes:
    out = io.BytesIO()
    fastavro.writer(
        out,
        fastavro.parse_schema(table.avro_schema()),
        table.dicts(),
        metadata={"cachet.table": table.name, "cachet.title": table.title, **metadata},
        sync_marker=_sync_marker(table),
    )
    return out.getvalue()


def _cell(value: Value) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _csv(table: Table) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow([c.name for c in table.columns])
    for row in table.rows:
        writer.writerow([_cell(v) for v in row])
    return out.getvalue().encode("utf-8")


def _jsonl(table: Table) -> bytes:
    return "".join(
        json.dumps(d, ensure_ascii=False, separators=(",", ":")) + "\n" for d in table.dicts()
    ).encode("utf-8")


def _xml(table: Table, metadata: Mapping[str, str]) -> bytes:
    root = ElementTree.Element("table", {"name": table.name, "title": table.title})
    for key, text in sorted(metadata.items()):
        ElementTree.SubElement(root, "meta", {"name": key}).text = text
    for row in table.rows:
        element = ElementTree.SubElement(root, "row")
        for column, value in zip(table.columns, row, strict=True):
            if value is not None:
                ElementTree.SubElement(element, column.name).text = _cell(value)
    ElementTree.indent(root)
    return ElementTree.tostring(root, encoding="utf-8", xml_declaration=True) + b"\n"


def render(table: Table, fmt: OutputFormat, metadata: Mapping[str, str]) -> bytes:
    """The bytes of ``table`` in ``fmt``."""
    if fmt is OutputFormat.AVRO:
        return _avro(table, metadata)
    if fmt is OutputFormat.CSV:
        return _csv(table)
    if fmt is OutputFormat.JSONL:
        return _jsonl(table)
    return _xml(table, metadata)


def write_table(
    table: Table, fmt: OutputFormat, directory: Path, metadata: Mapping[str, str]
) -> Path:
    """Write ``table`` as ``directory/<name>.<ext>``; returns the path."""
    path = directory / f"{table.name}.{EXTENSIONS[fmt]}"
    path.write_bytes(render(table, fmt, metadata))
    return path
