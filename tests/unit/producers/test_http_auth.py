"""The HTTP front's credentials, rights and request checks, without a node:
the token store keeps hashes only and compares in constant time; the
middleware refuses what has no credential, or too big a body, before the
application sees it; the role table and the OpenAPI description agree
with what the endpoints do."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cachet.config import ConfigError, Role, parse_config
from cachet.config.sections import HttpToken
from cachet.producers.http import credentials
from cachet.producers.http.app import CLIENT_CN, Authentication, RequestBounds
from cachet.producers.http.credentials import (
    TOKEN_PREFIX,
    CredentialError,
    Principal,
    TokenStore,
    load_tokens_file,
    new_token,
    token_digest,
)
from cachet.producers.http.endpoints import ENDPOINTS
from cachet.producers.http.fields import Refused, check_fields
from cachet.producers.http.openapi import openapi_document
from cachet.producers.http.rights import RIGHTS, Action, Forbidden, check_right


def _token(principal: str, token: str, role: Role = Role.OWNER, scope: str | None = None):
    return HttpToken(principal, token_digest(token), role, scope)


# -- tokens ---------------------------------------------------------------------


def test_new_tokens_are_random_prefixed_and_long() -> None:
    tokens = {new_token() for _ in range(200)}
    assert len(tokens) == 200
    for t in tokens:
        assert t.startswith(TOKEN_PREFIX)
        assert len(t) - len(TOKEN_PREFIX) >= 43  # 32 bytes, base64url


def test_the_digest_is_sha256_of_the_token() -> None:
    assert token_digest("cachet_x") == hashlib.sha256(b"cachet_x").digest()


def test_the_store_finds_the_principal_of_a_token_and_none_for_others() -> None:
    a, b = new_token(), new_token()
    store = TokenStore([_token("alice", a, Role.OWNER, "t-a"), _token("reg", b, Role.REGULATOR)])
    assert store.authenticate(a) == Principal("alice", Role.OWNER, "t-a")
    assert store.authenticate(b) == Principal("reg", Role.REGULATOR, None)
    for wrong in ("", new_token(), a[:-1], a + "x", a.upper(), token_digest(a).hex()):
        assert store.authenticate(wrong) is None, wrong


def test_the_store_keeps_hashes_only() -> None:
    token = new_token()
    store = TokenStore([_token("alice", token)])
    held = repr(store._entries) + repr(vars(store) if hasattr(store, "__dict__") else "")
    assert token not in held
    assert token[len(TOKEN_PREFIX) :] not in held
    assert store._entries[0][0] == hashlib.sha256(token.encode()).digest()


def test_every_entry_is_compared_in_constant_time_even_after_a_match(monkeypatch) -> None:
    calls: list[tuple[bytes, bytes]] = []
    real = credentials.hmac.compare_digest

    def counting(x: bytes, y: bytes) -> bool:
        calls.append((x, y))
        return real(x, y)

    monkeypatch.setattr(credentials.hmac, "compare_digest", counting)
    tokens = [new_token() for _ in range(5)]
    store = TokenStore([_token(f"p{i}", t) for i, t in enumerate(tokens)])
    assert store.authenticate(tokens[0]) == Principal("p0", Role.OWNER, None)
    assert len(calls) == 5  # no early exit at the first (matching) entry
    calls.clear()
    assert store.authenticate("nope") is None
    assert len(calls) == 5


def test_a_principal_twice_or_a_token_shared_is_refused() -> None:
    t = new_token()
    with pytest.raises(CredentialError, match="'alice' has two token entries"):
        TokenStore([_token("alice", t), _token("alice", new_token())])
    with pytest.raises(CredentialError, match="'bob' has another principal's token"):
        TokenStore([_token("alice", t), _token("bob", t)])


def test_a_tokens_file_loads_and_its_errors_name_the_file_and_key(tmp_path: Path) -> None:
    token = new_token()
    path = tmp_path / "tokens.toml"
    path.write_text(
        f'[tokens.dpo]\ntoken_sha256 = "{token_digest(token).hex()}"\n'
        'role = "data_protection"\nscope = "tenant-a"\n'
    )
    (loaded,) = load_tokens_file(path)
    assert loaded == HttpToken("dpo", token_digest(token), Role.DATA_PROTECTION, "tenant-a")
    with pytest.raises(CredentialError, match=r"missing\.toml: no such tokens file"):
        load_tokens_file(tmp_path / "missing.toml")
    path.write_text(f'[tokens.dpo]\ntoken_sha256 = "{token}"\nrole = "owner"\n')
    with pytest.raises(CredentialError, match=r"tokens\.toml: tokens\.dpo\.token_sha256: .*never"):
        load_tokens_file(path)
    path.write_text('[tokens.dpo]\ntoken_sha256 = "' + "a" * 64 + '"\nrole = "root"\n')
    with pytest.raises(CredentialError, match=r"tokens\.dpo\.role: expected one of"):
        load_tokens_file(path)
    path.write_text("[other]\nx = 1\n")
    with pytest.raises(CredentialError, match="other: unknown key"):
        load_tokens_file(path)
    path.write_text("[tokens\n")
    with pytest.raises(CredentialError, match="invalid TOML"):
        load_tokens_file(path)


# -- [http] config ----------------------------------------------------------------

_HASH = "ab" * 32


@pytest.mark.parametrize(
    ("http", "match"),
    [
        ({"host": "0.0.0.0"}, r"http\.host: '0\.0\.0\.0' is not a loopback address"),
        ({"ssl_keyfile": "k.pem"}, r"http\.ssl_keyfile: needs ssl_certfile"),
        ({"ssl_ca_certs": "ca.pem"}, r"http\.ssl_ca_certs: client certificates need TLS"),
        (
            {"ssl_certfile": "c.pem", "require_client_certificate": True},
            r"require_client_certificate: needs ssl_ca_certs",
        ),
        ({"tokens": {"a": {"token_sha256": _HASH}}}, r"http\.tokens\.a\.role: is required"),
        ({"tokens": {"a": {"role": "owner"}}}, r"http\.tokens\.a\.token_sha256: is required"),
        (
            {"tokens": {"a": {"token_sha256": _HASH, "role": "owner", "scope": ""}}},
            r"http\.tokens\.a\.scope: expected a non-empty string",
        ),
        (
            {
                "tokens": {
                    "a": {"token_sha256": _HASH, "role": "owner"},
                    "b": {"token_sha256": _HASH, "role": "auditor"},
                }
            },
            r"http\.tokens\.b\.token_sha256: same token as tokens\.a",
        ),
        (
            {"client_certificates": {"bob": {"common_name": "bob", "role": "auditor"}}},
            r"http\.client_certificates: need ssl_ca_certs",
        ),
        ({"max_body_bytes": 0}, r"http\.max_body_bytes: expected a positive integer"),
        ({"request_timeout_ms": "0s"}, r"request_timeout_ms: a duration must be positive"),
        ({"role": "owner"}, r"http\.role: unknown key"),
    ],
)
def test_bad_http_settings_are_errors_naming_the_key(http: dict[str, Any], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        parse_config({"http": http})


def test_http_settings_parse() -> None:
    config = parse_config(
        {
            "http": {
                "host": "0.0.0.0",
                "request_timeout_ms": "2s",
                "ssl_certfile": "c.pem",
                "ssl_keyfile": "k.pem",
                "ssl_ca_certs": "ca.pem",
                "require_client_certificate": True,
                "tokens": {"reg": {"token_sha256": _HASH, "role": "Regulator", "scope": "t-a"}},
                "client_certificates": {
                    "bob": {"common_name": "bob.example", "role": "data-protection"}
                },
            }
        }
    ).http
    assert config.request_timeout_ms == 2000 and config.require_client_certificate
    assert config.tokens == (HttpToken("reg", bytes.fromhex(_HASH), Role.REGULATOR, "t-a"),)
    (cert,) = config.client_certificates
    assert (cert.principal, cert.common_name, cert.role) == (
        "bob",
        "bob.example",
        Role.DATA_PROTECTION,
    )


# -- rights ---------------------------------------------------------------------------


def test_every_role_has_rights_and_only_the_owner_writes() -> None:
    assert set(RIGHTS) == set(Role)
    writes = {Action.PUT, Action.REVOKE, Action.CONFIRM}
    for role, actions in RIGHTS.items():
        assert bool(actions & writes) == (role is Role.OWNER), role
    assert RIGHTS[Role.DATA_PROTECTION] == {Action.ERASE, Action.LEGAL_HOLD, Action.OPENAPI}
    assert RIGHTS[Role.UNKNOWN] == frozenset()
    for role in (Role.OWNER, Role.REGULATOR, Role.AUDITOR):
        assert Action.ERASE not in RIGHTS[role]


def test_a_forbidden_action_names_role_and_action() -> None:
    with pytest.raises(Forbidden, match="role 'regulator' may not put; it may get, history"):
        check_right(Role.REGULATOR, Action.PUT)
    check_right(Role.DATA_PROTECTION, Action.ERASE)


@pytest.mark.parametrize("field", ["role", "scope"])
def test_role_and_scope_in_a_body_are_refused_by_name(field: str) -> None:
    with pytest.raises(Refused, match=f"'{field}' is not accepted.*credential") as info:
        check_fields({"key": "k", field: "owner"}, "/v1/get", frozenset({"key"}))
    assert info.value.status == 400 and info.value.field == field


def test_openapi_describes_exactly_the_fields_each_endpoint_takes() -> None:
    doc = openapi_document()
    assert doc["openapi"].startswith("3.")
    for path, endpoint in ENDPOINTS.items():
        post = doc["paths"][path]["post"]
        schema = post["requestBody"]["content"]["application/json"]["schema"]
        assert set(schema["properties"]) == endpoint.fields, path
        assert set(schema["required"]) <= endpoint.fields, path
        assert "role" not in schema["properties"] and "scope" not in schema["properties"]
        assert post["x-cachet-action"] == endpoint.action.value
        assert str(endpoint.status) in post["responses"] and "401" in post["responses"]
    assert doc["paths"]["/health"]["get"]["security"] == []


# -- middleware -----------------------------------------------------------------------


class _Recorder:
    """An ASGI app that answers 200 with the principal the middleware found."""

    def __init__(self) -> None:
        self.calls = 0

    async def __call__(self, scope, receive, send) -> None:
        self.calls += 1
        principal = scope.get("state", {}).get("cachet.principal")
        body = repr(principal).encode()
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": body})


class _WithClientCn:
    """Puts a client certificate CN into the scope, as the TLS server does."""

    def __init__(self, app, cn: str | None) -> None:
        self.app, self.cn = app, cn

    async def __call__(self, scope, receive, send) -> None:
        if self.cn is not None:
            scope.setdefault("extensions", {})["tls"] = {CLIENT_CN: self.cn}
        await self.app(scope, receive, send)


class _Client:
    """Requests straight into an ASGI app (httpx's ASGI transport)."""

    def __init__(self, app) -> None:
        self.app = app

    def request(self, method: str, url: str, **kw: Any) -> httpx.Response:
        async def go() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app)
            async with httpx.AsyncClient(transport=transport, base_url="http://front") as c:
                return await c.request(method, url, **kw)

        return anyio.run(go)

    def get(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("GET", url, **kw)

    def post(self, url: str, **kw: Any) -> httpx.Response:
        return self.request("POST", url, **kw)


def _client(token: str, cn: str | None = None, max_body: int = 100):
    inner = _Recorder()
    auth = Authentication(
        inner,
        tokens=TokenStore([_token("alice", token, Role.AUDITOR, "t-a")]),
        certificates={"bob.example": Principal("bob", Role.REGULATOR, "t-b")},
    )
    app = _WithClientCn(RequestBounds(auth, max_body_bytes=max_body), cn)
    return _Client(app), inner


def test_no_or_bad_credentials_are_401_with_a_bearer_challenge() -> None:
    token = new_token()
    client, inner = _client(token)
    cases = [
        ({}, "credentials required"),
        ({"Authorization": f"Basic {token}"}, "must be 'Bearer <token>'"),
        ({"Authorization": "Bearer "}, "must be 'Bearer <token>'"),
        ({"Authorization": f"Bearer {new_token()}"}, "not valid"),
        ({"Authorization": f"Bearer {token}x"}, "not valid"),
    ]
    for headers, why in cases:
        r = client.get("/v1/get", headers=headers)
        assert r.status_code == 401, headers
        assert r.headers["www-authenticate"].startswith("Bearer"), headers
        assert why in r.json()["error"]
        assert token not in r.text
    two = [("Authorization", f"Bearer {token}"), ("Authorization", f"Bearer {token}")]
    r = client.get("/v1/get", headers=two)
    assert r.status_code == 401 and "more than one" in r.json()["error"]
    assert inner.calls == 0


def test_a_valid_token_passes_with_its_principal_and_health_needs_none() -> None:
    token = new_token()
    client, inner = _client(token)
    r = client.get("/v1/get", headers={"Authorization": f"bearer {token}"})
    assert r.status_code == 200
    assert r.text == repr(Principal("alice", Role.AUDITOR, "t-a"))
    assert client.get("/health").status_code == 200
    assert inner.calls == 2


def test_a_client_certificate_cn_maps_to_its_principal_or_is_401() -> None:
    client, _ = _client(new_token(), cn="bob.example")
    r = client.get("/metrics")
    assert r.status_code == 200 and r.text == repr(Principal("bob", Role.REGULATOR, "t-b"))
    client, inner = _client(new_token(), cn="mallory.example")
    r = client.get("/metrics")
    assert r.status_code == 401 and "'mallory.example' is not a configured principal" in r.text
    assert inner.calls == 0


def test_a_declared_oversized_or_chunked_body_is_refused_unread() -> None:
    token = new_token()
    client, inner = _client(token, max_body=100)
    auth = {"Authorization": f"Bearer {token}"}
    r = client.post("/v1/put", content=b"x" * 101, headers=auth)
    assert r.status_code == 413 and "101 bytes is over the limit of 100" in r.json()["error"]
    assert "connection" not in r.headers  # skipped by the server, the connection kept
    r = client.post("/v1/put", content=b"x" * 201, headers=auth)
    assert r.status_code == 413 and r.headers["connection"] == "close"

    async def chunks():
        yield b"{}"

    r = client.post("/v1/put", content=chunks(), headers=auth)
    assert r.status_code == 501 and "Transfer-Encoding" in r.json()["error"]
    assert client.post("/v1/put", content=b"x" * 100, headers=auth).status_code == 200
    assert inner.calls == 1


def test_a_credential_for_a_role_the_deployment_does_not_grant_is_refused() -> None:
    config = parse_config(
        {
            "access_control": {"roles": ["owner", "regulator"]},
            "http": {"tokens": {"dpo": {"token_sha256": _HASH, "role": "data_protection"}}},
        }
    )
    with pytest.raises(CredentialError, match="'dpo' has role 'data_protection', which"):
        TokenStore.from_config(config)
    granted = parse_config(
        {"http": {"tokens": {"dpo": {"token_sha256": _HASH, "role": "DataProtection"}}}}
    )
    assert len(TokenStore.from_config(granted)) == 1
