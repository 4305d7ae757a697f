"""Zeroize + verify: ops per pass (fused on CUDA, per run on CPU), quarantine on
failure, bitwise checks, keyed sampling, passes, timing."""

from __future__ import annotations

import logging
from collections import Counter
from typing import Any

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch.utils._python_dispatch import TorchDispatchMode

from cachet.processors.kvscrub.errors import BlockStateError
from cachet.processors.kvscrub.metrics import ScrubMetrics
from cachet.processors.kvscrub.policy import SessionPolicy
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.report import ScrubMethod, ScrubTrigger
from cachet.processors.kvscrub.runs import BlockRuns
from cachet.processors.kvscrub.scrub import (
    Scrubber,
    ScrubConfigError,
    ScrubSettings,
    sample_positions,
)
from cachet.processors.kvscrub.state import BlockState

from .helpers import (
    SAMPLE_KEY,
    SMALL,
    FakeClock,
    PlantAfterZeroScrubber,
    SkipOneScrubber,
    block_is_zero,
    dirty,
)


def sampled(threshold: float = 0.01, fraction: float = 0.25) -> ScrubSettings:
    return ScrubSettings(
        method=ScrubMethod.SAMPLED,
        sample_key=SAMPLE_KEY,
        coverage_threshold=threshold,
        sample_fraction=fraction,
    )


def test_scrub_request_zeroizes_verifies_and_frees(pool: BlockPool) -> None:
    scrubber = Scrubber(pool)
    blocks = pool.allocate("acme", "r1", 5)
    dirty(pool, blocks)
    report = scrubber.scrub_request("acme", "r1")
    assert report.blocks == 5 and report.bytes == 5 * SMALL.block_bytes
    assert sorted(report.verified) == sorted(blocks) and report.quarantined == ()
    assert report.coverage == 1.0 and report.method is ScrubMethod.FULL and report.passes == 1
    assert report.trigger is ScrubTrigger.REQUEST_FINISHED
    assert report.device == str(pool.device) and report.duration_us >= 0 and report.clean
    for b in blocks:
        assert pool.state_of(b) is BlockState.FREE and block_is_zero(pool, b)


def test_scrub_tenant_covers_every_request_in_one_report(pool: BlockPool) -> None:
    scrubber = Scrubber(pool)
    a = pool.allocate("acme", "r1", 2)
    b = pool.allocate("acme", "r2", 3)
    keep = pool.allocate("zeta", "r1", 2)
    dirty(pool, a + b + keep)
    report = scrubber.scrub_tenant("acme")
    assert report.request_id is None and report.trigger is ScrubTrigger.REVOCATION
    assert sorted(report.verified) == sorted(a + b)
    assert pool.blocks_of("acme") == [] and pool.blocks_of("zeta") == keep
    assert not any(block_is_zero(pool, k) for k in keep)  # other tenants untouched


def test_injected_zeroing_failure_quarantines_never_frees(pool: BlockPool) -> None:
    scrubber = SkipOneScrubber(pool)
    blocks = pool.allocate("acme", "r1", 4)
    dirty(pool, blocks)
    scrubber.skip = blocks[2]
    report = scrubber.scrub_request("acme", "r1")
    assert report.quarantined == (blocks[2],) and not report.clean
    assert set(report.verified) == set(blocks) - {blocks[2]}
    assert pool.state_of(blocks[2]) is BlockState.QUARANTINED
    assert blocks[2] not in pool.free_blocks()
    # Never reusable: the whole remaining pool can be taken without it.
    got = pool.allocate("zeta", "r1", len(pool.free_blocks()))
    assert blocks[2] not in got
    with pytest.raises(Exception):  # noqa: B017 - either UnscrubbedFree or a state error
        pool.free([blocks[2]])
    assert pool.state_of(blocks[2]) is BlockState.QUARANTINED


@pytest.mark.parametrize(
    "residue", [-0.0, float("nan"), -float("nan")], ids=["neg-zero", "nan", "neg-nan"]
)
@pytest.mark.parametrize("double_pass", [False, True])
def test_float_residue_planted_after_zeroing_is_dirty_and_quarantined(
    pool: BlockPool, residue: float, double_pass: bool
) -> None:
    # -0.0 == 0.0 and NaN != anything as floats, yet both leave bits behind:
    # verification must be bitwise. Planted after EVERY zero pass, mid-run.
    scrubber = PlantAfterZeroScrubber(pool, ScrubSettings(double_pass=double_pass))
    blocks = pool.allocate("acme", "r1", 5)
    dirty(pool, blocks)
    scrubber.target = sorted(blocks)[2]  # inside the run, not at its edge
    scrubber.element = SMALL.block_elements - 1  # the block's very last element
    scrubber.value = residue
    report = scrubber.scrub_request("acme", "r1")
    assert len(BlockRuns.of(blocks).runs) == 1
    assert report.quarantined == (scrubber.target,) and not report.clean
    assert set(report.verified) == set(blocks) - {scrubber.target}
    assert pool.state_of(scrubber.target) is BlockState.QUARANTINED
    assert scrubber.target not in pool.free_blocks()
    for b in report.verified:
        assert pool.state_of(b) is BlockState.FREE and block_is_zero(pool, b)


def test_scrub_refuses_reachable_or_foreign_blocks(pool: BlockPool) -> None:
    scrubber = Scrubber(pool)
    live = pool.allocate("acme", "r1", 2)
    with pytest.raises(BlockStateError):
        scrubber.scrub(live, tenant="acme")  # not released: still readable
    other = pool.allocate("zeta", "r1", 1)
    pool.release("zeta", "r1")
    with pytest.raises(BlockStateError):
        scrubber.scrub(other, tenant="acme")  # someone else's blocks
    with pytest.raises(BlockStateError):
        scrubber.scrub(other, tenant="zeta", request_id="r2")
    assert pool.state_of(other[0]) is BlockState.PENDING_SCRUB
    empty = scrubber.scrub([], tenant="acme")
    assert empty.blocks == 0 and empty.verified == ()


def test_double_pass_counts_two_passes(pool: BlockPool) -> None:
    scrubber = Scrubber(pool, ScrubSettings(double_pass=True))
    blocks = pool.allocate("acme", "r1", 3)
    dirty(pool, blocks)
    report = scrubber.scrub_request("acme", "r1")
    assert report.passes == 2 and report.clean


class _OpCounter(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: Counter[str] = Counter()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[no-untyped-def]
        self.ops[str(func.overloadpacket)] += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device")
@pytest.mark.parametrize("double_pass", [False, True])
def test_cuda_zeroize_is_one_indexed_op_whatever_the_block_count(double_pass: bool) -> None:
    # The fused path: one launch per pass whatever the number of blocks or runs.
    shape = PoolShape(64, layers=6, heads=2, head_dim=8, block_size=4, dtype=torch.float16)
    pool = BlockPool(shape, "cuda")
    scrubber = Scrubber(pool, ScrubSettings(double_pass=double_pass))
    for n, stride in ((1, 1), (40, 1), (12, 3)):  # contiguous and scattered sets
        ids = _release_blocks(pool, f"n{n}s{stride}", n, stride)
        with _OpCounter() as counter:
            report = scrubber.scrub(ids, tenant="acme")
        assert report.clean
        passes = 2 if double_pass else 1
        assert counter.ops["aten.index_fill_"] == passes
        assert counter.ops["aten.fill_"] == 0 and counter.ops["aten.zero_"] == 0
        # One chunk of verification for a small set: one gather, one reduction.
        assert counter.ops["aten.index_select"] == 1
        assert counter.ops["aten.aminmax"] == 1
        pool.free(report.verified)


class _RunCounter(Scrubber):
    """Counts the CPU path's memory ops: one memset per run, one reduction per run."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.memsets: list[tuple[int, int]] = []
        self.reductions: list[tuple[int, int]] = []

    def _zero_run(self, start: int, end: int) -> None:
        self.memsets.append((start, end))
        super()._zero_run(start, end)

    def _verify_run(self, start: int, end: int, positions: Any, out: Any) -> None:
        self.reductions.append((start, end))
        super()._verify_run(start, end, positions, out)


@pytest.mark.parametrize("double_pass", [False, True])
def test_cpu_zeroize_is_one_memset_per_run_and_one_reduction_per_run(double_pass: bool) -> None:
    # The CPU path: ops scale with the number of RUNS, never with blocks or layers.
    shape = PoolShape(64, layers=6, heads=2, head_dim=8, block_size=4, dtype=torch.float16)
    pool = BlockPool(shape, "cpu")
    scrubber = _RunCounter(pool, ScrubSettings(double_pass=double_pass))
    passes = 2 if double_pass else 1
    for n, stride in ((1, 1), (40, 1), (12, 3)):  # contiguous and scattered sets
        ids = _release_blocks(pool, f"n{n}s{stride}", n, stride)
        runs = BlockRuns.of(ids).runs
        assert len(runs) == (1 if stride == 1 else n)
        scrubber.memsets.clear()
        scrubber.reductions.clear()
        with _OpCounter() as counter:
            report = scrubber.scrub(ids, tenant="acme")
        assert report.clean
        # Every pass memsets each run once, in order; then one reduction per run.
        assert sorted(scrubber.memsets) == sorted(list(runs) * passes)
        assert scrubber.reductions == list(runs)
        # No torch kernel touches the pool: no indexed op, no per-op thread-pool
        # barrier (the only op is PoolShape probing its dtype's element size).
        assert set(counter.ops) <= {"aten.empty"}, counter.ops
        pool.free(report.verified)


def _release_blocks(pool: BlockPool, tag: str, n: int, stride: int) -> list[int]:
    """``n`` PENDING_SCRUB blocks of tenant acme, ``stride`` apart (1: one contiguous run).

    Every block of the span gets its own session; those not picked stay live.
    """
    span: list[int] = []
    for i in range(n * stride):
        span += pool.allocate("acme", f"{tag}-{i}", 1)
    base = min(span)
    assert sorted(span) == list(range(base, base + n * stride))  # LIFO free list: contiguous
    picked = list(range(base, base + n * stride, stride))
    by_block = {b: f"{tag}-{i}" for i, b in enumerate(span)}
    for b in picked:
        pool.release("acme", by_block[b])
    return picked


def test_sample_positions_keyed_and_deterministic() -> None:
    a = sample_positions(b"A" * 32, b"nonce-1", 4096, 100)
    assert np.array_equal(a, sample_positions(b"A" * 32, b"nonce-1", 4096, 100))
    assert not np.array_equal(a, sample_positions(b"B" * 32, b"nonce-1", 4096, 100))
    assert not np.array_equal(a, sample_positions(b"A" * 32, b"nonce-2", 4096, 100))
    for count in (100, 3000, 4096):  # sparse path, dense path, everything
        p = sample_positions(b"A" * 32, b"n", 4096, count)
        assert p.size == count == np.unique(p).size and p.min() >= 0 and p.max() < 4096
        assert np.all(np.diff(p) > 0)


def test_sampled_positions_differ_by_key_in_the_scrubber(pool: BlockPool) -> None:
    nonce = b"\x01" * 16
    s1 = Scrubber(pool, sampled(), nonce_source=lambda: nonce)
    s2 = Scrubber(
        pool,
        ScrubSettings(
            method=ScrubMethod.SAMPLED,
            sample_key=b"z" * 32,
            coverage_threshold=0.01,
            sample_fraction=0.25,
        ),
        nonce_source=lambda: nonce,
    )
    p1, p2, p1again = s1._plan()[1], s2._plan()[1], s1._plan()[1]
    assert p1 is not None and p2 is not None and p1again is not None
    assert np.array_equal(p1, p1again)
    assert not np.array_equal(p1, p2)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float8_e4m3fn])
def test_sampled_coverage_is_bytes_checked_over_block_bytes(
    device: str, dtype: torch.dtype
) -> None:
    shape = PoolShape(8, layers=2, heads=2, head_dim=8, block_size=4, dtype=dtype)
    pool = BlockPool(shape, device)
    nonces = iter([b"n1", b"n2"])
    scrubber = Scrubber(pool, sampled(fraction=0.1), nonce_source=lambda: next(nonces))
    pool.allocate("acme", "r1", 3)
    report = scrubber.scrub_request("acme", "r1")
    expected_count = -(-shape.block_elements * 1 // 10)  # ceil(10%)
    elem = torch.empty((), dtype=dtype).element_size()
    assert report.method is ScrubMethod.SAMPLED and not report.sampled_fallback
    assert report.coverage == pytest.approx(expected_count * elem / shape.block_bytes)
    assert report.nonce == b"n1" and report.clean


def test_sampled_detects_residue_at_sampled_positions(pool: BlockPool) -> None:
    nonce = b"fixed-nonce"
    settings = sampled(fraction=0.25)
    positions = sample_positions(
        SAMPLE_KEY, nonce, SMALL.block_elements, -(-SMALL.block_elements // 4)
    )

    blocks = pool.allocate("acme", "r1", 2)

    class ResidueScrubber(Scrubber):
        def _zeroize(self, runs: BlockRuns) -> None:
            super()._zeroize(runs)
            if blocks[0] in runs.ids:  # one sampled element survives
                self.pool.elements[blocks[0], int(positions[0])] = 7

    pool.release("acme", "r1")
    report = ResidueScrubber(pool, settings, nonce_source=lambda: nonce).scrub(
        blocks, tenant="acme"
    )
    assert report.quarantined == (blocks[0],)


def test_sampled_below_threshold_falls_back_to_full(pool: BlockPool) -> None:
    scrubber = SkipOneScrubber(pool, sampled(threshold=0.999, fraction=0.01))
    blocks = pool.allocate("acme", "r1", 3)
    dirty(pool, blocks)
    scrubber.skip = blocks[1]
    report = scrubber.scrub_request("acme", "r1")
    assert report.sampled_fallback and report.method is ScrubMethod.FULL
    assert report.coverage == 1.0 and report.nonce == b""
    assert report.quarantined == (blocks[1],)


def test_settings_validation_and_key_never_in_repr() -> None:
    with pytest.raises(ScrubConfigError):
        ScrubSettings(method=ScrubMethod.SAMPLED)  # keyless sampling is predictable
    with pytest.raises(ScrubConfigError):
        ScrubSettings(coverage_threshold=0)
    assert "secret-key-material" not in repr(
        ScrubSettings(method=ScrubMethod.SAMPLED, sample_key=b"secret-key-material!")
    )


def test_enforce_policies_scrubs_expired_sessions(device: str) -> None:
    clock = FakeClock()
    pool = BlockPool(SMALL, device, clock=clock, policy=SessionPolicy(ttl_s=10, max_reuse=1))
    scrubber = Scrubber(pool)
    old = pool.allocate("acme", "old", 2)
    clock.advance(5)
    reused = pool.allocate("acme", "reused", 1)
    pool.mark_reuse("acme", "reused")
    pool.mark_reuse("acme", "reused")
    fresh = pool.allocate("acme", "fresh", 1)
    clock.advance(5)
    reports = {r.request_id: r for r in scrubber.enforce_policies()}
    assert reports["old"].trigger is ScrubTrigger.TTL_EXPIRED
    assert reports["reused"].trigger is ScrubTrigger.MAX_REUSE
    assert "fresh" not in reports
    assert all(pool.state_of(b) is BlockState.FREE for b in old + reused)
    assert pool.blocks_of("acme") == fresh


def test_metrics_and_logs_carry_no_payload(
    pool: BlockPool, caplog: pytest.LogCaptureFixture
) -> None:
    registry = CollectorRegistry()
    metrics = ScrubMetrics(registry)
    scrubber = SkipOneScrubber(pool, metrics=metrics)
    blocks = pool.allocate("acme", "r1", 3)
    pool.write(blocks, 1234.5)  # a recognisable payload value
    scrubber.skip = blocks[0]
    with caplog.at_level(logging.DEBUG, logger="cachet.processors.kvscrub"):
        report = scrubber.scrub_request("acme", "r1")
    metrics.set_queue_depth(4)
    metrics.observe_pool(pool)
    dev = report.device
    get = registry.get_sample_value
    assert get("cachet_kvscrub_bytes_total", {"device": dev, "trigger": "REQUEST_FINISHED"}) == (
        3 * SMALL.block_bytes
    )
    assert get("cachet_kvscrub_quarantined_blocks_total", {"device": dev}) == 1
    assert get("cachet_kvscrub_coverage_ratio", {"device": dev}) == 1.0
    assert get("cachet_kvscrub_duration_seconds_count", {"device": dev, "method": "FULL"}) == 1
    assert get("cachet_kvscrub_queue_depth") == 4
    assert get("cachet_kvscrub_pool_blocks", {"device": dev, "state": "QUARANTINED"}) == 1
    text = caplog.text
    assert "acme" in text and "1234" not in text and "tensor(" not in text
