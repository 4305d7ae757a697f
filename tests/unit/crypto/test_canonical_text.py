"""The canonical text forms every signed Cachet text format shares (seal
notes, registry statements, CABs, the keystore): one value, one text."""

from __future__ import annotations

import pytest

from cachet.crypto.seal import NoteFormatError, b64, check_uint, parse_uint, unb64

TOP = 2**63 - 1


def test_base64_round_trips_and_refuses_other_spellings() -> None:
    data = bytes(range(7))
    assert unb64("x", b64(data)) == data
    text = b64(b"\xff")  # "/w==": the unused bits are zero
    with pytest.raises(NoteFormatError, match="not canonical"):
        unb64("x", "/x==")  # decodes to the same byte with non-zero unused bits
    with pytest.raises(NoteFormatError, match="not valid base64"):
        unb64("x", text.rstrip("="))


@pytest.mark.parametrize("text", ["0", "1", "42", str(TOP)])
def test_parse_uint_accepts_canonical_decimals(text: str) -> None:
    assert parse_uint("n", text) == int(text)


@pytest.mark.parametrize("text", ["", "01", "+1", "-1", " 1", "1 ", "1e3", "\u0661", "0x1"])
def test_parse_uint_refuses_other_spellings(text: str) -> None:
    with pytest.raises(NoteFormatError, match="n .* is not a canonical decimal integer"):
        parse_uint("n", text)


@pytest.mark.parametrize("text", [str(TOP + 1), str(10**19), "9" * 5000])
def test_parse_uint_refuses_values_past_an_avro_long(text: str) -> None:
    with pytest.raises(NoteFormatError, match="n is out of range"):
        parse_uint("n", text)


def test_check_uint_bounds_and_types() -> None:
    assert check_uint("n", 0) == 0
    assert check_uint("n", TOP) == TOP
    for bad in (-1, TOP + 1, True, 1.0, "1"):
        with pytest.raises(NoteFormatError, match="n must be an integer in"):
            check_uint("n", bad)  # type: ignore[arg-type]
