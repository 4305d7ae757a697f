"""The OpenAPI 3.1 description of the node's HTTP front (``GET /openapi.json``).

Written by hand from :data:`~cachet.producers.http.endpoints.ENDPOINTS`'
fields, so the description and the checks cannot drift apart: a test
compares the two.
"""

from __future__ import annotations

import copy
from functools import cache
from typing import Any

from cachet.producers.http.endpoints import ENDPOINTS

__all__ = ["openapi_document"]

_STR = {"type": "string", "minLength": 1}
_NS = {"type": "string", "minLength": 1, "default": "default"}
_FIELDS: dict[str, dict[str, Any]] = {
    "key": _STR,
    "namespace": _NS,
    "contract": _STR,
    "value_b64": {"type": "string", "contentEncoding": "base64"},
    "ttl_ms": {"type": ["integer", "null"], "minimum": 0, "maximum": 2**63 - 1},
    "wait": {"type": "boolean", "default": False},
    "reason": {"type": "string"},
    "subject": {"type": "string", "minLength": 1, "description": "the data subject's id"},
    "legal_basis": {"type": "string", "minLength": 1, "default": "GDPR Art. 17(1)"},
    "hold_id": _STR,
}
_REQUIRED: dict[str, list[str]] = {
    "/v1/put": ["key", "value_b64", "contract"],
    "/v1/get": ["key", "contract"],
    "/v1/revoke": ["key"],
    "/v1/confirm": ["key"],
    "/v1/history": ["key"],
    "/v1/erasures": ["subject"],
    "/v1/legal-holds/set": ["reason"],
    "/v1/legal-holds/lift": ["hold_id", "reason"],
}
_SUMMARY: dict[str, str] = {
    "/v1/put": "Write a new version (owner)",
    "/v1/get": "Read against a contract; the value only for the owner",
    "/v1/revoke": "Revoke the current version everywhere (owner)",
    "/v1/confirm": "Confirm the current version is still fresh (owner)",
    "/v1/history": "Versions, states and proof references of a key (no values)",
    "/v1/erasures": "Request the erasure of a subject (data_protection)",
    "/v1/legal-holds/set": "Set a legal hold on a subject and/or namespace (data_protection)",
    "/v1/legal-holds/lift": "Lift a legal hold (unscoped data_protection)",
}
_HEX = {"type": ["string", "null"], "pattern": "^[0-9a-f]*$"}
_HOLD = {
    "hold_id": {"type": "string"},
    "action": {"type": "string", "enum": ["SET", "LIFTED"]},
    "subject_hash_hex": _HEX,
    "namespace": {"type": ["string", "null"]},
    "changed_at_us": {"type": "integer"},
}
_RESPONSES: dict[str, dict[str, Any]] = {
    "/v1/put": {
        "version": {"type": "integer"},
        "fingerprint_hex": _HEX,
        "event_id": {"type": "string"},
    },
    "/v1/get": {
        "hit": {"type": "boolean"},
        "value_b64": {"type": ["string", "null"], "description": "null unless role is owner"},
        "reason": {"type": ["string", "null"]},
        "status": {"type": "string"},
        "version": {"type": ["integer", "null"]},
        "fingerprint_hex": _HEX,
        "commitment_hex": _HEX,
        "freshness": {"type": ["object", "null"]},
        "detail": {"type": "string"},
    },
    "/v1/revoke": {"revoked": {"type": "boolean"}},
    "/v1/confirm": {"confirmed": {"type": "boolean"}},
    "/v1/history": {
        "key_hash_hex": _HEX,
        "versions": {"type": "array", "items": {"type": "object"}},
    },
    "/v1/erasures": {
        "request_id": {"type": "string"},
        "subject_hash_hex": _HEX,
        "namespace": {"type": ["string", "null"]},
        "requested_at_us": {"type": "integer"},
    },
    "/v1/legal-holds/set": _HOLD,
    "/v1/legal-holds/lift": _HOLD,
}
_ERROR = {
    "type": "object",
    "properties": {"error": {"type": "string"}, "field": {"type": "string"}},
    "required": ["error"],
}
_ERRORS = {
    "400": "a field is wrong (``field`` names it; ``role``/``scope`` are never accepted)",
    "401": "no credential, or not a valid one",
    "403": "the credential's role may not do this",
    "408": "the body did not arrive in time",
    "409": "Cachet refused it (the error says why)",
    "413": "the body is over the limit",
    "503": "the broker did not acknowledge the write",
    "504": "not finished within the request timeout",
}


def _error_responses() -> dict[str, Any]:
    ref = {"$ref": "#/components/schemas/Error"}
    return {
        code: {"description": why, "content": {"application/json": {"schema": ref}}}
        for code, why in _ERRORS.items()
    }


def _post(path: str) -> dict[str, Any]:
    endpoint = ENDPOINTS[path]
    body = {
        "type": "object",
        "additionalProperties": False,
        "properties": {name: _FIELDS[name] for name in sorted(endpoint.fields)},
        "required": _REQUIRED[path],
    }
    ok = {
        "description": "done",
        "content": {
            "application/json": {"schema": {"type": "object", "properties": _RESPONSES[path]}}
        },
    }
    return {
        "post": {
            "summary": _SUMMARY[path],
            "x-cachet-action": endpoint.action.value,
            "requestBody": {
                "required": True,
                "content": {"application/json": {"schema": body}},
            },
            "responses": {str(endpoint.status): ok, **_error_responses()},
        }
    }


@cache
def _document() -> dict[str, Any]:
    paths: dict[str, Any] = {
        "/health": {
            "get": {
                "summary": "Whether the node serves (no credential needed)",
                "security": [],
                "responses": {
                    "200": {"description": "ready"},
                    "503": {"description": "not ready; the body lists why"},
                },
            }
        },
        "/metrics": {
            "get": {
                "summary": "Prometheus metrics",
                "responses": {"200": {"description": "Prometheus text format"}},
            }
        },
        "/openapi.json": {
            "get": {
                "summary": "This description",
                "responses": {"200": {"description": "OpenAPI 3.1"}},
            }
        },
    }
    paths.update({path: _post(path) for path in ENDPOINTS})
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Cachet node",
            "version": "1",
            "description": "A cache node's JSON API. Role and scope come from the credential "
            "(a bearer token, or a mutual-TLS client certificate), never from a request.",
        },
        "paths": paths,
        "components": {
            "schemas": {"Error": _ERROR},
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "mutualTLS": {"type": "mutualTLS"},
            },
        },
        "security": [{"bearer": []}, {"mutualTLS": []}],
    }


def openapi_document() -> dict[str, Any]:
    """The description (a fresh copy: callers may change it)."""
    return copy.deepcopy(_document())
