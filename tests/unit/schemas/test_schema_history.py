"""Schema evolution: data written with any released schema set must decode.

``schemas/history/<release>/`` holds the .avsc files of every release. For
each, random envelopes of every payload type are written with that release's
schema and fingerprint, and the current codec must read them. The check is
itself tested: schema changes that break old data must make it fail.
"""

from __future__ import annotations

import io
import json
import random
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.utils import generate_many, generate_one

from cachet.schemas.codec import MAGIC, DecodeError, DecodeFailure, EventCodec
from cachet.schemas.events import EventType
from cachet.schemas.loader import SCHEMA_DIR, SchemaSet, history_dirs, load_schema_set

# Fingerprints of released sets. History is append-only: a released set must
# never change (its data is in logs and archives), so each is pinned here.
RELEASED = {
    "v1": "e80bfe7255dacc1e",
    "v2": "adc5ce1187bc0d2a",
    "v3": "68ac0b53364d7e4a",
    "v4": "9a95e34e68c80e4e",
}
PER_TYPE = 15


def _payload_names(schema_set: SchemaSet) -> list[str]:
    union = next(f["type"] for f in schema_set.envelope["fields"] if f["name"] == "payload")
    return [branch["name"] for branch in union]


def _old_data(old: SchemaSet, seed: int) -> list[tuple[dict[str, Any], bytes]]:
    """Random envelopes of every payload type, single-object encoded with ``old``."""
    random.seed(seed)  # fastavro's generators draw from the global RNG
    out = []
    for name in _payload_names(old):
        for record in generate_many(old.envelope, PER_TYPE):
            record["type"] = name.rpartition(".")[2]
            record["payload"] = (name, generate_one(old.payloads[name]))
            body = io.BytesIO()
            schemaless_writer(body, old.parsed, record)
            out.append((record, MAGIC + old.fingerprint + body.getvalue()))
    return out


def assert_history_decodes(codec: EventCodec, release_dir: Path, seed: int = 1) -> None:
    """Every record written with the release at ``release_dir`` decodes with ``codec``."""
    old = load_schema_set(release_dir)
    for record, data in _old_data(old, seed):
        event = codec.decode(data)
        assert event.type.value == record["type"]
        assert event.event_id == record["event_id"]
        assert event.occurred_at_us == record["occurred_at"]
        assert (event.producer_id, event.producer_seq) == (
            record["producer_id"],
            record["producer_seq"],
        )
        old_payload = record["payload"][1]
        for field, value in event.payload.items():
            if field in old_payload and not _is_enum_default(value, old_payload[field]):
                assert value == old_payload[field], (record["type"], field)


def _is_enum_default(new: Any, old: Any) -> bool:
    # A symbol the reader dropped reads as the enum's default (UNKNOWN).
    return isinstance(old, str) and new == "UNKNOWN"


def test_there_is_a_release() -> None:
    assert [p.name for p in history_dirs(SCHEMA_DIR)] == sorted(RELEASED)


@pytest.mark.parametrize("release", history_dirs(SCHEMA_DIR), ids=lambda p: p.name)
def test_released_sets_never_change(release: Path) -> None:
    assert load_schema_set(release).fingerprint.hex() == RELEASED[release.name]


@pytest.mark.parametrize("release", history_dirs(SCHEMA_DIR), ids=lambda p: p.name)
def test_data_of_every_release_decodes(release: Path) -> None:
    assert_history_decodes(EventCodec(), release)


def test_current_schema_is_released() -> None:
    """The schema producers write with is in history, so later codecs can read it.

    When this fails after a schema change: copy ``schemas/*.avsc`` to a new
    ``schemas/history/vN/`` and pin its fingerprint in ``RELEASED``.
    """
    released = {load_schema_set(p).fingerprint for p in history_dirs(SCHEMA_DIR)}
    assert EventCodec().fingerprint in released


# --------------------------------------------------------------------------- the check works

Mutation = Callable[[dict[str, Any]], None]


def _add_required_field(schema: dict[str, Any]) -> None:
    schema["fields"].append({"name": "jurisdiction", "type": "string"})


def _add_optional_field(schema: dict[str, Any]) -> None:
    schema["fields"].append({"name": "jurisdiction", "type": ["null", "string"], "default": None})


def _retype_field(schema: dict[str, Any]) -> None:
    next(f for f in schema["fields"] if f["name"] == "version")["type"] = "string"


def _widen_field(schema: dict[str, Any]) -> None:
    # int -> long is a legal Avro promotion.
    next(f for f in schema["fields"] if f["name"] == "aad_version")["type"] = "long"


def _rename_field(schema: dict[str, Any]) -> None:
    next(f for f in schema["fields"] if f["name"] == "namespace")["name"] = "ns"


def _drop_enum_default(schema: dict[str, Any]) -> None:
    del schema["default"]
    schema["symbols"].remove("REVOKED")


def _drop_enum_symbol(schema: dict[str, Any]) -> None:
    schema["symbols"].remove("REVOKED")  # old REVOKED now reads as UNKNOWN


def _mutated_codec(tmp_path: Path, file: str, mutate: Mutation) -> EventCodec:
    """A codec whose current schemas are the real ones with one file changed."""
    schema_dir = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schema_dir, ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    path = schema_dir / file
    schema = json.loads(path.read_text())
    mutate(schema)
    path.write_text(json.dumps(schema))
    return EventCodec(schema_dir)


@pytest.mark.parametrize(
    ("file", "mutate"),
    [
        ("CacheWritten.avsc", _add_required_field),
        ("CacheWritten.avsc", _retype_field),
        ("CacheRead.avsc", _rename_field),
        ("EntryState.avsc", _drop_enum_default),
    ],
    ids=["added-field-without-default", "retyped-field", "renamed-field", "dropped-symbol"],
)
def test_incompatible_change_fails_the_check(tmp_path: Path, file: str, mutate: Mutation) -> None:
    codec = _mutated_codec(tmp_path, file, mutate)
    assert codec.fingerprint != EventCodec().fingerprint
    with pytest.raises(DecodeError) as info:
        for release in history_dirs(SCHEMA_DIR):
            assert_history_decodes(codec, release)
    assert info.value.failure is DecodeFailure.BODY_INVALID


@pytest.mark.parametrize(
    ("file", "mutate"),
    [
        ("CacheWritten.avsc", _add_optional_field),
        ("EncryptedValue.avsc", _widen_field),
        ("EntryState.avsc", _drop_enum_symbol),
    ],
    ids=["added-optional-field", "int-to-long", "dropped-symbol-with-default"],
)
def test_compatible_change_passes_the_check(tmp_path: Path, file: str, mutate: Mutation) -> None:
    codec = _mutated_codec(tmp_path, file, mutate)
    assert codec.fingerprint != EventCodec().fingerprint
    for release in history_dirs(SCHEMA_DIR):
        assert_history_decodes(codec, release)


def test_every_payload_type_is_generated() -> None:
    old = load_schema_set(history_dirs(SCHEMA_DIR)[-1])
    assert {n.rpartition(".")[2] for n in _payload_names(old)} == {t.value for t in EventType}
