"""Fixtures shared by every integration test package (the signed ledger's)."""

from tests.integration.ledger_support import (  # noqa: F401 - fixtures
    anchor,
    codec,
    ledger,
    other_keys,
    producer_keys,
    staging,
)
