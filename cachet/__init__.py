"""Cachet: a compliance-grade cache built as a signed, event-sourced ledger on Kafka.

What a service needs is here::

    import cachet

    with cachet.open("cachet.toml", contract="finra_quotes", wait_ready=True) as cache:
        cache.put("AAPL", b"189.12")
        r = cache.get("AAPL")               # r.hit, r.value, r.freshness, r.signatures
        if not r.hit:
            print(r.reason)                 # a cachet.MissReason
        regulator = cache.as_role(cachet.Role.REGULATOR)   # proofs, never the value

Everything else lives in the subpackages (``cachet.config``,
``cachet.producers``, ``cachet.ledger``, ...).

The names below are loaded on first use (PEP 562): ``import cachet`` alone
imports neither the Kafka client nor RocksDB nor any optional extra, so the
CLI and tools that only need a subpackage start fast.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cachet.api import Cache, CacheClosed, NotReady, open
    from cachet.config import CachetConfig, ConfigError, Role, load_config
    from cachet.errors import CachetError
    from cachet.freshness import FreshnessProof
    from cachet.producers.cache_client import (
        CacheError,
        CacheResponse,
        InvalidArgument,
        PutReceipt,
    )
    from cachet.producers.cache_node import NodeHealth
    from cachet.producers.fingerprint import Computation
    from cachet.verdict import MissReason, SignatureSummary, VerificationStatus

__all__ = [
    "Cache",
    "CacheClosed",
    "CacheError",
    "CacheResponse",
    "CachetConfig",
    "CachetError",
    "Computation",
    "ConfigError",
    "FreshnessProof",
    "InvalidArgument",
    "MissReason",
    "NodeHealth",
    "NotReady",
    "PutReceipt",
    "Role",
    "SignatureSummary",
    "VerificationStatus",
    "load_config",
    "open",
]

# Where each public name is defined; the one table __getattr__ reads.
_HOME: dict[str, str] = {
    "Cache": "cachet.api",
    "CacheClosed": "cachet.api",
    "NotReady": "cachet.api",
    "open": "cachet.api",
    "CachetConfig": "cachet.config",
    "ConfigError": "cachet.config",
    "Role": "cachet.config",
    "load_config": "cachet.config",
    "CachetError": "cachet.errors",
    "FreshnessProof": "cachet.freshness",
    "CacheError": "cachet.producers.cache_client",
    "CacheResponse": "cachet.producers.cache_client",
    "InvalidArgument": "cachet.producers.cache_client",
    "PutReceipt": "cachet.producers.cache_client",
    "NodeHealth": "cachet.producers.cache_node",
    "Computation": "cachet.producers.fingerprint",
    "MissReason": "cachet.verdict",
    "SignatureSummary": "cachet.verdict",
    "VerificationStatus": "cachet.verdict",
}


def __getattr__(name: str) -> object:
    """Import a public name's module on first use and cache the name here."""
    home = _HOME.get(name)
    if home is None:
        raise AttributeError(f"module 'cachet' has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
