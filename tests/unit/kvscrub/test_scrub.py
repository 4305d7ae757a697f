"""Zeroize + verify: fused op, quarantine on failure, keyed sampling, passes, timing."""

from __future__ import annotations

import logging
from collections import Counter

import numpy as np
import pytest
import torch
from prometheus_client import CollectorRegistry
from torch.utils._python_dispatch import TorchDispatchMode

from processors.kvscrub.errors import BlockStateError
from processors.kvscrub.metrics import ScrubMetrics
from processors.kvscrub.policy import SessionPolicy
from processors.kvscrub.pool import BlockPool, BlockState, PoolShape
from processors.kvscrub.scrub import (
    Scrubber,
    ScrubConfigError,
    ScrubMethod,
    ScrubSettings,
    ScrubTrigger,
    sample_positions,
)

from .helpers import SAMPLE_KEY, SMALL, FakeClock, SkipOneScrubber, block_is_zero, dirty


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


def test_negative_zero_left_behind_counts_as_dirty(pool: BlockPool) -> None:
    # -0.0 == 0.0 numerically but keeps the sign bit: verification is bitwise.
    class NegZeroScrubber(Scrubber):
        def _zeroize(self, idx: torch.Tensor) -> None:
            super()._zeroize(idx)
            self.pool.tensor.index_fill_(0, idx[:1], -0.0)

    blocks = pool.allocate("acme", "r1", 3)
    pool.release("acme", "r1")
    report = NegZeroScrubber(pool).scrub(blocks, tenant="acme", request_id="r1")
    assert report.quarantined == (blocks[0],)


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


@pytest.mark.parametrize("double_pass", [False, True])
def test_zeroize_is_one_indexed_op_whatever_the_block_count(device: str, double_pass: bool) -> None:
    shape = PoolShape(64, layers=6, heads=2, head_dim=8, block_size=4, dtype=torch.float16)
    pool = BlockPool(shape, device)
    scrubber = Scrubber(pool, ScrubSettings(double_pass=double_pass))
    for n in (1, 40):
        pool.allocate("acme", f"r{n}", n)
        ids = pool.release("acme", f"r{n}")
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

    class ResidueScrubber(Scrubber):
        def _zeroize(self, idx: torch.Tensor) -> None:
            super()._zeroize(idx)
            self.pool.elements[int(idx[0]), int(positions[0])] = 7  # one sampled element survives

    blocks = pool.allocate("acme", "r1", 2)
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
    with caplog.at_level(logging.DEBUG, logger="processors.kvscrub"):
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
