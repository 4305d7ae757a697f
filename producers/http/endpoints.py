"""What each JSON endpoint does, as the authenticated principal.

Every handler takes the node, the principal (its role and scope from its
credential), the checked-to-be-a-JSON-object body and the seconds left of
the request's time, and returns the JSON answer. Handlers block (they call
the cache client); the front runs them off its event loop.
"""

from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachet.config.enums import Role
from cachet.crypto.identifiers import same_identifier
from cachet.materializers.view import ViewEntry
from cachet.producers.cache_client import (
    CacheClient,
    CacheResponse,
    ForeignScope,
    WriteNotAcknowledged,
)
from cachet.producers.cache_node import CacheNode
from cachet.producers.erasure_request import (
    DEFAULT_LEGAL_BASIS,
    ErasureRequestError,
    HoldTicket,
    lift_legal_hold,
    request_erasure,
    set_legal_hold,
)
from cachet.producers.http.credentials import Principal
from cachet.producers.http.fields import (
    Refused,
    base64_field,
    bool_field,
    optional_str,
    str_field,
    ttl_ms_field,
)
from cachet.producers.http.rights import Action, Forbidden
from cachet.producers.sealing import NotAcknowledged

__all__ = ["ENDPOINTS", "Endpoint"]

Handler = Callable[[CacheNode, Principal, dict[str, Any], float], dict[str, Any]]


@dataclass(frozen=True, slots=True)
class Endpoint:
    """One POST endpoint: the action it is (for the rights check), the body
    fields it takes, its handler and the status a success answers with."""

    path: str
    action: Action
    fields: frozenset[str]
    handle: Handler
    status: int = 200


def _client(node: CacheNode, who: Principal) -> CacheClient:
    # The credential's role and scope, and nothing the request said.
    return CacheClient(node, who.role, who.scope)


def _namespace(req: dict[str, Any]) -> str:
    return str_field(req, "namespace", "default")


def _scope_hash(node: CacheNode, who: Principal) -> bytes | None:
    return node.hasher.subject(who.scope) if who.scope else None


def _put(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    key, value, namespace = str_field(req, "key"), base64_field(req, "value_b64"), _namespace(req)
    try:
        r = _client(node, who).put(
            key,
            value,
            contract=str_field(req, "contract"),
            namespace=namespace,
            ttl_ms=ttl_ms_field(req),
            wait=bool_field(req, "wait", False),
            timeout_s=left_s,
        )
    except ForeignScope as exc:
        raise Forbidden(who.role, Action.PUT, str(exc)) from exc
    return {"version": r.version, "fingerprint_hex": r.fingerprint.hex(), "event_id": r.event_id}


def _read_answer(who: Principal, r: CacheResponse) -> dict[str, Any]:
    # CacheClient already withholds the value from every role but Owner;
    # checked again here because this is where bytes leave the process.
    value = r.value if who.role is Role.OWNER else None
    return {
        "hit": r.hit,
        "value_b64": base64.b64encode(value).decode() if value is not None else None,
        "reason": r.reason.value if r.reason else None,
        "status": r.status.value,
        "version": r.version,
        "fingerprint_hex": r.fingerprint.hex() if r.fingerprint else None,
        "commitment_hex": r.commitment.hex() if r.commitment else None,
        "freshness": r.freshness.to_payload() if r.freshness else None,
        "detail": r.detail,
    }


def _get(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    key = str_field(req, "key")
    contract = str_field(req, "contract")
    return _read_answer(
        who, _client(node, who).get(key, contract=contract, namespace=_namespace(req))
    )


def _revoke(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    key, namespace = str_field(req, "key"), _namespace(req)
    # Another scope's entry is, for this client, not there: False, nothing revealed.
    revoked = _client(node, who).revoke(
        key,
        namespace=namespace,
        reason=str_field(req, "reason", "revoked", allow_empty=True),
        timeout_s=left_s,
    )
    return {"revoked": revoked}


def _confirm(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    key, namespace = str_field(req, "key"), _namespace(req)
    confirmed = _client(node, who).confirm_freshness(key, namespace=namespace, timeout_s=left_s)
    return {"confirmed": confirmed}


def _version(e: ViewEntry) -> dict[str, Any]:
    """One version's metadata and proof references: never the ciphertext,
    the nonce or anything the value could be recovered from."""
    return {
        "version": e.version,
        "state": e.state.value,
        "contract": e.contract,
        "classification": e.classification,
        "fingerprint_hex": e.fingerprint.hex(),
        "commitment_hex": e.commitment.hex(),
        "written_at_us": e.written_at_us,
        "ttl_ms": e.ttl_ms,
        "state_changed_at_us": e.state_changed_at_us,
        "state_reason": e.state_reason,
        "authority": e.authority,
        "event_hash_hex": e.event_hash.hex(),
        "seal": {"producer_id": e.producer_id, "seal_seq": e.seal_seq},
    }


def _history(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    key = str_field(req, "key")
    key_hash = node.key_hash(_namespace(req), key)
    scope_hash = _scope_hash(node, who)
    current = node.view.current(key_hash)
    versions = ([current] if current is not None else []) + node.view.history(key_hash)
    # The scope is a mandatory filter, as on reads: versions of another
    # tenant's or subject's entry are not shown, not even that they exist.
    mine = [v for v in versions if same_identifier(v.subject_hash, scope_hash)]
    return {"key_hash_hex": key_hash.hex(), "versions": [_version(v) for v in mine]}


def _own_subject(who: Principal, action: Action, subject: str | None) -> None:
    # A data-protection credential scoped to one tenant or subject acts on
    # that one only (its scope is what it may touch, as on reads).
    if who.scope is not None and subject != who.scope:
        raise Forbidden(
            who.role,
            action,
            f"principal {who.name!r} is scoped to {who.scope!r} and may act on that subject only",
        )


def _not_acknowledged(exc: ErasureRequestError) -> Exception:
    if isinstance(exc.__cause__, NotAcknowledged):  # the broker did not take it: try again
        return WriteNotAcknowledged(str(exc))
    return exc


def _erase(node: CacheNode, who: Principal, req: dict[str, Any], left_s: float) -> dict[str, Any]:
    subject = str_field(req, "subject")
    namespace = optional_str(req, "namespace")
    legal_basis = str_field(req, "legal_basis", DEFAULT_LEGAL_BASIS)
    _own_subject(who, Action.ERASE, subject)
    try:
        # Sealed by this node's producer: the erasure processor acts on it
        # only when this node's identity is in [erasure] allowed_requesters.
        # The principal is recorded as the person who asked.
        ticket = request_erasure(
            node.producer,
            node.hasher,
            subject,
            namespace=namespace,
            requested_by=who.name,
            legal_basis=legal_basis,
            timeout_s=left_s,
        )
    except ErasureRequestError as exc:
        raise _not_acknowledged(exc) from exc
    return {
        "request_id": ticket.request_id,
        "subject_hash_hex": ticket.subject_hash.hex(),
        "namespace": ticket.namespace,
        "requested_at_us": ticket.requested_at_us,
    }


def _hold_answer(ticket: HoldTicket) -> dict[str, Any]:
    return {
        "hold_id": ticket.hold_id,
        "action": ticket.action.name,
        "subject_hash_hex": ticket.subject_hash.hex() if ticket.subject_hash else None,
        "namespace": ticket.namespace,
        "changed_at_us": ticket.changed_at_us,
    }


def _set_hold(
    node: CacheNode, who: Principal, req: dict[str, Any], left_s: float
) -> dict[str, Any]:
    subject = optional_str(req, "subject")
    namespace = optional_str(req, "namespace")
    reason = str_field(req, "reason")
    if subject is None and namespace is None:
        raise Refused(400, "a legal hold needs a subject, a namespace, or both", "subject")
    # A namespace-wide hold covers every tenant's entries in it.
    _own_subject(who, Action.LEGAL_HOLD, subject)
    try:
        ticket = set_legal_hold(
            node.producer,
            node.hasher,
            subject=subject,
            namespace=namespace,
            reason=reason,
            changed_by=who.name,
            timeout_s=left_s,
        )
    except ErasureRequestError as exc:
        raise _not_acknowledged(exc) from exc
    return _hold_answer(ticket)


def _lift_hold(
    node: CacheNode, who: Principal, req: dict[str, Any], left_s: float
) -> dict[str, Any]:
    hold_id = str_field(req, "hold_id")
    reason = str_field(req, "reason")
    if who.scope is not None:
        # Which subject a hold id covers is in the log, not here: a scoped
        # credential could lift another tenant's hold.
        raise Forbidden(
            who.role,
            Action.LEGAL_HOLD,
            f"principal {who.name!r} is scoped; lifting a hold needs an unscoped credential",
        )
    try:
        ticket = lift_legal_hold(
            node.producer, hold_id, reason=reason, changed_by=who.name, timeout_s=left_s
        )
    except ErasureRequestError as exc:
        raise _not_acknowledged(exc) from exc
    return _hold_answer(ticket)


ENDPOINTS: dict[str, Endpoint] = {
    e.path: e
    for e in (
        Endpoint(
            "/v1/put",
            Action.PUT,
            frozenset({"key", "value_b64", "contract", "ttl_ms", "wait", "namespace"}),
            _put,
        ),
        Endpoint("/v1/get", Action.GET, frozenset({"key", "contract", "namespace"}), _get),
        Endpoint("/v1/revoke", Action.REVOKE, frozenset({"key", "reason", "namespace"}), _revoke),
        Endpoint("/v1/confirm", Action.CONFIRM, frozenset({"key", "namespace"}), _confirm),
        Endpoint("/v1/history", Action.HISTORY, frozenset({"key", "namespace"}), _history),
        Endpoint(
            "/v1/erasures",
            Action.ERASE,
            frozenset({"subject", "namespace", "legal_basis"}),
            _erase,
            status=202,
        ),
        Endpoint(
            "/v1/legal-holds/set",
            Action.LEGAL_HOLD,
            frozenset({"subject", "namespace", "reason"}),
            _set_hold,
        ),
        Endpoint(
            "/v1/legal-holds/lift", Action.LEGAL_HOLD, frozenset({"hold_id", "reason"}), _lift_hold
        ),
    )
}
