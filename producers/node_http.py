"""A node's HTTP front: now the :mod:`cachet.producers.http` package (ASGI,
authenticated). Kept so ``cachet.producers.node_http`` imports still work."""

from cachet.producers.http import (
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_REQUEST_TIMEOUT_S,
    HttpFrontError,
    NodeHttpServer,
)

__all__ = [
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_REQUEST_TIMEOUT_S",
    "HttpFrontError",
    "NodeHttpServer",
]
