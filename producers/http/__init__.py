"""A node's HTTP front: health, metrics, OpenAPI and a JSON cache API, on
Starlette and uvicorn, with every request but ``/health`` authenticated.

* :mod:`.credentials`: bearer tokens (stored as SHA-256 only) and client
  certificates mapped to a :class:`Principal` (name, role, scope).
* :mod:`.rights`: what each role may do.
* :mod:`.fields`: reading a JSON body, every field checked.
* :mod:`.endpoints`: what each endpoint does, as the principal.
* :mod:`.app`: the ASGI application (bounds, authentication, endpoints).
* :mod:`.openapi`: ``/openapi.json``.
* :mod:`.server`: uvicorn on a thread, time bounds, mutual TLS.

``docs/access-control.md`` describes the roles, credentials and statuses.
"""

from cachet.producers.http.credentials import (
    CredentialError,
    Principal,
    TokenStore,
    new_token,
    token_digest,
)
from cachet.producers.http.rights import RIGHTS, Action
from cachet.producers.http.server import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    HttpFrontError,
    NodeHttpServer,
    TlsSettings,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "RIGHTS",
    "Action",
    "CredentialError",
    "HttpFrontError",
    "NodeHttpServer",
    "Principal",
    "TlsSettings",
    "TokenStore",
    "new_token",
    "token_digest",
]
