"""Shared key material: generated once per session (SLH-DSA keys and signing
are the slow part of the crypto suite)."""

from __future__ import annotations

import pytest

from cachet.crypto.seal import PrivateKeySet


@pytest.fixture(scope="session")
def producer_keys() -> PrivateKeySet:
    return PrivateKeySet.generate("ks-producer-1")


@pytest.fixture(scope="session")
def other_keys() -> PrivateKeySet:
    return PrivateKeySet.generate("ks-producer-1")  # same id, different keys


@pytest.fixture(scope="session")
def anchor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="session")
def rogue_anchor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")
