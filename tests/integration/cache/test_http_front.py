"""The node's HTTP front against a real node on the real broker: every bad
request gets an answer naming what was wrong, never a dropped or held
connection, and nothing is stored from it. (Who may do what:
test_http_roles.py.)"""

from __future__ import annotations

import base64
import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest

from cachet.config import Role
from cachet.config.sections import HttpToken
from cachet.producers.http import HttpFrontError, NodeHttpServer, TokenStore
from cachet.producers.http.credentials import new_token, token_digest

from .nodeproc import wait_for

pytestmark = pytest.mark.integration

# Short, so the idle tests finish quickly; the client waits far longer, so
# a server that does not close shows up as a client-side timeout.
SERVER_TIMEOUT_S = 0.5
CLIENT_TIMEOUT_S = 30.0
MAX_BODY = 64 * 1024
TOKEN = new_token()
AUTH = f"Authorization: Bearer {TOKEN}\r\n"


@pytest.fixture
def front(make_node) -> Iterator[NodeHttpServer]:
    node = make_node()
    server = NodeHttpServer(
        node,
        0,
        tokens=TokenStore([HttpToken("owner", token_digest(TOKEN), Role.OWNER)]),
        max_body_bytes=MAX_BODY,
        request_timeout_s=SERVER_TIMEOUT_S,
        keep_alive_timeout_s=SERVER_TIMEOUT_S,
    ).start()
    yield server
    server.close()


def _exchange(port: int, data: bytes) -> bytes:
    """Send raw bytes, read until the server closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=CLIENT_TIMEOUT_S) as sock:
        sock.sendall(data)
        chunks = []
        while chunk := sock.recv(65536):
            chunks.append(chunk)
    return b"".join(chunks)


def _parse(raw: bytes) -> tuple[int, dict[str, Any]]:
    head, _, body = raw.partition(b"\r\n\r\n")
    status = int(head.split(b" ", 2)[1])
    return status, json.loads(body)


def _post_raw(port: int, headers: str, body: bytes = b"") -> tuple[int, dict[str, Any]]:
    request = f"POST /v1/get HTTP/1.1\r\nHost: t\r\n{AUTH}{headers}\r\n".encode() + body
    return _parse(_exchange(port, request))


def _post(port: int, path: str, obj: Any) -> tuple[int, dict[str, Any]]:
    body = json.dumps(obj).encode()
    request = (
        f"POST {path} HTTP/1.1\r\nHost: t\r\n{AUTH}Connection: close\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    return _parse(_exchange(port, request))


def _put(key: str, value: bytes = b"v", **extra: Any) -> dict[str, Any]:
    return {
        "key": key,
        "value_b64": base64.b64encode(value).decode(),
        "contract": "quotes",
        **extra,
    }


# One node per test, many cases per node: starting a node is what costs.


def test_bodies_too_big_or_badly_framed_are_refused_before_being_read(front) -> None:
    for length in (str(10**12), str(MAX_BODY + 1)):
        status, out = _post_raw(front.port, f"Content-Length: {length}\r\n")
        assert status == 413, length
        assert length in out["error"] and str(MAX_BODY) in out["error"]
    for length in ("-1", "abc", "+5", "1.5", "0x10", ""):
        status, out = _post_raw(front.port, f"Content-Length: {length}\r\n")
        assert status == 400, length
        assert "malformed HTTP request" in out["error"] and "Content-Length" in out["error"]
    status, out = _post_raw(front.port, "Content-Length: 2\r\nContent-Length: 5\r\n", b"{}")
    assert status == 400 and "conflicts" in out["error"]
    status, out = _post_raw(front.port, "Transfer-Encoding: chunked\r\n", b"2\r\n{}\r\n0\r\n\r\n")
    assert status == 501 and "Transfer-Encoding" in out["error"]


def test_slow_and_idle_clients_are_cut_off(front) -> None:
    status, out = _post_raw(front.port, "Content-Length: 50\r\n", b'{"key": "K"')
    assert status == 408
    assert "11 of 50 bytes" in out["error"]
    for partial in (b"", b"POST /v1/get HT", b"POST /v1/get HTTP/1.1\r\nHost: t\r\nContent-Le"):
        # Reading until EOF returns: the server closed it. A server holding
        # the connection would make recv raise the client's (much longer)
        # timeout.
        raw = _exchange(front.port, partial)
        assert not raw or raw.startswith(b"HTTP/1."), partial


def test_invalid_base64_is_refused_and_nothing_is_stored(front, ticker) -> None:
    assert front.node.wait_caught_up()
    for bad in ("not base64!", "YW Jj", "YWJjZA"):
        status, out = _post(front.port, "/v1/put", {**_put("B64"), "value_b64": bad})
        assert status == 400, bad
        assert out["field"] == "value_b64" and "base64" in out["error"]
    status, out = _post(front.port, "/v1/get", {"key": "B64", "contract": "quotes"})
    assert status == 200 and out["hit"] is False and out["reason"] == "not_found"


WRONG_TYPES: list[tuple[str, dict[str, Any], str]] = [
    ("/v1/put", _put("K", namespace=5), "namespace"),
    ("/v1/put", {**_put("K"), "key": 5}, "key"),
    ("/v1/put", {**_put("K"), "key": ""}, "key"),
    ("/v1/put", {**_put("K"), "contract": None}, "contract"),
    ("/v1/put", {**_put("K"), "value_b64": 12}, "value_b64"),
    ("/v1/put", _put("K", ttl_ms="1000"), "ttl_ms"),
    ("/v1/put", _put("K", ttl_ms=True), "ttl_ms"),
    ("/v1/put", _put("K", ttl_ms=1.5), "ttl_ms"),
    ("/v1/put", _put("K", ttl_ms=-1), "ttl_ms"),
    ("/v1/put", _put("K", wait="yes"), "wait"),
    ("/v1/put", _put("K", role="owner"), "role"),
    ("/v1/put", _put("K", role=1), "role"),
    ("/v1/get", {"key": "K", "contract": "quotes", "scope": "tenant-b"}, "scope"),
    ("/v1/put", _put("K", scope=None), "scope"),
    ("/v1/put", _put("K", ttl=1000), "ttl"),
    ("/v1/put", {"value_b64": "", "contract": "quotes"}, "key"),
    ("/v1/get", {"key": "K"}, "contract"),
    ("/v1/get", {"key": ["K"], "contract": "quotes"}, "key"),
    ("/v1/revoke", {"key": "K", "reason": 3}, "reason"),
    ("/v1/confirm", {"key": {"k": 1}}, "key"),
    ("/v1/get", ["key", "K"], "body"),
]


def test_each_wrong_field_is_a_400_naming_it(front) -> None:
    for path, body, field in WRONG_TYPES:
        status, out = _post(front.port, path, body)
        assert status == 400, (path, body, out)
        assert out["field"] == field, (path, body, out)
        if field != "body":
            assert repr(field) in out["error"], (path, body, out)


def test_bad_json_and_duplicate_fields_are_400(front) -> None:
    status, out = _post_raw(front.port, "Content-Length: 9\r\n", b'{"key": 1')
    assert status == 400 and "not valid JSON" in out["error"]
    dup = b'{"key": "a", "key": "b", "contract": "quotes"}'
    status, out = _post_raw(front.port, f"Content-Length: {len(dup)}\r\n", dup)
    assert status == 400 and "duplicate field 'key'" in out["error"]
    deep = b"[" * 50_000
    status, out = _post_raw(front.port, f"Content-Length: {len(deep)}\r\n", deep)
    assert status == 400 and out["field"] == "body"


def test_an_unknown_endpoint_is_404(front) -> None:
    status, out = _post(front.port, "/v1/nope", {})
    assert status == 404 and "/v1/nope" in out["error"]


def test_good_requests_are_still_served(front, ticker) -> None:
    assert front.node.wait_caught_up()
    status, out = _post(front.port, "/v1/put", _put("GOOD", b"189.12", wait=True, ttl_ms=60_000))
    assert status == 200 and out["version"] == 1
    got = wait_for(
        lambda: (
            (r := _post(front.port, "/v1/get", {"key": "GOOD", "contract": "quotes"}))[1]["hit"]
            and r
        )
    )
    assert base64.b64decode(got[1]["value_b64"]) == b"189.12"
    status, out = _post(front.port, "/v1/revoke", {"key": "GOOD", "reason": "test"})
    assert status == 200 and out == {"revoked": True}


def test_a_busy_or_impossible_port_is_a_clear_error(front) -> None:
    node = front.node
    with pytest.raises(HttpFrontError, match=rf"127\.0\.0\.1:{front.port}: .*in use"):
        NodeHttpServer(node, front.port)
    with pytest.raises(HttpFrontError, match=r"127\.0\.0\.1:99999: not a TCP port"):
        NodeHttpServer(node, 99999)
