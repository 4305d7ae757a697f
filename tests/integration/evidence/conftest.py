"""Cache-node fixtures for the evidence tests, with an anchor whose key set id is
its fingerprint (an export carries the anchor's file, which must be exactly that)."""

from __future__ import annotations

import pytest

from cachet.crypto.seal import PrivateKeySet
from tests.integration.cache.conftest import (  # noqa: F401 - fixtures
    make_config,
    make_keys,
    make_node,
    shared_secrets,
    ticker,
    vault,
)


@pytest.fixture(scope="session")
def anchor() -> PrivateKeySet:
    """Overrides the ledger's anchor for the tests here (and what uses it)."""
    return PrivateKeySet.generate()
