"""Run-split scrubbing: a block set as maximal runs, each zeroed and verified
through a slice, touching exactly the set -- contiguous, scattered or mixed."""

from __future__ import annotations

import pytest
import torch

import cachet.processors.kvscrub.scrub as scrub_module
from cachet.processors.kvscrub.pool import BlockPool
from cachet.processors.kvscrub.report import ScrubMethod
from cachet.processors.kvscrub.runs import BlockRuns
from cachet.processors.kvscrub.scrub import Scrubber, ScrubSettings, sample_positions
from cachet.processors.kvscrub.state import BlockState

from .helpers import SAMPLE_KEY, SMALL, PlantAfterZeroScrubber, block_is_zero

# SMALL has 16 blocks.
SETS = {
    "contiguous": [4, 5, 6, 7, 8, 9, 10, 11],
    "scattered": [0, 2, 5, 9, 15],
    "mixed": [14, 0, 1, 2, 6, 8, 9, 13, 15],  # unordered on purpose; runs at both pool ends
    "everything": list(range(16)),
}
RUNS = {
    "contiguous": ((4, 12),),
    "scattered": ((0, 1), (2, 3), (5, 6), (9, 10), (15, 16)),
    "mixed": ((0, 3), (6, 7), (8, 10), (13, 16)),
    "everything": ((0, 16),),
}


def test_block_runs_are_sorted_deduplicated_and_maximal() -> None:
    runs = BlockRuns.of([9, 3, 4, 4, 5, 11, 10, 0])
    assert runs.ids == (0, 3, 4, 5, 9, 10, 11)
    assert runs.runs == ((0, 1), (3, 6), (9, 12)) and len(runs) == 7
    assert runs.without(4).runs == ((0, 1), (3, 4), (5, 6), (9, 12))
    assert runs.without(0).runs == ((3, 6), (9, 12))
    assert runs.without(42) == runs
    assert BlockRuns.of([]).runs == () and BlockRuns.span(2, 5).ids == (2, 3, 4)
    assert BlockRuns.of([1, 2], torch.device("cpu")).index is not None
    with pytest.raises(ValueError):
        BlockRuns((0, 1, 3), ((0, 4),))  # a run claiming a block the set lacks
    with pytest.raises(ValueError):
        BlockRuns((0, 1), ((0, 1), (1, 2)))  # adjacent runs: not maximal
    with pytest.raises(ValueError):
        BlockRuns((1, 0), ((0, 2),))  # not ascending
    with pytest.raises(ValueError):
        BlockRuns.span(3, 3)


def _one_block_sessions(pool: BlockPool) -> dict[int, str]:
    """Every block of the pool in its own session of tenant acme, filled with
    distinct nonzero data; returns block -> request id."""
    session_of = {}
    for i in range(pool.shape.num_blocks):
        (block,) = pool.allocate("acme", f"r{i}", 1)
        session_of[block] = f"r{i}"
    gen = torch.Generator().manual_seed(7)
    values = torch.rand((pool.shape.num_blocks, *pool.shape.block_dims), generator=gen) + 1.0
    pool.write(list(range(pool.shape.num_blocks)), values)
    return session_of


@pytest.mark.parametrize("kind", list(SETS))
@pytest.mark.parametrize("double_pass", [False, True])
def test_run_split_scrub_zeroes_exactly_the_set(
    pool: BlockPool, kind: str, double_pass: bool
) -> None:
    chosen = SETS[kind]
    assert BlockRuns.of(chosen).runs == RUNS[kind]
    session_of = _one_block_sessions(pool)
    before = pool.words.clone()
    for b in chosen:
        pool.release("acme", session_of[b])
    report = Scrubber(pool, ScrubSettings(double_pass=double_pass)).scrub(chosen, tenant="acme")
    assert report.clean and report.verified == tuple(chosen)  # caller's order kept
    assert report.blocks == len(chosen) and report.passes == (2 if double_pass else 1)
    for b in range(SMALL.num_blocks):
        if b in chosen:
            assert block_is_zero(pool, b), f"block {b} of the set not bitwise zero"
            assert pool.state_of(b) is BlockState.VERIFIED_CLEAN
        else:
            # Bitwise untouched, and its neighbours' runs never spilled into it.
            assert torch.equal(pool.words[b], before[b]), f"block {b} outside the set touched"
            assert pool.state_of(b) is BlockState.ALLOCATED


@pytest.mark.parametrize("kind", ["contiguous", "scattered", "mixed"])
def test_sampled_run_split_checks_every_chunk_of_every_run(pool: BlockPool, kind: str) -> None:
    # A one-block gather bound makes each block its own chunk, so a residue in
    # the LAST block of the LAST run is only seen if every chunk offset is right.
    chosen = SETS[kind]
    nonce = b"run-split-nonce"
    count = -(-SMALL.block_elements // 4)
    positions = sample_positions(SAMPLE_KEY, nonce, SMALL.block_elements, count)
    settings = ScrubSettings(
        method=ScrubMethod.SAMPLED,
        sample_key=SAMPLE_KEY,
        coverage_threshold=0.01,
        sample_fraction=0.25,
        verify_chunk_bytes=1,
    )
    session_of = _one_block_sessions(pool)
    for b in chosen:
        pool.release("acme", session_of[b])
    scrubber = PlantAfterZeroScrubber(pool, settings, nonce_source=lambda: nonce)
    scrubber.target = max(chosen)
    scrubber.element = int(positions[-1])
    scrubber.value = float("nan")
    report = scrubber.scrub(chosen, tenant="acme")
    assert report.method is ScrubMethod.SAMPLED and report.nonce == nonce
    assert report.quarantined == (max(chosen),)
    assert set(report.verified) == set(chosen) - {max(chosen)}


def test_shares_cut_runs_into_balanced_pieces_with_sorted_offsets() -> None:
    runs = BlockRuns.of(SETS["mixed"]).runs  # 9 blocks: (0,3) (6,7) (8,10) (13,16)
    one = scrub_module._shares(runs, threads=2, min_blocks=100, max_piece=100)
    assert one == [[(0, 3, 0), (6, 7, 3), (8, 10, 4), (13, 16, 6)]]  # too small to share
    two = scrub_module._shares(runs, threads=2, min_blocks=1, max_piece=2)
    assert two == [
        [(0, 2, 0), (2, 3, 2), (6, 7, 3), (8, 9, 4)],
        [(9, 10, 5), (13, 15, 6), (15, 16, 8)],
    ]
    for shares in (one, two):
        pieces = [p for share in shares for p in share]
        # Pieces tile the set in sorted order; each offset is its first block's rank.
        assert [b for s, e, _ in pieces for b in range(s, e)] == sorted(SETS["mixed"])
        assert all(o == sum(e - s for s, e, _ in pieces[:i]) for i, (_, _, o) in enumerate(pieces))


@pytest.mark.parametrize("kind", ["contiguous", "scattered", "mixed"])
def test_threaded_shares_zero_exactly_the_set_and_catch_residue(
    pool: BlockPool, kind: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    if pool.device.type != "cpu":
        pytest.skip("CPU shares only")
    # Force the parallel path on a tiny pool: every block its own piece, two shares.
    monkeypatch.setattr(scrub_module, "_CPU_SHARE_MIN_BYTES", 1)
    monkeypatch.setattr(scrub_module, "_CPU_PIECE_BYTES", 1)
    chosen = SETS[kind]
    session_of = _one_block_sessions(pool)
    before = pool.words.clone()
    for b in chosen:
        pool.release("acme", session_of[b])
    scrubber = PlantAfterZeroScrubber(pool, ScrubSettings(cpu_threads=2))
    scrubber.target = max(chosen)  # lands in the second share, on the worker thread
    scrubber.value = -0.0
    report = scrubber.scrub(chosen, tenant="acme")
    assert report.quarantined == (max(chosen),)
    assert set(report.verified) == set(chosen) - {max(chosen)}
    for b in range(SMALL.num_blocks):
        if b in report.verified:
            assert block_is_zero(pool, b)
        elif b not in chosen:
            assert torch.equal(pool.words[b], before[b]), f"block {b} outside the set touched"
