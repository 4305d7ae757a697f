"""Computation fingerprints: the cache key of a computed value.

A fingerprint is SHA3-256 over a canonical encoding of the five components
of a computation (DESIGN: "The cache"): ``input``, ``computation``,
``parameters``, ``version`` and ``hardware_class``. The encoding is specified
byte by byte so a third party can recompute a fingerprint without this code.

Encoding (every integer unsigned, big-endian)::

    u32 len(DOMAIN) || DOMAIN                      DOMAIN = b"cachet/fingerprint/v1"
    then, for each component in FINGERPRINT_COMPONENTS order:
    u32 len(name) || name (ASCII) || u8 kind || u64 len(value) || value

``kind`` says how ``value`` was derived from the Python value:

    0x00 ABSENT  component not selected by the contract; value is empty
    0x01 BYTES   raw bytes
    0x02 STRING  UTF-8 of a str
    0x03 JSON    RFC 8785 (JCS) canonical JSON of any other value

Why this shape:

* Length prefixes make the encoding injective: a bare ``a || b``
  concatenation lets ("ab", "c") and ("a", "bc") collide.
* The kind tag keeps ``b"1"``, ``"1"`` and ``1`` apart although their value
  bytes are equal.
* Every component is always framed, even when the contract's
  ``fingerprint_fields`` leaves it out (kind ABSENT), so the selected subset is
  itself part of the hash: the same computation under two contracts with
  different field sets never shares a key.
* The domain string separates these hashes from every other SHA3-256 in
  Cachet (leaf hashes, seal hashes, prompt hashes).
"""

from __future__ import annotations

import functools
import hashlib
import math
import struct
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from enum import IntEnum
from types import MappingProxyType
from typing import Any, TypeAlias

from cachet.config.sections import FINGERPRINT_COMPONENTS
from cachet.errors import CachetError

__all__ = [
    "DOMAIN",
    "FINGERPRINT_SIZE",
    "LLM_COMPUTATION",
    "CanonicalJsonError",
    "Computation",
    "FingerprintError",
    "Json",
    "LlmRequest",
    "ValueKind",
    "canonical_encoding",
    "canonical_json",
    "fingerprint",
    "fingerprint_hex",
    "key_fingerprint",
    "llm_computation",
    "tagged_hash",
]

Json: TypeAlias = Any  # None | bool | int | float | str | Sequence[Json] | Mapping[str, Json]

DOMAIN = b"cachet/fingerprint/v1"
FINGERPRINT_SIZE = 32
# The computation name every LLM completion key carries.
LLM_COMPUTATION = "llm.completion"
_PROMPT_DOMAIN = b"cachet/llm/prompt/v1"
_SYSTEM_PROMPT_DOMAIN = b"cachet/llm/system-prompt/v1"

# I-JSON (RFC 7493) numbers are IEEE doubles: an integer beyond 2**53 has no
# exact JSON form, and rounding it would make distinct keys collide.
_MAX_SAFE_INT = 2**53
_MAX_DEPTH = 64


class FingerprintError(CachetError, ValueError):
    """A computation cannot be fingerprinted; the message says which part."""


class CanonicalJsonError(FingerprintError):
    """A value has no RFC 8785 canonical form (NaN, a non-string key, ...)."""

    def __init__(self, path: str, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


class ValueKind(IntEnum):
    """The kind tag of a framed component (see the module docstring)."""

    ABSENT = 0x00
    BYTES = 0x01
    STRING = 0x02
    JSON = 0x03


# -- canonical JSON (RFC 8785) ------------------------------------------------


def canonical_json(value: Json) -> bytes:
    """``value`` as RFC 8785 (JCS) canonical JSON, UTF-8 encoded.

    Object keys sorted by UTF-16 code units, no whitespace, strings with the
    minimal escapes, numbers in ECMAScript shortest round-trip form (so
    ``1 == 1.0`` and ``-0.0`` is ``0``, as JSON has one number type).
    Raises :class:`CanonicalJsonError` naming the offending path for NaN,
    infinities, integers outside +-2**53, non-string keys, lone surrogates
    and any non-JSON type.
    """
    out: list[str] = []
    _write(value, "$", out, 0)
    try:
        return "".join(out).encode("utf-8")
    except UnicodeEncodeError as exc:
        # Only reachable through a lone surrogate in a string or key.
        raise CanonicalJsonError("$", f"not valid Unicode ({exc.reason})") from None


def _write(value: Json, path: str, out: list[str], depth: int) -> None:
    if depth > _MAX_DEPTH:
        raise CanonicalJsonError(path, f"nested deeper than {_MAX_DEPTH} levels")
    # bool before int: bool is a subclass of int.
    if value is None:
        out.append("null")
    elif value is True:
        out.append("true")
    elif value is False:
        out.append("false")
    elif isinstance(value, int):
        if abs(value) > _MAX_SAFE_INT:
            raise CanonicalJsonError(
                path, f"integer {value} is outside +-2**53 and has no exact JSON form"
            )
        out.append(str(int(value)))
    elif isinstance(value, float):
        out.append(_number(value, path))
    elif isinstance(value, str):
        out.append(_string(value, path))
    elif isinstance(value, Mapping):
        for key in value:
            if not isinstance(key, str):
                raise CanonicalJsonError(
                    path, f"object key {key!r} is a {type(key).__name__}, not a str"
                )
        # RFC 8785 3.2.3: sort by UTF-16 code units, which differs from code
        # point order for characters beyond the BMP.
        keys = sorted(value, key=lambda k: k.encode("utf-16-be", "surrogatepass"))
        out.append("{")
        for i, key in enumerate(keys):
            if i:
                out.append(",")
            out.append(_string(key, path))
            out.append(":")
            _write(value[key], f"{path}.{key}", out, depth + 1)
        out.append("}")
    elif isinstance(value, list | tuple):
        out.append("[")
        for i, item in enumerate(value):
            if i:
                out.append(",")
            _write(item, f"{path}[{i}]", out, depth + 1)
        out.append("]")
    else:
        raise CanonicalJsonError(path, f"a {type(value).__name__} is not a JSON value")


_ESCAPES = {
    '"': '\\"',
    "\\": "\\\\",
    "\b": "\\b",
    "\f": "\\f",
    "\n": "\\n",
    "\r": "\\r",
    "\t": "\\t",
}


def _string(text: str, path: str) -> str:
    """RFC 8785 3.2.2.2: escape only ``"``, ``\\`` and control characters."""
    parts = ['"']
    for ch in text:
        if ch in _ESCAPES:
            parts.append(_ESCAPES[ch])
        elif ch < " ":
            parts.append(f"\\u{ord(ch):04x}")
        elif "\ud800" <= ch <= "\udfff":
            raise CanonicalJsonError(path, f"lone surrogate U+{ord(ch):04X} in a string")
        else:
            parts.append(ch)
    parts.append('"')
    return "".join(parts)


def _number(x: float, path: str) -> str:
    """ECMAScript Number::toString (RFC 8785 3.2.2.3) for a finite double."""
    if not math.isfinite(x):
        raise CanonicalJsonError(path, f"{x!r} is not a JSON number")
    if x == 0:
        return "0"  # covers -0.0
    sign = "-" if x < 0 else ""
    # repr gives the shortest digit string that round-trips, as ECMAScript
    # requires; only its layout differs, so re-lay it out.
    mantissa, _, exp_text = repr(abs(x)).partition("e")
    int_part, _, frac_part = mantissa.partition(".")
    all_digits = int_part + frac_part
    point = len(int_part) + int(exp_text or 0)  # decimal point after this many digits
    leading = len(all_digits) - len(all_digits.lstrip("0"))
    # value = 0.digits * 10**n, with k significant digits (ECMAScript's k, n)
    digits = all_digits[leading:].rstrip("0")
    n = point - leading
    k = len(digits)
    if k <= n <= 21:
        body = digits + "0" * (n - k)
    elif 0 < n <= 21:
        body = digits[:n] + "." + digits[n:]
    elif -6 < n <= 0:
        body = "0." + "0" * (-n) + digits
    else:
        e = n - 1
        exponent = f"e{'+' if e >= 0 else '-'}{abs(e)}"
        body = digits + exponent if k == 1 else digits[0] + "." + digits[1:] + exponent
    return sign + body


# -- computations -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Computation:
    """What was computed: the five fingerprint components.

    ``input`` is bytes, a str (hashed as UTF-8) or any JSON value (hashed as
    canonical JSON); the three are kept apart by a kind tag. ``parameters``
    is copied into a read-only mapping, so a caller mutating its dict later
    cannot change what this computation fingerprints to.
    """

    input: bytes | str | Json
    computation: str
    parameters: Mapping[str, Json] = field(default_factory=dict)
    version: str = "1"
    hardware_class: str = "any"

    def __post_init__(self) -> None:
        for name in ("computation", "version", "hardware_class"):
            if not isinstance(getattr(self, name), str):
                raise FingerprintError(
                    f"Computation.{name} must be a str, got {type(getattr(self, name)).__name__}"
                )
        if not isinstance(self.parameters, Mapping):
            raise FingerprintError(
                f"Computation.parameters must be a mapping, got {type(self.parameters).__name__}"
            )
        object.__setattr__(self, "parameters", MappingProxyType(dict(self.parameters)))


def _component(c: Computation, name: str) -> tuple[ValueKind, bytes]:
    if name == "parameters":
        return ValueKind.JSON, _json_at(c.parameters, "$.parameters")
    value = getattr(c, name)
    if isinstance(value, bytes | bytearray | memoryview):
        return ValueKind.BYTES, bytes(value)
    if isinstance(value, str):
        try:
            return ValueKind.STRING, value.encode("utf-8")
        except UnicodeEncodeError:
            raise FingerprintError(f"Computation.{name} is not valid Unicode") from None
    return ValueKind.JSON, _json_at(value, f"$.{name}")


def _json_at(value: Json, path: str) -> bytes:
    try:
        return canonical_json(value)
    except CanonicalJsonError as exc:
        # Re-root the path so the message names the component.
        raise CanonicalJsonError(path + exc.path[1:], exc.problem) from None


def _selected(fields: Collection[str] | None) -> frozenset[str]:
    if fields is None:
        return frozenset(FINGERPRINT_COMPONENTS)
    if isinstance(fields, str):
        # A lone str is a Collection of characters: almost surely a mistake.
        raise FingerprintError(f"fields must be a collection of names, got the str {fields!r}")
    chosen = frozenset(fields)
    unknown = sorted(chosen - set(FINGERPRINT_COMPONENTS))
    if unknown:
        raise FingerprintError(
            f"unknown fingerprint field {unknown[0]!r}; "
            f"expected some of {', '.join(FINGERPRINT_COMPONENTS)}"
        )
    if not chosen:
        # Every computation would share one key.
        raise FingerprintError("fingerprint fields must select at least one component")
    return chosen


def canonical_encoding(c: Computation, fields: Collection[str] | None = None) -> bytes:
    """The exact bytes :func:`fingerprint` hashes (see the module docstring).

    ``fields`` is the contract's ``fingerprint_fields``; ``None`` selects all
    five. Raises :class:`FingerprintError` for an unknown or empty selection
    and :class:`CanonicalJsonError` for a value with no canonical form.
    """
    chosen = _selected(fields)
    parts = [struct.pack(">I", len(DOMAIN)), DOMAIN]
    for name in FINGERPRINT_COMPONENTS:
        kind, value = _component(c, name) if name in chosen else (ValueKind.ABSENT, b"")
        raw_name = name.encode("ascii")
        parts += [
            struct.pack(">I", len(raw_name)),
            raw_name,
            struct.pack(">BQ", kind, len(value)),
            value,
        ]
    return b"".join(parts)


def fingerprint(c: Computation, fields: Collection[str] | None = None) -> bytes:
    """The 32-byte SHA3-256 fingerprint of ``c`` over the selected ``fields``."""
    return hashlib.sha3_256(canonical_encoding(c, fields)).digest()


@functools.lru_cache(maxsize=256)
def _key_template(
    computation: str, fields: str | tuple[str, ...] | None
) -> tuple[bytes, bytes] | bytes:
    """What :func:`key_fingerprint` hashes around the key: (the bytes before
    the input's u64 length, the bytes after its value), or the whole encoding when
    ``fields`` leave the input out (every key then shares it). Cut from
    :func:`canonical_encoding` itself, so the two cannot disagree."""
    if "input" not in _selected(fields):
        return canonical_encoding(Computation(input="", computation=computation), fields)
    # The input is the first component, and its framing ends with the u64
    # length of its value: an empty input leaves exactly that cut point.
    assert FINGERPRINT_COMPONENTS[0] == "input"
    empty = canonical_encoding(Computation(input="", computation=computation), fields)
    name = b"input"
    head = b"".join(
        (struct.pack(">I", len(DOMAIN)), DOMAIN, struct.pack(">I", len(name)), name)
    ) + struct.pack(">B", ValueKind.STRING)
    assert empty.startswith(head + struct.pack(">Q", 0))
    return head, empty[len(head) + 8 :]


def key_fingerprint(key: str, computation: str, fields: Collection[str] | None = None) -> bytes:
    """``fingerprint(Computation(input=key, computation=computation), fields)``,
    the fingerprint of a plain write or read of ``key``, without building the
    computation: only the key's bytes are encoded per call, the rest of the
    encoding once per (computation, fields)."""
    if fields is not None and not isinstance(fields, str | tuple):
        fields = tuple(fields)  # hashable, for the template's cache
    template = _key_template(computation, fields)
    if isinstance(template, bytes):
        return hashlib.sha3_256(template).digest()
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError:
        raise FingerprintError("Computation.input is not valid Unicode") from None
    head, tail = template
    return hashlib.sha3_256(head + struct.pack(">Q", len(raw)) + raw + tail).digest()


def fingerprint_hex(fp: bytes) -> str:
    """Lowercase hex of a fingerprint; refuses anything that is not 32 bytes."""
    if len(fp) != FINGERPRINT_SIZE:
        raise FingerprintError(f"a fingerprint is {FINGERPRINT_SIZE} bytes, got {len(fp)}")
    return fp.hex()


def tagged_hash(domain: bytes, data: bytes) -> bytes:
    """SHA3-256 of ``u32 len(domain) || domain || data``: a domain-separated hash."""
    return hashlib.sha3_256(struct.pack(">I", len(domain)) + domain + data).digest()


# -- LLM completions ----------------------------------------------------------


@dataclass(frozen=True, slots=True, kw_only=True)
class LlmRequest:
    """One LLM completion request, as far as it decides the output.

    Tenant and subject are deliberately absent: scope is a mandatory lookup
    filter applied next to the key, never part of it.
    """

    prompt: str
    model_version: str
    temperature: float
    system_prompt: str = ""
    top_p: float = 1.0
    max_tokens: int

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise FingerprintError(f"LlmRequest.{name} must be a number, got {value!r}")
            if not math.isfinite(value):
                raise FingerprintError(f"LlmRequest.{name} must be finite, got {value!r}")
        if isinstance(self.max_tokens, bool) or not isinstance(self.max_tokens, int):
            raise FingerprintError(f"LlmRequest.max_tokens must be an int, got {self.max_tokens!r}")
        if self.max_tokens < 1:
            raise FingerprintError(f"LlmRequest.max_tokens must be >= 1, got {self.max_tokens}")


def llm_computation(req: LlmRequest) -> Computation:
    """The computation an LLM completion is keyed by.

    ``input`` is the prompt hash; ``parameters`` carry the model version,
    temperature, system prompt hash, top_p and max_tokens. Only hashes of the
    prompts enter the key, so the key material never holds prompt text.
    Temperatures are compared exactly: 0.7 and 0.70000001 are distinct keys.
    """
    return Computation(
        input=tagged_hash(_PROMPT_DOMAIN, req.prompt.encode("utf-8")),
        computation=LLM_COMPUTATION,
        parameters={
            "model_version": req.model_version,
            "temperature": float(req.temperature),
            "system_prompt_hash": tagged_hash(
                _SYSTEM_PROMPT_DOMAIN, req.system_prompt.encode("utf-8")
            ).hex(),
            "top_p": float(req.top_p),
            "max_tokens": req.max_tokens,
        },
    )
