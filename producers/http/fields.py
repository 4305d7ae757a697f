"""Reading a JSON request body: every field type-checked, every refusal a
:class:`Refused` naming the field.

Unknown fields are refused, so a misspelt ``ttl`` is an error rather than a
write without a TTL; ``role`` and ``scope`` are refused by name, because
they come from the caller's credential and never from what it sends.
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any, NoReturn

__all__ = [
    "CREDENTIAL_FIELDS",
    "Refused",
    "base64_field",
    "bool_field",
    "check_fields",
    "optional_str",
    "parse_body",
    "str_field",
    "ttl_ms_field",
]

_AVRO_LONG_MAX = 2**63 - 1
# What only a credential may say. A body naming them is refused, never
# ignored: a client that believes it chose its role must find out.
CREDENTIAL_FIELDS = ("role", "scope")
_REQUIRED: Any = object()


class Refused(Exception):
    """A request answered with an error status instead of being served."""

    def __init__(
        self,
        status: int,
        message: str,
        field: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.field = field
        self.headers = headers or {}

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": f"bad request: {self}" if self.status == 400 else str(self)}
        if self.field is not None:
            out["field"] = self.field
        return out


def parse_body(body: bytes) -> dict[str, Any]:
    """The body as a JSON object (an empty body is ``{}``)."""
    try:
        req = json.loads(body or b"{}", object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        raise Refused(400, "body is nested too deeply", "body") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, duplicates
        raise Refused(400, f"body is not valid JSON: {exc}", "body") from None
    if not isinstance(req, dict):
        raise Refused(400, f"body must be a JSON object, got {_json_type(req)}", "body")
    return req


def check_fields(req: dict[str, Any], path: str, allowed: frozenset[str]) -> None:
    """Refuse ``role``/``scope`` and any field ``path`` does not take."""
    for name in CREDENTIAL_FIELDS:
        if name in req:
            raise Refused(
                400,
                f"field {name!r} is not accepted: the {name} comes from your credential "
                "(bearer token or client certificate), never from the request",
                name,
            )
    unknown = sorted(set(req) - allowed)
    if unknown:
        raise Refused(
            400,
            f"unknown field(s) {', '.join(map(repr, unknown))} for {path}; "
            f"it takes {', '.join(sorted(allowed))}",
            unknown[0],
        )


def _object_without_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    # {"key": "a", "key": "b"}: which one would we act on? Neither.
    out: dict[str, Any] = {}
    for name, value in pairs:
        if name in out:
            raise ValueError(f"duplicate field {name!r}")
        out[name] = value
    return out


def _json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, (int, float)):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def _wrong(name: str, expected: str, value: Any) -> NoReturn:
    raise Refused(400, f"field {name!r} must be {expected}, got {_json_type(value)}", name)


def _get(req: dict[str, Any], name: str, default: Any) -> Any:
    if name in req:
        return req[name]
    if default is _REQUIRED:
        raise Refused(400, f"field {name!r} is required", name)
    return default


def str_field(
    req: dict[str, Any], name: str, default: Any = _REQUIRED, *, allow_empty: bool = False
) -> str:
    value = _get(req, name, default)
    if not isinstance(value, str):
        _wrong(name, "a string", value)
    if not value and not allow_empty:
        raise Refused(400, f"field {name!r} must not be empty", name)
    return value


def optional_str(req: dict[str, Any], name: str) -> str | None:
    value = _get(req, name, None)
    if value is None:
        return None
    if not isinstance(value, str):
        _wrong(name, "a string or null", value)
    if not value:
        raise Refused(400, f"field {name!r} must not be empty (leave it out or null)", name)
    return value


def bool_field(req: dict[str, Any], name: str, default: bool) -> bool:
    value = _get(req, name, default)
    if not isinstance(value, bool):
        _wrong(name, "true or false", value)
    return value


def ttl_ms_field(req: dict[str, Any]) -> int | None:
    value = _get(req, "ttl_ms", None)
    if value is None:
        return None
    # bool is an int in Python; true is not a TTL.
    if not isinstance(value, int) or isinstance(value, bool):
        _wrong("ttl_ms", "an integer number of milliseconds or null", value)
    if not 0 <= value <= _AVRO_LONG_MAX:
        raise Refused(
            400, f"field 'ttl_ms' must be between 0 and {_AVRO_LONG_MAX}, got {value}", "ttl_ms"
        )
    return value


def base64_field(req: dict[str, Any], name: str) -> bytes:
    value = _get(req, name, _REQUIRED)
    if not isinstance(value, str):
        _wrong(name, "a base64 string", value)
    try:
        # validate=True: a character outside the alphabet is an error, not
        # silently skipped (which turned garbage into an empty value).
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise Refused(400, f"field {name!r} is not valid base64: {exc}", name) from None
