"""Generation of decoders (:mod:`cachet.schemas.compiled`): lines that read
one value of a schema from ``data`` at ``pos``, checking every byte."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachet.schemas.compiled_runtime import _INT, _RUN_ENTRIES
from cachet.schemas.compiled_source import Source, kind_of, resolve

__all__ = ["gen_decode", "record_decoder"]


def _varint_read(out: list[str], ind: str, var: str) -> None:
    out.append(f"{ind}b = data[pos]; pos += 1")
    out.append(f"{ind}if b < 128: {var} = (b >> 1) ^ -(b & 1)")
    out.append(f"{ind}else: {var}, pos = _rv(data, pos, b)")


def gen_decode(
    src: Source,
    schema: Any,
    var: str,
    ind: str,
    path: str,
    out: list[str],
    repeated: bool = False,
) -> None:
    """Appends lines that read one value of ``schema`` into ``var``; they may
    use the function's ``size`` (``len(data)``) and scratch names b, end, u.

    ``repeated``: the value is in a payload or an array's item, where the
    same text recurs event after event or item after item (see
    :func:`_gen_run_decode`).
    """
    schema = resolve(src, schema)
    kind = kind_of(schema)
    p = src.const(path)
    if kind == "null":
        out.append(f"{ind}{var} = None")
    elif kind == "boolean":
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if b > 1: raise Malformed({p} + ': boolean byte ' + str(b))")
        out.append(f"{ind}{var} = b == 1")
    elif kind in ("int", "long"):
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if b < 128: {var} = (b >> 1) ^ -(b & 1)")
        # Two bytes (up to 8191, as versions and ages are) inline too.
        out.append(f"{ind}elif data[pos] < 128:")
        out.append(f"{ind}    {var} = ((b & 127 | data[pos] << 7) >> 1) ^ -(b & 1); pos += 1")
        out.append(f"{ind}else:")
        out.append(f"{ind}    {var}, pos = _rv(data, pos, b)")
        if kind == "int":  # two bytes always fit; a wider value may not
            out.append(
                f"{ind}    if not {_INT[0]} <= {var} <= {_INT[1]}: "
                f"raise Malformed({p} + ': ' + str({var}) + ' does not fit an int')"
            )
    elif kind in ("bytes", "string"):
        # A length under 64 is one even byte (b & 129 == 0), one under 8192
        # (a signature, a ciphertext) two bytes, the first even; wider ones,
        # and a negative one (odd), are read by _rl.
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if not b & 129: end = pos + (b >> 1)")
        out.append(f"{ind}elif not b & 1 and data[pos] < 128:")
        out.append(f"{ind}    end = pos + 1 + ((b & 127 | data[pos] << 7) >> 1); pos += 1")
        out.append(f"{ind}else: end, pos = _rl(data, pos, b, {p})")
        if kind == "string":
            out.append(f"{ind}if end > size: raise Truncated({p} + ': runs past the end')")
            out.append(f"{ind}{var} = data[pos:end].decode(); pos = end")
        else:  # a short slice leaves pos past the end: see the module docstring
            out.append(f"{ind}{var} = data[pos:end]; pos = end")
    elif kind in ("double", "float"):
        size = 8 if kind == "double" else 4
        out.append(f"{ind}{var} = _unpack_{kind[0]}(data, pos)[0]; pos += {size}")
    elif kind == "enum":
        symbols = schema["symbols"]
        table = src.const(tuple(symbols))
        _gen_index_read(src, len(symbols), "enum", p, ind, out)
        out.append(f"{ind}{var} = {table}[u]")
    elif kind == "fixed":
        out.append(f"{ind}end = pos + {schema['size']}")
        out.append(f"{ind}{var} = data[pos:end]; pos = end")
    elif kind == "record":
        if schema["name"] in src.inlining:  # it contains itself: a call ends the recursion
            out.append(f"{ind}{var}, pos = {record_decoder(src, schema)}(data, pos)")
        else:
            _gen_record_decode(src, schema, var, ind, out, repeated)
    elif kind == "union":
        _gen_union_decode(src, schema, var, ind, path, out, repeated)
    elif kind in ("array", "map"):
        _gen_container_decode(src, schema, var, ind, path, out)
    else:
        raise ValueError(f"{path}: unsupported schema type {kind!r}")


def _gen_index_read(src: Source, count: int, what: str, p: str, ind: str, out: list[str]) -> None:
    """Lines that read a union or enum index below ``count`` into ``u``."""
    if count <= 64:
        # One byte holds every index; its zigzag is even and below 2 * count.
        out.append(f"{ind}b = data[pos]; pos += 1")
        out.append(f"{ind}if b & 1 or b >= {2 * count}: raise _bad({p}, {what!r}, b)")
        out.append(f"{ind}u = b >> 1")
    else:
        _varint_read(out, ind, "u")
        out.append(
            f"{ind}if not 0 <= u < {count}: raise Malformed({p} + ': {what} index ' + str(u))"
        )


def _gen_record_decode(
    src: Source,
    schema: Mapping[str, Any],
    var: str,
    ind: str,
    out: list[str],
    repeated: bool = False,
) -> None:
    """Lines that read the record ``schema`` inline into ``var``: a dict, or
    what its factory makes of the field values."""
    name = schema["name"]
    src.inlining.append(name)
    values = [src.name("f") for _ in schema["fields"]]
    fields = list(zip(schema["fields"], values, strict=True))
    while fields:
        run = _text_run(src, fields) if repeated else []
        if len(run) >= 2:
            _gen_run_decode(src, name, run, ind, out)
        else:
            run = fields[:1]
            field, value = run[0]
            gen_decode(src, field["type"], value, ind, f"{name}.{field['name']}", out, repeated)
        fields = fields[len(run) :]
    src.inlining.pop()
    names = [field["name"] for field in schema["fields"]]
    factory = src.factories.get(name)
    if factory is None:
        pairs = ", ".join(f"{n!r}: {v}" for n, v in zip(names, values, strict=True))
        out.append(f"{ind}{var} = {{{pairs}}}")
        return
    # A factory sees only values the input held whole (a bytes slice may
    # have stopped at the end).
    p = src.const(name)
    out.append(f"{ind}if pos > size: raise Truncated({p} + ': runs past the end')")
    out.append(f"{ind}{var} = {factory}({', '.join(values)})")


def _text_run(src: Source, fields: list[tuple[Any, str]]) -> list[tuple[Any, str]]:
    """The fields at the start of ``fields`` that are strings or enums."""
    run = []
    for field, value in fields:
        if kind_of(resolve(src, field["type"])) not in ("string", "enum"):
            break
        run.append((field, value))
    return run


def _gen_run_decode(
    src: Source, name: str, run: list[tuple[Any, str]], ind: str, out: list[str]
) -> None:
    """Lines that read consecutive string and enum fields of a payload's or
    an array's records through a memo of the byte strings they were read
    from.

    The reads of a batch repeat a few namespaces, contracts, outcomes and
    reasons, and the same role and node. The run's bytes are delimited by
    its length prefixes alone (each one byte for a string under 64 bytes;
    an enum is one byte), and a run whose bytes were read before has the
    values read from them then: the same bytes decode to the same str
    values, their checks passed. A new run, or one with a longer string, is
    read field by field and remembered. The memo maps bytes to a tuple of
    values; a thread decoding at the same time finds a whole entry or none.
    """
    memo = src.name("_rm")
    start = src.name("start")
    values = [value for _, value in run]
    src.env[memo] = {}
    out.append(f"{ind}r = None")
    at, skip, deeper = "pos", 0, ind
    for field, _ in run:
        if kind_of(resolve(src, field["type"])) == "enum":
            skip += 1  # one byte, checked when first read
            continue
        where = f"{at} + {skip}" if skip else at
        out.append(f"{deeper}b = data[{where}]")
        out.append(f"{deeper}if not b & 129:")
        deeper += "    "
        out.append(f"{deeper}e = {where} + 1 + (b >> 1)")
        at, skip = "e", 0
    if skip:
        out.append(f"{deeper}e = {at} + {skip}")
    out.append(f"{deeper}if e <= size: r = {memo}.get(data[pos:e])")
    out.append(f"{ind}if r is not None:")
    out.append(f"{ind}    {', '.join(values)}, = r; pos = e")
    out.append(f"{ind}else:")
    out.append(f"{ind}    {start} = pos")
    for field, value in run:
        gen_decode(src, field["type"], value, ind + "    ", f"{name}.{field['name']}", out)
    # Only runs the lookup can find (strings under 64 bytes): the memo's
    # size stays bounded whatever the input.
    out.append(f"{ind}    if pos - {start} <= {64 * len(run)}:")
    out.append(f"{ind}        if len({memo}) >= {_RUN_ENTRIES}: {memo}.clear()")
    out.append(f"{ind}        {memo}[data[{start}:pos]] = ({', '.join(values)},)")


def _gen_union_decode(
    src: Source,
    branches: list[Any],
    var: str,
    ind: str,
    path: str,
    out: list[str],
    repeated: bool,
) -> None:
    resolved = [resolve(src, b) for b in branches]
    records = [b["name"] for b in resolved if kind_of(b) == "record"]
    # Like fastavro's return_record_name(_override): a union of several
    # records gives (full name, record); a union with one record gives it bare.
    tagged = len(records) > 1
    p = src.const(path)
    if len(resolved) <= 3:
        # A few branches (an optional field): a chain on the index byte.
        out.append(f"{ind}b = data[pos]; pos += 1")
        for index, branch in enumerate(resolved):
            out.append(f"{ind}{'if' if index == 0 else 'elif'} b == {2 * index}:")
            gen_decode(src, branch, var, ind + "    ", f"{path}<{index}>", out, repeated)
            if tagged and kind_of(branch) == "record":
                out.append(f"{ind}    {var} = ({branch['name']!r}, {var})")
        out.append(f"{ind}else: raise _bad({p}, 'union', b)")
        return
    # Many branches (the envelope's payload): one indexed call.
    table = []
    tags = []
    for index, branch in enumerate(resolved):
        is_record = kind_of(branch) == "record"
        tags.append(branch["name"] if tagged and is_record else None)
        if is_record:
            table.append(record_decoder(src, branch))
            continue
        fn = src.name("_db")
        body = [f"def {fn}(data, pos):", "    size = len(data)"]
        gen_decode(src, branch, "value", "    ", f"{path}<{index}>", body)
        body.append("    return value, pos")
        src.lines += body + [""]
        table.append(fn)
    dispatch = src.name("_dt")
    src.tail.append(f"{dispatch} = ({', '.join(table)},)")
    _gen_index_read(src, len(table), "union", p, ind, out)
    out.append(f"{ind}{var}, pos = {dispatch}[u](data, pos)")
    if all(tag is not None for tag in tags):
        out.append(f"{ind}{var} = ({src.const(tuple(tags))}[u], {var})")
    elif any(tag is not None for tag in tags):
        out.append(f"{ind}if {src.const(tuple(tags))}[u] is not None:")
        out.append(f"{ind}    {var} = ({src.const(tuple(tags))}[u], {var})")


def _gen_container_decode(
    src: Source, schema: Any, var: str, ind: str, path: str, out: list[str]
) -> None:
    """Lines that read an array or map into ``var``: blocks of items, each
    item read inline in the loop."""
    is_map = schema["type"] == "map"
    item = schema["values"] if is_map else schema["items"]
    count, value, add = src.name("count"), src.name("item"), src.name("add")
    if is_map:
        out.append(f"{ind}{var} = {{}}")
    else:
        out.append(f"{ind}{var} = []; {add} = {var}.append")
    out.append(f"{ind}while True:")
    body = ind + "    "
    _varint_read(out, body, count)
    out.append(f"{body}if {count} == 0: break")
    out.append(f"{body}if {count} < 0:")  # a block that gives its size in bytes
    out.append(f"{body}    {count} = -{count}")
    _varint_read(out, body + "    ", "u")
    # Every item but a null takes at least one byte: a count larger than the
    # bytes left is a lie, refused before a loop of that length starts.
    if item != "null":
        p = src.const(path)
        out.append(
            f"{body}if {count} > size - pos: raise Truncated({p} + ': ' + str({count}) + "
            "' items cannot fit in what is left')"
        )
    out.append(f"{body}for _ in range({count}):")
    if is_map:
        key = src.name("key")
        gen_decode(src, "string", key, body + "    ", path + "{key}", out)
        gen_decode(src, item, value, body + "    ", path + "{}", out, repeated=True)
        out.append(f"{body}    {var}[{key}] = {value}")
    else:
        gen_decode(src, item, value, body + "    ", path + "[]", out, repeated=True)
        out.append(f"{body}    {add}({value})")


def record_decoder(src: Source, schema: Mapping[str, Any]) -> str:
    """The name of the record's decoder function (generated on first use).

    The decoder of a record below the top (a payload) reads its runs of text
    through a memo (:func:`_gen_run_decode`): what an event carries repeats
    from event to event (namespace, contract, outcome), while the top (the
    envelope) holds what identifies one event.
    """
    name = schema["name"]
    if name in src.decoders:
        return src.decoders[name]
    dec = src.decoders[name] = src.name("_dr")  # before the fields: one may refer back
    body = [f"def {dec}(data, pos):", "    size = len(data)"]
    _gen_record_decode(src, schema, "value", "    ", body, repeated=name != src.top)
    body.append("    return value, pos")
    src.lines += body + [""]
    return dec
