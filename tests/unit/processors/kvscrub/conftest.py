"""Fixtures for the KV-cache scrubbing tests."""

from __future__ import annotations

import pytest

from cachet.processors.kvscrub.pool import BlockPool

from .helpers import DEVICES, SMALL, FakeClock


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def pool(device: str, clock: FakeClock) -> BlockPool:
    return BlockPool(SMALL, device, clock=clock)
