"""Serving the front: uvicorn on a background thread, one node per server.

The server binds in the constructor, so a port out of range, in use or not
permitted is an :class:`HttpFrontError` there, naming the address; TLS
files that cannot be loaded are too.

Time bounds. uvicorn closes a kept-alive connection idle for
``keep_alive_timeout_s``, but waits forever for the first request of a
connection and for headers sent slowly. :class:`_BoundedH11` adds that:
a connection whose request line and headers have not all arrived within
``request_timeout_s`` of its first byte (or of being opened) is closed. The
body and the handling are bounded by the application (408, 504).

Mutual TLS: when ``ssl_ca_certs`` is set, the server asks for a client
certificate (requires one with ``require_client_certificate``) and verifies
it against that CA; a verified certificate's subject CN is handed to the
application, which maps it to a configured principal.
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import ssl
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from cachet.config import CachetConfig
from cachet.errors import CachetError
from cachet.producers.cache_node import CacheNode
from cachet.producers.http.app import CLIENT_CN, build_app
from cachet.producers.http.credentials import Principal, TokenStore, certificate_principals

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "HttpFrontError",
    "NodeHttpServer",
    "TlsSettings",
]

log = logging.getLogger(__name__)

DEFAULT_MAX_BODY_BYTES = 8 * 1024 * 1024
DEFAULT_REQUEST_TIMEOUT_S = 10.0
DEFAULT_KEEP_ALIVE_S = 5.0
_START_TIMEOUT_S = 10.0


class HttpFrontError(CachetError):
    """The HTTP front could not start: the message names the address and why."""


@dataclass(frozen=True, slots=True)
class TlsSettings:
    """The server's certificate and key, and the CA client certificates must
    chain to (None: no client certificates asked for)."""

    certfile: Path
    keyfile: Path | None = None
    ca_certs: Path | None = None
    require_client_certificate: bool = False

    @classmethod
    def from_config(cls, config: CachetConfig) -> TlsSettings | None:
        http = config.http
        if http.ssl_certfile is None:
            return None
        return cls(
            http.ssl_certfile, http.ssl_keyfile, http.ssl_ca_certs, http.require_client_certificate
        )


def _peer_common_name(transport: asyncio.BaseTransport) -> str | None:
    """The subject CN of a client certificate the TLS layer verified."""
    ssl_object = transport.get_extra_info("ssl_object")
    if ssl_object is None:
        return None
    # getpeercert() is empty unless the chain verified against ssl_ca_certs.
    cert = ssl_object.getpeercert()
    for rdn in (cert or {}).get("subject", ()):
        for name, value in rdn:
            if name == "commonName":
                return str(value)
    return None


class _BoundedH11(H11Protocol):
    """uvicorn's h11 protocol with a deadline on the request line and
    headers, JSON for malformed requests and the client certificate's CN in
    the ASGI scope."""

    request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        cn = _peer_common_name(transport)
        if cn is not None:
            inner = self.app

            async def with_client_cn(scope: Any, receive: Any, send: Any) -> None:
                scope.setdefault("extensions", {}).setdefault("tls", {})[CLIENT_CN] = cn
                await inner(scope, receive, send)

            self.app = with_client_cn
        self._arm_head_timer()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is h11.IDLE:
            self._arm_head_timer()  # a request has begun, its head is not complete
        else:
            self._cancel_head_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_head_timer()
        super().connection_lost(exc)

    def _arm_head_timer(self) -> None:
        if self._head_timer is None:
            self._head_timer = self.loop.call_later(self.request_timeout_s, self._head_timed_out)

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        # Only a connection still waiting for a request head; one being
        # answered, or idle after an answer, has its own bounds.
        answering = self.cycle is not None and not self.cycle.response_complete
        if self.conn.their_state is h11.IDLE and not answering and not self.transport.is_closing():
            self.transport.close()

    def send_400_response(self, msg: str) -> None:
        body = json.dumps(
            {
                "error": "bad request: malformed HTTP request (request line, a header, or a "
                "Content-Length that is not one decimal number or conflicts with another)"
            }
        ).encode()
        response = (
            b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\n"
            b"connection: close\r\ncontent-length: " + str(len(body)).encode() + b"\r\n\r\n" + body
        )
        if not self.transport.is_closing():
            self.transport.write(response)
            self.transport.close()


class NodeHttpServer:
    """Serves one node's HTTP front on a background thread.

    ``tokens`` and ``certificates`` are the credentials it accepts (see
    :meth:`from_config`); with neither, every request but ``/health`` is 401.
    """

    def __init__(
        self,
        node: CacheNode,
        port: int = 0,
        host: str = "127.0.0.1",
        *,
        tokens: TokenStore | None = None,
        certificates: Mapping[str, Principal] | None = None,
        max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
        request_timeout_s: float = DEFAULT_REQUEST_TIMEOUT_S,
        keep_alive_timeout_s: float = DEFAULT_KEEP_ALIVE_S,
        tls: TlsSettings | None = None,
    ) -> None:
        if max_body_bytes < 1:
            raise ValueError(f"max_body_bytes must be at least 1, got {max_body_bytes}")
        if request_timeout_s <= 0:
            raise ValueError(f"request_timeout_s must be positive, got {request_timeout_s}")
        if keep_alive_timeout_s <= 0:
            raise ValueError(f"keep_alive_timeout_s must be positive, got {keep_alive_timeout_s}")
        if not 0 <= port <= 65535:
            raise HttpFrontError(f"cannot serve HTTP on {host}:{port}: not a TCP port (0-65535)")
        self.node = node
        self.host = host
        app = build_app(
            node,
            tokens=tokens or TokenStore(()),
            certificates=certificates or {},
            max_body_bytes=max_body_bytes,
            request_timeout_s=request_timeout_s,
        )
        protocol = type("BoundedH11", (_BoundedH11,), {"request_timeout_s": request_timeout_s})
        self._config = uvicorn.Config(
            app,
            http=protocol,
            ws="none",
            lifespan="off",
            loop="asyncio",
            interface="asgi3",
            # The caller's address is the socket's: no X-Forwarded-* trusted.
            proxy_headers=False,
            server_header=False,
            # Leave the process's logging alone (uvicorn would reconfigure it).
            log_config=None,
            access_log=False,
            timeout_keep_alive=keep_alive_timeout_s,  # type: ignore[arg-type]
            ssl_certfile=str(tls.certfile) if tls else None,
            ssl_keyfile=str(tls.keyfile) if tls and tls.keyfile else None,
            ssl_ca_certs=str(tls.ca_certs) if tls and tls.ca_certs else None,
            ssl_cert_reqs=_cert_reqs(tls),
        )
        scheme = "https" if tls else "http"
        try:
            self._config.load()
        except (OSError, ssl.SSLError) as exc:
            raise HttpFrontError(f"cannot serve {scheme} on {host}:{port}: TLS: {exc}") from exc
        self._socket = _bind(host, port, scheme)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"{scheme}://{host}:{self.port}"
        self._server = uvicorn.Server(self._config)
        self._thread = threading.Thread(
            target=self._serve, daemon=True, name=f"cachet-node-http-{self.port}"
        )

    @classmethod
    def from_config(
        cls, node: CacheNode, config: CachetConfig, port: int, *, tokens: TokenStore | None = None
    ) -> NodeHttpServer:
        """The front ``[http]`` describes, on ``port``; ``tokens`` if already
        read (else read here). A tokens file that is missing or malformed is
        an :class:`HttpFrontError` naming it."""
        http = config.http
        try:
            if tokens is None:
                tokens = TokenStore.from_config(config)
            certificates = certificate_principals(config)
        except CachetError as exc:
            raise HttpFrontError(f"cannot serve HTTP on {http.host}:{port}: {exc}") from exc
        return cls(
            node,
            port,
            http.host,
            tokens=tokens,
            certificates=certificates,
            max_body_bytes=http.max_body_bytes,
            request_timeout_s=http.request_timeout_ms / 1000,
            keep_alive_timeout_s=http.keep_alive_timeout_ms / 1000,
            tls=TlsSettings.from_config(config),
        )

    def _serve(self) -> None:
        try:
            self._server.run(sockets=[self._socket])
        except BaseException:  # noqa: BLE001 - a dead front must say why in the log
            log.exception("http front on %s stopped", self.url)

    def start(self) -> NodeHttpServer:
        """Start serving; returns once the server accepts connections."""
        self._thread.start()
        deadline = time.monotonic() + _START_TIMEOUT_S
        while not self._server.started and self._thread.is_alive():
            if time.monotonic() > deadline:
                break
            time.sleep(0.005)
        if not self._server.started:
            raise HttpFrontError(f"http front on {self.url} did not start (see the log)")
        return self

    def close(self) -> None:
        """Stop accepting, finish what is in flight, release the port."""
        self._server.should_exit = True
        if self._thread.is_alive():
            self._thread.join(_START_TIMEOUT_S)
        self._socket.close()


def _cert_reqs(tls: TlsSettings | None) -> int:
    if tls is None or tls.ca_certs is None:
        return ssl.CERT_NONE
    return ssl.CERT_REQUIRED if tls.require_client_certificate else ssl.CERT_OPTIONAL


def _bind(host: str, port: int, scheme: str) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP named, not left 0: asyncio sets TCP_NODELAY only on sockets
    # that say so, and without it a kept-alive connection waits ~40 ms per
    # answer (Nagle holding the body for the client's delayed ACK).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        # As uvicorn itself binds: a port in TIME_WAIT is free, one in use is not.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise HttpFrontError(
            f"cannot serve {scheme.upper()} on {host}:{port}: {exc.strerror or exc}"
        ) from exc
    sock.set_inheritable(True)
    return sock
