"""The generated encoder and decoder agree with fastavro byte for byte, and
refuse what fastavro refuses."""

from __future__ import annotations

import io
import random
from collections.abc import Mapping
from typing import Any

import pytest
from fastavro import schemaless_reader, schemaless_writer
from fastavro.utils import generate_many
from fastavro.validation import validate

from cachet.schemas.compiled import Invalid, Malformed, Truncated, compile_schema
from cachet.schemas.compiled_runtime import (
    _MEMO_CHARS,
    _MEMO_ENTRIES,
    _RUN_ENTRIES,
    _encode_string,
)
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
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


# ------------------------------------------------------------- CacheReadBatch

READ = SAMPLE_PAYLOADS[EventType.CACHE_READ]


def _batch_envelope(reads: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        "event_id": "018f2c1e-0000-7000-8000-000000000000",
        "type": "CacheReadBatch",
        "occurred_at": 1_790_000_000_000_000,
        "producer_id": "node-a@1f",
        "producer_seq": 7,
        "seal_ref": {"seal_seq": 1, "leaf_index": 0},
        "payload": ("cachet.events.CacheReadBatch", {"node_id": "node-a", "reads": reads}),
    }


def _reads(count: int, seed: int) -> list[dict[str, Any]]:
    """Reads as the read audit writes them: hits and misses, varied sizes."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        hit = rng.random() < 0.7
        out.append(
            {
                **READ,
                "key_hash": rng.randbytes(32),
                "outcome": "HIT" if hit else "MISS",
                "reason": "served" if hit else rng.choice(["not_found", "stale", "view_stale"]),
                "fingerprint": rng.randbytes(32) if hit else None,
                "version": rng.choice([1, 63, 64, 8191, 8192, 2**31, 2**63 - 1]) if hit else None,
                "freshness": {
                    "age_ms": rng.randrange(0, 10**6),
                    "max_staleness_ms": 1000,
                    "headroom_ms": rng.randrange(-(10**6), 10**6),
                    "view_lag_ms": rng.randrange(0, 200),
                }
                if hit
                else None,
                "namespace": f"ns-{i % 3}",
            }
        )
    return out


def test_a_batch_of_a_thousand_reads_is_byte_identical_and_decodes_back() -> None:
    record = _batch_envelope(_reads(1000, seed=3))
    data = _fastavro_write(record)
    assert _ours(record) == data
    assert COMPILED.decode(data) == (_fastavro_read(data), len(data))
    assert COMPILED.decode(data)[0]["payload"][1]["reads"] == record["payload"][1]["reads"]


@pytest.mark.parametrize(
    "value",
    [
        0,
        1,
        -1,
        63,
        -64,
        64,
        -65,
        8191,
        -8192,
        8192,
        -8193,
        2**31 - 1,
        -(2**31),
        2**63 - 1,
        -(2**63),
    ],
)
def test_longs_at_every_varint_width_are_written_as_fastavro_writes_them(value: int) -> None:
    read = {**READ, "version": value, "freshness": {**READ["freshness"], "headroom_ms": value}}
    record = _batch_envelope([read])
    assert _ours(record) == _fastavro_write(record)


@pytest.mark.parametrize("value", [2**63, -(2**63) - 1, 2**64, -(2**64)])
def test_a_long_out_of_range_is_invalid_however_wide(value: int) -> None:
    read = {**READ, "freshness": {**READ["freshness"], "age_ms": value}}
    record = _batch_envelope([READ, read])
    assert not validate(record, ENVELOPE, raise_errors=False)
    with pytest.raises(Invalid, match="FreshnessProof.age_ms"):
        _ours(record)


@pytest.mark.parametrize(
    ("field", "value", "where"),
    [
        ("outcome", "MAYBE", "CacheRead.outcome"),
        ("version", "3", "CacheRead.version"),
        ("version", True, "CacheRead.version"),
        ("key_hash", "not bytes", "CacheRead.key_hash"),
        ("namespace", b"quotes", "CacheRead.namespace"),
        ("freshness", {**READ["freshness"], "view_lag_ms": 1.5}, "FreshnessProof.view_lag_ms"),
        ("freshness", "fresh", "FreshnessProof: expected a record"),
    ],
)
def test_one_bad_read_deep_in_a_batch_is_invalid_and_named(
    field: str, value: Any, where: str
) -> None:
    reads = _reads(600, seed=5)
    reads[517] = {**reads[517], field: value}
    record = _batch_envelope(reads)
    assert not validate(record, ENVELOPE, raise_errors=False)
    with pytest.raises(Invalid, match=where):
        _ours(record)


def test_a_field_left_out_takes_its_default_as_in_fastavro() -> None:
    # The fast path indexes every field; a dict without one starts over on
    # the path that takes defaults, leaving nothing of the first try behind.
    optional_out = {k: v for k, v in READ.items() if k not in ("fingerprint", "freshness")}
    nested_out = {**READ, "freshness": {"age_ms": 1, "max_staleness_ms": 2, "headroom_ms": 1}}
    record = _batch_envelope([READ, optional_out, READ])
    assert _ours(record) == _fastavro_write(record)
    required_out = {k: v for k, v in READ.items() if k != "reason"}
    for bad in (required_out, nested_out):
        with pytest.raises(Invalid):
            _ours(_batch_envelope([READ, bad]))


def test_mappings_and_the_tuple_notation_still_encode() -> None:
    class Frozen(Mapping[str, Any]):
        def __init__(self, d: dict[str, Any]) -> None:
            self._d = d

        def __getitem__(self, key: str) -> Any:
            return self._d[key]

        def __iter__(self) -> Any:
            return iter(self._d)

        def __len__(self) -> int:
            return len(self._d)

    as_mapping = Frozen({**READ, "freshness": Frozen(READ["freshness"])})
    tagged = {
        **READ,
        "version": ("long", 3),
        "freshness": ("cachet.events.FreshnessProof", READ["freshness"]),
    }
    ours = _ours(_batch_envelope([as_mapping, tagged]))
    assert ours == _fastavro_write(_batch_envelope([READ, READ]))


def test_the_string_memo_is_bounded_and_never_confuses_strings() -> None:
    class Loud(str):
        def __eq__(self, other: object) -> bool:
            return True

        __hash__ = str.__hash__

    memo: dict[str, bytes] = {}
    assert _encode_string("quotes", "p", memo) == b"\x0cquotes" and memo == {
        "quotes": b"\x0cquotes"
    }
    # A str subclass is written as its own text, never remembered.
    assert _encode_string(Loud("other!"), "p", memo) == b"\x0cother!" and len(memo) == 1
    for i in range(_MEMO_ENTRIES + 10):
        _encode_string(f"s{i}", "p", memo)
    assert len(memo) <= _MEMO_ENTRIES
    assert _encode_string("x" * (_MEMO_CHARS + 1), "p", memo) not in memo.values()
    # Through the generated encoder: the same bytes as fastavro, first and again.
    record = _batch_envelope(
        [{**READ, "namespace": Loud("quotes-2")}, {**READ, "namespace": "quotes-2"}]
    )
    assert _ours(record) == _ours(record) == _fastavro_write(record)


# ------------------------------------------------ decoding memos and strictness


def test_reads_repeating_runs_of_text_decode_as_fastavro_in_any_order() -> None:
    # Runs of string/enum fields are remembered by their bytes: batches that
    # share some runs, vary others by one byte, and hold long and non-ASCII
    # text, each decode exactly as fastavro reads them.
    rng = random.Random(17)
    names = ["quotes", "quoteS", "q", "quotés", "n" * 63, "n" * 64, "x" * 300, ""]
    for round_ in range(6):
        reads = _reads(200, seed=round_)
        for read in reads:
            read["namespace"] = rng.choice(names)
            read["reader_role"] = rng.choice(["owner", "auditor", "ownér"])
            read["node_id"] = rng.choice(["node-a", "node-b"])  # differ in the last byte
        data = _fastavro_write(_batch_envelope(reads))
        value, end = COMPILED.decode(data)
        assert (value, end) == (_fastavro_read(data), len(data))
        assert value["payload"][1]["reads"] == reads


def test_a_batch_cut_inside_a_remembered_run_is_truncated() -> None:
    reads = _reads(3, seed=1)
    data = _fastavro_write(_batch_envelope(reads))
    COMPILED.decode(data)  # every run of these reads is now remembered
    for cut in range(len(data) - 120, len(data)):
        with pytest.raises(Truncated):
            COMPILED.decode(data[:cut])


@pytest.mark.parametrize("seed", range(4))
def test_wide_longs_decode_as_fastavro_however_they_share_high_bytes(seed: int) -> None:
    # Eight-byte varints are read through a memo of their last five bytes,
    # and wide ones written through a memo of their high bits: values close
    # together (timestamps), far apart, negative, and at every width are
    # written as fastavro writes them and read as it reads them.
    rng = random.Random(seed)
    base = rng.randrange(2**48, 2**55)
    values = [base + rng.randrange(-(2**22), 2**22) for _ in range(50)]
    values += [-v for v in values[:10]]
    values += [rng.randrange(-(2**63), 2**63) for _ in range(50)]
    values += [2**k + d for k in range(0, 63, 7) for d in (-1, 0, 1)]
    for value in values:
        read = {**READ, "version": value, "freshness": {**READ["freshness"], "age_ms": -value}}
        record = {**_batch_envelope([read]), "occurred_at": value}
        data = _fastavro_write(record)
        assert _ours(record) == data
        assert COMPILED.decode(data) == (_fastavro_read(data), len(data))


def _long(value: int) -> bytes:
    out = bytearray()
    n = (value << 1) ^ (value >> 63)
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _text(value: str) -> bytes:
    raw = value.encode()
    return _long(len(raw)) + raw


@pytest.mark.parametrize("index", [b"\x80\x00", b"\x82\x00", b"\x04", b"\x03"])
def test_a_union_index_in_more_bytes_than_it_needs_or_out_of_range_is_malformed(
    index: bytes,
) -> None:
    record = {**RECORDS[0], "seal_ref": None}
    data = _fastavro_write(record)
    # seal_ref's index follows the first five fields.
    head = b"".join(
        [
            _text(record["event_id"]),
            _text(record["type"]),
            _long(record["occurred_at"]),
            _text(record["producer_id"]),
            _long(record["producer_seq"]),
        ]
    )
    assert data.startswith(head + b"\x00")
    with pytest.raises(Malformed, match="union index"):
        COMPILED.decode(head + index + data[len(head) + 1 :])


def test_an_enum_index_in_more_bytes_than_it_needs_or_out_of_range_is_malformed() -> None:
    enum = compile_schema({"type": "enum", "name": "E", "symbols": ["A", "B"]})
    assert enum.decode(b"\x02") == ("B", 1)
    for bad in (b"\x80\x00", b"\x04", b"\x01"):
        with pytest.raises(Malformed, match="enum index"):
            enum.decode(bad)


def test_a_factory_makes_the_record_and_sees_only_whole_input() -> None:
    seen: list[tuple[Any, ...]] = []

    def seal_ref(*values: Any) -> tuple[Any, ...]:
        seen.append(values)
        return values

    compiled = compile_schema(ENVELOPE, {"cachet.events.SealRef": seal_ref})
    record = {**RECORDS[0], "seal_ref": {"seal_seq": 3, "leaf_index": 1}}
    data = _fastavro_write(record)
    value, end = compiled.decode(data)
    assert value["seal_ref"] == (3, 1) and end == len(data)
    assert {**value, "seal_ref": record["seal_ref"]} == _fastavro_read(data)
    # Input cut inside a record's last field, a bytes value (read as a slice
    # that stops at the end): truncated, and the factory never sees it.
    schema = {
        "type": "record",
        "name": "R",
        "fields": [{"name": "n", "type": "long"}, {"name": "blob", "type": "bytes"}],
    }
    cut = compile_schema(schema, {"R": lambda n, blob: pytest.fail(f"made R of {blob!r}")})
    with pytest.raises(Truncated):
        cut.decode(b"\x02\x40" + b"x" * 10)
    assert compile_schema(schema, {"R": lambda n, blob: (n, blob)}).decode(b"\x02\x06xyz") == (
        (1, b"xyz"),
        5,
    )


def test_the_run_memos_stay_bounded_whatever_the_input() -> None:
    # Many distinct runs, half of them with text too long to remember.
    compiled = compile_schema(ENVELOPE)
    for round_ in range(3):
        reads = _reads(200, seed=round_)
        for i, read in enumerate(reads):
            read["namespace"] = f"ns-{round_}-{i}" + ("x" * 500 if i % 2 else "")
        data = _fastavro_write(_batch_envelope(reads))
        out = bytearray()
        compiled.encode_into(_batch_envelope(reads), out)
        assert out == data
        assert compiled.decode(data)[0]["payload"][1]["reads"] == reads
    generated = compiled.read.__globals__  # the generated module's names
    for kind in ("_rm", "_wm"):  # reading and writing
        assert any(v for k, v in generated.items() if k.startswith(kind))
    memos = [v for k, v in generated.items() if k.startswith(("_rm", "_wm"))]
    for memo in memos:
        assert len(memo) <= _RUN_ENTRIES
        assert all(len(key) <= 64 * 4 for key in memo)


def test_a_record_that_contains_itself_is_read_and_written_as_fastavro_does() -> None:
    # Records are written inline into their parent; one that refers back to
    # itself ends the recursion with a call to its own function.
    schema = {
        "type": "record",
        "name": "Node",
        "fields": [
            {"name": "label", "type": "string"},
            {"name": "next", "type": ["null", "Node"]},
            {"name": "children", "type": {"type": "array", "items": "Node"}},
        ],
    }
    compiled = compile_schema(schema)
    leaf = {"label": "leaf", "next": None, "children": []}
    tree = {"label": "root", "next": {**leaf, "next": leaf}, "children": [leaf, leaf]}
    buf = io.BytesIO()
    schemaless_writer(buf, schema, tree)
    out = bytearray()
    compiled.encode_into(tree, out)
    assert out == buf.getvalue()
    assert compiled.decode(bytes(out)) == (tree, len(out))
