"""The HTTP front's credentials, rights and request checks, without a node:
the token store keeps hashes only and compares in constant time; the
middleware refuses what has no credential, or too big a body, before the
application sees it; the role table and the OpenAPI description agree
with what the endpoints do."""

from __future__ import annotations

import datetime
import hashlib
import logging
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest

from cachet.clock import ManualClock
from cachet.config import ConfigError, Role, parse_config
from cachet.config.sections import HttpToken
from cachet.producers.http import credentials
from cachet.producers.http.app import CLIENT_CN, Authentication, RequestBounds
from cachet.producers.http.credentials import (
    TOKEN_PREFIX,
    CredentialError,
    Principal,
    TokenExpired,
    TokenStore,
    load_tokens_file,
    new_token,
    token_digest,
)
from cachet.producers.http.endpoints import ENDPOINTS
from cachet.producers.http.fields import Refused, check_fields
from cachet.producers.http.openapi import openapi_document
from cachet.producers.http.rights import RIGHTS, Action, Forbidden, check_right


def _token(
    principal: str,
    token: str,
    role: Role = Role.OWNER,
    scope: str | None = None,
    expires_at_us: int | None = None,
):
    return HttpToken(principal, token_digest(token), role, scope, expires_at_us)


# 2027-03-01T00:00:00Z, in microseconds since the epoch.
_MARCH_2027_US = 1_803_859_200_000_000


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


def test_a_token_is_refused_from_its_expiry_on_and_the_others_still_work(monkeypatch) -> None:
    clock = ManualClock(now_us=_MARCH_2027_US - 2_000_000)
    short, later, forever = new_token(), new_token(), new_token()
    store = TokenStore(
        [
            _token("short", short, expires_at_us=_MARCH_2027_US),
            _token("later", later, Role.AUDITOR, expires_at_us=_MARCH_2027_US + 60_000_000),
            _token("forever", forever, Role.REGULATOR),
        ],
        clock=clock,
    )
    assert store.authenticate(short) == Principal("short", Role.OWNER, None)
    assert store.expired() == []
    clock.advance(1.999999)  # one microsecond before the expiry: still good
    assert store.authenticate(short) == Principal("short", Role.OWNER, None)
    clock.advance(0.000001)  # at the expiry: refused
    with pytest.raises(TokenExpired, match=r"expired at 2027-03-01T00:00:00Z") as refused:
        store.authenticate(short)
    assert refused.value.principal == "short"
    assert short not in str(refused.value)
    assert store.expired() == [("short", _MARCH_2027_US)]
    assert store.authenticate(later) == Principal("later", Role.AUDITOR, None)
    assert store.authenticate(forever) == Principal("forever", Role.REGULATOR, None)
    assert store.authenticate(new_token()) is None  # unknown stays unknown, not "expired"
    # An expired entry is compared like any other: still no early exit.
    calls: list[bytes] = []
    real = credentials.hmac.compare_digest
    monkeypatch.setattr(
        credentials.hmac, "compare_digest", lambda x, y: calls.append(x) or real(x, y)
    )
    with pytest.raises(TokenExpired):
        store.authenticate(short)
    assert len(calls) == 3


def test_expired_tokens_are_logged_at_start_and_do_not_stop_the_store(caplog) -> None:
    config = parse_config(
        {
            "http": {
                "tokens": {
                    "old": {
                        "token_sha256": _HASH,
                        "role": "owner",
                        "expires_at": "2027-03-01T00:00:00Z",
                    },
                    "new": {"token_sha256": "cd" * 32, "role": "auditor"},
                }
            }
        }
    )
    assert config.http.tokens[1].expires_at_us == _MARCH_2027_US
    with caplog.at_level(logging.WARNING, logger=credentials.__name__):
        store = TokenStore.from_config(config, clock=ManualClock(now_us=_MARCH_2027_US))
    assert len(store) == 2
    (record,) = caplog.records
    assert "'old'" in record.getMessage() and "expired at 2027-03-01T00:00:00Z" in (
        record.getMessage()
    )
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger=credentials.__name__):
        TokenStore.from_config(config, clock=ManualClock(now_us=_MARCH_2027_US - 1))
    assert caplog.records == []


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


def test_a_tokens_file_expiry_loads_and_a_bad_one_names_the_file_and_key(tmp_path: Path) -> None:
    path = tmp_path / "tokens.toml"
    entry = f'[tokens.dpo]\ntoken_sha256 = "{_HASH}"\nrole = "owner"\n'
    path.write_text(entry + 'expires_at = "2027-03-01T01:00:00+01:00"\n')
    (loaded,) = load_tokens_file(path)
    assert loaded.expires_at_us == _MARCH_2027_US
    for value, why in (
        ('"2027-03-01T00:00:00"', "has no UTC offset"),
        ('"next tuesday"', "expected an RFC 3339 timestamp"),
        ("1803859200", "expected a timestamp string"),
        # Unquoted, TOML reads a datetime: refused, asking for a string.
        ("2027-03-01T00:00:00Z", "expected a timestamp string .* \\(quote it\\)"),
    ):
        path.write_text(entry + f"expires_at = {value}\n")
        key = r"tokens\.toml: tokens\.dpo\.expires_at: "
        with pytest.raises(CredentialError, match=key + f"(.* )?{why}"):
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
        (
            {"tokens": {"a": {"token_sha256": _HASH, "role": "owner", "expires_at": "2027-03-01"}}},
            r"http\.tokens\.a\.expires_at: '2027-03-01' has no UTC offset",
        ),
        (
            {"tokens": {"a": {"token_sha256": _HASH, "role": "owner", "expires_at": "soon"}}},
            r"http\.tokens\.a\.expires_at: expected an RFC 3339 timestamp",
        ),
        (
            {"tokens": {"a": {"token_sha256": _HASH, "role": "owner", "expires_at": 5}}},
            r"http\.tokens\.a\.expires_at: expected a timestamp string",
        ),
        (
            {
                "tokens": {
                    "a": {
                        "token_sha256": _HASH,
                        "role": "owner",
                        "expires_at": datetime.datetime(2027, 3, 1),
                    }
                }
            },
            r"http\.tokens\.a\.expires_at: expected a timestamp string",
        ),
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


def test_an_expired_token_is_401_saying_when_and_unlike_an_unknown_one() -> None:
    clock = ManualClock(now_us=_MARCH_2027_US)
    old, fresh = new_token(), new_token()
    inner = _Recorder()
    auth = Authentication(
        inner,
        tokens=TokenStore(
            [
                _token("old", old, expires_at_us=_MARCH_2027_US),
                _token("fresh", fresh, expires_at_us=_MARCH_2027_US + 1),
            ],
            clock=clock,
        ),
        certificates={},
    )
    client = _Client(_WithClientCn(RequestBounds(auth, max_body_bytes=100), None))
    r = client.get("/v1/get", headers={"Authorization": f"Bearer {old}"})
    assert r.status_code == 401
    assert r.json() == {
        "error": "the bearer token expired at 2027-03-01T00:00:00Z: ask for a new one"
    }
    assert r.headers["www-authenticate"] == 'Bearer realm="cachet", error="invalid_token"'
    assert old not in r.text
    unknown = client.get("/v1/get", headers={"Authorization": f"Bearer {new_token()}"})
    assert unknown.status_code == 401 and "expired" not in unknown.text
    assert inner.calls == 0
    r = client.get("/v1/get", headers={"Authorization": f"Bearer {fresh}"})
    assert r.status_code == 200 and r.text == repr(Principal("fresh", Role.OWNER, None))


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
