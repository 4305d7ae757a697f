"""A paged KV-cache block pool with per-session block tables and a strict
block lifecycle:

    FREE -> ALLOCATED -> PENDING_SCRUB -> VERIFIED_CLEAN -> FREE
                              \\-> QUARANTINED (verification failed)
    any state but FREE/VERIFIED_CLEAN --free()--> QUARANTINED (+ UnscrubbedFree)

The storage is ONE contiguous tensor ``[num_blocks, layers, 2, heads,
block_size, head_dim]`` with the block index leading, so any set of blocks is
one index over dim 0 and a scrub is one indexed device op, whatever the number
of blocks and layers.

Invariants this module protects (the scrubber relies on them):

* The free list holds only blocks that were never written since they were
  last verified zero (or since the pool was created zeroed).
* A block leaves its block table and the prefix cache *before* it is
  scrubbed, so nothing can read or extend it while it is being zeroized.
* A quarantined block never returns to circulation.

No payload ever reaches a log or an error message: only tenants, request ids,
block ids and counts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

import torch

from cachet.processors.kvscrub.errors import (
    BlockStateError,
    PolicyViolation,
    PoolExhausted,
    UnscrubbedFree,
)
from cachet.processors.kvscrub.policy import (
    Clock,
    ExpiredSession,
    ExpiryReason,
    SessionKey,
    SessionPolicy,
    evaluate,
    monotonic_clock,
)
from cachet.processors.kvscrub.prefix_cache import PrefixCache, PrefixKey
from cachet.processors.kvscrub.state import BlockState, QuarantineReason

__all__ = [
    "BlockPool",
    "PoolShape",
]

logger = logging.getLogger(__name__)

# Integer dtypes by byte width: verification compares bit patterns, not float
# values, because -0.0 == 0 numerically yet still carries a residual bit.
_WORD_DTYPES: dict[int, torch.dtype] = {
    8: torch.int64,
    4: torch.int32,
    2: torch.int16,
    1: torch.uint8,
}


# --------------------------------------------------------------------- values
@dataclass(frozen=True, slots=True)
class PoolShape:
    """The geometry of a block pool; one block holds K and V of every layer."""

    num_blocks: int
    layers: int
    heads: int
    head_dim: int
    block_size: int
    dtype: torch.dtype = torch.bfloat16

    def __post_init__(self) -> None:
        for name in ("num_blocks", "layers", "heads", "head_dim", "block_size"):
            if getattr(self, name) <= 0:
                raise ValueError(f"PoolShape.{name} must be > 0, got {getattr(self, name)}")
        if self.element_size not in _WORD_DTYPES:
            raise ValueError(f"PoolShape.dtype {self.dtype} has an unsupported element size")

    @property
    def block_dims(self) -> tuple[int, int, int, int, int]:
        """The shape of one block: ``(layers, 2, heads, block_size, head_dim)``."""
        return (self.layers, 2, self.heads, self.block_size, self.head_dim)

    @property
    def element_size(self) -> int:
        """Bytes per stored element (from the dtype, not assumed)."""
        return torch.empty((), dtype=self.dtype).element_size()

    @property
    def block_elements(self) -> int:
        """Elements per block."""
        return self.layers * 2 * self.heads * self.block_size * self.head_dim

    @property
    def block_bytes(self) -> int:
        """Bytes per block."""
        return self.block_elements * self.element_size

    @property
    def pool_bytes(self) -> int:
        """Bytes of the whole pool tensor."""
        return self.block_bytes * self.num_blocks


@dataclass(slots=True)
class _Session:
    """Mutable bookkeeping of one live session (internal, never exposed)."""

    blocks: list[int]
    policy: SessionPolicy
    created_at: float
    reuse_count: int = 0
    prefix_keys: set[PrefixKey] = field(default_factory=set)


# ----------------------------------------------------------------------- pool
class BlockPool:
    """A KV-cache block pool with block tables per ``(tenant, request_id)``.

    ``policy`` is the default :class:`SessionPolicy` for new sessions; ``clock``
    supplies session creation and expiry times (inject one in tests and
    replay). The pool tensor is created zeroed: fresh device memory may hold
    another process's data, and the free list promises clean blocks.
    """

    def __init__(
        self,
        shape: PoolShape,
        device: str | torch.device = "cpu",
        *,
        policy: SessionPolicy | None = None,
        clock: Clock = monotonic_clock,
    ) -> None:
        self.shape = shape
        dev = torch.device(device)
        if dev.type == "cuda" and dev.index is None:
            # Name the concrete device so reports say "cuda:0", not "cuda".
            dev = torch.device("cuda", torch.cuda.current_device())
        self.device = dev
        self.default_policy = policy if policy is not None else SessionPolicy()
        self._clock = clock
        self._lock = threading.RLock()
        self._tensor = torch.zeros(
            (shape.num_blocks, *shape.block_dims), dtype=shape.dtype, device=self.device
        )
        flat_bytes = self._tensor.view(shape.num_blocks, -1).view(torch.uint8)
        self._elements = flat_bytes.view(_WORD_DTYPES[shape.element_size])
        word = next(w for w in _WORD_DTYPES if shape.block_bytes % w == 0)
        self._words = flat_bytes.view(_WORD_DTYPES[word])
        self._states: list[BlockState] = [BlockState.FREE] * shape.num_blocks
        # An ordered set used as a LIFO stack: popitem() hands out the most
        # recently freed block first, which keeps reuse (and so any isolation
        # bug) as likely as possible.
        self._free: dict[int, None] = dict.fromkeys(range(shape.num_blocks - 1, -1, -1))
        self._sessions: dict[str, dict[str, _Session]] = {}
        # The session every non-FREE block belongs (or last belonged) to.
        self._owner: dict[int, SessionKey] = {}
        self._prefix = PrefixCache()

    # ------------------------------------------------------------ tensor views
    @property
    def tensor(self) -> torch.Tensor:
        """The pool tensor ``[num_blocks, layers, 2, heads, block_size, head_dim]``."""
        return self._tensor

    @property
    def words(self) -> torch.Tensor:
        """The pool as ``[num_blocks, W]`` of the widest integer word dividing a block.

        Same storage as :attr:`tensor`; a zero word means zero bits.
        """
        return self._words

    @property
    def elements(self) -> torch.Tensor:
        """The pool as ``[num_blocks, block_elements]`` integers of the element's size."""
        return self._elements

    # ------------------------------------------------------------ allocation
    def allocate(
        self,
        tenant: str,
        request_id: str,
        n_blocks: int,
        *,
        policy: SessionPolicy | None = None,
    ) -> list[int]:
        """Open a session and give it ``n_blocks`` clean blocks.

        Raises :class:`PolicyViolation` (taking no blocks) when the policy holds
        nothing, :class:`PoolExhausted` when the pool is short, ``ValueError``
        when the session already exists.
        """
        key = SessionKey(tenant, request_id)
        policy = policy if policy is not None else self.default_policy
        if policy.holds_nothing:
            raise PolicyViolation(key, ExpiryReason.TTL_NONPOSITIVE)
        with self._lock:
            if request_id in self._sessions.get(tenant, {}):
                raise ValueError(f"session tenant={tenant!r} request={request_id!r} exists")
            blocks = self._take(key, n_blocks)
            self._sessions.setdefault(tenant, {})[request_id] = _Session(
                blocks=blocks, policy=policy, created_at=self._clock()
            )
        return list(blocks)

    def append(self, tenant: str, request_id: str, n_more: int) -> list[int]:
        """Give an existing session ``n_more`` blocks; returns the new ones."""
        with self._lock:
            session = self._session(tenant, request_id)
            blocks = self._take(SessionKey(tenant, request_id), n_more)
            session.blocks.extend(blocks)
        return list(blocks)

    def blocks_of(self, tenant: str, request_id: str | None = None) -> list[int]:
        """The blocks one request (or, without ``request_id``, a whole tenant) can read."""
        with self._lock:
            requests = self._sessions.get(tenant, {})
            if request_id is not None:
                session = requests.get(request_id)
                return list(session.blocks) if session else []
            return [b for s in requests.values() for b in s.blocks]

    def sessions(self) -> list[SessionKey]:
        """Every live session."""
        with self._lock:
            return [SessionKey(t, r) for t, reqs in self._sessions.items() for r in reqs]

    # ------------------------------------------------------------ data access
    def write(self, block_ids: Sequence[int], values: torch.Tensor | float) -> None:
        """Write ``values`` (``[n, *block_dims]`` or a scalar) into allocated blocks."""
        with self._lock:
            for b in block_ids:
                self._expect(b, "write", BlockState.ALLOCATED)
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        if isinstance(values, torch.Tensor):
            self._tensor.index_copy_(0, idx, values.to(self.device, self.shape.dtype))
        else:
            self._tensor.index_fill_(0, idx, values)

    def read(self, block_ids: Sequence[int]) -> torch.Tensor:
        """A copy of allocated blocks (tests, demos); never of unreachable ones."""
        with self._lock:
            for b in block_ids:
                self._expect(b, "read", BlockState.ALLOCATED)
        idx = torch.as_tensor(list(block_ids), dtype=torch.long, device=self.device)
        return self._tensor.index_select(0, idx)

    # ------------------------------------------------------------ prefix cache
    def register_prefix(
        self, tenant: str, request_id: str, block_hash: bytes, block_id: int
    ) -> None:
        """Publish a full block of a session under its content hash for reuse.

        Keys are scoped by tenant: a cross-tenant prefix hit would both leak
        data and open a timing side channel on another tenant's prompts.
        """
        with self._lock:
            session = self._session(tenant, request_id)
            if block_id not in session.blocks:
                raise ValueError(
                    f"block {block_id} is not in tenant={tenant!r} request={request_id!r}"
                )
            self._prefix.publish(tenant, block_hash, block_id)

    def lookup_prefix(self, tenant: str, block_hash: bytes) -> int | None:
        """The block cached under ``block_hash`` for ``tenant``, counting one reuse.

        A hit on a session that has used up its reuse budget is a miss: the
        block must be scrubbed, not served again.
        """
        with self._lock:
            block = self._prefix.get(tenant, block_hash)
            if block is None:
                return None
            owner = self._owner_session(block)
            if owner is None:
                return None
            owner.reuse_count += 1
            if (
                evaluate(
                    owner.policy,
                    created_at=owner.created_at,
                    reuse_count=owner.reuse_count,
                    now=self._clock(),
                )
                is not None
            ):
                return None
            return block

    def prefix_entries(self) -> dict[PrefixKey, int]:
        """A snapshot of the prefix cache ``(tenant, hash) -> block``."""
        with self._lock:
            return self._prefix.snapshot()

    # ------------------------------------------------------------ policies
    def mark_reuse(self, tenant: str, request_id: str) -> ExpiryReason | None:
        """Count one reuse of a session; returns the expiry it caused, if any."""
        with self._lock:
            session = self._session(tenant, request_id)
            session.reuse_count += 1
            return evaluate(
                session.policy,
                created_at=session.created_at,
                reuse_count=session.reuse_count,
                now=self._clock(),
            )

    def expired_sessions(self, now: float | None = None) -> list[ExpiredSession]:
        """Sessions whose policy says they must be scrubbed at ``now`` (default: the clock)."""
        with self._lock:
            at = self._clock() if now is None else now
            out: list[ExpiredSession] = []
            for tenant, requests in self._sessions.items():
                for request_id, s in requests.items():
                    reason = evaluate(
                        s.policy, created_at=s.created_at, reuse_count=s.reuse_count, now=at
                    )
                    if reason is not None:
                        out.append(ExpiredSession(SessionKey(tenant, request_id), reason))
            return out

    def set_policy(self, tenant: str, request_id: str, policy: SessionPolicy) -> list[int]:
        """Change a live session's policy.

        A policy that holds nothing (``ttl_s <= 0``) quarantines the session's
        blocks at once: they become unreachable and never return to
        circulation (a best-effort unverified zero fill is still issued).
        Returns the quarantined block ids (empty otherwise).
        """
        with self._lock:
            session = self._session(tenant, request_id)
            if not policy.holds_nothing:
                session.policy = policy
                return []
            blocks = self._detach(SessionKey(tenant, request_id))
            self.quarantine(blocks, QuarantineReason.TTL_NONPOSITIVE)
            return blocks

    # ------------------------------------------------------------ release / free
    def release(self, tenant: str, request_id: str) -> list[int]:
        """End a session: its blocks become unreachable and PENDING_SCRUB.

        Prefix-cache entries pointing at them are dropped first, so no later
        lookup can hand out a block being scrubbed. The blocks are NOT freed.
        Idempotent: an unknown session releases nothing (events are redelivered).
        """
        with self._lock:
            if request_id not in self._sessions.get(tenant, {}):
                logger.debug("release of unknown session tenant=%s request=%s", tenant, request_id)
                return []
            blocks = self._detach(SessionKey(tenant, request_id))
            for b in blocks:
                self._states[b] = BlockState.PENDING_SCRUB
        logger.debug("released tenant=%s request=%s blocks=%d", tenant, request_id, len(blocks))
        return blocks

    def release_tenant(self, tenant: str) -> list[int]:
        """Release every session of ``tenant``; returns all their blocks."""
        with self._lock:
            request_ids = list(self._sessions.get(tenant, {}))
            return [b for r in request_ids for b in self.release(tenant, r)]

    def free(self, block_ids: Iterable[int]) -> None:
        """Return VERIFIED_CLEAN blocks to the free list.

        Any other block is quarantined and :class:`UnscrubbedFree` raised; in
        that case no block of the call is freed (the caller retries with the
        clean ones), so a mixed batch cannot slip a dirty block through.
        """
        ids = list(dict.fromkeys(block_ids))
        with self._lock:
            bad = [b for b in ids if self._state(b) is not BlockState.VERIFIED_CLEAN]
            if bad:
                states = [self._states[b] for b in bad]
                self.quarantine(bad, QuarantineReason.UNSCRUBBED_FREE)
                raise UnscrubbedFree(bad, states)
            for b in ids:
                self._states[b] = BlockState.FREE
                self._owner.pop(b, None)
                self._free[b] = None

    def quarantine(self, block_ids: Iterable[int], reason: QuarantineReason) -> None:
        """Take blocks out of circulation for good, whatever their state.

        They leave block tables, the prefix cache and the free list; a
        best-effort zero fill (one indexed op, unverified) limits what stays
        resident in device memory.
        """
        ids = list(dict.fromkeys(block_ids))
        if not ids:
            return
        with self._lock:
            for b in ids:
                self._state(b)
                self._unlink(b)
                self._states[b] = BlockState.QUARANTINED
        idx = torch.as_tensor(ids, dtype=torch.long, device=self.device)
        self._words.index_fill_(0, idx, 0)
        logger.warning("quarantined %d KV block(s) reason=%s ids=%s", len(ids), reason.value, ids)

    # ------------------------------------------------------------ scrubber hooks
    def owner_of(self, block_id: int) -> SessionKey | None:
        """The session a block belongs, or last belonged, to (``None`` when FREE)."""
        with self._lock:
            return self._owner.get(block_id)

    def settle_scrub(self, verified: Sequence[int], failed: Sequence[int]) -> None:
        """Record a scrub's verdict: verified -> VERIFIED_CLEAN, failed -> QUARANTINED.

        For :class:`~cachet.processors.kvscrub.scrub.Scrubber`; every block must be
        PENDING_SCRUB (a block cannot be verified twice or after quarantine).
        """
        with self._lock:
            for b in (*verified, *failed):
                self._expect(b, "settle_scrub", BlockState.PENDING_SCRUB)
            for b in verified:
                self._states[b] = BlockState.VERIFIED_CLEAN
        if failed:
            self.quarantine(failed, QuarantineReason.VERIFY_FAILED)

    # ------------------------------------------------------------ inspection
    def state_of(self, block_id: int) -> BlockState:
        """The lifecycle state of one block."""
        with self._lock:
            return self._state(block_id)

    def state_counts(self) -> dict[BlockState, int]:
        """How many blocks are in each state."""
        with self._lock:
            counts = dict.fromkeys(BlockState, 0)
            for s in self._states:
                counts[s] += 1
            return counts

    def free_blocks(self) -> list[int]:
        """The free list, next-to-be-allocated first."""
        with self._lock:
            return list(reversed(self._free))

    # ------------------------------------------------------------ internals
    def _take(self, key: SessionKey, n: int) -> list[int]:
        if n < 0:
            raise ValueError(f"block count must be >= 0, got {n}")
        if n > len(self._free):
            raise PoolExhausted(key.tenant, key.request_id, n, len(self._free))
        blocks = [self._free.popitem()[0] for _ in range(n)]
        for b in blocks:
            # Defends the free-list invariant against bookkeeping bugs: a
            # block on the free list must be FREE, nothing else.
            if self._states[b] is not BlockState.FREE:
                raise BlockStateError("allocate", b, self._states[b], "FREE")
            self._states[b] = BlockState.ALLOCATED
            self._owner[b] = key
        return blocks

    def _detach(self, key: SessionKey) -> list[int]:
        """Remove a session and every prefix entry of its blocks; returns its blocks."""
        requests = self._sessions[key.tenant]
        session = requests.pop(key.request_id)
        if not requests:
            del self._sessions[key.tenant]
        for b in session.blocks:
            self._prefix.drop_block(b)
        return session.blocks

    def _unlink(self, b: int) -> None:
        """Make one block unreachable from anywhere (tables, prefix cache, free list)."""
        self._prefix.drop_block(b)
        self._free.pop(b, None)
        session = self._owner_session(b)
        if session is not None:
            session.blocks.remove(b)

    def _owner_session(self, b: int) -> _Session | None:
        key = self._owner.get(b)
        if key is None or self._states[b] is not BlockState.ALLOCATED:
            return None
        return self._sessions.get(key.tenant, {}).get(key.request_id)

    def _session(self, tenant: str, request_id: str) -> _Session:
        try:
            return self._sessions[tenant][request_id]
        except KeyError:
            raise KeyError(f"no session tenant={tenant!r} request={request_id!r}") from None

    def _state(self, b: int) -> BlockState:
        if not 0 <= b < self.shape.num_blocks:
            raise IndexError(f"block {b} outside pool of {self.shape.num_blocks}")
        return self._states[b]

    def _expect(self, b: int, operation: str, expected: BlockState) -> None:
        state = self._state(b)
        if state is not expected:
            raise BlockStateError(operation, b, state, expected.value)
