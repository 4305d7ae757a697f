"""The wire codec: Cachet events as Avro single-object encoded envelopes.

Byte layout of one encoded event (the Avro specification's "single object
encoding", so any Avro implementation can read it without a registry)::

    offset 0   2 bytes  magic C3 01
    offset 2   8 bytes  CRC-64-AVRO fingerprint of the writer's envelope
                        schema (Parsing Canonical Form), little-endian
    offset 10  ...      Avro binary body of one ``cachet.events.Envelope``

The fingerprint names the writer schema. The codec knows the current schema
set (``schemas/*.avsc``), every released set (``schemas/history/*/``) and
every set it was taught at run time (:meth:`EventCodec.learn`, fed by the
verifying consumer from anchor-signed SchemaSetPublished events), so data
written by any of them decodes, resolved to the current reader schema.
Anything else is a :class:`DecodeError` with a :class:`DecodeFailure` the
caller can match on (the consume loop sends it to the dead-letter topic with
that reason).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import logging
import struct
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.read import SchemaResolutionError
from fastavro.schema import SchemaParseException
from fastavro.validation import ValidationError, validate

from cachet.errors import CachetError
from cachet.schemas.compiled import Invalid, Malformed, Truncated, compile_schema
from cachet.schemas.events import Event, EventType, SealRef
from cachet.schemas.loader import (
    SCHEMA_DIR,
    SchemaLoadError,
    SchemaSet,
    history_dirs,
    load_schema_set,
    payload_branches,
    schema_set_from_json,
)

__all__ = [
    "HEADER_LEN",
    "MAGIC",
    "DecodeError",
    "DecodeFailure",
    "EncodeError",
    "EventCodec",
    "SchemaSetRefused",
]

log = logging.getLogger(__name__)

MAGIC = b"\xc3\x01"
HEADER_LEN = len(MAGIC) + 8


# --------------------------------------------------------------------------- errors


class DecodeFailure(enum.Enum):
    """Why bytes did not decode to an event."""

    NOT_SINGLE_OBJECT = "not_single_object"  # does not start with C3 01 (empty included)
    TRUNCATED = "truncated"  # header shorter than 10 bytes, or body ends early
    UNKNOWN_FINGERPRINT = "unknown_fingerprint"  # writer schema is no released/current set
    BODY_INVALID = "body_invalid"  # body is not a valid envelope of the writer schema
    TRAILING_BYTES = "trailing_bytes"  # bytes left after one envelope
    TYPE_MISMATCH = "type_mismatch"  # envelope type is unknown or differs from payload branch


class DecodeError(CachetError):
    """Bytes that are not a Cachet event; ``failure`` says why, ``detail`` how."""

    def __init__(self, failure: DecodeFailure, detail: str) -> None:
        super().__init__(f"{failure.value}: {detail}")
        self.failure = failure
        self.detail = detail


class EncodeError(CachetError):
    """An event that cannot be encoded: the message names the event type and why."""


class SchemaSetRefused(CachetError):
    """A schema set :meth:`EventCodec.learn` would not add; ``fingerprint`` is
    the one announced, the message says why."""

    def __init__(self, fingerprint: bytes, message: str) -> None:
        super().__init__(f"schema set {fingerprint.hex()}: {message}")
        self.fingerprint = fingerprint


# --------------------------------------------------------------------------- codec

# What fastavro raises on a malformed body (EOFError, for a short body, is
# handled apart). Listed, not `Exception`, so a programming error still shows.
_BODY_ERRORS = (
    ValueError,  # includes UnicodeDecodeError
    SchemaResolutionError,  # writer data the reader schema cannot take
    IndexError,  # union branch or enum symbol index out of range
    KeyError,
    TypeError,
    OverflowError,
    MemoryError,  # a length prefix larger than memory
    struct.error,
    SchemaParseException,
)


class _ShortReadProbe(io.BytesIO):
    """An input that remembers whether a read asked for more than was left."""

    ran_dry = False
    negative_length = False

    def read(self, size: int | None = -1, /) -> bytes:
        if size is None or size < 0:
            # fastavro passes a negative string/bytes length straight to
            # read(), which then returns the rest of the input.
            self.negative_length = True
        chunk = super().read(size)
        if size is not None and len(chunk) < size:
            self.ran_dry = True
        return chunk


_TYPES_BY_NAME: dict[str, EventType] = {t.value: t for t in EventType}
_FULL_NAMES: dict[EventType, str] = {t: f"cachet.events.{t.value}" for t in EventType}


def _unfrozen(cls: type[Any], names: tuple[str, ...]) -> type[Any] | None:
    """A class with the very slots of the frozen, slotted dataclass ``cls``
    (fields ``names``), writable: an instance filled field by field, each
    store one specialised bytecode, then made a ``cls`` by ``__class__``
    assignment, is the object ``cls(*values)`` builds, for a fifth of the
    cost (a frozen dataclass's ``__init__`` goes through
    ``object.__setattr__`` for each field).

    None, so that the caller uses the constructor, for a class whose
    ``__init__`` could do anything else (``__post_init__``, a field that is
    not an init field or not ``names``, a base class) or whose layout CPython
    does not find the same: a change to the class can only make decoding
    slower, never build an object its constructor would not.
    """
    fields = dataclasses.fields(cls)
    params = getattr(cls, "__dataclass_params__", None)
    plain = (
        params is not None
        and params.frozen
        and cls.__bases__ == (object,)
        and tuple(f.name for f in fields) == names == getattr(cls, "__slots__", ())
        and not hasattr(cls, "__post_init__")
        and all(f.init for f in fields)
    )
    if not plain:
        return None
    shadow = type(f"_Unfrozen{cls.__name__}", (), {"__slots__": names})
    probe: Any = object.__new__(shadow)
    try:
        probe.__class__ = cls
    except TypeError:  # CPython found the layouts differ
        return None
    return shadow


_new = object.__new__
_EVENT_SLOTS = _unfrozen(
    Event,
    ("type", "payload", "event_id", "occurred_at_us", "producer_id", "producer_seq", "seal_ref"),
)
_SEAL_REF_SLOTS = _unfrozen(SealRef, ("seal_seq", "leaf_index"))


def _seal_ref_of(seal_seq: int, leaf_index: int) -> SealRef:
    """``SealRef(seal_seq, leaf_index)``, as :func:`_unfrozen` builds it."""
    if _SEAL_REF_SLOTS is None:
        return SealRef(seal_seq, leaf_index)
    ref = _new(_SEAL_REF_SLOTS)
    ref.seal_seq = seal_seq
    ref.leaf_index = leaf_index
    ref.__class__ = SealRef
    return ref  # type: ignore[no-any-return]


def _event_of(
    event_id: str,
    type_name: str,
    occurred_at: int,
    producer_id: str,
    producer_seq: int,
    seal_ref: SealRef | None,
    payload: tuple[str, dict[str, Any]],
) -> Event:
    """The Event of a decoded envelope's fields (in schema order), once its
    ``type`` names an event type and the payload is that type's branch."""
    event_type = _TYPES_BY_NAME.get(type_name)
    if event_type is None:
        raise DecodeError(
            DecodeFailure.TYPE_MISMATCH, f"type {type_name[:100]!r} is not an event type"
        )
    if payload[0] != _FULL_NAMES[event_type]:
        raise DecodeError(
            DecodeFailure.TYPE_MISMATCH,
            f"envelope type {type_name} but payload is a {payload[0].rpartition('.')[2]}",
        )
    if _EVENT_SLOTS is None:
        return Event(
            event_type, payload[1], event_id, occurred_at, producer_id, producer_seq, seal_ref
        )
    event = _new(_EVENT_SLOTS)
    event.type = event_type
    event.payload = payload[1]
    event.event_id = event_id
    event.occurred_at_us = occurred_at
    event.producer_id = producer_id
    event.producer_seq = producer_seq
    event.seal_ref = seal_ref
    event.__class__ = Event
    return event  # type: ignore[no-any-return]


# What the generated decoder of the current set makes of the envelope and its
# seal reference: the Event itself, no dict in between.
_FACTORIES: dict[str, Callable[..., Any]] = {
    "cachet.events.Envelope": _event_of,
    "cachet.events.SealRef": _seal_ref_of,
}


@dataclass(frozen=True, slots=True)
class _Branch:
    fullname: str
    name: str  # the record name without namespace: the envelope's ``type``
    fields: frozenset[str]
    required: frozenset[str]  # fields without a default
    schema: dict[str, Any]  # parsed payload record, for validation


class EventCodec:
    """Encodes :class:`Event` values to single-object bytes and back.

    Schemas are parsed once, at construction. The current set, which every
    event is written with and nearly every event read is in, also gets an
    encoder and decoder generated for it (:mod:`cachet.schemas.compiled`);
    data of other sets goes through fastavro, which resolves it.
    """

    def __init__(self, schema_dir: Path | None = None) -> None:
        directory = schema_dir if schema_dir is not None else SCHEMA_DIR
        self._current = load_schema_set(directory)
        self.fingerprint: bytes = self._current.fingerprint
        self._compiled = compile_schema(self._current.parsed, _FACTORIES)
        self._read_body = self._compiled.read
        self._header = MAGIC + self.fingerprint
        self._branches = self._index_branches(self._current)
        self._writers: dict[bytes, SchemaSet] = {}
        for path in history_dirs(directory):
            released = load_schema_set(path)
            self._writers.setdefault(released.fingerprint, released)
            log.debug("schema set %s: fingerprint %s", path.name, released.fingerprint.hex())
        self._writers[self.fingerprint] = self._current

    @property
    def known_fingerprints(self) -> frozenset[bytes]:
        """Fingerprints of every writer schema this codec decodes."""
        return frozenset(self._writers)

    def learn(self, schema_json: str, fingerprint: bytes, *, source: str = "announced") -> bool:
        """Adds the writer schema set ``schema_json`` (a self-contained envelope,
        as :func:`~cachet.schemas.loader.envelope_json` writes it) under
        ``fingerprint``; True if it was new, False if the codec knew it.

        Only for verified announcements: the codec decodes with every set it
        knows, and a set is the meaning of bytes (seals sign bytes, not
        meaning), so the caller checks the trust anchor's signatures first
        (the verifying consumer does). Raises :class:`SchemaSetRefused` when
        the schema is not a valid envelope, when its CRC-64-AVRO is not
        ``fingerprint``, or when a known set has that fingerprint but another
        canonical form (a collision: CRC-64 is not collision resistant).
        """
        fingerprint = bytes(fingerprint)
        if len(fingerprint) != HEADER_LEN - len(MAGIC):
            raise SchemaSetRefused(fingerprint, f"a fingerprint is 8 bytes, not {len(fingerprint)}")
        try:
            learned = schema_set_from_json(schema_json, source)
        except SchemaLoadError as exc:
            raise SchemaSetRefused(fingerprint, f"not a valid envelope schema: {exc}") from exc
        if learned.fingerprint != fingerprint:
            raise SchemaSetRefused(
                fingerprint,
                f"the schema's CRC-64-AVRO fingerprint is {learned.fingerprint.hex()}",
            )
        known = self._writers.get(fingerprint)
        if known is not None:
            if known.canonical_form != learned.canonical_form:
                raise SchemaSetRefused(
                    fingerprint, "a different known schema set has this fingerprint"
                )
            return False
        # Copy on write: decoders on other threads read the old or the new
        # table, never one being changed.
        self._writers = {**self._writers, fingerprint: learned}
        log.info("learned schema set %s (%s)", fingerprint.hex(), source)
        return True

    @staticmethod
    def _index_branches(schema_set: SchemaSet, complete: bool = True) -> dict[EventType, _Branch]:
        branches: dict[EventType, _Branch] = {}
        for raw in payload_branches(schema_set.envelope):
            short = raw["name"].rpartition(".")[2]
            try:
                event_type = EventType(short)
            except ValueError as exc:
                if not complete:
                    continue  # a newer set's type this code cannot write
                raise SchemaLoadError(f"payload branch {short} has no EventType") from exc
            branches[event_type] = _Branch(
                fullname=raw["name"],
                name=short,
                fields=frozenset(f["name"] for f in raw["fields"]),
                required=frozenset(f["name"] for f in raw["fields"] if "default" not in f),
                schema=schema_set.payloads[raw["name"]],
            )
        missing = set(EventType) - set(branches)
        if missing and complete:
            names = ", ".join(sorted(t.value for t in missing))
            raise SchemaLoadError(f"{schema_set.source}: no payload branch for {names}")
        return branches

    # ----------------------------------------------------------------- encode

    def encode(self, event: Event) -> bytes:
        """Returns ``C3 01 || fingerprint || body``; raises :class:`EncodeError`."""
        return self._encode(event, self._current, self._branches)

    def encode_with(self, event: Event, fingerprint: bytes) -> bytes:
        """Encodes ``event`` with the known (released or learned) writer set
        ``fingerprint`` instead of the current one.

        For schema-set announcements, which are written with the set every
        reader already knows (:data:`cachet.schemas.announcement.
        ANNOUNCING_RELEASE`). Raises :class:`EncodeError` when the set is not
        known or has no branch for the event's type.
        """
        writer = self._writers.get(bytes(fingerprint))
        if writer is None:
            raise EncodeError(f"schema set {bytes(fingerprint).hex()} is not known to this codec")
        if writer is self._current:
            return self.encode(event)
        try:
            branches = self._index_branches(writer, complete=False)
        except SchemaLoadError as exc:
            raise EncodeError(f"schema set {writer.fingerprint.hex()}: {exc}") from exc
        return self._encode(event, writer, branches)

    def _encode(self, event: Event, writer: SchemaSet, branches: dict[EventType, _Branch]) -> bytes:
        try:
            branch = branches[event.type]
        except (KeyError, TypeError) as exc:
            raise EncodeError(
                f"{event.type!r}: not an EventType of schema set {writer.fingerprint.hex()}"
            ) from exc
        name = branch.name
        payload = event.payload
        if not isinstance(payload, dict):
            raise EncodeError(f"{name}: payload is {type(payload).__name__}, not a dict")
        if payload.keys() != branch.fields:  # the usual case (every field given) is one compare
            missing = branch.required - payload.keys()
            if missing:
                raise EncodeError(f"{name}: payload misses field(s) {', '.join(sorted(missing))}")
            unknown = payload.keys() - branch.fields
            if unknown:
                # A typo'd field would otherwise be dropped silently: refuse it.
                names = ", ".join(sorted(map(str, unknown)))
                raise EncodeError(f"{name}: payload has unknown field(s) {names}")
        if writer is not self._current:
            try:
                # fastavro's writer truncates floats into longs and writes
                # ints out of range; a ledger must never record a silently
                # wrong value. The boolean pass first: with raise_errors=True
                # fastavro builds a JSON message for every union branch it
                # tries, valid data or not. (The generated encoder of the
                # current set checks each value as it writes it.)
                if not validate(payload, branch.schema, raise_errors=False):
                    validate(payload, branch.schema, raise_errors=True)
            except ValidationError as exc:
                reasons = "; ".join(str(error) for error in exc.errors)
                raise EncodeError(f"{name}: invalid payload: {reasons}") from exc
        record = {
            "event_id": event.event_id,
            "type": name,
            "occurred_at": event.occurred_at_us,
            "producer_id": event.producer_id,
            "producer_seq": event.producer_seq,
            "seal_ref": (
                None
                if event.seal_ref is None
                else {"seal_seq": event.seal_ref.seal_seq, "leaf_index": event.seal_ref.leaf_index}
            ),
            "payload": (branch.fullname, payload),
        }
        if writer is self._current:
            # The generated encoder checks the envelope as it writes it.
            out = bytearray(MAGIC)
            out += writer.fingerprint
            try:
                self._compiled.encode_into(record, out)
            except Invalid as exc:  # it names the field: Envelope.producer_seq, Seal.tree_size
                raise EncodeError(f"{name}: invalid event: {exc}") from exc
            return bytes(out)
        self._check_envelope(name, record)
        buf = io.BytesIO()
        buf.write(MAGIC)
        buf.write(writer.fingerprint)
        try:
            schemaless_writer(buf, writer.parsed, record)
        except (ValueError, TypeError, OverflowError, KeyError) as exc:
            raise EncodeError(f"{name}: {type(exc).__name__}: {exc}") from exc
        return buf.getvalue()

    @staticmethod
    def _check_envelope(name: str, record: dict[str, Any]) -> None:
        for key in ("event_id", "producer_id"):
            if not isinstance(record[key], str):
                raise EncodeError(f"{name}: {key} must be str, got {type(record[key]).__name__}")
        for key, bits in (("occurred_at", 64), ("producer_seq", 64)):
            value = record[key]
            if type(value) is not int or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                raise EncodeError(f"{name}: {key} must be a {bits}-bit int, got {value!r}")
        ref = record["seal_ref"]
        if ref is not None:
            for key, bits in (("seal_seq", 64), ("leaf_index", 32)):
                value = ref[key]
                if type(value) is not int or not -(2 ** (bits - 1)) <= value < 2 ** (bits - 1):
                    raise EncodeError(f"{name}: seal_ref.{key} must be a {bits}-bit int")

    # ----------------------------------------------------------------- decode

    def decode(self, data: bytes) -> Event:
        """Decodes one event written with the current or any released schema.

        Raises :class:`DecodeError`; never anything else for any input bytes.
        """
        if type(data) is not bytes or not data.startswith(self._header):
            return self._decode_other(data)
        # The usual case, bytes written with the current set, read here
        # (CompiledSchema.read: the generated decoder, its failures mapped
        # below as CompiledSchema.decode maps them, one call less per event).
        try:
            event, end = self._read_body(data, HEADER_LEN)
        except (Truncated, IndexError, struct.error) as exc:
            raise DecodeError(
                DecodeFailure.TRUNCATED, f"body ends early ({len(data)} bytes): {exc}"
            ) from exc
        except (Malformed, UnicodeDecodeError) as exc:
            raise DecodeError(DecodeFailure.BODY_INVALID, str(exc)[:500]) from exc
        if end != len(data):
            if end > len(data):  # a last bytes value cut short
                raise DecodeError(DecodeFailure.TRUNCATED, f"body ends early ({len(data)} bytes)")
            raise DecodeError(
                DecodeFailure.TRAILING_BYTES,
                f"{len(data) - end} byte(s) after the envelope (of {len(data)})",
            )
        return event  # type: ignore[no-any-return]

    def _decode_other(self, data: bytes) -> Event:
        """:meth:`decode` for anything but ``bytes`` written with the current
        set: the header checked step by step, other sets through fastavro."""
        if not data or not MAGIC.startswith(bytes(data[: len(MAGIC)])):
            raise DecodeError(
                DecodeFailure.NOT_SINGLE_OBJECT,
                f"expected magic c301, got {bytes(data[:2]).hex() or 'empty input'}",
            )
        if len(data) < HEADER_LEN:
            raise DecodeError(
                DecodeFailure.TRUNCATED, f"header is {len(data)} bytes, needs {HEADER_LEN}"
            )
        fingerprint = bytes(data[len(MAGIC) : HEADER_LEN])
        writer = self._writers.get(fingerprint)
        if writer is None:
            raise DecodeError(
                DecodeFailure.UNKNOWN_FINGERPRINT,
                f"writer schema fingerprint {fingerprint.hex()} is not a known schema set",
            )
        if writer is self._current:
            return self.decode(bytes(data))  # a bytearray or memoryview
        fo = io.BytesIO(data)
        fo.seek(HEADER_LEN)
        try:
            record = self._read(fo, writer)
        except (EOFError, *_BODY_ERRORS) as exc:
            raise self._body_failure(data, writer, exc) from exc
        if fo.tell() != len(data):
            raise DecodeError(
                DecodeFailure.TRAILING_BYTES,
                f"{len(data) - fo.tell()} byte(s) after the envelope (of {len(data)})",
            )
        return self._to_event(record)

    def _read(self, fo: io.BytesIO, writer: SchemaSet) -> dict[str, Any]:
        record: dict[str, Any] = schemaless_reader(  # type: ignore[assignment]
            fo,
            writer.parsed,
            None if writer is self._current else self._current.parsed,
            return_record_name=True,
            # Only the payload union (several records) comes back as a
            # (name, record) tuple; seal_ref stays a plain dict or None.
            return_record_name_override=True,
        )
        return record

    def _body_failure(self, data: bytes, writer: SchemaSet, exc: Exception) -> DecodeError:
        """Classifies a failed body read: input that ran out, or input that is wrong.

        fastavro reports a short read as EOFError or as IndexError (a varint
        cut mid-way), and IndexError also means a bad union index; so the
        read is replayed on an input that records whether it ran dry. Only
        failures pay for this.
        """
        fo = _ShortReadProbe(data)
        fo.seek(HEADER_LEN)
        try:
            self._read(fo, writer)
        except (EOFError, *_BODY_ERRORS):
            pass  # the same failure again; we only want to know how it ended
        what = f"{type(exc).__name__}: {exc}"[:500]
        if fo.negative_length:
            return DecodeError(DecodeFailure.BODY_INVALID, f"negative length prefix: {what}")
        if fo.ran_dry:
            return DecodeError(
                DecodeFailure.TRUNCATED, f"body ends early ({len(data)} bytes): {what}"
            )
        return DecodeError(DecodeFailure.BODY_INVALID, what)

    @staticmethod
    def _to_event(record: dict[str, Any]) -> Event:
        """The Event of an envelope fastavro read (a set other than the current)."""
        branch = record["payload"]
        if not isinstance(branch, tuple):
            raise DecodeError(DecodeFailure.BODY_INVALID, "payload is not a named union branch")
        ref = record["seal_ref"]
        return _event_of(
            record["event_id"],
            record["type"],
            record["occurred_at"],
            record["producer_id"],
            record["producer_seq"],
            None if ref is None else SealRef(ref["seal_seq"], ref["leaf_index"]),
            branch,
        )
