"""The wire codec: round trips, byte layout, hostile input, invalid payloads."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import math
import uuid
from typing import Any

import pytest
from fastavro import schemaless_writer
from fastavro.schema import fingerprint as fastavro_fingerprint
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cachet.schemas.codec import (
    HEADER_LEN,
    MAGIC,
    DecodeError,
    DecodeFailure,
    EncodeError,
    EventCodec,
    _unfrozen,
)
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event, uuid7
from cachet.schemas.loader import SCHEMA_DIR, crc64_avro, load_schema_set

CODEC = EventCodec()
CURRENT = load_schema_set(SCHEMA_DIR)
INT64 = st.integers(-(2**63), 2**63 - 1)
INT32 = st.integers(-(2**31), 2**31 - 1)


def _event(type_: EventType, payload: dict[str, Any] | None = None, **kw: Any) -> Event:
    fields: dict[str, Any] = {"producer_id": "quotes-svc", "producer_seq": 7} | kw
    return new_event(type_, SAMPLE_PAYLOADS[type_] if payload is None else payload, **fields)


def _fail(data: bytes) -> DecodeFailure:
    with pytest.raises(DecodeError) as info:
        CODEC.decode(data)
    assert info.value.failure.value in str(info.value)
    return info.value.failure


# --------------------------------------------------------------------------- round trips


def test_every_event_type_has_a_sample() -> None:
    assert set(SAMPLE_PAYLOADS) == set(EventType)


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
@pytest.mark.parametrize("seal_ref", [None, SealRef(seal_seq=88, leaf_index=2)])
def test_sample_round_trips(event_type: EventType, seal_ref: SealRef | None) -> None:
    event = _event(event_type, seal_ref=seal_ref)
    data = CODEC.encode(event)
    assert data[:HEADER_LEN] == MAGIC + CODEC.fingerprint
    assert CODEC.decode(data) == event


def _strategy(schema: Any, named: dict[str, st.SearchStrategy[Any]]) -> st.SearchStrategy[Any]:
    """A hypothesis strategy for values of a (fastavro-parsed) Avro schema."""
    if isinstance(schema, str):
        primitives: dict[str, st.SearchStrategy[Any]] = {
            "null": st.none(),
            "boolean": st.booleans(),
            "int": INT32,
            "long": INT64,
            "float": st.floats(allow_nan=False, width=32),
            "double": st.floats(allow_nan=False),
            "bytes": st.binary(max_size=64),
            "string": st.text(max_size=24),
        }
        if schema in primitives:
            return primitives[schema]
        return st.deferred(lambda: named[schema])
    if isinstance(schema, list):
        return st.one_of([_strategy(branch, named) for branch in schema])
    kind = schema["type"]
    if kind == "record":
        fields = {f["name"]: _strategy(f["type"], named) for f in schema["fields"]}
        strategy: st.SearchStrategy[Any] = st.fixed_dictionaries(fields)
    elif kind == "enum":
        strategy = st.sampled_from(schema["symbols"])
    elif kind == "array":
        return st.lists(_strategy(schema["items"], named), max_size=4)
    elif kind == "map":
        return st.dictionaries(st.text(max_size=8), _strategy(schema["values"], named), max_size=3)
    else:
        return _strategy(kind, named)
    named[schema["name"]] = strategy
    return strategy


PAYLOAD_STRATEGIES = {
    t: _strategy(CURRENT.payloads[f"cachet.events.{t.value}"], {}) for t in EventType
}
EVENTS = st.sampled_from(list(EventType)).flatmap(
    lambda t: st.builds(
        Event,
        type=st.just(t),
        payload=PAYLOAD_STRATEGIES[t],
        event_id=st.text(max_size=40),
        occurred_at_us=INT64,
        producer_id=st.text(max_size=24),
        producer_seq=INT64,
        seal_ref=st.none() | st.builds(SealRef, INT64, INT32),
    )
)


@settings(max_examples=400, suppress_health_check=[HealthCheck.too_slow])
@given(EVENTS)
def test_random_events_round_trip(event: Event) -> None:
    assert CODEC.decode(CODEC.encode(event)) == event


def test_encoding_is_deterministic() -> None:
    event = _event(EventType.SEAL)
    assert CODEC.encode(event) == CODEC.encode(event)


# --------------------------------------------------------------------------- byte layout


def _zigzag(n: int) -> bytes:
    z, out = (n << 1) ^ (n >> 63), bytearray()
    while z >= 0x80:
        out.append((z & 0x7F) | 0x80)
        z >>= 7
    return bytes(out + bytes([z]))


def _avro_str(s: str) -> bytes:
    return _zigzag(len(s.encode())) + s.encode()


def test_wire_bytes_match_the_documented_layout() -> None:
    """Built by hand from the Avro spec, independently of fastavro."""
    event = Event(
        type=EventType.WATERMARK_TICK,
        payload={"ticker_id": "t1", "partition": 2, "tick_seq": 5, "emitted_at_us": -3},
        event_id="0190f8a4-0000-7000-8000-000000000000",
        occurred_at_us=1_790_000_000_000_000,
        producer_id="ticker",
        producer_seq=9,
        seal_ref=SealRef(4, 1),
    )
    branch = list(EventType).index(EventType.WATERMARK_TICK)  # envelope union order
    body = (
        _avro_str(event.event_id)
        + _avro_str("WatermarkTick")
        + _zigzag(event.occurred_at_us)
        + _avro_str("ticker")
        + _zigzag(9)
        + _zigzag(1)
        + _zigzag(4)
        + _zigzag(1)  # seal_ref: branch 1, seal_seq, leaf_index
        + _zigzag(branch)
        + _avro_str("t1")
        + _zigzag(2)
        + _zigzag(5)
        + _zigzag(-3)
    )
    assert CODEC.encode(event) == b"\xc3\x01" + CODEC.fingerprint + body


def test_fingerprint_is_crc64_avro_of_the_canonical_form_little_endian() -> None:
    expected = fastavro_fingerprint(CURRENT.canonical_form, "CRC-64-AVRO")
    assert CODEC.fingerprint.hex() == expected
    assert CODEC.fingerprint == crc64_avro(CURRENT.canonical_form.encode()).to_bytes(8, "little")
    assert len(CODEC.fingerprint) == 8


# --------------------------------------------------------------------------- hostile input


def test_empty_input_is_not_a_single_object() -> None:
    assert _fail(b"") is DecodeFailure.NOT_SINGLE_OBJECT


@pytest.mark.parametrize("data", [b"\x00", b"\xc3\x00" + bytes(20), b"\x01\xc3", b'{"json": 1}'])
def test_wrong_magic(data: bytes) -> None:
    assert _fail(data) is DecodeFailure.NOT_SINGLE_OBJECT


@pytest.mark.parametrize("cut", range(1, HEADER_LEN))
def test_truncated_header(cut: int) -> None:
    assert _fail(CODEC.encode(_event(EventType.CACHE_READ))[:cut]) is DecodeFailure.TRUNCATED


@pytest.mark.parametrize("event_type", list(EventType), ids=lambda t: t.value)
def test_every_strict_prefix_of_a_body_is_truncated(event_type: EventType) -> None:
    data = CODEC.encode(_event(event_type, seal_ref=SealRef(1, 2)))
    for cut in range(HEADER_LEN, len(data)):
        assert _fail(data[:cut]) is DecodeFailure.TRUNCATED, cut


def test_unknown_fingerprint() -> None:
    data = bytearray(CODEC.encode(_event(EventType.SEAL)))
    data[2] ^= 0x01
    assert _fail(bytes(data)) is DecodeFailure.UNKNOWN_FINGERPRINT


def test_trailing_bytes() -> None:
    data = CODEC.encode(_event(EventType.SEAL))
    assert _fail(data + b"\x00") is DecodeFailure.TRAILING_BYTES


def _raw_envelope(type_name: str, branch: EventType) -> bytes:
    record = {
        "event_id": uuid7(),
        "type": type_name,
        "occurred_at": 1,
        "producer_id": "p",
        "producer_seq": 1,
        "seal_ref": None,
        "payload": (f"cachet.events.{branch.value}", SAMPLE_PAYLOADS[branch]),
    }
    buf = io.BytesIO()
    schemaless_writer(buf, CURRENT.parsed, record)
    return MAGIC + CODEC.fingerprint + buf.getvalue()


def test_raw_envelope_helper_is_valid() -> None:
    event = CODEC.decode(_raw_envelope("CacheRead", EventType.CACHE_READ))
    assert event.type is EventType.CACHE_READ


@pytest.mark.parametrize("type_name", ["CacheWritten", "Bogus", "", "cacheread"])
def test_type_must_match_the_payload_branch(type_name: str) -> None:
    assert _fail(_raw_envelope(type_name, EventType.CACHE_READ)) is DecodeFailure.TYPE_MISMATCH


@pytest.mark.parametrize(
    "body",
    [
        _zigzag(2) + b"\xff\xfe",  # event_id: invalid UTF-8
        _zigzag(-5) + b"abc",  # negative string length
        _avro_str("x")
        + _avro_str("Seal")
        + _zigzag(1)
        + _avro_str("p")
        + _zigzag(1)
        + _zigzag(7),  # seal_ref: union branch 7 of 2
        _avro_str("x")
        + _avro_str("Seal")
        + _zigzag(1)
        + _avro_str("p")
        + _zigzag(1)
        + _zigzag(0)
        + _zigzag(99),  # payload: union branch 99 of 20
    ],
)
def test_invalid_body(body: bytes) -> None:
    assert _fail(MAGIC + CODEC.fingerprint + body) is DecodeFailure.BODY_INVALID


def _decode_or_decode_error(data: bytes) -> None:
    with contextlib.suppress(DecodeError):
        CODEC.decode(data)


@settings(max_examples=1500)
@given(st.binary(max_size=200))
def test_fuzz_arbitrary_bytes(data: bytes) -> None:
    _decode_or_decode_error(data)


@settings(max_examples=1500)
@given(st.binary(max_size=300))
def test_fuzz_bodies_behind_a_valid_header(body: bytes) -> None:
    _decode_or_decode_error(MAGIC + CODEC.fingerprint + body)


@settings(max_examples=1500)
@given(
    st.sampled_from(list(EventType)),
    st.lists(st.tuples(st.integers(0, 10_000), st.integers(1, 255)), min_size=1, max_size=4),
)
def test_fuzz_mutated_valid_events(event_type: EventType, flips: list[tuple[int, int]]) -> None:
    data = bytearray(CODEC.encode(_event(event_type, seal_ref=SealRef(3, 1))))
    for position, mask in flips:
        data[HEADER_LEN + position % (len(data) - HEADER_LEN)] ^= mask
    _decode_or_decode_error(bytes(data))


# --------------------------------------------------------------------------- invalid payloads


def _without(payload: dict[str, Any], field: str) -> dict[str, Any]:
    return {k: v for k, v in payload.items() if k != field}


_CW = SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN]
_BAD_PAYLOADS: list[tuple[EventType, dict[str, Any], str]] = [
    (EventType.CACHE_WRITTEN, _without(_CW, "key_hash"), "key_hash"),
    (EventType.CACHE_WRITTEN, _CW | {"key_hsh": b"x"}, "key_hsh"),
    (EventType.CACHE_WRITTEN, _CW | {"version": "3"}, "version"),
    (EventType.CACHE_WRITTEN, _CW | {"version": 3.5}, "version"),  # fastavro would truncate
    (EventType.CACHE_WRITTEN, _CW | {"version": True}, "version"),
    (EventType.CACHE_WRITTEN, _CW | {"version": 2**63}, "version"),
    (EventType.CACHE_WRITTEN, _CW | {"key_hash": "not bytes"}, "key_hash"),
    (EventType.CACHE_WRITTEN, _CW | {"value": _without(_CW["value"], "nonce")}, "nonce"),
    (EventType.CACHE_WRITTEN, _CW | {"ttl_ms": "soon"}, "ttl_ms"),
    (EventType.CACHE_READ, SAMPLE_PAYLOADS[EventType.CACHE_READ] | {"outcome": "MAYBE"}, "outcome"),
    (
        EventType.WATERMARK_TICK,
        SAMPLE_PAYLOADS[EventType.WATERMARK_TICK] | {"partition": 2**31},
        "partition",
    ),
    (EventType.SEAL, SAMPLE_PAYLOADS[EventType.SEAL] | {"leaf_hashes": ["x"]}, "leaf_hashes"),
    (EventType.SEAL, SAMPLE_PAYLOADS[EventType.CACHE_READ], "producer_id"),
]


@pytest.mark.parametrize(("event_type", "payload", "field"), _BAD_PAYLOADS)
def test_bad_payload_is_an_encode_error(
    event_type: EventType, payload: dict[str, Any], field: str
) -> None:
    with pytest.raises(EncodeError) as info:
        CODEC.encode(_event(event_type, payload))
    assert event_type.value in str(info.value)
    assert field in str(info.value)


@pytest.mark.parametrize(
    "changes",
    [
        {"producer_seq": "7"},
        {"producer_seq": 2**63},
        {"occurred_at_us": 1.5},
        {"producer_id": b"p"},
        {"seal_ref": SealRef(1, 2**31)},
    ],
)
def test_bad_envelope_is_an_encode_error(changes: dict[str, Any]) -> None:
    event = _event(EventType.CACHE_READ)
    fields = {name: getattr(event, name) for name in Event.__slots__} | changes
    with pytest.raises(EncodeError, match="CacheRead"):
        CODEC.encode(Event(**fields))


def test_optional_fields_may_be_omitted() -> None:
    payload = _without(_without(_CW, "ttl_ms"), "subject_hash")
    decoded = CODEC.decode(CODEC.encode(_event(EventType.CACHE_WRITTEN, payload)))
    assert decoded.payload == payload | {"ttl_ms": None, "subject_hash": None}


# --------------------------------------------------------------------------- ids and events


def test_uuid7_layout() -> None:
    now_us = 1_790_000_000_123_456
    text = uuid7(now_us, rand=lambda n: b"\xff" * n)
    value = uuid.UUID(text)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == now_us // 1000
    assert (value.int >> 64) & 0xFFF == 456 * 4096 // 1000
    assert value.int & ((1 << 62) - 1) == (1 << 62) - 1


@given(st.lists(st.integers(0, 2**48 * 1000 - 1), min_size=2, max_size=20))
def test_uuid7_sorts_by_time(times: list[int]) -> None:
    ids = [uuid7(t, rand=lambda n: bytes(n)) for t in times]
    assert sorted(ids) == [uuid7(t, rand=lambda n: bytes(n)) for t in sorted(times)]


@pytest.mark.parametrize("bad", [-1, 2**48 * 1000])
def test_uuid7_rejects_times_out_of_range(bad: int) -> None:
    with pytest.raises(ValueError):
        uuid7(bad)


def test_new_event_takes_time_and_randomness_from_parameters() -> None:
    make = dict(producer_id="p", producer_seq=1, clock=lambda: 5_000_001, rand=bytes)
    first = new_event(EventType.WATERMARK_TICK, {}, **make)  # type: ignore[arg-type]
    second = new_event(EventType.WATERMARK_TICK, {}, **make)  # type: ignore[arg-type]
    assert first == second
    assert first.occurred_at_us == 5_000_001
    assert (
        new_event(
            EventType.WATERMARK_TICK, {}, producer_id="p", producer_seq=1, occurred_at_us=42
        ).occurred_at_us
        == 42
    )


def test_decoded_doubles_keep_their_value() -> None:
    payload = SAMPLE_PAYLOADS[EventType.KV_SCRUB_COMPLETED] | {"coverage": math.pi}
    decoded = CODEC.decode(CODEC.encode(_event(EventType.KV_SCRUB_COMPLETED, payload)))
    assert decoded.payload["coverage"] == math.pi


# --------------------------------------------------------------------------- decoded events


@pytest.mark.parametrize("event_type", list(EventType))
def test_decoded_events_are_events_like_constructed_ones(event_type: EventType) -> None:
    # The decoder builds Event and SealRef without their __init__: what it
    # builds must be indistinguishable from what the constructors build.
    event = _event(event_type, seal_ref=SealRef(3, 1))
    for data in (CODEC.encode(event), bytearray(CODEC.encode(event))):
        decoded = CODEC.decode(data)
        assert type(decoded) is Event and type(decoded.seal_ref) is SealRef
        assert decoded == event and repr(decoded) == repr(event)
        assert hash(decoded.seal_ref) == hash(SealRef(3, 1))
        with pytest.raises(dataclasses.FrozenInstanceError):
            decoded.producer_seq = 8  # type: ignore[misc]


def test_only_plain_frozen_dataclasses_are_built_slot_by_slot() -> None:
    @dataclasses.dataclass(frozen=True, slots=True)
    class Plain:
        a: int
        b: str

    @dataclasses.dataclass(frozen=True, slots=True)
    class Checked:
        a: int

        def __post_init__(self) -> None:
            if self.a < 0:
                raise ValueError("negative")

    @dataclasses.dataclass(frozen=True)
    class NoSlots:
        a: int

    shadow = _unfrozen(Plain, ("a", "b"))
    assert shadow is not None
    built = object.__new__(shadow)
    built.a, built.b = 1, "x"
    built.__class__ = Plain
    assert type(built) is Plain and built == Plain(1, "x") and hash(built) == hash(Plain(1, "x"))
    # A class whose __init__ may do more, or whose fields are not the ones
    # the caller fills, is left to its constructor: no check is skipped.
    assert _unfrozen(Plain, ("a",)) is None
    assert _unfrozen(Checked, ("a",)) is None
    assert _unfrozen(NoSlots, ("a",)) is None
