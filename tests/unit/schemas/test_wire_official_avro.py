"""Cachet's wire format, read from the outside with the official Apache Avro library.

Everything here follows ``docs/wire.md`` and nothing else: the reader below
(:class:`WireReader`) uses the Apache ``avro`` package, never Cachet's codec
or loader. It assembles the writer schema from the ``.avsc`` files, computes
the fingerprint as the document says (Parsing Canonical Form, CRC-64-AVRO,
little-endian; logical types stripped first, the library pitfall), strips the
10-byte header and decodes the body with ``DatumReader(writer_schema)``.

The enum evolution policy of ``docs/wire.md`` is tested the same way: events
written by a *newer* schema set (one enum symbol added) are dead-lettered by
a reader that does not know that set, and read exactly, with the unknown
symbol mapped to ``UNKNOWN``, by a reader that learned it.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import shutil
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import avro.errors
import avro.io
import avro.schema
import pytest

from cachet.schemas.codec import DecodeError, DecodeFailure, EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, SealRef, new_event

SCHEMA_DIR = Path(__file__).resolve().parents[3] / "schemas"
WIRE_DOC = Path(__file__).resolve().parents[3] / "docs" / "wire.md"


@dataclass(frozen=True)
class Vectors:
    """docs/wire.md, "Test vectors", for one released schema set."""

    fingerprint_hex: str
    canonical_form_sha256: str
    canonical_form_len: int
    # What avro 1.12's own Schema.fingerprint() says for the unstripped Envelope.
    avro_library_wrong_fingerprint_hex: str


# Released sets never change, so neither do their vectors; the current set
# (schemas/*.avsc) is the last release. Changing a .avsc beyond its docs
# makes a new release with vectors of its own.
VECTORS = {
    "v1": Vectors(
        "e80bfe7255dacc1e",
        "a5f5cd48e202a8a55cb38ee78771048ca3a247a27300573252a928068945fdcd",
        9060,
        "46daa187296f672f",
    ),
    "v2": Vectors(
        "adc5ce1187bc0d2a",
        "9da6dba27e2bfdd800a6054d86b08da29f5d64a1262d1d407b00fb1be8e5d201",
        9334,
        "815caa776f95a48d",
    ),
    "v3": Vectors(
        "68ac0b53364d7e4a",
        "47e6ad98f3cbfb8a13f2d3ae644051942e2ff563169219072ff6bf862d4503bb",
        11238,
        "355b662a57537fa6",
    ),
    "v4": Vectors(
        "9a95e34e68c80e4e",
        "bc2b0b73dacfd023529c5741ddb86fb18a1ab553bde7fb143ab986cc7a1619b2",
        11415,
        "60aea178ed71b2b3",
    ),
}
CURRENT = VECTORS["v4"]

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
ENVELOPE = "cachet.events.Envelope"


# --------------------------------------------------------------------------- the recipe


class UnknownWriterSchema(Exception):
    """The fingerprint names no schema set this reader knows: dead-letter it."""


def crc64_avro(data: bytes) -> int:
    """CRC-64-AVRO as the Avro specification writes it (docs/wire.md, step 3)."""
    empty = 0xC15D213AA4D7A795
    table = []
    for i in range(256):
        fp = i
        for _ in range(8):
            fp = (fp >> 1) ^ (empty & -(fp & 1))
        table.append(fp)
    fp = empty
    for byte in data:
        fp = (fp >> 8) ^ table[(fp ^ byte) & 0xFF]
    return fp


def _strip_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {k: _strip_logical_types(v) for k, v in node.items() if k != "logicalType"}
    if isinstance(node, list):
        return [_strip_logical_types(v) for v in node]
    return node


def _parse_files(documents: Iterable[Any]) -> dict[str, avro.schema.Schema]:
    """Parses .avsc documents that refer to each other by name (docs/wire.md, step 1).

    Files are parsed into one shared name table, each once its references
    are known; a file that fails is retried after the others.
    """
    names = avro.schema.Names()
    pending = list(documents)
    parsed: dict[str, avro.schema.Schema] = {}
    while pending:
        retry = []
        for doc in pending:
            saved = dict(names.names)
            try:
                schema = avro.schema.make_avsc_object(doc, names)
            except avro.errors.SchemaParseException:
                names.names = saved  # drop what the failed attempt registered
                retry.append(doc)
                continue
            assert isinstance(schema, avro.schema.NamedSchema), doc
            parsed[schema.fullname] = schema
        if len(retry) == len(pending):
            raise AssertionError(f"unresolvable references in {[d['name'] for d in retry]}")
        pending = retry
    return parsed


def writer_schemas(schema_dir: Path) -> tuple[avro.schema.Schema, bytes, str]:
    """The Envelope of one schema set, its fingerprint and its canonical form.

    Two parses of the same files: the fingerprint is taken from the one
    without logical types (avro 1.12 writes ``{"type":"string"}`` for a
    string with a logical type in the canonical form, against the spec), the
    body is decoded with the one that has them.
    """
    docs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted(schema_dir.glob("*.avsc"))]
    envelope = _parse_files(docs)[ENVELOPE]
    stripped = _parse_files(_strip_logical_types(docs))[ENVELOPE]
    canonical = stripped.canonical_form
    fingerprint = crc64_avro(canonical.encode("utf-8")).to_bytes(8, "little")
    # The library's fingerprint agrees once logical types are stripped.
    assert bytes(stripped.fingerprint("CRC-64-AVRO")) == fingerprint
    return envelope, fingerprint, canonical


class WireReader:
    """An outside consumer of Cachet topics: docs/wire.md's recipe, nothing else."""

    def __init__(self, schema_dirs: Iterable[Path]) -> None:
        self.writers: dict[bytes, avro.schema.Schema] = {}
        for directory in schema_dirs:
            envelope, fingerprint, _ = writer_schemas(directory)
            self.writers[fingerprint] = envelope

    def read(self, value: bytes) -> dict[str, Any]:
        if value[:2] != MAGIC or len(value) < HEADER_LEN:
            raise ValueError(f"not a single-object encoded record: {value[:10].hex()}")
        writer = self.writers.get(value[2:HEADER_LEN])
        if writer is None:
            raise UnknownWriterSchema(value[2:HEADER_LEN].hex())
        body = io.BytesIO(value[HEADER_LEN:])
        record = avro.io.DatumReader(writer).read(avro.io.BinaryDecoder(body))
        assert isinstance(record, dict)
        if body.tell() != len(value) - HEADER_LEN:
            raise ValueError("bytes left after the envelope")
        return record


def known_symbol(symbol: str, symbols: Iterable[str]) -> str:
    """docs/wire.md, enum policy: a symbol this reader does not know reads as UNKNOWN."""
    return symbol if symbol in set(symbols) else "UNKNOWN"


# --------------------------------------------------------------------------- helpers

EPOCH = datetime.datetime(1970, 1, 1, tzinfo=datetime.UTC)


def _micros(value: datetime.datetime) -> int:
    delta = value - EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def _encode(codec: EventCodec, event_type: EventType, payload: dict[str, Any]) -> bytes:
    event = new_event(
        event_type,
        payload,
        producer_id="quotes-svc@1f2e",
        producer_seq=4_201,
        seal_ref=None if event_type is EventType.SEAL else SealRef(88, 1),
    )
    return codec.encode(event)


@pytest.fixture(scope="module")
def reader() -> WireReader:
    return WireReader([SCHEMA_DIR])


# --------------------------------------------------------------------------- the format


def _check_vectors(schema_dir: Path, vectors: Vectors) -> bytes:
    envelope, fingerprint, canonical = writer_schemas(schema_dir)
    assert fingerprint.hex() == vectors.fingerprint_hex
    assert len(canonical.encode("utf-8")) == vectors.canonical_form_len
    assert hashlib.sha256(canonical.encode("utf-8")).hexdigest() == vectors.canonical_form_sha256
    assert bytes(envelope.fingerprint("CRC-64-AVRO")).hex() == (
        vectors.avro_library_wrong_fingerprint_hex
    )
    return fingerprint


def test_fingerprint_and_canonical_form_match_the_documented_vectors() -> None:
    fingerprint = _check_vectors(SCHEMA_DIR, CURRENT)
    # Cachet's own codec names its writer schema the same way.
    assert EventCodec().fingerprint == fingerprint


@pytest.mark.parametrize("release", sorted(VECTORS))
def test_every_release_matches_its_documented_vectors(release: str) -> None:
    _check_vectors(SCHEMA_DIR / "history" / release, VECTORS[release])


def test_the_documented_vectors_are_in_the_document() -> None:
    text = WIRE_DOC.read_text(encoding="utf-8")
    for vectors in VECTORS.values():
        for vector in (
            vectors.fingerprint_hex,
            vectors.canonical_form_sha256,
            str(vectors.canonical_form_len),
            vectors.avro_library_wrong_fingerprint_hex,
        ):
            assert vector in text


def test_crc64_avro_matches_the_specification_vector() -> None:
    # The Avro test suite's fingerprint of the schema "null".
    assert crc64_avro(b'"null"') == 7195948357588979594


def test_the_library_pitfall_is_still_there() -> None:
    """avro 1.12's own fingerprint of the Envelope is wrong (docs/wire.md, pitfall).

    If this fails, a new avro release fixed it: the workaround stays correct,
    but the document's warning can be narrowed to the versions affected.
    """
    envelope, fingerprint, canonical = writer_schemas(SCHEMA_DIR)
    assert envelope.canonical_form != canonical
    assert '{"type":"string"}' in envelope.canonical_form
    library = bytes(envelope.fingerprint("CRC-64-AVRO"))
    assert library != fingerprint
    assert library.hex() == CURRENT.avro_library_wrong_fingerprint_hex


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_every_event_type_decodes_with_the_official_library(
    reader: WireReader, event_type: EventType
) -> None:
    codec = EventCodec()
    data = _encode(codec, event_type, SAMPLE_PAYLOADS[event_type])
    ours = codec.decode(data)

    record = reader.read(data)

    assert record["type"] == event_type.value
    assert record["payload"] == SAMPLE_PAYLOADS[event_type]
    assert record["event_id"] == ours.event_id
    assert _micros(record["occurred_at"]) == ours.occurred_at_us
    assert (record["producer_id"], record["producer_seq"]) == ("quotes-svc@1f2e", 4_201)
    expected_ref = None if event_type is EventType.SEAL else {"seal_seq": 88, "leaf_index": 1}
    assert record["seal_ref"] == expected_ref


def test_a_record_of_another_schema_set_is_refused(reader: WireReader) -> None:
    data = bytearray(
        _encode(EventCodec(), EventType.CACHE_READ, SAMPLE_PAYLOADS[EventType.CACHE_READ])
    )
    data[2] ^= 0x01
    with pytest.raises(UnknownWriterSchema):
        reader.read(bytes(data))


# --------------------------------------------------------------------------- enum policy

NEW_SYMBOL = "POLICY_CHANGE"


def _newer_schema_set(tmp_path: Path) -> Path:
    """The current set with one symbol appended to ScrubTrigger: a new schema set."""
    newer = tmp_path / "newer"
    newer.mkdir()
    for path in SCHEMA_DIR.glob("*.avsc"):
        shutil.copy(path, newer / path.name)
    trigger = newer / "ScrubTrigger.avsc"
    schema = json.loads(trigger.read_text(encoding="utf-8"))
    schema["symbols"].append(NEW_SYMBOL)
    trigger.write_text(json.dumps(schema, indent=2) + "\n", encoding="utf-8")
    return newer


def _scrub_payload(trigger: str) -> dict[str, Any]:
    return {**SAMPLE_PAYLOADS[EventType.KV_SCRUB_COMPLETED], "trigger": trigger}


def _current_symbols(name: str) -> list[str]:
    schema = json.loads((SCHEMA_DIR / f"{name}.avsc").read_text(encoding="utf-8"))
    return list(schema["symbols"])


def test_a_new_symbol_means_a_new_fingerprint(tmp_path: Path) -> None:
    newer = _newer_schema_set(tmp_path)
    assert writer_schemas(newer)[1] != writer_schemas(SCHEMA_DIR)[1]
    assert EventCodec(newer).fingerprint != EventCodec().fingerprint


def test_an_old_reader_dead_letters_events_of_a_newer_set(tmp_path: Path) -> None:
    data = _encode(
        EventCodec(_newer_schema_set(tmp_path)),
        EventType.KV_SCRUB_COMPLETED,
        _scrub_payload(NEW_SYMBOL),
    )
    # An outside reader that knows only the released sets refuses, unread...
    with pytest.raises(UnknownWriterSchema):
        WireReader([SCHEMA_DIR]).read(data)
    # ...and so does Cachet's own codec (the consume loop dead-letters it).
    with pytest.raises(DecodeError) as info:
        EventCodec().decode(data)
    assert info.value.failure is DecodeFailure.UNKNOWN_FINGERPRINT


def test_a_reader_that_learned_the_newer_set_reads_it_with_the_writer_schema(
    tmp_path: Path,
) -> None:
    newer = _newer_schema_set(tmp_path)
    codec = EventCodec(newer)
    reader = WireReader([SCHEMA_DIR, newer])
    new_value = reader.read(
        _encode(codec, EventType.KV_SCRUB_COMPLETED, _scrub_payload(NEW_SYMBOL))
    )
    old_value = reader.read(_encode(codec, EventType.KV_SCRUB_COMPLETED, _scrub_payload("ERASURE")))

    assert new_value["payload"] == _scrub_payload(NEW_SYMBOL)
    assert old_value["payload"] == _scrub_payload("ERASURE")
    # The application, built against the current symbols, maps what it does not know.
    symbols = _current_symbols("ScrubTrigger")
    assert known_symbol(new_value["payload"]["trigger"], symbols) == "UNKNOWN"
    assert known_symbol(old_value["payload"]["trigger"], symbols) == "ERASURE"


def test_avro_schema_resolution_does_not_fall_back_to_the_enum_default(tmp_path: Path) -> None:
    """Why the policy says: decode with the writer schema, map symbols yourself.

    Resolving the newer writer schema against the older reader schema, as the
    Avro specification allows, fails in avro 1.12 although the reader's enum
    has ``"default": "UNKNOWN"``.
    """
    newer = _newer_schema_set(tmp_path)
    data = _encode(EventCodec(newer), EventType.KV_SCRUB_COMPLETED, _scrub_payload(NEW_SYMBOL))
    writer = writer_schemas(newer)[0]
    reader = writer_schemas(SCHEMA_DIR)[0]
    decoder = avro.io.BinaryDecoder(io.BytesIO(data[HEADER_LEN:]))
    with pytest.raises(avro.errors.SchemaResolutionException, match=NEW_SYMBOL):
        avro.io.DatumReader(writer, reader).read(decoder)


def _enums(node: Any, into: dict[str, list[str]]) -> dict[str, list[str]]:
    if isinstance(node, dict):
        if node.get("type") == "enum":
            into[node["name"]] = list(node["symbols"])
        for value in node.values():
            _enums(value, into)
    elif isinstance(node, list):
        for value in node:
            _enums(value, into)
    return into


def _enums_of(schema_dir: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for path in schema_dir.glob("*.avsc"):
        _enums(json.loads(path.read_text(encoding="utf-8")), found)
    return found


def test_every_enum_has_an_unknown_default() -> None:
    for name, symbols in _enums_of(SCHEMA_DIR).items():
        assert "UNKNOWN" in symbols, name


@pytest.mark.parametrize(
    "release", sorted(p for p in (SCHEMA_DIR / "history").iterdir() if p.is_dir()), ids=str
)
def test_enums_only_ever_append_symbols(release: Path) -> None:
    """Policy: a symbol is never removed, renamed or moved; new ones go at the end."""
    current = _enums_of(SCHEMA_DIR)
    for name, old in _enums_of(release).items():
        assert name in current, f"enum {name} of {release.name} is gone"
        assert current[name][: len(old)] == old, f"enum {name}: {release.name} symbols changed"
