"""A node's HTTP front: health, metrics and a small JSON cache API.

``GET /health`` answers 200 while the node serves (caught up, ticks within
the tightest contract, no discontinuity, writes acknowledged) and 503
otherwise, with the reasons; its JSON carries the view's ``state_hash``
(:class:`cachet.producers.cache_node.NodeHealth`). ``GET /metrics`` is
Prometheus text. ``POST /v1/{put,get,revoke,confirm}`` take and return JSON
(values base64). It binds to loopback unless told otherwise: it carries no
authentication of its own, so a deployment puts it behind its own.

Requests are checked before anything is done with them, and every refusal
is an answer (JSON ``{"error": ..., "field": ...}``), never a dropped
connection:

* ``Content-Length`` must be one plain decimal number: negative, non-numeric
  or conflicting values are 400; a body over ``max_body_bytes`` (default
  8 MiB) is 413 and is never read; ``Transfer-Encoding`` is 501.
* A request must arrive within ``request_timeout_s`` (default 10 s): every
  read of the headers waits at most that long, and the body as a whole too.
  A half-sent request then costs one thread for that long, not forever.
* Every field is type-checked (400 naming the field): ``key``, ``contract``,
  ``namespace``, ``reason`` strings; ``value_b64`` strict base64; ``ttl_ms`` a
  non-negative integer or null; ``wait`` a boolean; ``role`` one of the roles;
  ``scope`` a string or null. Unknown fields are refused, so a misspelt
  ``ttl`` is an error rather than a write without a TTL.

Status codes: 200 done; 400 bad request; 404 no such endpoint; 408 the
request did not arrive in time; 409 Cachet refused it (the error names
why); 413 body too large; 500 a bug (logged with its traceback).
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, NoReturn

from prometheus_client import generate_latest

from cachet.config.enums import Role
from cachet.errors import CachetError
from cachet.producers.cache_client import CacheClient, InvalidArgument, WriteNotAcknowledged
from cachet.producers.cache_node import CacheNode

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "HttpFrontError",
    "NodeHttpServer",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 10.0

# Fields each endpoint takes, besides role, scope and namespace.
_ENDPOINT_FIELDS: dict[str, frozenset[str]] = {
    "/v1/put": frozenset({"key", "value_b64", "contract", "ttl_ms", "wait"}),
    "/v1/get": frozenset({"key", "contract"}),
    "/v1/revoke": frozenset({"key", "reason"}),
    "/v1/confirm": frozenset({"key"}),
}
_COMMON_FIELDS = frozenset({"role", "scope", "namespace"})
# One plain decimal number: int() would also take "+5", " 5", "5_000".
_CONTENT_LENGTH = re.compile(r"[0-9]{1,19}")
_AVRO_LONG_MAX = 2**63 - 1


class HttpFrontError(CachetError):
    """The HTTP front could not start: the message names the address and why."""


class _Refused(Exception):
    """A request answered with an error status instead of being served."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.field = field

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"error": f"bad request: {self}" if self.status == 400 else str(self)}
        if self.field is not None:
            out["field"] = self.field
        return out


def _response(r: Any) -> dict[str, Any]:
    return {
        "hit": r.hit,
        "value_b64": base64.b64encode(r.value).decode() if r.value is not None else None,
        "reason": r.reason.value if r.reason else None,
        "status": r.status.value,
        "version": r.version,
        "fingerprint_hex": r.fingerprint.hex() if r.fingerprint else None,
        "freshness": r.freshness.to_payload() if r.freshness else None,
        "detail": r.detail,
    }


class NodeHttpServer:
    """Serves one node over HTTP on a background thread.

    Binding happens here: a port out of range, in use or not permitted is an
    :class:`HttpFrontError` naming the address and the reason.
    """

    def __init__(
        self,
        node: CacheNode,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
        if not 0 <= port <= 65535:
            raise HttpFrontError(f"cannot serve HTTP on {host}:{port}: not a TCP port (0-65535)")
        self.node = node
        handler = type(
            "Handler",
            (_Handler,),
            # StreamRequestHandler applies ``timeout`` to the socket: every
            # read waits at most that long (defends against idle, half-sent
            # requests each holding a thread forever).
            {
                "node": node,
                "timeout": request_timeout_s,
                "request_timeout_s": request_timeout_s,
                "max_body_bytes": max_body_bytes,
            },
        )
        try:
            self._server = ThreadingHTTPServer((host, port), handler)
        except OSError as exc:
            raise HttpFrontError(
                f"cannot serve HTTP on {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self.port = self._server.server_address[1]
        self._thread = threading.Thread(
            target=self._server.serve_forever, daemon=True, name="cachet-node-http"
        )

    def start(self) -> NodeHttpServer:
        self._thread.start()
        return self

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


class _Handler(BaseHTTPRequestHandler):
    node: CacheNode
    max_body_bytes: int
    request_timeout_s: float

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        try:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            if self.close_connection:
                self.send_header("Connection", "close")
            self.end_headers()
            self.wfile.write(body)
        except OSError as exc:  # the client left (or timed out) before the answer
            self.close_connection = True
            log.debug("http: could not answer %s %s: %s", self.command, self.path, exc)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode())

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/health":
            health = self.node.health()
            self._json(200 if health.ready else 503, health.as_json())
        elif self.path == "/metrics":
            self._send(200, generate_latest(self.node.registry), "text/plain; version=0.0.4")
        else:
            self._json(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        try:
            req = _parse_body(self._read_body())
            fields = _ENDPOINT_FIELDS.get(self.path)
            if fields is None:
                raise _Refused(404, f"no such endpoint {self.path}")
            unknown = sorted(set(req) - fields - _COMMON_FIELDS)
            if unknown:
                raise _Refused(
                    400,
                    f"unknown field(s) {', '.join(map(repr, unknown))} for {self.path}; "
                    f"it takes {', '.join(sorted(fields | _COMMON_FIELDS))}",
                    unknown[0],
                )
            out = self._dispatch(self.path, req)
        except _Refused as exc:
            if exc.status in (408, 413, 501) or exc.status == 400 and exc.field is None:
                # The body was not (fully) read: what is left on the socket is
                # not a request, so the connection ends with this answer.
                self.close_connection = True
            self._json(exc.status, exc.body())
            return
        except InvalidArgument as exc:  # the cache client's own argument checks
            self._json(400, {"error": str(exc), "field": exc.argument})
            return
        except WriteNotAcknowledged as exc:  # the broker did not take it: try again
            self._json(503, {"error": str(exc)})
            return
        except CachetError as exc:
            self._json(409, {"error": str(exc)})
            return
        except ValueError as exc:
            self._json(400, {"error": f"bad request: {exc}"})
            return
        except Exception as exc:  # noqa: BLE001 - a bug gets an answer too, and a traceback
            log.exception("http: %s failed", self.path)
            self._json(500, {"error": f"internal error: {type(exc).__name__}"})
            return
        self._json(200, out)

    def _read_body(self) -> bytes:
        """The request body, within the size and time bounds, or a refusal."""
        if self.headers.get("Transfer-Encoding") is not None:
            raise _Refused(501, "Transfer-Encoding is not supported: send Content-Length")
        values = self.headers.get_all("Content-Length") or []
        # Two different lengths is how request smuggling starts: refuse.
        if len(set(values)) > 1:
            raise _Refused(400, f"conflicting Content-Length headers: {', '.join(values)}")
        if not values:
            return b""
        text = values[0].strip()
        if not _CONTENT_LENGTH.fullmatch(text):
            raise _Refused(400, f"Content-Length must be a non-negative integer, got {text!r}")
        length = int(text)
        if length > self.max_body_bytes:
            raise _Refused(
                413, f"body of {length} bytes is over the limit of {self.max_body_bytes} bytes"
            )
        # The socket timeout bounds each read; the deadline bounds the sum, so
        # a body trickled one byte per interval cannot hold the thread either.
        deadline = time.monotonic() + self.request_timeout_s
        chunks: list[bytes] = []
        remaining = length
        try:
            while remaining:
                if time.monotonic() > deadline:
                    raise TimeoutError
                chunk = self.rfile.read1(min(remaining, 64 * 1024))
                if not chunk:
                    raise _Refused(400, f"body ended after {length - remaining} of {length} bytes")
                chunks.append(chunk)
                remaining -= len(chunk)
        except TimeoutError:
            raise _Refused(
                408,
                f"request body not received within {self.request_timeout_s:g} s "
                f"({length - remaining} of {length} bytes)",
            ) from None
        return b"".join(chunks)

    def _dispatch(self, path: str, req: dict[str, Any]) -> dict[str, Any]:
        client = CacheClient(self.node, _role(req), _optional_str(req, "scope"))
        ns = _str(req, "namespace", "default")
        if path == "/v1/put":
            r = client.put(
                _str(req, "key"),
                _base64(req, "value_b64"),
                contract=_str(req, "contract"),
                namespace=ns,
                ttl_ms=_ttl_ms(req),
                wait=_bool(req, "wait", False),
            )
            return {
                "version": r.version,
                "fingerprint_hex": r.fingerprint.hex(),
                "event_id": r.event_id,
            }
        if path == "/v1/get":
            return _response(
                client.get(_str(req, "key"), contract=_str(req, "contract"), namespace=ns)
            )
        if path == "/v1/revoke":
            return {
                "revoked": client.revoke(
                    _str(req, "key"),
                    namespace=ns,
                    reason=_str(req, "reason", "revoked", allow_empty=True),
                )
            }
        if path == "/v1/confirm":
            return {"confirmed": client.confirm_freshness(_str(req, "key"), namespace=ns)}
        raise _Refused(404, f"no such endpoint {path}")


# -- request fields -----------------------------------------------------------

_REQUIRED: Any = object()


def _parse_body(body: bytes) -> dict[str, Any]:
    try:
        req = json.loads(body or b"{}", object_pairs_hook=_object_without_duplicates)
    except RecursionError:
        raise _Refused(400, "body is nested too deeply", "body") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, duplicates
        raise _Refused(400, f"body is not valid JSON: {exc}", "body") from None
    if not isinstance(req, dict):
        raise _Refused(400, f"body must be a JSON object, got {_json_type(req)}", "body")
    return req


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
    raise _Refused(400, f"field {name!r} must be {expected}, got {_json_type(value)}", name)


def _get(req: dict[str, Any], name: str, default: Any) -> Any:
    if name in req:
        return req[name]
    if default is _REQUIRED:
        raise _Refused(400, f"field {name!r} is required", name)
    return default


def _str(
    req: dict[str, Any], name: str, default: Any = _REQUIRED, *, allow_empty: bool = False
) -> str:
    value = _get(req, name, default)
    if not isinstance(value, str):
        _wrong(name, "a string", value)
    if not value and not allow_empty:
        raise _Refused(400, f"field {name!r} must not be empty", name)
    return value


def _optional_str(req: dict[str, Any], name: str) -> str | None:
    value = _get(req, name, None)
    if value is not None and not isinstance(value, str):
        _wrong(name, "a string or null", value)
    return value


def _bool(req: dict[str, Any], name: str, default: bool) -> bool:
    value = _get(req, name, default)
    if not isinstance(value, bool):
        _wrong(name, "true or false", value)
    return value


def _ttl_ms(req: dict[str, Any]) -> int | None:
    value = _get(req, "ttl_ms", None)
    if value is None:
        return None
    # bool is an int in Python; true is not a TTL.
    if not isinstance(value, int) or isinstance(value, bool):
        _wrong("ttl_ms", "an integer number of milliseconds or null", value)
    if not 0 <= value <= _AVRO_LONG_MAX:
        raise _Refused(
            400, f"field 'ttl_ms' must be between 0 and {_AVRO_LONG_MAX}, got {value}", "ttl_ms"
        )
    return value


def _base64(req: dict[str, Any], name: str) -> bytes:
    value = _get(req, name, _REQUIRED)
    if not isinstance(value, str):
        _wrong(name, "a base64 string", value)
    try:
        # validate=True: a character outside the alphabet is an error, not
        # silently skipped (which turned garbage into an empty value).
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise _Refused(400, f"field {name!r} is not valid base64: {exc}", name) from None


def _role(req: dict[str, Any]) -> Role:
    value = _get(req, "role", Role.OWNER.value)
    roles = ", ".join(r.value for r in Role if r is not Role.UNKNOWN)
    if not isinstance(value, str):
        _wrong("role", f"one of {roles}", value)
    try:
        role = Role(value)
    except ValueError:
        role = Role.UNKNOWN
    if role is Role.UNKNOWN:  # the wire's fallback for newer roles, never a caller's
        raise _Refused(400, f"field 'role' must be one of {roles}, got {value!r}", "role")
    return role
