"""Block tables, lifecycle gates, prefix cache and session policies of BlockPool."""

from __future__ import annotations

import math

import pytest
import torch

from cachet.processors.kvscrub.errors import (
    BlockStateError,
    PolicyViolation,
    PoolExhausted,
    UnscrubbedFree,
)
from cachet.processors.kvscrub.policy import ExpiryReason, SessionKey, SessionPolicy
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.scrub import Scrubber
from cachet.processors.kvscrub.state import BlockState

from .helpers import SMALL, FakeClock, block_is_zero, dirty


def test_pool_is_one_contiguous_tensor_block_index_leading(pool: BlockPool) -> None:
    t = pool.tensor
    assert t.is_contiguous()
    assert tuple(t.shape) == (
        SMALL.num_blocks,
        SMALL.layers,
        2,
        SMALL.heads,
        SMALL.block_size,
        SMALL.head_dim,
    )
    assert pool.words.data_ptr() == t.data_ptr() == pool.elements.data_ptr()
    assert SMALL.block_bytes == t[0].numel() * t.element_size()
    assert bool((t == 0).all())


def test_allocate_append_blocks_of(pool: BlockPool) -> None:
    a = pool.allocate("acme", "r1", 3)
    b = pool.append("acme", "r1", 2)
    c = pool.allocate("acme", "r2", 1)
    d = pool.allocate("zeta", "r1", 2)
    assert len(set(a + b + c + d)) == 8
    assert pool.blocks_of("acme", "r1") == a + b
    assert sorted(pool.blocks_of("acme")) == sorted(a + b + c)
    assert pool.blocks_of("zeta") == d
    assert pool.blocks_of("nobody") == []
    assert all(pool.state_of(x) is BlockState.ALLOCATED for x in a + b + c + d)
    assert pool.owner_of(c[0]) == SessionKey("acme", "r2")
    with pytest.raises(ValueError):
        pool.allocate("acme", "r1", 1)


def test_pool_exhausted_names_tenant_request_and_counts(pool: BlockPool) -> None:
    pool.allocate("acme", "big", SMALL.num_blocks - 2)
    with pytest.raises(PoolExhausted) as err:
        pool.allocate("zeta", "req-9", 5)
    assert (err.value.tenant, err.value.request_id) == ("zeta", "req-9")
    assert (err.value.requested, err.value.available) == (5, 2)
    assert "zeta" in str(err.value) and "req-9" in str(err.value) and "5" in str(err.value)
    with pytest.raises(PoolExhausted):
        pool.append("acme", "big", 3)
    assert len(pool.free_blocks()) == 2  # a failed allocation takes nothing


def test_release_makes_blocks_pending_and_unreachable(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 3)
    released = pool.release("acme", "r1")
    assert released == blocks
    assert all(pool.state_of(b) is BlockState.PENDING_SCRUB for b in blocks)
    assert pool.blocks_of("acme") == []
    assert not set(blocks) & set(pool.free_blocks())  # not returned to the free list
    with pytest.raises(BlockStateError):
        pool.read(blocks)
    with pytest.raises(BlockStateError):
        pool.write(blocks, 1.0)
    assert pool.release("acme", "r1") == []  # idempotent under redelivery


def test_release_drops_prefix_cache_entries(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 2)
    other = pool.allocate("acme", "r2", 1)
    pool.register_prefix("acme", "r1", b"h0", blocks[0])
    pool.register_prefix("acme", "r1", b"h1", blocks[1])
    pool.register_prefix("acme", "r2", b"h2", other[0])
    assert pool.lookup_prefix("acme", b"h0") == blocks[0]
    pool.release("acme", "r1")
    assert pool.lookup_prefix("acme", b"h0") is None
    assert pool.lookup_prefix("acme", b"h1") is None
    assert set(pool.prefix_entries().values()) == {other[0]}
    assert pool.lookup_prefix("acme", b"h2") == other[0]


def test_prefix_cache_is_tenant_scoped(pool: BlockPool) -> None:
    (block,) = pool.allocate("acme", "r1", 1)
    pool.register_prefix("acme", "r1", b"same-prompt", block)
    assert pool.lookup_prefix("zeta", b"same-prompt") is None
    with pytest.raises(ValueError):
        pool.register_prefix("acme", "r1", b"x", 99 if block != 99 else 98)


def test_free_without_scrub_raises_and_quarantines(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 2)
    dirty(pool, blocks)
    pool.register_prefix("acme", "r1", b"h", blocks[0])
    with pytest.raises(UnscrubbedFree) as err:
        pool.free(blocks)  # still ALLOCATED
    assert err.value.block_ids == tuple(blocks)
    assert err.value.states == (BlockState.ALLOCATED, BlockState.ALLOCATED)
    for b in blocks:
        assert pool.state_of(b) is BlockState.QUARANTINED
        assert b not in pool.free_blocks()
    assert pool.blocks_of("acme") == []
    assert pool.lookup_prefix("acme", b"h") is None

    pending = pool.allocate("acme", "r2", 1)
    pool.release("acme", "r2")
    with pytest.raises(UnscrubbedFree):
        pool.free(pending)  # PENDING_SCRUB is not clean either
    assert pool.state_of(pending[0]) is BlockState.QUARANTINED


def test_mixed_free_frees_nothing_and_quarantines_the_dirty(pool: BlockPool) -> None:
    scrubber = Scrubber(pool)
    pool.allocate("acme", "r1", 2)
    clean = pool.release("acme", "r1")
    scrubber.scrub(clean, tenant="acme")
    (dirty_block,) = pool.allocate("acme", "r2", 1)
    with pytest.raises(UnscrubbedFree):
        pool.free([*clean, dirty_block])
    assert all(pool.state_of(b) is BlockState.VERIFIED_CLEAN for b in clean)
    assert pool.state_of(dirty_block) is BlockState.QUARANTINED
    pool.free(clean)
    assert all(pool.state_of(b) is BlockState.FREE for b in clean)


def test_quarantined_blocks_are_never_reallocated(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 4)
    with pytest.raises(UnscrubbedFree):
        pool.free(blocks)
    got = pool.allocate("zeta", "r1", SMALL.num_blocks - 4)
    assert not set(got) & set(blocks)
    with pytest.raises(PoolExhausted):
        pool.allocate("zeta", "r2", 1)


def test_ttl_nonpositive_rejects_allocation_without_taking_blocks(pool: BlockPool) -> None:
    for ttl in (0.0, -5.0):
        with pytest.raises(PolicyViolation) as err:
            pool.allocate("acme", f"r{ttl}", 2, policy=SessionPolicy(ttl_s=ttl))
        assert err.value.reason is ExpiryReason.TTL_NONPOSITIVE
    assert len(pool.free_blocks()) == SMALL.num_blocks


def test_ttl_nonpositive_on_a_live_session_quarantines_at_once(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 3)
    dirty(pool, blocks)
    pool.register_prefix("acme", "r1", b"h", blocks[0])
    quarantined = pool.set_policy("acme", "r1", SessionPolicy(ttl_s=0))
    assert quarantined == blocks
    assert all(pool.state_of(b) is BlockState.QUARANTINED for b in blocks)
    assert pool.blocks_of("acme") == [] and pool.lookup_prefix("acme", b"h") is None
    # Quarantine also zero-fills (best effort) so the payload does not stay resident.
    assert all(block_is_zero(pool, b) for b in blocks)
    with pytest.raises(KeyError):
        pool.set_policy("acme", "r1", SessionPolicy())  # the session is gone


def test_ttl_expiry_uses_the_injected_clock(device: str) -> None:
    clock = FakeClock(100.0)
    pool = BlockPool(SMALL, device, clock=clock, policy=SessionPolicy(ttl_s=30.0))
    pool.allocate("acme", "old", 1)
    clock.advance(20)
    pool.allocate("acme", "young", 1)
    pool.allocate("zeta", "forever", 1, policy=SessionPolicy(ttl_s=math.inf))
    assert pool.expired_sessions() == []
    clock.advance(10)
    expired = pool.expired_sessions()
    assert [(e.key, e.reason) for e in expired] == [
        (SessionKey("acme", "old"), ExpiryReason.TTL_EXPIRED)
    ]
    assert {e.key.request_id for e in pool.expired_sessions(now=1e9)} == {"old", "young"}


def test_max_reuse_triggers(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 1, policy=SessionPolicy(max_reuse=2))
    pool.register_prefix("acme", "r1", b"h", blocks[0])
    assert pool.lookup_prefix("acme", b"h") == blocks[0]  # reuse 1
    assert pool.mark_reuse("acme", "r1") is None  # reuse 2
    assert pool.expired_sessions() == []
    # The third reuse exceeds the budget: the hit becomes a miss and the
    # session is due for a scrub.
    assert pool.lookup_prefix("acme", b"h") is None
    (exp,) = pool.expired_sessions()
    assert exp.key == SessionKey("acme", "r1") and exp.reason is ExpiryReason.MAX_REUSE
    assert pool.mark_reuse("acme", "r1") is ExpiryReason.MAX_REUSE


def test_policy_validation() -> None:
    with pytest.raises(ValueError):
        SessionPolicy(ttl_s=float("nan"))
    with pytest.raises(ValueError):
        SessionPolicy(max_reuse=-2)
    with pytest.raises(ValueError):
        PoolShape(0, 1, 1, 1, 1)


def test_write_read_roundtrip_and_state_counts(pool: BlockPool) -> None:
    blocks = pool.allocate("acme", "r1", 2)
    values = dirty(pool, blocks, seed=3)
    assert torch.equal(pool.read(blocks).cpu(), values)
    counts = pool.state_counts()
    assert counts[BlockState.ALLOCATED] == 2 and counts[BlockState.FREE] == SMALL.num_blocks - 2
