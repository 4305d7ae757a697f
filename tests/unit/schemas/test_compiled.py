"""The generated encoder and decoder agree with fastavro byte for byte, and
refuse what fastavro refuses."""

from __future__ import annotations

import io
import random
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from fastavro.validation import validate

from cachet.schemas.compiled import Invalid, Malformed, Truncated, compile_schema
from cachet.schemas.loader import SCHEMA_DIR, load_schema_set, payload_branches

CURRENT = load_schema_set(SCHEMA_DIR)
ENVELOPE = CURRENT.parsed
COMPILED = compile_schema(ENVELOPE)
BRANCHES = [b["name"] for b in payload_branches(CURRENT.envelope)]


def _fastavro_write(record: dict[str, Any]) -> bytes:
    buf = io.BytesIO()
    schemaless_writer(buf, ENVELOPE, record)
    return buf.getvalue()


def _fastavro_read(data: bytes) -> Any:
    return schemaless_reader(
        io.BytesIO(data),
        ENVELOPE,
        None,
        return_record_name=True,
        return_record_name_override=True,
    )


def _ours(record: dict[str, Any]) -> bytes:
    out = bytearray()
    COMPILED.encode_into(record, out)
    return bytes(out)


def _generated(count: int, seed: int) -> list[dict[str, Any]]:
    """Random envelopes, in the tuple notation the codec writes the payload with."""
    random.seed(seed)  # fastavro's generator draws from the global RNG
    return [_fastavro_read(_fastavro_write(r)) for r in generate_many(ENVELOPE, count)]


RECORDS = _generated(1500, seed=7)


def test_the_generated_data_covers_every_payload_type() -> None:
    assert {r["payload"][0] for r in RECORDS} == set(BRANCHES)


def test_encoding_is_byte_identical_to_fastavro() -> None:
    mismatched = [r["payload"][0] for r in RECORDS if _ours(r) != _fastavro_write(r)]
    assert mismatched == []


def test_decoding_gives_what_fastavro_gives_and_consumes_every_byte() -> None:
    for record in RECORDS:
        data = _fastavro_write(record)
        value, end = COMPILED.decode(data)
        assert (value, end) == (_fastavro_read(data), len(data))


def test_every_proper_prefix_is_truncated_or_malformed() -> None:
    for record in RECORDS[:60]:
        data = _fastavro_write(record)
        for cut in range(len(data)):
            with pytest.raises((Truncated, Malformed)):
                value, end = COMPILED.decode(data[:cut])
                # A prefix that happens to decode must not end where a whole
                # record would: the codec checks the end, so it is refused.
                assert end == cut
                raise Truncated("decoded a prefix to its end")


def test_flipped_bytes_decode_as_fastavro_decodes_them_or_are_refused() -> None:
    rng = random.Random(11)
    for record in RECORDS[:200]:
        data = bytearray(_fastavro_write(record))
        i = rng.randrange(len(data))
        data[i] ^= 1 << rng.randrange(8)
        try:
            ours, end = COMPILED.decode(bytes(data))
        except (Truncated, Malformed):
            continue
        # Whatever we accept, fastavro reads the same way.
        assert _fastavro_read(bytes(data[:end])) == ours


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("producer_seq", 2**63),  # out of the long range
        ("producer_seq", True),  # a bool is not a long
        ("producer_seq", 1.0),  # nor is a float
        ("event_id", b"not text"),
    ],
)
def test_what_fastavro_refuses_is_invalid(field: str, value: Any) -> None:
    record = dict(RECORDS[0])
    record[field] = value
    assert not validate(record, ENVELOPE, raise_errors=False)
    with pytest.raises(Invalid):
        _ours(record)


def test_a_lone_surrogate_is_invalid() -> None:
    # fastavro's validator lets it through and its writer then fails.
    with pytest.raises(Invalid, match="UTF-8"):
        _ours({**RECORDS[0], "producer_id": "\ud800"})


def test_an_unknown_enum_symbol_and_an_unknown_branch_are_invalid() -> None:
    written = next(r for r in RECORDS if r["payload"][0] == "cachet.events.CacheRead")
    bad_symbol = {**written, "payload": (written["payload"][0], {**written["payload"][1]})}
    bad_symbol["payload"][1]["outcome"] = "MAYBE"
    with pytest.raises(Invalid, match="outcome"):
        _ours(bad_symbol)
    with pytest.raises(Invalid, match="no branch"):
        _ours({**written, "payload": ("cachet.events.Nope", written["payload"][1])})


def test_a_length_prefix_beyond_the_input_is_truncated_and_a_negative_one_malformed() -> None:
    data = _fastavro_write(RECORDS[0])
    # The event id is the first field: a string whose length prefix is byte 0.
    with pytest.raises(Truncated):
        COMPILED.decode(b"\x7e" + data[1:5])
    with pytest.raises(Malformed, match="negative"):
        COMPILED.decode(b"\x03" + data[1:])
