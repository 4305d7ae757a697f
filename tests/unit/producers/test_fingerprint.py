"""cachet.producers.fingerprint: canonical, injective, domain-separated, pinned."""

from __future__ import annotations

import hashlib
import math
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cachet.producers.fingerprint import (
    DOMAIN,
    CanonicalJsonError,
    Computation,
    FingerprintError,
    LlmRequest,
    canonical_encoding,
    canonical_json,
    fingerprint,
    fingerprint_hex,
    key_fingerprint,
    llm_computation,
)

# -- known answers: the encoding must never drift silently --------------------

KAT = Computation(
    input=b"hello",
    computation="risk.var",
    parameters={"horizon_days": 10, "confidence": 0.99},
    version="2",
    hardware_class="cpu",
)
KAT_HEX = "ac2669d00cf43dd4002aa3665c5ec5d4e60df1a99ae20d1d4445c8774d66d2af"
KAT_SUBSET_HEX = "15e27a8fe5d395f771cef4b95f3cf913a95c02f8110ebd3bd3c9285c2e2ac78d"
LLM_KAT_HEX = "0d2c2a90f06ef8611fffe9d4076f9d7c55831ef4b7f491575b77f970bd2cfb72"


def frame(name: str, kind: int, value: bytes) -> bytes:
    raw = name.encode()
    return struct.pack(">I", len(raw)) + raw + struct.pack(">BQ", kind, len(value)) + value


def test_encoding_is_the_documented_byte_layout() -> None:
    # Rebuilt from the module docstring alone, as a third party would.
    expected = (
        struct.pack(">I", 21)
        + b"cachet/fingerprint/v1"
        + frame("input", 0x01, b"hello")
        + frame("computation", 0x02, b"risk.var")
        + frame("parameters", 0x03, b'{"confidence":0.99,"horizon_days":10}')
        + frame("version", 0x02, b"2")
        + frame("hardware_class", 0x02, b"cpu")
    )
    assert DOMAIN == b"cachet/fingerprint/v1"
    assert canonical_encoding(KAT) == expected
    assert fingerprint(KAT) == hashlib.sha3_256(expected).digest()


def test_known_answer_vectors() -> None:
    assert fingerprint_hex(fingerprint(KAT)) == KAT_HEX
    assert fingerprint(KAT, ["input", "computation"]).hex() == KAT_SUBSET_HEX
    req = LlmRequest(
        prompt="What is 2+2?",
        model_version="m-2025-01",
        temperature=0.7,
        system_prompt="be brief",
        max_tokens=64,
    )
    assert fingerprint(llm_computation(req)).hex() == LLM_KAT_HEX


def test_unselected_fields_are_framed_as_absent() -> None:
    enc = canonical_encoding(KAT, ["input"])
    assert frame("parameters", 0x00, b"") in enc
    assert frame("hardware_class", 0x00, b"") in enc
    assert frame("input", 0x01, b"hello") in enc


# -- properties of the key ----------------------------------------------------


def test_deterministic_and_32_bytes() -> None:
    again = Computation(
        input=b"hello",
        computation="risk.var",
        parameters={"horizon_days": 10, "confidence": 0.99},
        version="2",
        hardware_class="cpu",
    )
    assert fingerprint(KAT) == fingerprint(again)
    assert len(fingerprint(KAT)) == 32


def test_parameter_order_does_not_matter() -> None:
    a = Computation(input="x", computation="c", parameters={"a": 1, "b": {"y": 2, "x": [1, 2]}})
    b = Computation(input="x", computation="c", parameters={"b": {"x": [1, 2], "y": 2}, "a": 1})
    assert fingerprint(a) == fingerprint(b)


def test_input_kinds_are_kept_apart() -> None:
    fps = {fingerprint(Computation(input=v, computation="c")) for v in (b"1", "1", 1, [1], None)}
    assert len(fps) == 5


def test_no_concatenation_ambiguity() -> None:
    a = Computation(input="ab", computation="c")
    b = Computation(input="a", computation="bc")
    assert fingerprint(a) != fingerprint(b)
    # ... nor between neighbouring fields further down.
    c = Computation(input="x", computation="c", version="12", hardware_class="3")
    d = Computation(input="x", computation="c", version="1", hardware_class="23")
    assert fingerprint(c) != fingerprint(d)


def test_field_subset_changes_the_hash() -> None:
    full = fingerprint(KAT)
    subset = fingerprint(KAT, ["input", "computation", "parameters", "version"])
    assert full != subset
    # Fields not selected do not influence the key ...
    other_hw = Computation(
        input=KAT.input,
        computation=KAT.computation,
        parameters=KAT.parameters,
        version=KAT.version,
        hardware_class="gpu-h100",
    )
    assert fingerprint(other_hw, ["input", "computation", "parameters", "version"]) == subset
    # ... and the order a contract lists its fields in does not either.
    assert fingerprint(KAT, ["version", "input"]) == fingerprint(KAT, ("input", "version"))


def test_bad_field_selections_are_refused() -> None:
    with pytest.raises(FingerprintError, match="unknown fingerprint field 'tenant'"):
        fingerprint(KAT, ["input", "tenant"])
    with pytest.raises(FingerprintError, match="at least one"):
        fingerprint(KAT, [])
    with pytest.raises(FingerprintError, match="collection of names"):
        fingerprint(KAT, "input")


def test_parameters_are_frozen_at_construction() -> None:
    params: dict[str, Any] = {"k": 1}
    c = Computation(input="x", computation="c", parameters=params)
    before = fingerprint(c)
    params["k"] = 2
    assert fingerprint(c) == before


# -- canonical JSON -----------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ({"b": 1, "a": [True, False, None]}, b'{"a":[true,false,null],"b":1}'),
        (1.0, b"1"),
        (-0.0, b"0"),
        (0.7, b"0.7"),
        (1e21, b"1e+21"),
        (1e-7, b"1e-7"),
        (123456789012.5, b"123456789012.5"),
        ('\u20ac\n\x01"\\', '"\u20ac\\n\\u0001\\"\\\\"'.encode()),
        # RFC 8785: keys sort by UTF-16 code units (U+1F600 < U+FB01 there).
        ({"\ufb01": 1, "\U0001f600": 2}, '{"\U0001f600":2,"\ufb01":1}'.encode()),
    ],
)
def test_canonical_json(value: Any, expected: bytes) -> None:
    assert canonical_json(value) == expected


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        (math.nan, "nan is not a JSON number"),
        (math.inf, "inf is not a JSON number"),
        ({1: "x"}, "object key 1 is a int"),
        (2**53 + 1, "outside"),
        ({1, 2}, "set is not a JSON value"),
        ("\ud800", "lone surrogate"),
    ],
)
def test_non_json_is_rejected(value: Any, problem: str) -> None:
    with pytest.raises(CanonicalJsonError, match=problem):
        canonical_json(value)


def test_error_names_the_parameter() -> None:
    c = Computation(input="x", computation="c", parameters={"inner": {"t": math.nan}})
    with pytest.raises(CanonicalJsonError) as info:
        fingerprint(c)
    assert info.value.path == "$.parameters.inner.t"


# -- LLM keys -----------------------------------------------------------------


def llm(**overrides: Any) -> LlmRequest:
    base: dict[str, Any] = {
        "prompt": "Summarise the filing.",
        "model_version": "m-2025-01",
        "temperature": 0.7,
        "system_prompt": "You are terse.",
        "top_p": 0.9,
        "max_tokens": 256,
    }
    base.update(overrides)
    return LlmRequest(**base)


def llm_fp(**overrides: Any) -> bytes:
    return fingerprint(llm_computation(llm(**overrides)))


def test_llm_temperature_is_exact() -> None:
    assert llm_fp(temperature=0.7) == llm_fp(temperature=0.7)
    assert llm_fp(temperature=0.7) != llm_fp(temperature=0.70000001)


@pytest.mark.parametrize(
    "change",
    [
        {"prompt": "Summarise the filing!"},
        {"model_version": "m-2025-02"},
        {"system_prompt": "You are verbose."},
        {"top_p": 0.95},
        {"max_tokens": 257},
    ],
)
def test_every_llm_field_is_in_the_key(change: dict[str, Any]) -> None:
    assert llm_fp(**change) != llm_fp()


def test_llm_key_holds_no_prompt_text() -> None:
    enc = canonical_encoding(llm_computation(llm()))
    assert b"Summarise" not in enc
    assert b"terse" not in enc


def test_llm_request_validation() -> None:
    with pytest.raises(FingerprintError, match="temperature must be finite"):
        llm(temperature=math.nan)
    with pytest.raises(FingerprintError, match="max_tokens must be >= 1"):
        llm(max_tokens=0)


def test_fingerprint_hex_checks_length() -> None:
    with pytest.raises(FingerprintError, match="32 bytes"):
        fingerprint_hex(b"short")


# -- property: distinct computations, distinct fingerprints -------------------

json_scalars: st.SearchStrategy[Any] = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-(2**53), 2**53),
    st.text(max_size=8),
    st.floats(allow_nan=False, allow_infinity=False),
)
inputs = st.binary(max_size=8) | st.text(max_size=8) | json_scalars
computations = st.builds(
    Computation,
    input=inputs,
    computation=st.text(max_size=6),
    parameters=st.dictionaries(st.text(max_size=4), json_scalars, max_size=3),
    version=st.text(max_size=3),
    hardware_class=st.text(max_size=3),
)


def semantic_key(c: Computation) -> tuple[object, ...]:
    """What should decide equality: input kind and canonical value, the rest."""
    if isinstance(c.input, bytes):
        inp: tuple[str, bytes] = ("bytes", c.input)
    elif isinstance(c.input, str):
        inp = ("str", c.input.encode("utf-8", "surrogatepass"))
    else:
        inp = ("json", canonical_json(c.input))
    return (inp, c.computation, canonical_json(c.parameters), c.version, c.hardware_class)


def encodable(c: Computation) -> bool:
    try:
        canonical_encoding(c)
    except FingerprintError:
        return False  # a lone surrogate from st.text: refused, not hashed
    return True


@settings(max_examples=300)
@given(computations, computations)
def test_distinct_computations_have_distinct_fingerprints(a: Computation, b: Computation) -> None:
    if not (encodable(a) and encodable(b)):
        return
    same = semantic_key(a) == semantic_key(b)
    assert (fingerprint(a) == fingerprint(b)) == same


@settings(max_examples=200)
@given(st.floats(allow_nan=False, allow_infinity=False))
def test_canonical_numbers_round_trip(x: float) -> None:
    assert float(canonical_json(x)) == x


# -- the plain key's fast form --------------------------------------------------

FIELD_SETS = st.one_of(
    st.none(),
    st.lists(
        st.sampled_from(["input", "computation", "parameters", "version", "hardware_class"]),
        min_size=1,
        unique=True,
    ).map(tuple),
)


@settings(max_examples=300, deadline=None)
@given(key=st.text(), computation=st.text(), fields=FIELD_SETS)
def test_key_fingerprint_is_the_fingerprint_of_the_plain_computation(
    key: str, computation: str, fields: tuple[str, ...] | None
) -> None:
    expected = fingerprint(Computation(input=key, computation=computation), fields)
    assert key_fingerprint(key, computation, fields) == expected
    if fields is not None:  # any collection of the same names
        assert key_fingerprint(key, computation, list(fields)) == expected


def test_key_fingerprint_refuses_what_fingerprint_refuses() -> None:
    with pytest.raises(FingerprintError, match="not valid Unicode"):
        key_fingerprint("\ud800", "quote")
    with pytest.raises(FingerprintError, match="unknown fingerprint field"):
        key_fingerprint("k", "quote", ("input", "colour"))
    with pytest.raises(FingerprintError, match="the str"):
        key_fingerprint("k", "quote", "input")
