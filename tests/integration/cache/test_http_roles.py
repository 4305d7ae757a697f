"""Who may do what over HTTP, against a real node on the real broker, with
real tokens (and real client certificates from a throwaway CA): the role x
action matrix, tenants kept apart by the credential's scope, no plaintext
in any answer to anyone but the owner of the entry, and tokens refused
from their expiry on."""

from __future__ import annotations

import base64
import datetime
import ipaddress
import os
import ssl
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from cachet.clock import ManualClock
from cachet.config import Role
from cachet.config.sections import HttpToken
from cachet.producers.cache_node import CacheNode
from cachet.producers.http import NodeHttpServer, Principal, TlsSettings, TokenStore
from cachet.producers.http.credentials import new_token, token_digest
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames
from tests.integration.ledger_support import read_all

from .nodeproc import wait_for

pytestmark = pytest.mark.integration

PRINCIPALS: dict[str, tuple[Role, str | None]] = {
    "owner-a": (Role.OWNER, "tenant-a"),
    "owner-b": (Role.OWNER, "tenant-b"),
    "regulator-a": (Role.REGULATOR, "tenant-a"),
    "regulator-b": (Role.REGULATOR, "tenant-b"),
    "auditor-a": (Role.AUDITOR, "tenant-a"),
    "dpo-a": (Role.DATA_PROTECTION, "tenant-a"),
}
CALLERS = (*PRINCIPALS, "no-token", "bad-token")
MAX_BODY = 16 * 1024
KEY = "REC"


@dataclass
class Front:
    node: CacheNode
    server: NodeHttpServer
    tokens: dict[str, str]
    marker: bytes
    client: httpx.Client

    def call(
        self, caller: str, method: str, path: str, body: Any = None, **kw: Any
    ) -> httpx.Response:
        headers = dict(kw.pop("headers", {}))
        if caller == "bad-token":
            headers["Authorization"] = f"Bearer {new_token()}"
        elif caller != "no-token":
            headers["Authorization"] = f"Bearer {self.tokens[caller]}"
        return self.client.request(method, path, json=body, headers=headers, **kw)


@pytest.fixture
def front(make_node, ticker) -> Iterator[Front]:
    node = make_node("http-front")
    tokens = {name: new_token() for name in PRINCIPALS}
    store = TokenStore(
        HttpToken(name, token_digest(tokens[name]), role, scope)
        for name, (role, scope) in PRINCIPALS.items()
    )
    server = NodeHttpServer(node, 0, tokens=store, max_body_bytes=MAX_BODY).start()
    # A value no answer to anyone but its owner may contain, in any encoding.
    marker = b"plaintext-" + os.urandom(8).hex().encode()
    # One client for every call: building one per call costs more than the call.
    client = httpx.Client(base_url=server.url, timeout=30)
    f = Front(node, server, tokens, marker, client)
    assert node.wait_caught_up()
    r = f.call(
        "owner-a",
        "POST",
        "/v1/put",
        {"key": KEY, "value_b64": _b64(marker), "contract": "quotes", "wait": True},
    )
    assert r.status_code == 200, r.text
    yield f
    client.close()
    server.close()


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


def _leaks(f: Front, r: httpx.Response) -> bool:
    text = r.text
    return any(form in text for form in (f.marker.decode(), _b64(f.marker), f.marker.hex()))


# What each caller gets: status, and for 200s a check of the answer.
GET = {"key": KEY, "contract": "quotes"}
MISS_SCOPE = ("miss", "scope_mismatch")
EXPECTED: dict[str, dict[str, Any]] = {
    # action: {caller: status or (status, what)}
    "put": {
        "owner-a": 200,
        "owner-b": 200,
        "regulator-a": 403,
        "regulator-b": 403,
        "auditor-a": 403,
        "dpo-a": 403,
    },
    "get": {
        "owner-a": (200, "value"),
        "owner-b": (200, MISS_SCOPE),
        "regulator-a": (200, "metadata"),
        "regulator-b": (200, MISS_SCOPE),
        "auditor-a": (200, "metadata"),
        "dpo-a": 403,
    },
    "history": {
        "owner-a": (200, 1),
        "owner-b": (200, 0),
        "regulator-a": (200, 1),
        "regulator-b": (200, 0),
        "auditor-a": (200, 1),
        "dpo-a": 403,
    },
    "confirm": {
        "owner-a": (200, {"confirmed": True}),
        "owner-b": (200, {"confirmed": False}),  # tenant A's key: as if absent
        "regulator-a": 403,
        "regulator-b": 403,
        "auditor-a": 403,
        "dpo-a": 403,
    },
    "erase": {
        "owner-a": 403,
        "owner-b": 403,
        "regulator-a": 403,
        "regulator-b": 403,
        "auditor-a": 403,
        "dpo-a": 202,
    },
    "metrics": {c: 200 for c in PRINCIPALS} | {"dpo-a": 403},
    "openapi": {c: 200 for c in PRINCIPALS},
    "health": {c: 200 for c in CALLERS},
}
for _action, _row in EXPECTED.items():
    if _action != "health":
        _row.update({"no-token": 401, "bad-token": 401})


def _request(action: str, caller: str) -> tuple[str, str, Any]:
    return {
        "put": (
            "POST",
            "/v1/put",
            {"key": f"NEW-{caller}", "value_b64": "AA==", "contract": "quotes"},
        ),
        "get": ("POST", "/v1/get", GET),
        "history": ("POST", "/v1/history", {"key": KEY}),
        "confirm": ("POST", "/v1/confirm", {"key": KEY}),
        "erase": ("POST", "/v1/erasures", {"subject": "tenant-a"}),
        "metrics": ("GET", "/metrics", None),
        "openapi": ("GET", "/openapi.json", None),
        "health": ("GET", "/health", None),
    }[action]


def _check_answer(f: Front, action: str, caller: str, what: Any, out: dict[str, Any]) -> None:
    where = f"{action} by {caller}: {out}"
    if what == "value":
        assert out["hit"] and base64.b64decode(out["value_b64"]) == f.marker, where
    elif what == "metadata":
        assert out["hit"] and out["value_b64"] is None, where
        assert out["fingerprint_hex"] and out["commitment_hex"] and out["status"], where
    elif what == MISS_SCOPE:
        assert not out["hit"] and out["reason"] == "scope_mismatch", where
        assert out["version"] is None and out["fingerprint_hex"] is None, where
    elif isinstance(what, int):  # history: how many versions the caller sees
        assert len(out["versions"]) == what, where
        for v in out["versions"]:
            assert v["commitment_hex"] and v["seal"]["producer_id"].startswith("http-front"), where
            assert "ciphertext" not in str(v) and "nonce" not in str(v), where
    elif isinstance(what, dict):
        assert out == what, where


def test_the_role_matrix_over_http(front: Front) -> None:
    f = front
    for action, row in EXPECTED.items():
        for caller in CALLERS:
            expected = row[caller]
            status, what = expected if isinstance(expected, tuple) else (expected, None)
            method, path, body = _request(action, caller)
            r = f.call(caller, method, path, body)
            where = f"{action} by {caller}: {r.status_code} {r.text[:300]}"
            if action == "health":
                assert r.status_code in (200, 503), where  # readiness, not a right
            else:
                assert r.status_code == status, where
            if status == 401:
                assert r.headers["www-authenticate"].startswith("Bearer"), where
            if status == 403:
                role = PRINCIPALS[caller][0].value
                assert f"role {role!r} may not" in r.json()["error"], where
            if what is not None:
                _check_answer(f, action, caller, what, r.json())
            if not (caller == "owner-a" and action == "get"):
                assert not _leaks(f, r), where


def test_role_and_scope_come_from_the_credential_only(front: Front) -> None:
    f = front
    for field, value in (("scope", "tenant-a"), ("role", "owner"), ("scope", None)):
        r = f.call("regulator-b", "POST", "/v1/get", {**GET, field: value})
        assert r.status_code == 400 and r.json()["field"] == field, r.text
        assert "credential" in r.json()["error"]
        assert not _leaks(f, r)


def test_a_tenant_cannot_overwrite_revoke_or_erase_another_tenants_entry(front: Front) -> None:
    f = front
    r = f.call(
        "owner-b", "POST", "/v1/put", {"key": KEY, "value_b64": "AA==", "contract": "quotes"}
    )
    assert r.status_code == 403 and "another tenant or subject" in r.json()["error"], r.text
    r = f.call("owner-b", "POST", "/v1/revoke", {"key": KEY})
    assert r.status_code == 200 and r.json() == {"revoked": False}
    r = f.call("dpo-a", "POST", "/v1/erasures", {"subject": "tenant-b"})
    assert r.status_code == 403 and "scoped to 'tenant-a'" in r.json()["error"], r.text
    # Tenant A's entry is untouched, and its owner still revokes it.
    r = f.call("owner-a", "POST", "/v1/get", GET)
    assert r.json()["hit"] and base64.b64decode(r.json()["value_b64"]) == f.marker
    for caller in ("regulator-a", "auditor-a", "dpo-a"):
        assert f.call(caller, "POST", "/v1/revoke", {"key": KEY}).status_code == 403
    r = f.call("owner-a", "POST", "/v1/revoke", {"key": KEY, "reason": "test"})
    assert r.status_code == 200 and r.json() == {"revoked": True}
    # A miss at once (this node revoked it); "revoked" once its transition is sealed.
    got = wait_for(lambda: f.call("owner-a", "POST", "/v1/get", GET).json()["reason"] == "revoked")
    assert got, f.call("owner-a", "POST", "/v1/get", GET).json()


def test_an_erasure_request_is_sealed_with_the_principal_as_requester(
    front: Front, bootstrap_servers: str, topics: TopicNames
) -> None:
    f = front
    r = f.call(
        "dpo-a",
        "POST",
        "/v1/erasures",
        {"subject": "tenant-a", "legal_basis": "GDPR Art. 17(1)(b)"},
    )
    assert r.status_code == 202, r.text
    ticket = r.json()
    assert ticket["subject_hash_hex"] == f.node.hasher.subject("tenant-a").hex()
    r = f.call("dpo-a", "POST", "/v1/legal-holds/set", {"subject": "tenant-a", "reason": "case 7"})
    assert r.status_code == 200 and r.json()["action"] == "SET", r.text
    r = f.call("dpo-a", "POST", "/v1/legal-holds/lift", {"hold_id": "h", "reason": "x"})
    assert r.status_code == 403 and "unscoped" in r.json()["error"]
    for hold in ({"subject": "tenant-b"}, {"namespace": "default"}):  # not its subject
        r = f.call("dpo-a", "POST", "/v1/legal-holds/set", {**hold, "reason": "x"})
        assert r.status_code == 403 and "scoped to 'tenant-a'" in r.json()["error"], r.text
    r = f.call("owner-a", "POST", "/v1/legal-holds/set", {"subject": "tenant-a", "reason": "x"})
    assert r.status_code == 403 and "role 'owner' may not legal_hold" in r.json()["error"]
    codec = EventCodec()
    events = [
        codec.decode(rec.value) for rec in read_all(bootstrap_servers, topics, [Topic.ERASURE], 2)
    ]
    (request,) = [e for e in events if e.type is EventType.ERASURE_REQUESTED]
    assert request.payload["request_id"] == ticket["request_id"]
    assert request.payload["requested_by"] == "dpo-a"
    assert request.payload["legal_basis"] == "GDPR Art. 17(1)(b)"
    assert request.payload["subject_hash"].hex() == ticket["subject_hash_hex"]
    assert request.producer_id.startswith(
        "http-front"
    )  # the seal is the node's; allowed_requesters decides
    (hold,) = [e for e in events if e.type is EventType.LEGAL_HOLD_CHANGED]
    assert hold.payload["changed_by"] == "dpo-a"


def test_an_oversized_body_is_413_even_with_a_valid_token(front: Front) -> None:
    body = {"key": "BIG", "value_b64": _b64(b"x" * MAX_BODY), "contract": "quotes"}
    r = front.call("owner-a", "POST", "/v1/put", body)
    assert r.status_code == 413 and str(MAX_BODY) in r.json()["error"]
    r = front.call("owner-a", "POST", "/v1/get", {"key": "BIG", "contract": "quotes"})
    assert r.status_code == 200 and r.json()["reason"] == "not_found"


# -- mutual TLS ------------------------------------------------------------------


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    cn: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: tuple[x509.Certificate, ec.EllipticCurvePrivateKey] | None,
    *,
    ca: bool = False,
    server: bool = False,
) -> x509.Certificate:
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer[0].subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if server:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
    return builder.sign(issuer[1] if issuer else key, hashes.SHA256())


def _write(path: Path, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> tuple[str, str]:
    cert_path, key_path = path.with_suffix(".crt"), path.with_suffix(".key")
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return str(cert_path), str(key_path)


def test_mutual_tls_maps_the_client_certificate_to_its_principal(make_node, tmp_path: Path) -> None:
    ca_key, rogue_key = _key(), _key()
    ca = _cert("cachet test CA", ca_key, None, ca=True)
    rogue_ca = _cert("rogue CA", rogue_key, None, ca=True)
    ca_path = tmp_path / "ca.crt"
    ca_path.write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    server_key = _key()
    server_cert, server_keyfile = _write(
        tmp_path / "server", _cert("node", server_key, (ca, ca_key), server=True), server_key
    )
    clients = {}
    for name, cn, issuer in (
        ("bob", "bob.example", (ca, ca_key)),
        ("mallory", "mallory.example", (ca, ca_key)),
        ("forged", "bob.example", (rogue_ca, rogue_key)),  # right CN, wrong CA
    ):
        k = _key()
        clients[name] = _write(tmp_path / name, _cert(cn, k, issuer), k)
    owner_token = new_token()
    server = NodeHttpServer(
        make_node("tls-front"),
        0,
        tokens=TokenStore([HttpToken("owner", token_digest(owner_token), Role.OWNER)]),
        certificates={"bob.example": Principal("bob", Role.REGULATOR, "tenant-a")},
        tls=TlsSettings(Path(server_cert), Path(server_keyfile), ca_path, True),
    ).start()
    try:
        assert server.url.startswith("https://")

        def client(who: str | None) -> httpx.Client:
            ctx = ssl.create_default_context(cafile=str(ca_path))
            if who is not None:
                ctx.load_cert_chain(*clients[who])
            return httpx.Client(base_url=server.url, verify=ctx, timeout=30)

        with client("bob") as bob:
            assert bob.get("/openapi.json").status_code == 200
            r = bob.post("/v1/put", json={"key": "K", "value_b64": "AA==", "contract": "quotes"})
            assert r.status_code == 403 and "role 'regulator' may not put" in r.json()["error"]
            # A bearer token over the same TLS connection is another principal.
            r = bob.get("/metrics", headers={"Authorization": f"Bearer {owner_token}"})
            assert r.status_code == 200
        with client("mallory") as mallory:
            r = mallory.get("/openapi.json")
            assert r.status_code == 401 and "'mallory.example'" in r.json()["error"]
        for who in ("forged", None):  # a certificate the CA did not sign, or none
            with client(who) as c, pytest.raises(httpx.TransportError):
                c.get("/openapi.json")
        with httpx.Client(timeout=30) as plain, pytest.raises(httpx.TransportError):
            plain.get(f"http://127.0.0.1:{server.port}/health")
    finally:
        server.close()


def test_an_expired_token_is_401_naming_its_expiry_while_the_others_work(make_node, ticker) -> None:
    expiry_us = 1_803_859_200_000_000  # 2027-03-01T00:00:00Z
    clock = ManualClock(now_us=expiry_us - 5_000_000)
    tokens = {name: new_token() for name in ("expiring", "later", "forever")}
    store = TokenStore(
        [
            HttpToken("expiring", token_digest(tokens["expiring"]), Role.OWNER, "t", expiry_us),
            HttpToken("later", token_digest(tokens["later"]), Role.AUDITOR, "t", expiry_us + 1),
            HttpToken("forever", token_digest(tokens["forever"]), Role.REGULATOR, "t"),
        ],
        clock=clock,
    )
    node = make_node("expiry-front")
    server = NodeHttpServer(node, 0, tokens=store).start()
    try:
        assert node.wait_caught_up()
        with httpx.Client(base_url=server.url, timeout=30) as client:

            def get(who: str) -> httpx.Response:
                auth = {"Authorization": f"Bearer {tokens[who]}"}
                return client.post("/v1/get", json=GET, headers=auth)

            for who in tokens:
                r = get(who)
                assert r.status_code == 200 and r.json()["hit"] is False, (who, r.text)
            clock.advance(5)  # now == the expiry of "expiring": refused from here on
            r = get("expiring")
            assert r.status_code == 401
            assert r.json()["error"] == (
                "the bearer token expired at 2027-03-01T00:00:00Z: ask for a new one"
            )
            assert 'error="invalid_token"' in r.headers["www-authenticate"]
            assert tokens["expiring"] not in r.text
            unknown = client.get(
                "/openapi.json", headers={"Authorization": f"Bearer {new_token()}"}
            )
            assert unknown.status_code == 401 and "expired" not in unknown.text
            for who in ("later", "forever"):
                assert get(who).status_code == 200, who
            clock.advance(0.000001)  # past "later" too; "forever" has no expiry
            assert "expired at 2027-03-01T00:00:00.000001Z" in get("later").json()["error"]
            assert get("forever").status_code == 200
    finally:
        server.close()
