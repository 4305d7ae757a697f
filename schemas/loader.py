"""Loading Cachet's Avro schema sets and fingerprinting them.

A schema set is every ``*.avsc`` in one directory: the current set
(``schemas/*.avsc``) or a released one (``schemas/history/*/``). Loading
inlines each named type at its first use, so the envelope is one
self-contained schema whose Parsing Canonical Form, and so whose CRC-64-AVRO
fingerprint, does not depend on how the types are spread over files. The
wire codec (:mod:`cachet.schemas.codec`) names a writer schema by that fingerprint.
"""

from __future__ import annotations

import json
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

from fastavro import parse_schema
from fastavro.schema import SchemaParseException, to_parsing_canonical_form

from cachet.errors import CachetError

__all__ = [
    "ENVELOPE_NAME",
    "SCHEMA_DIR",
    "SchemaLoadError",
    "SchemaSet",
    "crc64_avro",
    "envelope_json",
    "history_dirs",
    "load_schema_set",
    "payload_branches",
    "schema_set_from_json",
]

SCHEMA_DIR = Path(__file__).resolve().parent
ENVELOPE_NAME = "cachet.events.Envelope"

_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})
_NAMED = frozenset({"record", "error", "enum", "fixed"})
_CRC64_EMPTY = 0xC15D213AA4D7A795


def _crc64_table() -> tuple[int, ...]:
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (_CRC64_EMPTY & -(fp & 1))
        table.append(fp)
    return tuple(table)


_CRC64_TABLE = _crc64_table()


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO (Rabin) fingerprint of ``data``, as the Avro spec defines it."""
    fp = _CRC64_EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _CRC64_TABLE[(fp ^ byte) & 0xFF]
    return fp


class SchemaLoadError(CachetError):
    """A schema directory that does not hold a consistent, complete schema set."""


@dataclass(frozen=True, slots=True)
class SchemaSet:
    """One complete envelope schema: the current set or a released one."""

    source: Path
    envelope: dict[str, Any]  # self-contained: every named type inlined at first use
    canonical_form: str  # Avro Parsing Canonical Form of ``envelope``
    fingerprint: bytes  # 8 bytes, little-endian CRC-64-AVRO of canonical_form
    parsed: dict[str, Any]  # fastavro-parsed ``envelope`` with logical types stripped
    payloads: dict[str, dict[str, Any]]  # payload full name -> parsed self-contained record


def _fullname(name: str, namespace: str) -> str:
    return name if "." in name or not namespace else f"{namespace}.{name}"


def _collect(schema: Any, namespace: str, into: dict[str, dict[str, Any]], source: Path) -> None:
    """Registers every named type defined in ``schema`` under its full name."""
    if isinstance(schema, list):
        for branch in schema:
            _collect(branch, namespace, into, source)
    elif isinstance(schema, dict):
        kind = schema.get("type")
        if kind in _NAMED:
            full = _fullname(schema["name"], schema.get("namespace", namespace))
            if full in into:
                raise SchemaLoadError(f"{source}: {full} is defined twice")
            into[full] = {**schema, "name": full, "namespace": full.rpartition(".")[0]}
            for field in schema.get("fields", ()):
                _collect(field["type"], full.rpartition(".")[0], into, source)
        elif kind == "array":
            _collect(schema["items"], namespace, into, source)
        elif kind == "map":
            _collect(schema["values"], namespace, into, source)
        elif isinstance(kind, dict | list):
            _collect(kind, namespace, into, source)


def _inline(
    schema: Any, namespace: str, registry: dict[str, dict[str, Any]], defined: set[str]
) -> Any:
    """Rewrites ``schema`` so each named type is defined at its first use.

    Definitions come from ``registry`` (every .avsc of the set); names are
    written fully qualified, so the result is one self-contained schema whose
    canonical form (and so fingerprint) does not depend on file layout.
    """
    if isinstance(schema, str):
        if schema in _PRIMITIVES:
            return schema
        full = _fullname(schema, namespace)
        if full in defined:
            return full
        if full not in registry:
            raise SchemaLoadError(f"unknown type {schema!r} (as {full})")
        return _inline(registry[full], namespace, registry, defined)
    if isinstance(schema, list):
        return [_inline(branch, namespace, registry, defined) for branch in schema]
    kind = schema["type"]
    if kind in _NAMED:
        full = _fullname(schema["name"], schema.get("namespace", namespace))
        if full in defined:
            return full
        defined.add(full)
        out = {k: v for k, v in schema.items() if k not in ("namespace", "fields")}
        out["name"] = full
        if "fields" in schema:
            child_ns = full.rpartition(".")[0]
            out["fields"] = [
                {**field, "type": _inline(field["type"], child_ns, registry, defined)}
                for field in schema["fields"]
            ]
        return out
    if kind == "array":
        return {**schema, "items": _inline(schema["items"], namespace, registry, defined)}
    if kind == "map":
        return {**schema, "values": _inline(schema["values"], namespace, registry, defined)}
    if isinstance(kind, dict | list):
        return _inline(kind, namespace, registry, defined)
    return dict(schema)


def _strip_logical_types(schema: Any) -> Any:
    """Drops ``logicalType`` annotations: the codec works on the underlying types.

    Logical types stay in the .avsc files (and are ignored by the canonical
    form, so the fingerprint is unchanged) for other Avro readers; the Event
    API uses int microseconds and UUID text, and converting through datetime
    and uuid.UUID would cost time and reject values the wire type allows.
    """
    if isinstance(schema, list):
        return [_strip_logical_types(branch) for branch in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: v for k, v in schema.items() if k != "logicalType"}
    if "fields" in out:
        out["fields"] = [{**f, "type": _strip_logical_types(f["type"])} for f in out["fields"]]
    for key in ("items", "values"):
        if key in out:
            out[key] = _strip_logical_types(out[key])
    if isinstance(out.get("type"), dict | list):
        out["type"] = _strip_logical_types(out["type"])
    if len(out) == 1 and isinstance(out["type"], str) and out["type"] in _PRIMITIVES:
        return out["type"]
    return out


def load_schema_set(directory: Path) -> SchemaSet:
    """Loads every ``*.avsc`` in ``directory`` into one self-contained envelope."""
    registry: dict[str, dict[str, Any]] = {}
    files = sorted(directory.glob("*.avsc"))
    if not files:
        raise SchemaLoadError(f"{directory}: no .avsc files")
    for path in files:
        try:
            schema = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SchemaLoadError(f"{path}: {exc}") from exc
        _collect(schema, "", registry, path)
    return _build(directory, registry)


def schema_set_from_json(schema_json: str, source: str) -> SchemaSet:
    """The schema set whose self-contained envelope is ``schema_json``.

    This is how a set published on the control topic (``SchemaSetPublished.
    schema_json``) is read: one JSON document, the envelope with every named
    type defined where first used, as :func:`envelope_json` writes it.
    ``source`` names where it came from in errors (e.g. the release).
    """
    origin = Path(source)
    try:
        schema = json.loads(schema_json)
    except ValueError as exc:
        raise SchemaLoadError(f"{source}: schema is not JSON: {exc}") from exc
    if not isinstance(schema, dict) or schema.get("type") != "record":
        raise SchemaLoadError(f"{source}: schema is not an Avro record")
    registry: dict[str, dict[str, Any]] = {}
    try:
        _collect(schema, "", registry, origin)
    except (KeyError, TypeError, AttributeError, RecursionError) as exc:
        raise SchemaLoadError(f"{source}: malformed schema: {exc!r}") from exc
    return _build(origin, registry)


def envelope_json(schema_set: SchemaSet) -> str:
    """The set's self-contained envelope as one compact JSON document (docs and
    logical types kept): what a SchemaSetPublished event carries."""
    return json.dumps(schema_set.envelope, separators=(",", ":"), ensure_ascii=False)


def _build(source: Path, registry: dict[str, dict[str, Any]]) -> SchemaSet:
    """The schema set of the named types in ``registry``, rooted at the envelope."""
    if ENVELOPE_NAME not in registry:
        raise SchemaLoadError(f"{source}: no {ENVELOPE_NAME} defined")
    try:
        envelope = _inline(ENVELOPE_NAME, "", registry, set())
        canonical = to_parsing_canonical_form(envelope)
        parsed = cast(dict[str, Any], parse_schema(_strip_logical_types(envelope)))
        payloads = {
            branch["name"]: cast(
                dict[str, Any],
                parse_schema(_strip_logical_types(_inline(branch["name"], "", registry, set()))),
            )
            for branch in payload_branches(envelope)
        }
    except (
        SchemaParseException,
        ValueError,
        KeyError,
        TypeError,
        AttributeError,
        RecursionError,
    ) as exc:
        raise SchemaLoadError(f"{source}: invalid envelope schema: {exc!r}") from exc
    fingerprint = struct.pack("<Q", crc64_avro(canonical.encode("utf-8")))
    return SchemaSet(source, envelope, canonical, fingerprint, parsed, payloads)


def history_dirs(schema_dir: Path) -> list[Path]:
    """The released schema sets under ``schema_dir/history``, oldest name first."""
    root = schema_dir / "history"
    return sorted(p for p in root.iterdir() if p.is_dir()) if root.is_dir() else []


def payload_branches(envelope: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """The payload union's record schemas, in the envelope's branch order."""
    for field in envelope["fields"]:
        if field["name"] == "payload":
            yield from field["type"]
            return
    raise SchemaLoadError("envelope has no payload field")
