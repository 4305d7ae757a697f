"""The typed payload classes match the .avsc files exactly and round-trip.

The schema files are the contract; ``cachet.schemas.payloads`` is their
Python mirror. :func:`schema_mismatches` walks every payload record of a
schema set (read with ``cachet.schemas.loader``) next to its class: field
names and order, optionality and defaults, nested record classes, enum
symbols. The mutation tests prove the walk notices a schema change made
without the class (a field added, a symbol added, a default dropped, a type
changed).
"""

from __future__ import annotations

import dataclasses
import enum
import json
import shutil
import types
import typing
from pathlib import Path
from typing import Any

import pytest

from cachet.config.enums import InvalidationMode, Role, ScrubMethod, parse_enum
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, new_event
from cachet.schemas.loader import SCHEMA_DIR, SchemaSet, load_schema_set, payload_branches
from cachet.schemas.payloads import (
    PAYLOAD_CLASSES,
    RECORD_CLASSES,
    WIRE_ENUMS,
    AuthorityKind,
    CacheRead,
    ErasureScope,
    ReadOutcome,
    RoleGranted,
    ScrubTrigger,
    StateTransitioned,
    TransitionAuthority,
)
from cachet.verdict import EntryState

_PRIMITIVES: dict[str, type] = {
    "bytes": bytes,
    "string": str,
    "int": int,
    "long": int,
    "float": float,
    "double": float,
    "boolean": bool,
}


# --------------------------------------------------------------------------- the walk


def _check_type(
    annotation: Any, schema: Any, where: str, named: dict[str, Any], problems: list[str]
) -> None:
    """Appends to ``problems`` every way ``annotation`` does not mirror ``schema``."""
    if isinstance(schema, str) and schema in _PRIMITIVES:
        if annotation is not _PRIMITIVES[schema]:
            problems.append(f"{where}: {annotation!r} for Avro {schema}")
        return
    if isinstance(schema, str):  # a named type defined earlier in this record
        _check_type(annotation, named[schema], where, named, problems)
        return
    if isinstance(schema, list):
        args = typing.get_args(annotation)
        origin = typing.get_origin(annotation)
        branches = [b for b in schema if b != "null"]
        if "null" not in schema or len(branches) != 1:
            problems.append(f"{where}: union {schema} is not [null, T]")
        elif origin not in (typing.Union, types.UnionType) or type(None) not in args:
            problems.append(f"{where}: {annotation!r} for optional {branches[0]}")
        else:
            inner = [a for a in args if a is not type(None)]
            _check_type(
                inner[0] if len(inner) == 1 else annotation, branches[0], where, named, problems
            )
        return
    kind = schema["type"]
    if kind == "array":
        args = typing.get_args(annotation)
        if typing.get_origin(annotation) is not tuple or len(args) != 2 or args[1] is not Ellipsis:
            problems.append(f"{where}: {annotation!r} for an Avro array (want tuple[T, ...])")
        else:
            _check_type(args[0], schema["items"], f"{where}[]", named, problems)
        return
    name = schema["name"]
    named[name] = schema
    if kind == "enum":
        python_enum = WIRE_ENUMS.get(name)
        if python_enum is None:
            problems.append(f"{where}: Avro enum {name} has no Python enum in WIRE_ENUMS")
            return
        if annotation is not python_enum:
            problems.append(f"{where}: {annotation!r} for Avro enum {name}")
        names = [m.name for m in python_enum]
        if names != schema["symbols"]:
            problems.append(f"{where}: {name} symbols {schema['symbols']} but members {names}")
        if schema.get("default") not in names:
            problems.append(f"{where}: {name} default {schema.get('default')!r} is no member")
        return
    if kind == "record":
        record_class = RECORD_CLASSES.get(name)
        if record_class is None:
            problems.append(f"{where}: Avro record {name} has no class in RECORD_CLASSES")
            return
        if annotation is not record_class:
            problems.append(f"{where}: {annotation!r} for Avro record {name}")
        _check_record(record_class, schema, named, problems)
        return
    problems.append(f"{where}: Avro type {kind} has no mapping")


def _check_record(
    cls: type, schema: dict[str, Any], named: dict[str, Any], problems: list[str]
) -> None:
    record = schema["name"].rpartition(".")[2]
    if not (dataclasses.is_dataclass(cls) and cls.__dataclass_params__.frozen):  # type: ignore[attr-defined]
        problems.append(f"{record}: {cls.__name__} is not a frozen dataclass")
        return
    if "__slots__" not in vars(cls):
        problems.append(f"{record}: {cls.__name__} has no slots")
    fields = dataclasses.fields(cls)
    want = [f["name"] for f in schema["fields"]]
    have = [f.name for f in fields]
    if have != want:
        problems.append(f"{record}: fields {want} but {cls.__name__} has {have}")
        return
    hints = typing.get_type_hints(cls)
    for avro_field, field in zip(schema["fields"], fields, strict=True):
        where = f"{record}.{field.name}"
        has_default = field.default is not dataclasses.MISSING
        if "default" not in avro_field:
            if has_default or field.default_factory is not dataclasses.MISSING:
                problems.append(
                    f"{where}: no default in the schema, {field.default!r} in the class"
                )
        elif not has_default:
            problems.append(f"{where}: schema default {avro_field['default']!r}, none in the class")
        else:
            default = avro_field["default"]
            expected = tuple(default) if isinstance(default, list) else default
            if field.default != expected:
                problems.append(f"{where}: schema default {default!r}, class {field.default!r}")
        _check_type(hints[field.name], avro_field["type"], where, named, problems)


def schema_mismatches(schema_set: SchemaSet) -> list[str]:
    """Every way the payload classes differ from ``schema_set``; empty when they mirror it."""
    problems: list[str] = []
    branches = [b["name"] for b in payload_branches(schema_set.envelope)]
    for event_type in EventType:
        full = f"cachet.events.{event_type.value}"
        if full not in branches:
            problems.append(f"{event_type.value}: no payload branch in the envelope")
            continue
        cls = PAYLOAD_CLASSES.get(event_type)
        if cls is None:
            problems.append(f"{event_type.value}: no class in PAYLOAD_CLASSES")
            continue
        _check_record(cls, schema_set.payloads[full], {}, problems)
    return problems


# --------------------------------------------------------------------------- schema match


def test_every_payload_class_mirrors_its_schema() -> None:
    assert schema_mismatches(load_schema_set(SCHEMA_DIR)) == []


def test_every_event_type_has_a_class() -> None:
    assert set(PAYLOAD_CLASSES) == set(EventType)
    for event_type, cls in PAYLOAD_CLASSES.items():
        assert cls.__name__ == event_type.value


def _edited_copy(tmp_path: Path, file: str, edit: Any) -> SchemaSet:
    directory = tmp_path / "schemas"
    directory.mkdir()
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, directory / path.name)
    target = directory / file
    schema = json.loads(target.read_text(encoding="utf-8"))
    edit(schema)
    target.write_text(json.dumps(schema), encoding="utf-8")
    return load_schema_set(directory)


def _field(schema: dict[str, Any], name: str) -> dict[str, Any]:
    return next(f for f in schema["fields"] if f["name"] == name)


@pytest.mark.parametrize(
    ("file", "edit", "expected"),
    [
        pytest.param(
            "CacheWritten.avsc",
            lambda s: s["fields"].append(
                {"name": "region", "type": ["null", "string"], "default": None}
            ),
            "CacheWritten: fields",
            id="field-added",
        ),
        pytest.param(
            "EncryptedValue.avsc",
            lambda s: s["fields"].insert(2, {"name": "tag", "type": "bytes"}),
            "EncryptedValue: fields",
            id="nested-field-added",
        ),
        pytest.param(
            "ScrubTrigger.avsc",
            lambda s: s["symbols"].insert(-1, "PREEMPTED"),
            "ScrubTrigger symbols",
            id="enum-symbol-added",
        ),
        pytest.param(
            "CacheRead.avsc",
            lambda s: _field(s, "fingerprint").pop("default"),
            "CacheRead.fingerprint: no default in the schema",
            id="default-dropped",
        ),
        pytest.param(
            "WatermarkTick.avsc",
            lambda s: _field(s, "partition").update(type="string"),
            "WatermarkTick.partition",
            id="type-changed",
        ),
        pytest.param(
            "KvScrubRequested.avsc",
            lambda s: _field(s, "worker_id").update(type="string", default="all"),
            "KvScrubRequested.worker_id",
            id="optional-made-required",
        ),
    ],
)
def test_a_schema_change_without_its_class_is_caught(
    tmp_path: Path, file: str, edit: Any, expected: str
) -> None:
    problems = schema_mismatches(_edited_copy(tmp_path, file, edit))
    assert any(expected in p for p in problems), problems


# --------------------------------------------------------------------------- round trip


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_sample_round_trips_through_the_class(event_type: EventType) -> None:
    sample = SAMPLE_PAYLOADS[event_type]
    payload = PAYLOAD_CLASSES[event_type].from_avro(sample)
    assert payload.to_avro() == sample


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_class_output_encodes_and_decodes_to_the_same_value(event_type: EventType) -> None:
    codec = EventCodec()
    cls = PAYLOAD_CLASSES[event_type]
    payload = cls.from_avro(SAMPLE_PAYLOADS[event_type])
    event = new_event(event_type, payload.to_avro(), producer_id="node@1f", producer_seq=0)
    decoded = codec.decode(codec.encode(event))
    assert cls.from_avro(decoded.payload) == payload


def test_samples_spell_values_as_the_code_writes_them() -> None:
    transition = StateTransitioned.from_avro(SAMPLE_PAYLOADS[EventType.STATE_TRANSITIONED])
    assert transition.authority.role == Role.OWNER.value
    read = CacheRead.from_avro(SAMPLE_PAYLOADS[EventType.CACHE_READ])
    assert read.reader_role == Role.OWNER.value and read.outcome is ReadOutcome.HIT
    seal = SAMPLE_PAYLOADS[EventType.SEAL]
    assert seal["producer_id"].partition("@")[2] != ""
    assert {s["algorithm"] for s in seal["signatures"]} == {
        "ml-dsa-65",
        "fn-dsa-512",
        "slh-dsa-sha2-128f",
    }
    for t in (EventType.KV_SCRUB_REQUESTED, EventType.KV_SCRUB_COMPLETED):
        assert len(bytes.fromhex(SAMPLE_PAYLOADS[t]["tenant"])) == 32


# --------------------------------------------------------------------------- enums


@pytest.mark.parametrize(
    ("convert", "symbol", "expected"),
    [
        (
            lambda symbol: (
                StateTransitioned.from_avro(
                    {**SAMPLE_PAYLOADS[EventType.STATE_TRANSITIONED], "to_state": symbol}
                ).to_state
            ),
            "QUARANTINED",
            EntryState.UNKNOWN,
        ),
        (
            lambda symbol: TransitionAuthority.from_avro({"kind": symbol}).kind,
            "SYSTEM_REGULATOR",
            AuthorityKind.UNKNOWN,
        ),
        (
            lambda symbol: (
                RoleGranted.from_avro(
                    {**SAMPLE_PAYLOADS[EventType.ROLE_GRANTED], "role": symbol}
                ).role
            ),
            "OPERATOR",
            Role.UNKNOWN,
        ),
    ],
)
def test_a_symbol_this_reader_does_not_know_is_unknown(
    convert: Any, symbol: str, expected: enum.Enum
) -> None:
    assert convert(symbol) is expected


def test_symbols_are_member_names() -> None:
    granted = RoleGranted.from_avro(SAMPLE_PAYLOADS[EventType.ROLE_GRANTED])
    assert granted.role is Role.REGULATOR  # "REGULATOR" on the wire, "regulator" in config
    assert granted.to_avro()["role"] == "REGULATOR"


@pytest.mark.parametrize("cls", [Role, InvalidationMode, ScrubMethod])
def test_the_wire_fallback_is_never_configurable(cls: type[enum.Enum]) -> None:
    with pytest.raises(ValueError):
        parse_enum(cls, "unknown")


def test_one_enum_per_concept() -> None:
    from cachet.materializers.view import EntryState as ViewEntryState

    assert ViewEntryState is EntryState
    assert WIRE_ENUMS["cachet.events.ScrubTrigger"] is ScrubTrigger
    assert WIRE_ENUMS["cachet.events.ErasureScope"] is ErasureScope
    assert WIRE_ENUMS["cachet.events.ScrubMethod"] is ScrubMethod
