"""Avro binary encoders and decoders generated once from a schema.

fastavro's schemaless writer and reader walk the whole envelope schema on
every call (a union of every payload type), and its validator walks it
again: tens of microseconds per small event on a 2-core machine (``cachet
bench codec`` measures both). The codec's hot path only ever writes the current schema set and
reads data written with it, so this module generates Python source for that
one schema, once: straight-line code per record, every primitive read or
written inline (a one-byte varint is one comparison), nested records without
recursion and the items of an array unrolled into their parent's code (no
call per item). Encoding checks each value as it writes it, as strictly as
``fastavro.validation.validate`` (exact types, ints within their 32/64-bit
range, enum symbols, union branches); decoding refuses what is not a value
of the schema (truncation, negative lengths, bad union or enum indexes,
oversized varints, invalid UTF-8). The bytes are the Avro specification's
binary encoding, identical to fastavro's (tests compare both ways on
generated data for every payload type).

Decoding is stricter than fastavro in one way: a union branch or enum symbol
index written in more bytes than it needs (no Avro writer emits one) is
malformed, so each index is one byte compared against its table.

Where truncation is found: a string's end is checked before its text is
decoded (so a cut UTF-8 sequence is never mistaken for bad UTF-8), every
other read either raises when it passes the end (a single byte, a double)
or is a slice that stops at it, after which the position lies past the end;
the next read then raises, and the end of the value (and any record factory,
which sees values only once the input held them whole) checks the position.

Encoding has a fast path for what Cachet's code writes: a record dict that
holds every field is read by indexing (one that leaves a field out starts
over on the general path, which takes defaults), optional fields, flat
nested records (a FreshnessProof in a CacheRead) and the records of an array
(the CacheReads of a CacheReadBatch) are written inline, an int of one or
two varint bytes needs no range check, and a string or enum symbol written
before is one memo lookup. A Mapping or the tuple notation of a union branch
takes the general path (``tests/unit/schemas/test_compiled.py`` holds both
paths to fastavro's bytes).

Memos, each bounded, none trusted beyond what it remembers exactly:

* text: what a string was written as (exact ``str`` keys only);
* runs: in a payload or an array's items (not the envelope, which differs
  from event to event), consecutive string and enum fields are written from
  their values' bytes and read from the bytes' values, one lookup for the
  namespace, contract, outcome and reason of a read (a run's bytes decode to
  the same values every time; only runs read or written whole, so checked,
  are remembered);
* wide longs: the high part of eight-byte varints (timestamps), read and
  written.

Data written with another schema set still goes through fastavro, which
resolves it to the current reader schema.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping
from typing import Any

from cachet.schemas.compiled_decode import gen_decode, record_decoder
from cachet.schemas.compiled_encode import gen_encode, record_encoder
from cachet.schemas.compiled_runtime import Invalid, Malformed, Truncated
from cachet.schemas.compiled_source import Source, kind_of, resolve

__all__ = ["CompiledSchema", "Invalid", "Malformed", "Truncated", "compile_schema"]


class CompiledSchema:
    """One schema's generated encoder and decoder.

    ``read(data, pos) -> (value, end)`` is the generated decoder itself, for
    a caller that maps its failures itself to save a call per value (the
    codec): it raises :class:`Truncated`, :class:`Malformed`, IndexError or
    struct.error (the input ended) and UnicodeDecodeError (invalid UTF-8),
    and ``end`` may lie past ``len(data)`` (a last bytes value cut short:
    truncated too). :meth:`decode` does that mapping.
    """

    __slots__ = ("_encode", "read")

    def __init__(
        self, encode: Callable[[Any, bytearray], None], decode: Callable[..., Any]
    ) -> None:
        self._encode = encode
        self.read: Callable[[bytes, int], tuple[Any, int]] = decode

    def encode_into(self, value: Any, out: bytearray) -> None:
        """Checks ``value`` and appends its encoding to ``out``; raises
        :class:`Invalid` naming the field (``out`` may then hold a part)."""
        try:
            self._encode(value, out)
        except UnicodeEncodeError as exc:
            raise Invalid(f"a string is not encodable as UTF-8: {exc}") from None

    def decode(self, data: bytes, pos: int = 0) -> tuple[Any, int]:
        """The value encoded at ``data[pos:]`` and where it ends; raises
        :class:`Truncated` or :class:`Malformed` (and whatever a record
        factory raises). ``data`` must be ``bytes``."""
        try:
            value, end = self.read(data, pos)
        except (IndexError, struct.error):
            raise Truncated("input ends inside a value") from None
        except UnicodeDecodeError as exc:
            raise Malformed(f"invalid UTF-8 in a string: {exc}") from None
        if end > len(data):  # the last bytes value stopped at the end
            raise Truncated("input ends inside a value")
        return value, end


def compile_schema(
    schema: Any, factories: Mapping[str, Callable[..., Any]] | None = None
) -> CompiledSchema:
    """Generates the encoder and decoder of a parsed, self-contained schema
    (named types defined at first use and referenced by full name after;
    logical types stripped).

    ``factories``: for some records (by full name), what decoding makes of
    them instead of a dict: called with the field values in schema order
    (each already checked against its schema), it returns the decoded value
    or raises an error of its own (never IndexError, struct.error or
    UnicodeDecodeError, which mean truncated or malformed input). Encoding
    still takes the dict.
    """
    src = Source(factories or {})
    resolved = resolve(src, schema)
    if kind_of(resolved) == "record":
        src.top = resolved["name"]
        decode = record_decoder(src, resolved)
        encode = record_encoder(src, resolved)
    else:
        encode, decode = "_encode", "_decode"
        top = ["def _decode(data, pos):", "    size = len(data)"]
        gen_decode(src, resolved, "value", "    ", "", top)
        top += ["    return value, pos", "", "def _encode(v, out):"]
        gen_encode(src, resolved, "v", "    ", "", top)
        src.lines += top
    code = "\n".join(src.lines + [""] + src.tail) + "\n"
    namespace = dict(src.env)
    exec(compile(code, "<cachet.schemas.compiled>", "exec"), namespace)  # noqa: S102 - our own generated source
    return CompiledSchema(namespace[encode], namespace[decode])
