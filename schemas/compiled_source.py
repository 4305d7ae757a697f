"""The state of one schema's code generation (:mod:`cachet.schemas.compiled`):
the source lines, the constants they name, the named types met so far."""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from cachet.schemas.compiled_runtime import (
    Invalid,
    Malformed,
    Truncated,
    _bad_index,
    _encode_string,
    _encode_symbol,
    _invalid,
    _read_length,
    _read_varint_rest,
    _write_varint,
    _write_wide,
)

__all__ = ["Source", "kind_of", "resolve"]


class Source:
    """Python source being generated, with the constants it refers to."""

    def __init__(self, factories: Mapping[str, Callable[..., Any]]) -> None:
        self.lines: list[str] = []
        self.tail: list[str] = []  # tables of functions, after every function
        self.env: dict[str, Any] = {
            "Mapping": Mapping,
            "Sequence": Sequence,
            "Invalid": Invalid,
            "Malformed": Malformed,
            "Truncated": Truncated,
            "_wv": _write_varint,
            "_ww": _write_wide,
            "_ws": _encode_string,
            "_wy": _encode_symbol,
            "_sc": {},  # this schema's string memo (see _encode_string)
            "_rv": _read_varint_rest,
            "_rl": _read_length,
            "_bad": _bad_index,
            "_invalid": _invalid,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_unpack_f": struct.Struct("<f").unpack_from,
            "_pack_d": struct.Struct("<d").pack,
            "_pack_f": struct.Struct("<f").pack,
        }
        self.count = 0
        self.top = ""  # full name of the schema's top record, if it is one
        self.decoders: dict[str, str] = {}  # record full name -> its decoder function
        self.encoders: dict[str, str] = {}  # record full name -> its encoder function
        self.named: dict[str, Any] = {}  # full name -> schema
        self.factories = {name: self.const(f) for name, f in factories.items()}
        # Records whose decoding (encoding) is being written inline: one met
        # again inside itself is called instead, which ends the recursion.
        self.inlining: list[str] = []
        self.inlining_writes: list[str] = []

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any) -> str:
        ident = self.name("_k")
        self.env[ident] = value
        return ident


def resolve(src: Source, schema: Any) -> Any:
    """The schema a reference names, registering named definitions on the way."""
    if isinstance(schema, str):
        return src.named.get(schema, schema)
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return resolve(src, schema["type"])
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        src.named.setdefault(schema["name"], schema)
    return schema


def kind_of(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return str(schema["type"])
