"""The node's HTTP front as an ASGI application (Starlette).

Two layers run before any endpoint:

* :class:`RequestBounds` refuses what would cost more than it may: a body
  over ``max_body_bytes`` is 413 from its ``Content-Length``, before a byte
  of it is read; ``Transfer-Encoding`` is 501 (a body of unknown length).
* :class:`Authentication` makes every request but ``GET /health`` carry a
  credential: ``Authorization: Bearer <token>`` or a verified client
  certificate whose CN is configured. None, or an unknown token, is 401
  with ``WWW-Authenticate: Bearer``; an expired token is 401 too, saying
  that it expired and when (``error="invalid_token"``). The principal it
  finds (name, role, scope) is the only source of role and scope from then
  on.

Then each endpoint checks the role's right to its action (403 naming role
and action), reads the body within the request's deadline (408), checks
every field (400 naming it; ``role`` and ``scope`` are refused by name) and
runs the cache call off the event loop within what is left of the deadline
(504). Refusals are JSON ``{"error": ..., "field": ...}``; a refusal sent
whose body cannot be skipped (too big, chunked, too slow) closes the
connection.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import Any

import anyio
from prometheus_client import generate_latest
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from starlette.types import ASGIApp, Receive, Scope, Send

from cachet.errors import CachetError
from cachet.producers.cache_client import InvalidArgument, WriteNotAcknowledged
from cachet.producers.cache_node import CacheNode
from cachet.producers.http.credentials import Principal, TokenExpired, TokenStore
from cachet.producers.http.endpoints import ENDPOINTS, Endpoint
from cachet.producers.http.fields import Refused, check_fields, parse_body
from cachet.producers.http.openapi import openapi_document
from cachet.producers.http.rights import Action, Forbidden, check_right

__all__ = ["CLIENT_CN", "Authentication", "RequestBounds", "build_app"]

log = logging.getLogger(__name__)

# Where the server puts a verified client certificate's subject CN
# (scope["extensions"]["tls"][CLIENT_CN]); see producers/http/server.py.
CLIENT_CN = "cachet.client_cn"
_PRINCIPAL = "cachet.principal"
_STARTED = "cachet.started"
_UNAUTHENTICATED = frozenset({"/health"})
_CHALLENGE = 'Bearer realm="cachet"'


async def _answer(
    scope: Scope, receive: Receive, send: Send, refused: Refused, *, close: bool = False
) -> None:
    # close: what is left of the body on the socket cannot be skipped (too
    # big, or of unknown length). Otherwise the server reads past the unread
    # body to the next request: closing with unread bytes makes the kernel
    # reset the connection, which can destroy the answer before it is read.
    headers = {"Connection": "close", **refused.headers} if close else refused.headers
    await JSONResponse(refused.body(), refused.status, headers=headers)(scope, receive, send)


def _header(scope: Scope, name: bytes) -> list[str]:
    return [v.decode("latin-1") for k, v in scope["headers"] if k == name]


class RequestBounds:
    """413 for a declared body over the limit, 501 for chunked bodies, both
    before the body is read; records when the request arrived."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})[_STARTED] = time.monotonic()
        if _header(scope, b"transfer-encoding"):
            await _answer(
                scope,
                receive,
                send,
                Refused(501, "Transfer-Encoding is not supported: send Content-Length"),
                close=True,
            )
            return
        # The server (h11) has already refused a Content-Length that is not
        # one decimal number, or two that differ.
        lengths = _header(scope, b"content-length")
        if lengths and (declared := int(lengths[0])) > self.max_body_bytes:
            await _answer(
                scope,
                receive,
                send,
                Refused(
                    413,
                    f"body of {lengths[0]} bytes is over the limit of {self.max_body_bytes} bytes",
                ),
                # Up to twice the limit, the server skips the body unread
                # (its bytes are discarded as they arrive) and the answer
                # surely reaches the client; past that, the connection ends.
                close=declared > 2 * self.max_body_bytes,
            )
            return
        await self.app(scope, receive, send)


class Authentication:
    """Finds the principal of every request but ``/health``, or answers 401."""

    def __init__(
        self, app: ASGIApp, *, tokens: TokenStore, certificates: Mapping[str, Principal]
    ) -> None:
        self.app = app
        self.tokens = tokens
        self.certificates = dict(certificates)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in _UNAUTHENTICATED:
            await self.app(scope, receive, send)
            return
        try:
            principal = self._principal(scope)
        except Refused as refused:
            client = scope.get("client") or ("?", 0)
            # Who knocked and why, never what they presented.
            log.info(
                "http: 401 %s %s from %s: %s", scope["method"], scope["path"], client[0], refused
            )
            await _answer(scope, receive, send, refused)
            return
        scope.setdefault("state", {})[_PRINCIPAL] = principal
        await self.app(scope, receive, send)

    def _principal(self, scope: Scope) -> Principal:
        values = _header(scope, b"authorization")
        if len(values) > 1:
            raise _unauthorized("more than one Authorization header", "invalid_request")
        if values:
            kind, _, token = values[0].strip().partition(" ")
            if kind.lower() != "bearer" or not token.strip():
                raise _unauthorized(
                    "the Authorization header must be 'Bearer <token>'", "invalid_request"
                )
            try:
                principal = self.tokens.authenticate(token.strip())
            except TokenExpired as exc:
                # The holder learns to ask for a new token; the log says whose.
                log.warning(
                    "http: principal %r presented its expired token (%s)", exc.principal, exc
                )
                raise _unauthorized(f"{exc}: ask for a new one", "invalid_token") from None
            if principal is None:
                # Never echo the token: it may be someone's real one, mistyped.
                raise _unauthorized("the bearer token is not valid", "invalid_token")
            return principal
        cn = scope.get("extensions", {}).get("tls", {}).get(CLIENT_CN)
        if cn is not None:
            principal = self.certificates.get(cn)
            if principal is None:
                raise _unauthorized(f"client certificate CN {cn!r} is not a configured principal")
            return principal
        raise _unauthorized("credentials required: Authorization: Bearer <token>")


def _unauthorized(message: str, error: str | None = None) -> Refused:
    challenge = _CHALLENGE + (f', error="{error}"' if error else "")
    return Refused(401, message, headers={"WWW-Authenticate": challenge})


class _Front:
    """The endpoints, bound to one node and its bounds."""

    def __init__(self, node: CacheNode, request_timeout_s: float) -> None:
        self.node = node
        self.request_timeout_s = request_timeout_s

    def _left_s(self, request: Request) -> float:
        started: float = request.scope["state"][_STARTED]
        return started + self.request_timeout_s - time.monotonic()

    # Off the event loop, like every call into the node: the state hash in
    # /health may be recomputed from the store after a commit.
    async def health(self, request: Request) -> Response:
        health = await anyio.to_thread.run_sync(self.node.health)
        return JSONResponse(health.as_json(), 200 if health.ready else 503)

    async def metrics(self, request: Request) -> Response:
        check_right(_principal(request).role, Action.METRICS)
        body = await anyio.to_thread.run_sync(generate_latest, self.node.registry)
        return Response(body, media_type="text/plain; version=0.0.4")

    async def openapi(self, request: Request) -> Response:
        check_right(_principal(request).role, Action.OPENAPI)
        return JSONResponse(openapi_document())

    async def post(self, request: Request) -> Response:
        endpoint = ENDPOINTS.get(request.url.path)
        if endpoint is None:
            raise Refused(404, f"no such endpoint {request.url.path}")
        who = _principal(request)
        check_right(who.role, endpoint.action)
        body = await self._body(request)
        req = parse_body(body)
        check_fields(req, endpoint.path, endpoint.fields)
        try:
            out = await self._run(endpoint, who, req, request)
        except (Refused, Forbidden, CachetError, ValueError):
            raise  # answered by the handlers build_app installs
        except Exception:  # noqa: BLE001 - a bug gets an answer too, and a traceback
            log.exception("http: %s failed", endpoint.path)
            return JSONResponse({"error": "internal error (logged on the node)"}, 500)
        return JSONResponse(out, endpoint.status)

    async def _body(self, request: Request) -> bytes:
        chunks: list[bytes] = []
        try:
            with anyio.fail_after(max(0.0, self._left_s(request))):
                async for chunk in request.stream():
                    chunks.append(chunk)
        except TimeoutError:
            got = sum(map(len, chunks))
            declared = request.headers.get("content-length", "?")
            raise Refused(
                408,
                f"request body not received within {self.request_timeout_s:g} s "
                f"({got} of {declared} bytes)",
                headers={"Connection": "close"},
            ) from None
        return b"".join(chunks)

    async def _run(
        self, endpoint: Endpoint, who: Principal, req: dict[str, Any], request: Request
    ) -> dict[str, Any]:
        left = self._left_s(request)
        if left <= 0:
            raise Refused(504, f"{endpoint.path}: no time left of {self.request_timeout_s:g} s")
        try:
            with anyio.fail_after(left):
                # abandon_on_cancel: the answer goes out at the deadline; a
                # write still in flight then may or may not become durable,
                # as with any unacknowledged write (the 504 says so).
                return await anyio.to_thread.run_sync(
                    endpoint.handle, self.node, who, req, left, abandon_on_cancel=True
                )
        except TimeoutError:
            raise Refused(
                504,
                f"{endpoint.path} did not finish within {self.request_timeout_s:g} s; "
                "a write may or may not have been made (read it back before retrying)",
            ) from None


def _principal(request: Request) -> Principal:
    principal: Principal = request.scope["state"][_PRINCIPAL]
    return principal


async def _refused(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, Refused)
    return JSONResponse(exc.body(), exc.status, headers=exc.headers or None)


async def _forbidden(request: Request, exc: Exception) -> Response:
    who = request.scope.get("state", {}).get(_PRINCIPAL)
    log.warning(
        "http: 403 %s %s by %s: %s", request.method, request.url.path, who and who.name, exc
    )
    return JSONResponse({"error": str(exc)}, 403)


async def _invalid(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, InvalidArgument)  # the cache client's own argument checks
    return JSONResponse({"error": str(exc), "field": exc.argument}, 400)


async def _cachet_error(request: Request, exc: Exception) -> Response:
    if isinstance(exc, WriteNotAcknowledged):  # the broker did not take it: try again
        return JSONResponse({"error": str(exc)}, 503)
    return JSONResponse({"error": str(exc)}, 409)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)  # routing: 404, 405
    detail = f"no such path {request.url.path}" if exc.status_code == 404 else exc.detail
    return JSONResponse({"error": detail}, exc.status_code, headers=exc.headers)


async def _value_error(request: Request, exc: Exception) -> Response:
    return JSONResponse({"error": f"bad request: {exc}"}, 400)


def build_app(
    node: CacheNode,
    *,
    tokens: TokenStore,
    certificates: Mapping[str, Principal],
    max_body_bytes: int,
    request_timeout_s: float,
) -> ASGIApp:
    """The front's ASGI application for ``node``."""
    front = _Front(node, request_timeout_s)
    app = Starlette(
        routes=[
            Route("/health", front.health, methods=["GET"]),
            Route("/metrics", front.metrics, methods=["GET"]),
            Route("/openapi.json", front.openapi, methods=["GET"]),
            Route("/v1/{name:path}", front.post, methods=["POST"]),
        ],
        exception_handlers={
            Refused: _refused,
            Forbidden: _forbidden,
            InvalidArgument: _invalid,
            CachetError: _cachet_error,
            HTTPException: _http_error,
            ValueError: _value_error,
        },
    )
    authenticated = Authentication(app, tokens=tokens, certificates=certificates)
    return RequestBounds(authenticated, max_body_bytes=max_body_bytes)
