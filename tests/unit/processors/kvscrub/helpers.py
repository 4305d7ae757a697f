"""Shared helpers for the KV-cache scrubbing tests: tiny pools, a fake clock,
the device matrix and a scrubber with an injected zeroization fault."""

from __future__ import annotations

import pytest
import torch

from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.runs import BlockRuns
from cachet.processors.kvscrub.scrub import Scrubber

DEVICES = [
    pytest.param("cpu", id="cpu"),
    pytest.param(
        "cuda",
        id="cuda",
        marks=[
            pytest.mark.cuda,
            pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device"),
        ],
    ),
]

SMALL = PoolShape(num_blocks=16, layers=2, heads=2, head_dim=8, block_size=4, dtype=torch.float32)
SAMPLE_KEY = b"k" * 32


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class SkipOneScrubber(Scrubber):
    """Failure injection: the zeroize pass silently misses one block."""

    skip: int = -1

    def _zeroize(self, blocks: BlockRuns) -> None:
        super()._zeroize(blocks.without(self.skip))


class PlantAfterZeroScrubber(Scrubber):
    """Failure injection: right after each zeroize pass that covers ``target``,
    one element of that block (``element``, flat index) is set to ``value``.

    ``value`` is written in the pool's dtype, so ``-0.0`` keeps its sign bit
    and NaN its payload: residue that compares equal to (or unordered with)
    zero as a float, but not as bits.
    """

    target: int = -1
    element: int = 0
    value: float = -0.0

    def _zeroize(self, blocks: BlockRuns) -> None:
        super()._zeroize(blocks)
        if self.target in blocks.ids:
            self.pool.tensor[self.target].view(-1)[self.element] = self.value


def dirty(pool: BlockPool, blocks: list[int], seed: int = 0) -> torch.Tensor:
    """Fill blocks with random nonzero data; returns what was written."""
    gen = torch.Generator().manual_seed(seed)
    values = torch.rand((len(blocks), *pool.shape.block_dims), generator=gen) + 1.0
    pool.write(blocks, values)
    return values


def block_is_zero(pool: BlockPool, block: int) -> bool:
    """Bitwise check of one block straight on the pool tensor (bypasses state checks)."""
    return bool((pool.words[block] == 0).all().item())
