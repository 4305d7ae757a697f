"""Avro binary encoders and decoders generated once from a schema.

fastavro's schemaless writer and reader walk the whole envelope schema on
every call (a union of every payload type), and its validator walks it
again: about 80 us to encode and 40 us to decode one small event on a 2-core
machine. The codec's hot path only ever writes the current schema set and
reads data written with it, so this module generates Python source for that
one schema, once: one function per record, with every primitive read or
written inline (a one-byte varint is one comparison). Encoding checks each
value as it writes it, as strictly as ``fastavro.validation.validate``
(exact types, ints within their 32/64-bit range, enum symbols, union
branches); decoding reads with bounds checked against the input (truncation,
negative lengths, bad union or enum indexes, oversized varints, invalid
UTF-8 all raise). The bytes are the Avro specification's binary encoding,
identical to fastavro's (tests compare both ways on generated data for every
payload type).

Encoding has a fast path for what Cachet's code writes: a record dict that
holds every field is read by indexing (one that leaves a field out starts
over on the general path, which takes defaults), optional fields and flat
nested records (a FreshnessProof in a CacheRead) are written inline, an int
of one or two varint bytes needs no range check, and a string written before
is one memo lookup. A Mapping or the tuple notation of a union branch takes
the general path. One CacheRead item of a CacheReadBatch of 1,000 costs
about 1-2 us (``tests/unit/schemas/test_compiled.py`` holds both paths to
fastavro's bytes).

Data written with another schema set still goes through fastavro, which
resolves it to the current reader schema.
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Mapping, Sequence
from typing import Any

__all__ = ["CompiledSchema", "Invalid", "Malformed", "Truncated", "compile_schema"]

_INT = (-(2**31), 2**31 - 1)
_LONG = (-(2**63), 2**63 - 1)


class Invalid(ValueError):
    """A value the schema does not allow; the message names the field path."""


class Truncated(EOFError):
    """The input ended inside a value."""


class Malformed(ValueError):
    """Bytes no value of the schema encodes to (bad index, length, varint or UTF-8)."""


# ----------------------------------------------------------- runtime helpers
# Called by the generated code only off its fast paths.


def _write_varint(out: bytearray, n: int) -> None:
    """Writes the unsigned (already zigzagged) ``n`` as an Avro varint."""
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)


def _read_varint_rest(data: bytes, pos: int, b: int) -> tuple[int, int]:
    """Finishes a long whose first byte ``b`` (continuation bit set) is read."""
    n = b & 0x7F
    shift = 7
    while b & 0x80:
        b = data[pos]  # IndexError: truncated (the caller maps it)
        pos += 1
        n |= (b & 0x7F) << shift
        shift += 7
        if shift > 70:
            raise Malformed("varint longer than 10 bytes")
    value = (n >> 1) ^ -(n & 1)
    if not _LONG[0] <= value <= _LONG[1]:
        raise Malformed(f"varint {value} does not fit a long")
    return value, pos


def _invalid(path: str, expected: str, value: Any) -> Invalid:
    shown = repr(value)
    return Invalid(f"{path}: expected {expected}, got {type(value).__name__} {shown[:60]}")


def _write_wide(out: bytearray, n: int, limit: int, path: str, kind: str, value: int) -> None:
    """Writes the zigzagged ``n`` of an int/long ``value`` that needs three
    bytes or more, once its range is checked: zigzag maps the 32/64-bit range
    onto exactly ``[0, limit)``."""
    if n >= limit:
        raise _invalid(path, kind, value)
    _write_varint(out, n)


# Strings the generated encoders have written, with their encoding (length
# prefix and UTF-8): the reads of one node repeat a few namespaces, contracts,
# reasons and roles thousands of times. Only exact ``str`` values of at most
# _MEMO_CHARS characters, at most _MEMO_ENTRIES of them (then it starts over),
# so unique strings (event ids) cost a little churn, never memory.
_MEMO_CHARS = 64
_MEMO_ENTRIES = 4096


def _encode_string(value: Any, path: str, memo: dict[str, bytes]) -> bytes:
    """The encoding of the string ``value`` (not in ``memo``), remembered in it."""
    if not isinstance(value, str):
        raise _invalid(path, "string", value)
    raw = value.encode()  # UnicodeEncodeError: CompiledSchema.encode_into names it
    out = bytearray()
    _write_varint(out, len(raw) << 1)
    out += raw
    encoded = bytes(out)
    # A str subclass may compare equal to another string: never remembered.
    if type(value) is str and len(value) <= _MEMO_CHARS:
        if len(memo) >= _MEMO_ENTRIES:
            memo.clear()
        memo[value] = encoded
    return encoded


# ------------------------------------------------------------------ generator


class _Source:
    """Python source being generated, with the constants it refers to."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.env: dict[str, Any] = {
            "Mapping": Mapping,
            "Sequence": Sequence,
            "Invalid": Invalid,
            "Malformed": Malformed,
            "Truncated": Truncated,
            "_wv": _write_varint,
            "_ww": _write_wide,
            "_ws": _encode_string,
            "_sc": {},  # this schema's string memo (see _encode_string)
            "_rv": _read_varint_rest,
            "_invalid": _invalid,
            "_unpack_d": struct.Struct("<d").unpack_from,
            "_unpack_f": struct.Struct("<f").unpack_from,
            "_pack_d": struct.Struct("<d").pack,
            "_pack_f": struct.Struct("<f").pack,
        }
        self.count = 0
        self.records: dict[str, tuple[str, str]] = {}  # full name -> (encoder, decoder)
        self.kinds: dict[str, str] = {}  # full name -> record | enum | fixed
        self.named: dict[str, Any] = {}  # full name -> schema

    def name(self, prefix: str) -> str:
        self.count += 1
        return f"{prefix}{self.count}"

    def const(self, value: Any) -> str:
        ident = self.name("_k")
        self.env[ident] = value
        return ident


def _resolve(src: _Source, schema: Any) -> Any:
    """The schema a reference names, registering named definitions on the way."""
    if isinstance(schema, str):
        return src.named.get(schema, schema)
    if isinstance(schema, dict) and isinstance(schema.get("type"), dict | list):
        return _resolve(src, schema["type"])
    if isinstance(schema, dict) and schema.get("type") in ("record", "enum", "fixed"):
        src.named.setdefault(schema["name"], schema)
        src.kinds[schema["name"]] = schema["type"]
    return schema


def _kind(schema: Any) -> str:
    if isinstance(schema, list):
        return "union"
    if isinstance(schema, str):
        return schema
    return str(schema["type"])


def _varint_read(out: list[str], ind: str, var: str) -> None:
    out.append(f"{ind}b = data[pos]; pos += 1")
    out.append(f"{ind}if b < 128: {var} = (b >> 1) ^ -(b & 1)")
    out.append(f"{ind}else: {var}, pos = _rv(data, pos, b)")


def _varint_write(out: list[str], ind: str, expr: str) -> None:
    """Writes the signed long ``expr`` (already range-checked)."""
    out.append(f"{ind}n = ({expr} << 1) ^ ({expr} >> 63)")
    out.append(f"{ind}if n < 128: out.append(n)")
    out.append(f"{ind}else: _wv(out, n)")


def _gen_decode(src: _Source, schema: Any, var: str, ind: str, path: str, out: list[str]) -> None:
    """Appends lines that read one value of ``schema`` into ``var``."""
    schema = _resolve(src, schema)
    kind = _kind(schema)
    p = src.const(path)
    if kind == "null":
        out.append(f"{ind}{var} = None")
    elif kind == "boolean":
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if b > 1: raise Malformed({p} + ': boolean byte ' + str(b))")
        out.append(f"{ind}{var} = b == 1")
    elif kind in ("int", "long"):
        _varint_read(out, ind, var)
        if kind == "int":
            out.append(
                f"{ind}if not {_INT[0]} <= {var} <= {_INT[1]}: "
                f"raise Malformed({p} + ': ' + str({var}) + ' does not fit an int')"
            )
    elif kind in ("bytes", "string"):
        # A length: one byte for anything under 64 bytes, and never negative.
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if b < 128 and not b & 1: end = pos + (b >> 1)")
        out.append(f"{ind}else:")
        out.append(f"{ind}    n, pos = _rv(data, pos, b) if b >= 128 else (-((b + 1) >> 1), pos)")
        out.append(f"{ind}    if n < 0: raise Malformed({p} + ': negative length ' + str(n))")
        out.append(f"{ind}    end = pos + n")
        out.append(f"{ind}if end > len(data): raise Truncated({p} + ': runs past the end')")
        decode = ".decode()" if kind == "string" else ""
        out.append(f"{ind}{var} = data[pos:end]{decode}; pos = end")
    elif kind in ("double", "float"):
        size = 8 if kind == "double" else 4
        out.append(f"{ind}{var} = _unpack_{kind[0]}(data, pos)[0]; pos += {size}")
    elif kind == "enum":
        symbols = src.const(tuple(schema["symbols"]))
        _varint_read(out, ind, "i")
        out.append(
            f"{ind}if not 0 <= i < {len(schema['symbols'])}: "
            f"raise Malformed({p} + ': enum index ' + str(i))"
        )
        out.append(f"{ind}{var} = {symbols}[i]")
    elif kind == "fixed":
        size = schema["size"]
        out.append(f"{ind}end = pos + {size}")
        out.append(f"{ind}if end > len(data): raise Truncated({p} + ': runs past the end')")
        out.append(f"{ind}{var} = data[pos:end]; pos = end")
    elif kind == "record":
        _, dec = _gen_record(src, schema)
        out.append(f"{ind}{var}, pos = {dec}(data, pos)")
    elif kind == "union":
        _gen_union_decode(src, schema, var, ind, path, out)
    elif kind in ("array", "map"):
        fn = _gen_container_decode(src, schema, path)
        out.append(f"{ind}{var}, pos = {fn}(data, pos)")
    else:
        raise ValueError(f"{path}: unsupported schema type {kind!r}")


def _gen_union_decode(
    src: _Source, branches: list[Any], var: str, ind: str, path: str, out: list[str]
) -> None:
    resolved = [_resolve(src, b) for b in branches]
    records = [b["name"] for b in resolved if _kind(b) == "record"]
    # Like fastavro's return_record_name(_override): a union of several
    # records gives (full name, record); a union with one record gives it bare.
    tagged = len(records) > 1
    p = src.const(path)
    _varint_read(out, ind, "u")
    if len(resolved) > 3:
        # Many branches (the envelope's payload): one indexed call, not a
        # chain of comparisons.
        table = []
        for index, branch in enumerate(resolved):
            if not tagged and _kind(branch) == "record":
                table.append(_gen_record(src, branch)[1])
                continue
            fn = src.name("_db")
            body = [f"def {fn}(data, pos):"]
            _gen_decode(src, branch, "value", "    ", f"{path}<{index}>", body)
            if tagged and _kind(branch) == "record":
                body.append(f"    return ({branch['name']!r}, value), pos")
            else:
                body.append("    return value, pos")
            src.lines += body + [""]
            table.append(fn)
        dispatch = src.name("_dt")
        src.lines.append(f"{dispatch} = ({', '.join(table)},)")
        out.append(
            f"{ind}if not 0 <= u < {len(table)}: raise Malformed({p} + ': union index ' + str(u))"
        )
        out.append(f"{ind}{var}, pos = {dispatch}[u](data, pos)")
        return
    for index, branch in enumerate(resolved):
        out.append(f"{ind}{'if' if index == 0 else 'elif'} u == {index}:")
        _gen_decode(src, branch, var, ind + "    ", f"{path}<{index}>", out)
        if tagged and _kind(branch) == "record":
            out.append(f"{ind}    {var} = ({branch['name']!r}, {var})")
    out.append(f"{ind}else: raise Malformed({p} + ': union index ' + str(u))")


def _gen_container_decode(src: _Source, schema: Any, path: str) -> str:
    fn = src.name("_dc")
    body: list[str] = [f"def {fn}(data, pos):"]
    is_map = schema["type"] == "map"
    item = schema["values"] if is_map else schema["items"]
    body.append("    items = {}" if is_map else "    items = []")
    body.append("    while True:")
    _varint_read(body, "        ", "count")
    body.append("        if count == 0: return items, pos")
    body.append("        if count < 0:")
    body.append("            count = -count")
    _varint_read(body, "            ", "skip")
    # Every item but a null takes at least one byte: a count larger than the
    # bytes left is a lie, refused before a loop of that length starts.
    if item != "null":
        p = src.const(path)
        body.append(
            f"        if count > len(data) - pos: raise Truncated({p} + ': ' + str(count) + "
            "' items cannot fit in what is left')"
        )
    body.append("        for _ in range(count):")
    if is_map:
        _gen_decode(src, "string", "key", "            ", path + "{key}", body)
        _gen_decode(src, item, "value", "            ", path + "{}", body)
        body.append("            items[key] = value")
    else:
        _gen_decode(src, item, "value", "            ", path + "[]", body)
        body.append("            items.append(value)")
    src.lines += body + [""]
    return fn


def _gen_encode(
    src: _Source,
    schema: Any,
    expr: str,
    ind: str,
    path: str,
    out: list[str],
    indexed: bool = False,
) -> None:
    """Appends lines that check and write the value ``expr`` of ``schema``.

    ``indexed``: the lines are part of a record's fast path, where a
    KeyError (a field left out) makes the record start over on its slow path;
    a flat nested record is then written inline, its fields read by indexing.
    """
    schema = _resolve(src, schema)
    kind = _kind(schema)
    p = src.const(path)
    if kind == "null":
        out.append(f"{ind}if {expr} is not None: raise _invalid({p}, 'null', {expr})")
    elif kind == "boolean":
        out.append(f"{ind}if type({expr}) is not bool: raise _invalid({p}, 'boolean', {expr})")
        out.append(f"{ind}out.append(1 if {expr} else 0)")
    elif kind in ("int", "long"):
        # bool is an int subclass; the exact type check refuses it, as fastavro does.
        out.append(f"{ind}if type({expr}) is not int: raise _invalid({p}, {kind!r}, {expr})")
        # Zigzag without shifting by 63 (slow on Python ints); one or two
        # bytes inline, which are in range by construction; wider values
        # get their range checked by _ww.
        out.append(f"{ind}n = {expr} + {expr} if {expr} >= 0 else ~({expr} + {expr})")
        out.append(f"{ind}if n < 128: out.append(n)")
        out.append(f"{ind}elif n < 16384: out.append((n & 127) | 128); out.append(n >> 7)")
        limit = 1 << (32 if kind == "int" else 64)
        out.append(f"{ind}else: _ww(out, n, {limit}, {p}, {kind!r}, {expr})")
    elif kind == "string":
        # Through the memo: one lookup for a string written before.
        out.append(f"{ind}raw = _sc.get({expr}) if type({expr}) is str else None")
        out.append(f"{ind}out += raw if raw is not None else _ws({expr}, {p}, _sc)")
    elif kind == "bytes":
        out.append(
            f"{ind}if type({expr}) is not bytes and not isinstance({expr}, (bytes, bytearray)):"
        )
        out.append(f"{ind}    raise _invalid({p}, 'bytes', {expr})")
        out.append(f"{ind}n = len({expr}) << 1")
        out.append(f"{ind}if n < 128: out.append(n)")
        out.append(f"{ind}else: _wv(out, n)")
        out.append(f"{ind}out += {expr}")
    elif kind in ("double", "float"):
        out.append(
            f"{ind}if type({expr}) is not float and type({expr}) is not int: "
            f"raise _invalid({p}, {kind!r}, {expr})"
        )
        out.append(f"{ind}out += _pack_{kind[0]}({expr})")
    elif kind == "enum":
        index = src.const({s: i for i, s in enumerate(schema["symbols"])})
        out.append(f"{ind}i = {index}.get({expr}) if isinstance({expr}, str) else None")
        out.append(
            f"{ind}if i is None: raise _invalid({p}, 'a symbol of {schema['name']}', {expr})"
        )
        _varint_write(out, ind, "i")
    elif kind == "fixed":
        size = schema["size"]
        out.append(
            f"{ind}if not isinstance({expr}, (bytes, bytearray)) or len({expr}) != {size}: "
            f"raise _invalid({p}, '{size} bytes', {expr})"
        )
        out.append(f"{ind}out += {expr}")
    elif kind == "record":
        enc, _ = _gen_record(src, schema)
        if indexed and _is_flat(src, schema):
            out.append(f"{ind}if type({expr}) is dict:")
            _gen_fields_indexed(src, schema, expr, f"{expr}_", ind + "    ", out)
            out.append(f"{ind}else: {enc}({expr}, out)")
        else:
            out.append(f"{ind}{enc}({expr}, out)")
    elif kind == "union":
        fn = _gen_union_encode(src, schema, path)
        kinds = [_kind(_resolve(src, b)) for b in schema]
        if len(kinds) == 2 and kinds.count("null") == 1:
            # ["null", T] (an optional field): inline, no call; the tuple
            # notation (branch name, value) goes through the general encoder.
            other = 1 - kinds.index("null")
            out.append(f"{ind}if {expr} is None: out.append({kinds.index('null') * 2})")
            out.append(f"{ind}elif type({expr}) is tuple: {fn}({expr}, out)")
            out.append(f"{ind}else:")
            out.append(f"{ind}    out.append({other * 2})")
            where = f"{path}<{other}>"
            _gen_encode(src, schema[other], expr, ind + "    ", where, out, indexed)
        else:
            out.append(f"{ind}{fn}({expr}, out)")
    elif kind in ("array", "map"):
        fn = _gen_container_encode(src, schema, path)
        out.append(f"{ind}{fn}({expr}, out)")
    else:
        raise ValueError(f"{path}: unsupported schema type {kind!r}")


def _gen_union_encode(src: _Source, branches: list[Any], path: str) -> str:
    resolved = [_resolve(src, b) for b in branches]
    fn = src.name("_eu")
    kinds = [_kind(b) for b in resolved]
    names = [
        b["name"] if k in ("record", "enum", "fixed") else k
        for b, k in zip(resolved, kinds, strict=True)
    ]
    by_name = src.const({n: i for i, n in enumerate(names)})
    p = src.const(path)
    body = [f"def {fn}(v, out):"]
    if "null" in kinds:
        body.append(f"    if v is None: out.append({kinds.index('null') * 2}); return")
    # fastavro's tuple notation: (full name of the branch, value).
    body.append("    if type(v) is tuple and len(v) == 2 and type(v[0]) is str:")
    body.append(f"        u = {by_name}.get(v[0])")
    body.append(
        f"        if u is None: raise Invalid({p} + ': ' + repr(v[0])[:60] + ' is no branch')"
    )
    body.append("        v = v[1]")
    for index, branch in enumerate(resolved):
        if kinds[index] == "null":
            continue
        body.append(f"        if u == {index}:")
        body.append(f"            out.append({index * 2})")
        _gen_encode(src, branch, "v", "            ", f"{path}<{index}>", body)
        body.append("            return")
    body.append(f"        raise _invalid({p}, 'a non-null branch', v)")
    others = [i for i, k in enumerate(kinds) if k != "null"]
    if len(others) == 1:
        (index,) = others
        body.append(f"    out.append({index * 2})")
        _gen_encode(src, resolved[index], "v", "    ", f"{path}<{index}>", body)
    else:
        # The first branch that takes the value, each tried on a scratch buffer.
        body.append("    errors = []")
        body.append("    main = out")
        for index in others:
            body.append("    out = bytearray()")
            body.append("    try:")
            _gen_encode(src, resolved[index], "v", "        ", f"{path}<{index}>", body)
            body.append("    except Invalid as exc: errors.append(str(exc))")
            body.append(f"    else: main.append({index * 2}); main += out; return")
        body.append(f"    raise Invalid({p} + ': no branch takes it: ' + '; '.join(errors)[:300])")
    src.lines += body + [""]
    return fn


def _gen_container_encode(src: _Source, schema: Any, path: str) -> str:
    fn = src.name("_ec")
    p = src.const(path)
    body = [f"def {fn}(v, out):"]
    if schema["type"] == "map":
        body.append(f"    if not isinstance(v, Mapping): raise _invalid({p}, 'a map', v)")
        body.append("    if v:")
        _varint_write(body, "        ", "len(v)")
        body.append("        for key, item in v.items():")
        _gen_encode(src, "string", "key", "            ", path + "{key}", body)
        _gen_encode(src, schema["values"], "item", "            ", path + "{}", body)
    else:
        body.append(
            "    if isinstance(v, (str, bytes, bytearray, Mapping)) or not isinstance(v, Sequence):"
        )
        body.append(f"        raise _invalid({p}, 'an array', v)")
        body.append("    if v:")
        _varint_write(body, "        ", "len(v)")
        body.append("        for item in v:")
        _gen_encode(src, schema["items"], "item", "            ", path + "[]", body)
    body.append("    out.append(0)")
    src.lines += body + [""]
    return fn


def _is_flat(src: _Source, schema: Mapping[str, Any]) -> bool:
    """Whether every field of the record is a primitive, enum or fixed, or
    an optional one: such a record is written inline in its parent's fast
    path (no call, and it cannot refer back to itself)."""
    for field in schema["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if _kind(_resolve(src, branch)) in ("record", "union", "array", "map"):
                return False
    return True


def _gen_fields_indexed(
    src: _Source, schema: Mapping[str, Any], expr: str, prefix: str, ind: str, out: list[str]
) -> None:
    """The fast path's lines for the fields of the record dict ``expr``,
    each read by indexing into a variable named ``prefix`` + position."""
    for position, field in enumerate(schema["fields"]):
        var = f"{prefix}{position}"
        out.append(f"{ind}{var} = {expr}[{field['name']!r}]")
        where = f"{schema['name']}.{field['name']}"
        _gen_encode(src, field["type"], var, ind, where, out, indexed=True)


def _gen_record(src: _Source, schema: Mapping[str, Any]) -> tuple[str, str]:
    name = schema["name"]
    if name in src.records:
        return src.records[name]
    enc, dec = src.name("_er"), src.name("_dr")
    src.records[name] = (enc, dec)  # before the fields: a field may refer back
    dec_body = [f"def {dec}(data, pos):"]
    enc_body = [f"def {enc}(v, out):"]
    p = src.const(name)
    # A dict holding every field (what the code writes) is read by indexing;
    # one that leaves a field out is written again from the start below,
    # where a missing field takes its default, else null (which only a
    # nullable field accepts), as fastavro does. A KeyError can only come
    # from this record's own fields: nested records catch their own.
    enc_body.append("    if type(v) is dict:")
    enc_body.append("        start = len(out)")
    enc_body.append("        try:")
    _gen_fields_indexed(src, schema, "v", "f", "            ", enc_body)
    enc_body.append("            return")
    enc_body.append("        except KeyError:")
    enc_body.append("            del out[start:]")
    enc_body.append("    elif not isinstance(v, Mapping):")
    enc_body.append(f"        raise _invalid({p}, 'a record', v)")
    names = []
    for position, field in enumerate(schema["fields"]):
        var = f"f{position}"
        names.append((field["name"], var))
        _gen_decode(src, field["type"], var, "    ", f"{name}.{field['name']}", dec_body)
        default = src.const(field.get("default"))
        enc_body.append(f"    {var} = v.get({field['name']!r}, {default})")
        _gen_encode(src, field["type"], var, "    ", f"{name}.{field['name']}", enc_body)
    dec_body.append("    return {" + ", ".join(f"{n!r}: {v}" for n, v in names) + "}, pos")
    src.lines += dec_body + [""] + enc_body + [""]
    return enc, dec


# ------------------------------------------------------------------ interface


class CompiledSchema:
    """One schema's generated encoder and decoder."""

    __slots__ = ("_decode", "_encode")

    def __init__(
        self, encode: Callable[[Any, bytearray], None], decode: Callable[..., Any]
    ) -> None:
        self._encode = encode
        self._decode = decode

    def encode_into(self, value: Any, out: bytearray) -> None:
        """Checks ``value`` and appends its encoding to ``out``; raises
        :class:`Invalid` naming the field (``out`` may then hold a part)."""
        try:
            self._encode(value, out)
        except UnicodeEncodeError as exc:
            raise Invalid(f"a string is not encodable as UTF-8: {exc}") from None

    def decode(self, data: bytes, pos: int = 0) -> tuple[Any, int]:
        """The value encoded at ``data[pos:]`` and where it ends; raises
        :class:`Truncated` or :class:`Malformed`. ``data`` must be ``bytes``."""
        try:
            value: tuple[Any, int] = self._decode(data, pos)
        except (IndexError, struct.error):
            raise Truncated("input ends inside a value") from None
        except UnicodeDecodeError as exc:
            raise Malformed(f"invalid UTF-8 in a string: {exc}") from None
        return value


def compile_schema(schema: Any) -> CompiledSchema:
    """Generates the encoder and decoder of a parsed, self-contained schema
    (named types defined at first use and referenced by full name after;
    logical types stripped)."""
    src = _Source()
    top_dec: list[str] = ["def _decode(data, pos):"]
    _gen_decode(src, schema, "value", "    ", "", top_dec)
    top_dec.append("    return value, pos")
    top_enc: list[str] = ["def _encode(v, out):"]
    _gen_encode(src, schema, "v", "    ", "", top_enc)
    code = "\n".join(src.lines + top_dec + [""] + top_enc) + "\n"
    namespace = dict(src.env)
    exec(compile(code, "<cachet.schemas.compiled>", "exec"), namespace)  # noqa: S102 - our own generated source
    return CompiledSchema(namespace["_encode"], namespace["_decode"])
