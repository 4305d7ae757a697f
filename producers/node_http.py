"""A node's HTTP front: health, metrics and a small JSON cache API.

``GET /health`` answers 200 while the view serves (caught up, ticks fresh,
no discontinuity) and 503 otherwise, with the reasons. ``GET /metrics`` is
Prometheus text. ``POST /v1/{put,get,revoke,confirm}`` take and return JSON
(values base64). It binds to loopback unless told otherwise: it carries no
authentication of its own, so a deployment puts it behind its own.
"""

from __future__ import annotations

import base64
import json
import logging
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client import generate_latest

from cachet.config.enums import Role
from cachet.errors import CachetError
from producers.cache_node import CacheNode

__all__ = ["NodeHttpServer"]

log = logging.getLogger(__name__)


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
    """Serves one node over HTTP on a background thread."""

    def __init__(self, node: CacheNode, port: int = 0, host: str = "127.0.0.1") -> None:
        self.node = node
        handler = type("Handler", (_Handler,), {"node": node})
        self._server = ThreadingHTTPServer((host, port), handler)
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

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib signature
        log.debug("http: " + format, *args)

    def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
        self.send_response(code)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, code: int, obj: Any) -> None:
        self._send(code, json.dumps(obj).encode())

    def do_GET(self) -> None:  # noqa: N802 - stdlib name
        if self.path == "/health":
            h = self.node.view.health()
            problems = []
            if not h.caught_up:
                problems.append("view_catching_up: " + ", ".join(self.node.view.catching_up()))
            if h.last_tick_age_ms is None:
                problems.append("no_watermark_tick")
            if h.discontinuity:
                problems.append(f"log_discontinuity: {self.node.view.discontinuity}")
            self._json(
                503 if problems else 200,
                {
                    "ok": not problems,
                    "problems": problems,
                    "node_id": self.node.node_id,
                    "caught_up": h.caught_up,
                    "last_tick_age_ms": h.last_tick_age_ms,
                    "lag_ms": h.lag_ms,
                },
            )
        elif self.path == "/metrics":
            self._send(200, generate_latest(self.node.registry), "text/plain; version=0.0.4")
        else:
            self._json(404, {"error": f"no such path {self.path}"})

    def do_POST(self) -> None:  # noqa: N802 - stdlib name
        try:
            length = int(self.headers.get("Content-Length", "0"))
            req = json.loads(self.rfile.read(length) or b"{}")
            if not isinstance(req, dict):
                raise ValueError("body must be a JSON object")
            out = self._dispatch(self.path, req)
        except (ValueError, KeyError, TypeError) as exc:
            self._json(400, {"error": f"bad request: {exc}"})
            return
        except CachetError as exc:
            self._json(409, {"error": str(exc)})
            return
        self._json(200, out)

    def _dispatch(self, path: str, req: dict[str, Any]) -> dict[str, Any]:
        client = self.node.client(Role(req.get("role", "owner")), req.get("scope"))
        ns = req.get("namespace", "default")
        if path == "/v1/put":
            r = client.put(
                req["key"],
                base64.b64decode(req["value_b64"]),
                contract=req["contract"],
                namespace=ns,
                ttl_ms=req.get("ttl_ms"),
                wait=bool(req.get("wait")),
            )
            return {
                "version": r.version,
                "fingerprint_hex": r.fingerprint.hex(),
                "event_id": r.event_id,
            }
        if path == "/v1/get":
            return _response(client.get(req["key"], contract=req["contract"], namespace=ns))
        if path == "/v1/revoke":
            return {
                "revoked": client.revoke(
                    req["key"], namespace=ns, reason=req.get("reason", "revoked")
                )
            }
        if path == "/v1/confirm":
            return {"confirmed": client.confirm_freshness(req["key"], namespace=ns)}
        raise KeyError(f"no such endpoint {path}")
