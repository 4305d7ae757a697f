"""Property: across any interleaving of allocate/append/write/release/scrub/free
over several tenants, no block a tenant can read holds another tenant's data,
and the free list only ever holds verified-zero blocks.

The model tracks what each live block must contain (zeros since allocation,
or exactly what its own session wrote); reading every live block and comparing
against the model proves no residue crosses a reallocation. Zeroization
faults are injected at random to prove a missed block is quarantined, not
handed to the next tenant.
"""

from __future__ import annotations

import torch
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cachet.processors.kvscrub.errors import PoolExhausted, UnscrubbedFree
from cachet.processors.kvscrub.policy import SessionKey
from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.report import ScrubMethod
from cachet.processors.kvscrub.scrub import ScrubSettings
from cachet.processors.kvscrub.state import BlockState

from .helpers import SAMPLE_KEY, SkipOneScrubber

SHAPE = PoolShape(num_blocks=10, layers=2, heads=1, head_dim=4, block_size=2, dtype=torch.float32)
TENANTS = ("t0", "t1", "t2")


class PoolIsolation(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.pool = BlockPool(SHAPE, "cpu")
        self.scrubber = SkipOneScrubber(self.pool, ScrubSettings(double_pass=False))
        self.sampled = SkipOneScrubber(
            self.pool,
            ScrubSettings(
                method=ScrubMethod.SAMPLED,
                sample_key=SAMPLE_KEY,
                coverage_threshold=0.01,
                sample_fraction=1.0,
            ),
        )
        self.sessions: dict[SessionKey, list[int]] = {}
        self.expected: dict[int, torch.Tensor] = {}  # live block -> its only allowed content
        self.owner_data: dict[int, str] = {}  # live block -> tenant whose data it holds
        self.pending: dict[str, list[int]] = {t: [] for t in TENANTS}
        self.clean: list[int] = []
        self.quarantined: set[int] = set()
        self.counter = 0

    # ------------------------------------------------------------------ rules
    @rule(tenant=st.sampled_from(TENANTS), n=st.integers(0, 4))
    def allocate(self, tenant: str, n: int) -> None:
        self.counter += 1
        key = SessionKey(tenant, f"r{self.counter}")
        available = len(self.pool.free_blocks())
        try:
            blocks = self.pool.allocate(key.tenant, key.request_id, n)
        except PoolExhausted:
            assert n > available
            return
        assert n <= available
        self.sessions[key] = blocks
        for b in blocks:
            self.expected[b] = torch.zeros(SHAPE.block_dims)

    @precondition(lambda self: self.sessions)
    @rule(data=st.data(), n=st.integers(1, 2))
    def append(self, data: st.DataObject, n: int) -> None:
        key = data.draw(st.sampled_from(sorted(self.sessions, key=repr)))
        try:
            blocks = self.pool.append(key.tenant, key.request_id, n)
        except PoolExhausted:
            return
        self.sessions[key].extend(blocks)
        for b in blocks:
            self.expected[b] = torch.zeros(SHAPE.block_dims)

    @precondition(lambda self: any(self.sessions.values()))
    @rule(data=st.data(), seed=st.integers(0, 2**31 - 1))
    def write(self, data: st.DataObject, seed: int) -> None:
        key = data.draw(
            st.sampled_from(sorted((k for k, v in self.sessions.items() if v), key=repr))
        )
        blocks = data.draw(st.lists(st.sampled_from(self.sessions[key]), min_size=1, unique=True))
        gen = torch.Generator().manual_seed(seed)
        # Random nonzero payload, sign-mixed, tagged by tenant in magnitude.
        tag = 10.0 * (TENANTS.index(key.tenant) + 1)
        values = torch.rand((len(blocks), *SHAPE.block_dims), generator=gen) + tag
        values = values * (torch.randint(0, 2, values.shape, generator=gen) * 2 - 1)
        self.pool.write(blocks, values)
        for b, v in zip(blocks, values, strict=True):
            self.expected[b] = v.clone()
            self.owner_data[b] = key.tenant

    @precondition(lambda self: self.sessions)
    @rule(data=st.data())
    def release(self, data: st.DataObject) -> None:
        key = data.draw(st.sampled_from(sorted(self.sessions, key=repr)))
        blocks = self.pool.release(key.tenant, key.request_id)
        assert blocks == self.sessions.pop(key)
        self.pending[key.tenant].extend(blocks)
        for b in blocks:
            assert self.pool.state_of(b) is BlockState.PENDING_SCRUB

    @precondition(lambda self: any(self.pending.values()))
    @rule(data=st.data(), fault=st.booleans(), use_sampled=st.booleans())
    def scrub(self, data: st.DataObject, fault: bool, use_sampled: bool) -> None:
        tenant = data.draw(st.sampled_from([t for t in TENANTS if self.pending[t]]))
        blocks = self.pending[tenant]
        scrubber = self.sampled if use_sampled else self.scrubber
        skip = data.draw(st.sampled_from(blocks)) if fault else -1
        scrubber.skip = skip
        report = scrubber.scrub(blocks, tenant=tenant)
        # A skipped block fails iff it held data; a never-written one is zero anyway.
        held_data = skip >= 0 and bool((self.expected[skip] != 0).any())
        assert set(report.quarantined) == ({skip} if held_data else set())
        assert set(report.verified) == set(blocks) - set(report.quarantined)
        self.clean.extend(report.verified)
        self.quarantined.update(report.quarantined)
        for b in blocks:
            self.expected.pop(b, None)
            self.owner_data.pop(b, None)
        self.pending[tenant] = []

    @precondition(lambda self: self.clean)
    @rule()
    def free(self) -> None:
        self.pool.free(self.clean)
        self.clean = []

    @precondition(lambda self: any(self.sessions.values()) or any(self.pending.values()))
    @rule(data=st.data())
    def free_unscrubbed(self, data: st.DataObject) -> None:
        candidates = [b for v in self.sessions.values() for b in v]
        candidates += [b for v in self.pending.values() for b in v]
        victim = data.draw(st.sampled_from(sorted(candidates)))
        try:
            self.pool.free([victim])
        except UnscrubbedFree:
            pass
        else:  # pragma: no cover - the property under test
            raise AssertionError("freed an unscrubbed block")
        self.quarantined.add(victim)
        for blocks in (*self.sessions.values(), *self.pending.values()):
            if victim in blocks:
                blocks.remove(victim)
        self.expected.pop(victim, None)
        self.owner_data.pop(victim, None)

    # ------------------------------------------------------------- invariants
    @invariant()
    def every_readable_block_holds_only_its_own_sessions_data(self) -> None:
        for key, blocks in self.sessions.items():
            assert sorted(self.pool.blocks_of(key.tenant, key.request_id)) == sorted(blocks)
            if not blocks:
                continue
            got = self.pool.read(blocks)
            for b, content in zip(blocks, got, strict=True):
                assert torch.equal(content, self.expected[b]), f"block {b} leaks data"
                assert self.owner_data.get(b, key.tenant) == key.tenant

    @invariant()
    def free_list_holds_only_verified_zero_blocks(self) -> None:
        free = self.pool.free_blocks()
        assert len(free) == len(set(free))
        for b in free:
            assert self.pool.state_of(b) is BlockState.FREE
            assert bool((self.pool.words[b] == 0).all()), f"free block {b} is not zero"
        assert not set(free) & self.quarantined

    @invariant()
    def quarantine_is_forever(self) -> None:
        for b in self.quarantined:
            assert self.pool.state_of(b) is BlockState.QUARANTINED
        live = {b for v in self.sessions.values() for b in v}
        assert not live & self.quarantined

    @invariant()
    def states_add_up(self) -> None:
        counts = self.pool.state_counts()
        assert counts[BlockState.ALLOCATED] == sum(len(v) for v in self.sessions.values())
        assert counts[BlockState.PENDING_SCRUB] == sum(len(v) for v in self.pending.values())
        assert counts[BlockState.VERIFIED_CLEAN] == len(self.clean)
        assert counts[BlockState.QUARANTINED] == len(self.quarantined)
        assert sum(counts.values()) == SHAPE.num_blocks


PoolIsolation.TestCase.settings = settings(
    max_examples=150,
    stateful_step_count=40,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
TestPoolIsolation = PoolIsolation.TestCase
