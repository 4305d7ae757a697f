"""Generation of encoders (:mod:`cachet.schemas.compiled`): lines that check
one value of a schema and append its encoding to ``out``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachet.schemas.compiled_runtime import _RUN_ENTRIES
from cachet.schemas.compiled_source import Source, kind_of, resolve

__all__ = ["gen_encode", "record_encoder"]


def _varint_write(out: list[str], ind: str, expr: str) -> None:
    """Writes the signed long ``expr`` (already range-checked)."""
    out.append(f"{ind}n = ({expr} << 1) ^ ({expr} >> 63)")
    out.append(f"{ind}if n < 128: out.append(n)")
    out.append(f"{ind}else: _wv(out, n)")


def gen_encode(
    src: Source,
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
    schema = resolve(src, schema)
    kind = kind_of(schema)
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
        _gen_enum_encode(src, schema, expr, ind, p, out)
    elif kind == "fixed":
        size = schema["size"]
        out.append(
            f"{ind}if not isinstance({expr}, (bytes, bytearray)) or len({expr}) != {size}: "
            f"raise _invalid({p}, '{size} bytes', {expr})"
        )
        out.append(f"{ind}out += {expr}")
    elif kind == "record":
        enc = record_encoder(src, schema)
        if indexed and _is_flat(src, schema):
            out.append(f"{ind}if type({expr}) is dict:")
            _gen_fields_indexed(src, schema, expr, f"{expr}_", ind + "    ", out)
            out.append(f"{ind}else: {enc}({expr}, out)")
        else:
            out.append(f"{ind}{enc}({expr}, out)")
    elif kind == "union":
        fn = _gen_union_encode(src, schema, path)
        kinds = [kind_of(resolve(src, b)) for b in schema]
        if len(kinds) == 2 and kinds.count("null") == 1:
            # ["null", T] (an optional field): inline, no call; the tuple
            # notation (branch name, value) goes through the general encoder.
            other = 1 - kinds.index("null")
            out.append(f"{ind}if {expr} is None: out.append({kinds.index('null') * 2})")
            out.append(f"{ind}elif type({expr}) is tuple: {fn}({expr}, out)")
            out.append(f"{ind}else:")
            out.append(f"{ind}    out.append({other * 2})")
            where = f"{path}<{other}>"
            gen_encode(src, schema[other], expr, ind + "    ", where, out, indexed)
        else:
            out.append(f"{ind}{fn}({expr}, out)")
    elif kind in ("array", "map"):
        fn = _gen_container_encode(src, schema, path)
        out.append(f"{ind}{fn}({expr}, out)")
    else:
        raise ValueError(f"{path}: unsupported schema type {kind!r}")


def _gen_enum_encode(
    src: Source, schema: Mapping[str, Any], expr: str, ind: str, p: str, out: list[str]
) -> None:
    symbols = schema["symbols"]
    expected = f"a symbol of {schema['name']}"
    index = src.const({s: i for i, s in enumerate(symbols)})
    if len(symbols) <= 64:
        # The written byte of each symbol (its index, zigzagged), looked up
        # for an exact str; anything else is checked by _wy.
        byte = src.const({s: 2 * i for i, s in enumerate(symbols)})
        out.append(f"{ind}i = {byte}.get({expr}) if type({expr}) is str else None")
        out.append(
            f"{ind}out.append(i if i is not None else 2 * _wy({expr}, {p}, {expected!r}, {index}))"
        )
        return
    out.append(f"{ind}i = _wy({expr}, {p}, {expected!r}, {index})")
    _varint_write(out, ind, "i")


def _gen_union_encode(src: Source, branches: list[Any], path: str) -> str:
    resolved = [resolve(src, b) for b in branches]
    fn = src.name("_eu")
    kinds = [kind_of(b) for b in resolved]
    names = [
        b["name"] if k in ("record", "enum", "fixed") else k
        for b, k in zip(resolved, kinds, strict=True)
    ]
    p = src.const(path)
    body = [f"def {fn}(v, out):"]
    if "null" in kinds:
        body.append(f"    if v is None: out.append({kinds.index('null') * 2}); return")
    # fastavro's tuple notation: (full name of the branch, value), one
    # dictionary lookup to the branch's writer.
    writers = {}
    for index, branch in enumerate(resolved):
        if kinds[index] == "null":
            continue
        writer = src.name("_eb")
        lines = [f"def {writer}(v, out):", f"    out.append({index * 2})"]
        gen_encode(src, branch, "v", "    ", f"{path}<{index}>", lines)
        src.lines += lines + [""]
        writers[names[index]] = writer
    by_name = src.name("_en")
    src.tail.append(f"{by_name} = {{{', '.join(f'{n!r}: {w}' for n, w in writers.items())}}}")
    body.append("    if type(v) is tuple and len(v) == 2 and type(v[0]) is str:")
    body.append(f"        w = {by_name}.get(v[0])")
    body.append("        if w is not None: return w(v[1], out)")
    body.append(
        f"        if v[0] != 'null': raise Invalid({p} + ': ' + repr(v[0])[:60] + ' is no branch')"
    )
    body.append(f"        raise _invalid({p}, 'a non-null branch', v[1])")
    others = [i for i, k in enumerate(kinds) if k != "null"]
    if len(others) == 1:
        body.append(f"    {writers[names[others[0]]]}(v, out)")
    else:
        # The first branch that takes the value, each tried on a scratch buffer.
        body.append("    errors = []")
        for index in others:
            body.append("    scratch = bytearray()")
            body.append(f"    try: {writers[names[index]]}(v, scratch)")
            body.append("    except Invalid as exc: errors.append(str(exc))")
            body.append("    else: out += scratch; return")
        body.append(f"    raise Invalid({p} + ': no branch takes it: ' + '; '.join(errors)[:300])")
    src.lines += body + [""]
    return fn


def _gen_container_encode(src: Source, schema: Any, path: str) -> str:
    fn = src.name("_ec")
    p = src.const(path)
    body = [f"def {fn}(v, out):"]
    if schema["type"] == "map":
        body.append(
            f"    if type(v) is not dict and not isinstance(v, Mapping): "
            f"raise _invalid({p}, 'a map', v)"
        )
        body.append("    if v:")
        _varint_write(body, "        ", "len(v)")
        body.append("        for key, item in v.items():")
        gen_encode(src, "string", "key", "            ", path + "{key}", body)
        gen_encode(src, schema["values"], "item", "            ", path + "{}", body)
    else:
        # A list first: an isinstance against an ABC costs more than the rest.
        body.append(
            "    if type(v) is not list and (isinstance(v, (str, bytes, bytearray, Mapping))"
            " or not isinstance(v, Sequence)):"
        )
        body.append(f"        raise _invalid({p}, 'an array', v)")
        body.append("    if v:")
        _varint_write(body, "        ", "len(v)")
        body.append("        for item in v:")
        items = resolve(src, schema["items"])
        if kind_of(items) == "record" and items["name"] not in src.inlining_writes:
            # A record dict holding every field (the reads of a batch) is
            # written inline, no call; any other item takes its encoder.
            enc = record_encoder(src, items)
            body.append("            if type(item) is dict:")
            body.append("                start = len(out)")
            body.append("                try:")
            src.inlining_writes.append(items["name"])
            _gen_fields_indexed(src, items, "item", "item_", " " * 20, body, repeated=True)
            src.inlining_writes.pop()
            body.append("                    continue")
            body.append("                except KeyError:")
            body.append("                    del out[start:]")
            body.append(f"            {enc}(item, out)")
        else:
            gen_encode(src, items, "item", "            ", path + "[]", body)
    body.append("    out.append(0)")
    src.lines += body + [""]
    return fn


def _is_flat(src: Source, schema: Mapping[str, Any]) -> bool:
    """Whether every field of the record is a primitive, enum or fixed, or
    an optional one: such a record is written inline in its parent's fast
    path (no call, and it cannot refer back to itself)."""
    for field in schema["fields"]:
        branches = field["type"] if isinstance(field["type"], list) else [field["type"]]
        for branch in branches:
            if kind_of(resolve(src, branch)) in ("record", "union", "array", "map"):
                return False
    return True


def _gen_fields_indexed(
    src: Source,
    schema: Mapping[str, Any],
    expr: str,
    prefix: str,
    ind: str,
    out: list[str],
    repeated: bool = False,
) -> None:
    """The fast path's lines for the fields of the record dict ``expr``,
    each read by indexing into a variable named ``prefix`` + position.

    ``repeated``: runs of string and enum fields are written through a memo
    of their values (see :func:`_gen_run_encode`).
    """
    fields = list(enumerate(schema["fields"]))
    while fields:
        run = []
        for position, field in fields if repeated else []:
            if kind_of(resolve(src, field["type"])) not in ("string", "enum"):
                break
            run.append((position, field))
        if len(run) < 2:
            run = fields[:1]
        for position, field in run:
            out.append(f"{ind}{prefix}{position} = {expr}[{field['name']!r}]")
        if len(run) >= 2:
            _gen_run_encode(src, schema, run, prefix, ind, out)
        else:
            position, field = run[0]
            where = f"{schema['name']}.{field['name']}"
            gen_encode(src, field["type"], f"{prefix}{position}", ind, where, out, indexed=True)
        fields = fields[len(run) :]


def _gen_run_encode(
    src: Source,
    schema: Mapping[str, Any],
    run: list[tuple[int, Any]],
    prefix: str,
    ind: str,
    out: list[str],
) -> None:
    """Lines that write consecutive string and enum fields (read into the
    ``prefix`` variables) through a memo from their values to their bytes:
    one lookup for the namespace, contract, outcome and reason a read
    repeats. Only exact ``str`` values are keys (a subclass may compare
    equal to another string), and only runs that were written, so checked;
    the memo is bounded like the decoding one."""
    memo, start, key = src.name("_wm"), src.name("start"), src.name("key")
    src.env[memo] = {}
    names = [f"{prefix}{position}" for position, _ in run]
    exact = " and ".join(f"type({n}) is str" for n in names)
    out.append(f"{ind}{key} = ({', '.join(names)},) if {exact} else None")
    out.append(f"{ind}raw = {memo}.get({key})")
    out.append(f"{ind}if raw is not None: out += raw")
    out.append(f"{ind}else:")
    out.append(f"{ind}    {start} = len(out)")
    for position, field in run:
        where = f"{schema['name']}.{field['name']}"
        gen_encode(src, field["type"], f"{prefix}{position}", ind + "    ", where, out)
    out.append(f"{ind}    if {key} is not None and len(out) - {start} <= {64 * len(run)}:")
    out.append(f"{ind}        if len({memo}) >= {_RUN_ENTRIES}: {memo}.clear()")
    out.append(f"{ind}        {memo}[{key}] = bytes(out[{start}:])")


def record_encoder(src: Source, schema: Mapping[str, Any]) -> str:
    """The name of the record's encoder function (generated on first use);
    below the top record, runs of text are written through a memo
    (:func:`_gen_run_encode`)."""
    name = schema["name"]
    if name in src.encoders:
        return src.encoders[name]
    enc = src.encoders[name] = src.name("_er")  # before the fields: one may refer back
    top = name == src.top
    enc_body = [f"def {enc}(v, out):"]
    p = src.const(name)
    # A dict holding every field (what the code writes) is read by indexing;
    # one that leaves a field out is written again from the start below,
    # where a missing field takes its default, else null (which only a
    # nullable field accepts), as fastavro does. A KeyError can only come
    # from this record's own fields or a flat record written inline: other
    # nested records catch their own.
    enc_body.append("    if type(v) is dict:")
    enc_body.append("        start = len(out)")
    enc_body.append("        try:")
    _gen_fields_indexed(src, schema, "v", "f", "            ", enc_body, repeated=not top)
    enc_body.append("            return")
    enc_body.append("        except KeyError:")
    enc_body.append("            del out[start:]")
    enc_body.append("    elif not isinstance(v, Mapping):")
    enc_body.append(f"        raise _invalid({p}, 'a record', v)")
    for position, field in enumerate(schema["fields"]):
        var = f"f{position}"
        default = src.const(field.get("default"))
        enc_body.append(f"    {var} = v.get({field['name']!r}, {default})")
        gen_encode(src, field["type"], var, "    ", f"{name}.{field['name']}", enc_body)
    src.lines += enc_body + [""]
    return enc
