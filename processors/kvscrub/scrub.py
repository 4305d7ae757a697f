"""Zeroize released KV-cache blocks, verify them on the device, and settle
their fate: VERIFIED_CLEAN (then free-able) or QUARANTINED (never reused).

The device work of one scrub is, in order, on the worker's stream:

1. zeroize: ONE ``index_fill_`` over dim 0 of the pool's integer word view
   (twice with ``double_pass``) -- never a fill per block or per layer, which
   would be launch-bound on a GPU;
2. verify: a per-block reduction (``aminmax`` of the block's words, or of
   the sampled elements) into one small boolean tensor, gathered in bounded
   chunks so verification never needs a copy of the whole block set;
3. one copy of that boolean tensor to the host, then ONE synchronisation.

Verification compares bit patterns (integer views), so ``-0.0`` or a NaN
left behind counts as dirty.

Sampled verification picks element positions with a keyed XOF: an
HMAC-SHA3-256 of (key, per-scrub nonce, geometry) seeds SHAKE-256, so nobody
without ``sample_key`` can predict which bytes are checked, and an auditor
holding the key can recompute them from the nonce in the report. Coverage is
the fraction of each block's bytes actually read back (distinct sampled
elements x the stored element size / block bytes). When that is below
``coverage_threshold`` the scrub FALLS BACK to full verification (coverage
1.0, ``sampled_fallback=True``) rather than failing: a full check costs one
extra read of the set, a failure would quarantine clean blocks.
"""

from __future__ import annotations

import builtins
import enum
import hashlib
import hmac
import logging
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from processors.kvscrub.errors import BlockStateError, KvScrubError
from processors.kvscrub.policy import ExpiryReason
from processors.kvscrub.pool import BlockPool, BlockState

if TYPE_CHECKING:
    from processors.kvscrub.metrics import ScrubMetrics

__all__ = [
    "ScrubConfigError",
    "ScrubMethod",
    "ScrubReport",
    "ScrubSettings",
    "ScrubTrigger",
    "Scrubber",
    "sample_positions",
]

logger = logging.getLogger(__name__)

_SAMPLE_DOMAIN = b"cachet/kvscrub/sample-positions/v1"
_CPU_VERIFY_CHUNK = 8 << 20  # fits a CPU's last-level cache: gather, then reduce hot
_CUDA_VERIFY_CHUNK = 256 << 20


class ScrubConfigError(KvScrubError, ValueError):
    """Scrub settings that cannot give the promised guarantee."""


class ScrubMethod(enum.Enum):
    """How zeroization is verified (symbols of the ``ScrubMethod`` Avro enum)."""

    FULL = "FULL"
    SAMPLED = "SAMPLED"


class ScrubTrigger(enum.Enum):
    """Why blocks are scrubbed (symbols of the ``ScrubTrigger`` Avro enum)."""

    REQUEST_FINISHED = "REQUEST_FINISHED"
    TTL_EXPIRED = "TTL_EXPIRED"
    MAX_REUSE = "MAX_REUSE"
    REVOCATION = "REVOCATION"
    ERASURE = "ERASURE"
    UNKNOWN = "UNKNOWN"


_TRIGGER_OF_EXPIRY: dict[ExpiryReason, ScrubTrigger] = {
    ExpiryReason.TTL_EXPIRED: ScrubTrigger.TTL_EXPIRED,
    ExpiryReason.TTL_NONPOSITIVE: ScrubTrigger.TTL_EXPIRED,
    ExpiryReason.MAX_REUSE: ScrubTrigger.MAX_REUSE,
}


@dataclass(frozen=True, slots=True)
class ScrubSettings:
    """How to scrub.

    ``sample_fraction`` (SAMPLED only): the share of each block's elements
    checked. With the default threshold of 0.999 a fraction below that always
    falls back to full verification; lower the threshold deliberately to
    trade assurance for speed. ``sample_key`` must be secret and at least 16
    bytes for SAMPLED (a keyless sample is predictable, the flaw this design
    exists to fix). ``verify_chunk_bytes``: bound on the temporary gather
    buffer; ``None`` picks a per-device default.
    """

    method: ScrubMethod = ScrubMethod.FULL
    coverage_threshold: float = 0.999
    double_pass: bool = False
    sample_key: bytes = b""
    sample_fraction: float = 0.01
    verify_chunk_bytes: int | None = None

    def __post_init__(self) -> None:
        if not 0.0 < self.coverage_threshold <= 1.0:
            raise ScrubConfigError(
                f"coverage_threshold must be in (0, 1], got {self.coverage_threshold}"
            )
        if not 0.0 < self.sample_fraction <= 1.0:
            raise ScrubConfigError(f"sample_fraction must be in (0, 1], got {self.sample_fraction}")
        if self.method is ScrubMethod.SAMPLED and len(self.sample_key) < 16:
            raise ScrubConfigError("SAMPLED verification needs a secret sample_key of >= 16 bytes")
        if self.verify_chunk_bytes is not None and self.verify_chunk_bytes <= 0:
            raise ScrubConfigError("verify_chunk_bytes must be > 0")

    def __repr__(self) -> str:
        # The sample key is a secret: never let a repr carry it into a log.
        return (
            f"ScrubSettings(method={self.method.value}, coverage_threshold="
            f"{self.coverage_threshold}, double_pass={self.double_pass}, "
            f"sample_fraction={self.sample_fraction}, sample_key=<{len(self.sample_key)} bytes>)"
        )


@dataclass(frozen=True, slots=True)
class ScrubReport:
    """What one scrub did; carries ids, counts and timings, never payload.

    ``bytes``: bytes zeroized per pass. ``coverage``: fraction of each block's
    bytes verified. ``method``: the verification actually run (FULL after a
    sampled fallback). ``nonce``: the sampling nonce (empty for FULL), so an
    auditor with the key can recompute the positions checked.
    """

    tenant: str
    request_id: str | None
    trigger: ScrubTrigger
    blocks: int
    bytes: int
    coverage: float
    method: ScrubMethod
    passes: int
    duration_us: int
    verified: tuple[int, ...]
    quarantined: tuple[int, ...]
    device: str
    # `bytes` is a field name above, hence the qualified type.
    nonce: builtins.bytes = b""
    sampled_fallback: bool = False

    @property
    def clean(self) -> bool:
        """True when every block verified zero."""
        return not self.quarantined


def sample_positions(key: bytes, nonce: bytes, elements: int, count: int) -> np.ndarray:
    """``count`` distinct element positions in ``[0, elements)``, sorted, from a keyed XOF.

    Deterministic in ``(key, nonce, elements, count)``; unpredictable without
    ``key``. Domain-separated and length-prefixed so no other Cachet hash
    input can collide with it.
    """
    if not 0 < count <= elements:
        raise ValueError(f"need 0 < count <= elements, got count={count} elements={elements}")
    message = b"".join(
        (
            _SAMPLE_DOMAIN,
            len(nonce).to_bytes(4, "big"),
            nonce,
            elements.to_bytes(8, "big"),
            count.to_bytes(8, "big"),
        )
    )
    seed = hmac.new(key, message, hashlib.sha3_256).digest()
    xof = hashlib.shake_256(seed)
    picked: np.ndarray
    if count * 4 >= elements:
        # Dense: a keyed random priority per element, keep the `count` smallest.
        prio = np.frombuffer(xof.digest(8 * elements), dtype="<u8")
        picked = (
            np.arange(elements) if count == elements else np.argpartition(prio, count - 1)[:count]
        )
    else:
        # Sparse: draw with replacement, keep first occurrences until `count`
        # distinct. XOF output is prefix-stable, so growing the draw is
        # deterministic. Modulo bias is < elements / 2**64: negligible.
        draws = 2 * count
        while True:
            values = np.frombuffer(xof.digest(8 * draws), dtype="<u8") % np.uint64(elements)
            _, first = np.unique(values, return_index=True)
            if first.size >= count:
                picked = values[np.sort(first)[:count]]
                break
            draws *= 2
    return np.sort(picked.astype(np.int64))


class Scrubber:
    """Scrubs a :class:`BlockPool`'s released blocks and frees the clean ones.

    ``stream``: the worker's CUDA stream (default: the device's current
    stream); ignored on CPU. ``nonce_source``: per-scrub sampling nonces
    (default 16 random bytes; inject for replay). ``metrics``: optional sink
    for every report.
    """

    def __init__(
        self,
        pool: BlockPool,
        settings: ScrubSettings | None = None,
        *,
        stream: torch.cuda.Stream | None = None,
        metrics: ScrubMetrics | None = None,
        nonce_source: Callable[[], bytes] | None = None,
    ) -> None:
        self.pool = pool
        self.settings = settings if settings is not None else ScrubSettings()
        self._stream = stream
        self._metrics = metrics
        self._nonce_source = nonce_source if nonce_source is not None else _random_nonce
        self._is_cuda = pool.device.type == "cuda"
        default_chunk = _CUDA_VERIFY_CHUNK if self._is_cuda else _CPU_VERIFY_CHUNK
        self._chunk_bytes = self.settings.verify_chunk_bytes or default_chunk
        if (
            self.settings.method is ScrubMethod.SAMPLED
            and self.sampled_coverage() < self.settings.coverage_threshold
        ):
            logger.warning(
                "sampled coverage %.6f is below threshold %.6f: every scrub will fall back "
                "to full verification",
                self.sampled_coverage(),
                self.settings.coverage_threshold,
            )

    # ------------------------------------------------------------ public API
    def sampled_coverage(self) -> float:
        """Fraction of each block's bytes a SAMPLED verification reads back."""
        shape = self.pool.shape
        count = self._sample_count()
        return count * self.pool.elements.element_size() / shape.block_bytes

    def scrub(
        self,
        block_ids: Sequence[int],
        *,
        tenant: str,
        request_id: str | None = None,
        trigger: ScrubTrigger = ScrubTrigger.UNKNOWN,
    ) -> ScrubReport:
        """Zeroize and verify released blocks of ``tenant``; settle their states.

        Every block must be PENDING_SCRUB and belong to ``tenant`` (and to
        ``request_id`` when given), else :class:`BlockStateError` and nothing
        is touched. Verified blocks become VERIFIED_CLEAN (call
        :meth:`BlockPool.free`), failed ones QUARANTINED.
        """
        ids = list(dict.fromkeys(block_ids))
        self._check_scrubbable(ids, tenant, request_id)
        passes = 2 if self.settings.double_pass else 1
        nonce, positions, coverage, method, fallback = self._plan()
        if ids:
            flags, duration_us = self._run_device(ids, passes, positions)
        else:
            flags, duration_us = [], 0
        verified = tuple(b for b, ok in zip(ids, flags, strict=True) if ok)
        failed = tuple(b for b, ok in zip(ids, flags, strict=True) if not ok)
        self.pool.settle_scrub(verified, failed)
        report = ScrubReport(
            tenant=tenant,
            request_id=request_id,
            trigger=trigger,
            blocks=len(ids),
            bytes=len(ids) * self.pool.shape.block_bytes,
            coverage=coverage,
            method=method,
            passes=passes,
            duration_us=duration_us,
            verified=verified,
            quarantined=failed,
            device=str(self.pool.device),
            nonce=nonce,
            sampled_fallback=fallback,
        )
        log = logger.error if failed else logger.info
        log(
            "kv scrub tenant=%s request=%s trigger=%s blocks=%d bytes=%d coverage=%.6f "
            "method=%s passes=%d duration_us=%d quarantined=%s device=%s",
            tenant,
            request_id,
            trigger.value,
            report.blocks,
            report.bytes,
            coverage,
            method.value,
            passes,
            duration_us,
            list(failed),
            report.device,
        )
        if self._metrics is not None:
            self._metrics.observe(report)
        return report

    def scrub_request(
        self, tenant: str, request_id: str, trigger: ScrubTrigger = ScrubTrigger.REQUEST_FINISHED
    ) -> ScrubReport:
        """Release one request's blocks, scrub them in one op, free the verified ones."""
        ids = self.pool.release(tenant, request_id)
        report = self.scrub(ids, tenant=tenant, request_id=request_id, trigger=trigger)
        self.pool.free(report.verified)
        return report

    def scrub_tenant(
        self, tenant: str, trigger: ScrubTrigger = ScrubTrigger.REVOCATION
    ) -> ScrubReport:
        """Release every request of ``tenant``, scrub all their blocks in one op, free the clean."""
        ids = self.pool.release_tenant(tenant)
        report = self.scrub(ids, tenant=tenant, request_id=None, trigger=trigger)
        self.pool.free(report.verified)
        return report

    def enforce_policies(self, now: float | None = None) -> list[ScrubReport]:
        """Scrub every session whose TTL or reuse budget is spent at ``now``."""
        return [
            self.scrub_request(e.key.tenant, e.key.request_id, _TRIGGER_OF_EXPIRY[e.reason])
            for e in self.pool.expired_sessions(now)
        ]

    # ------------------------------------------------------------ device steps
    def _zeroize(self, idx: torch.Tensor) -> None:
        """One pass: every selected block zeroed by ONE indexed fill over dim 0."""
        self.pool.words.index_fill_(0, idx, 0)

    def _verify(self, idx: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Per-block ``True`` where every checked word is zero, as one device tensor.

        Gathers at most ``verify_chunk_bytes`` at a time into one reused
        scratch buffer: a loop over chunks, never over blocks or layers.
        """
        n = idx.numel()
        source = self.pool.words if positions is None else self.pool.elements
        width = source.shape[1] if positions is None else positions.numel()
        row_bytes = width * source.element_size()
        rows = max(1, min(n, self._chunk_bytes // row_bytes))
        scratch = None
        if positions is None:
            scratch = torch.empty((rows, width), dtype=source.dtype, device=source.device)
        clean = torch.empty(n, dtype=torch.bool, device=source.device)
        for start in range(0, n, rows):
            chunk = idx[start : start + rows]
            m = chunk.numel()
            if positions is None:
                assert scratch is not None
                gathered = torch.index_select(source, 0, chunk, out=scratch[:m])
            else:
                gathered = source[chunk.unsqueeze(1), positions.unsqueeze(0)]
            low, high = torch.aminmax(gathered, dim=1)
            torch.logical_and(low.eq(0), high.eq(0), out=clean[start : start + m])
        return clean

    def _run_device(
        self, ids: list[int], passes: int, positions: np.ndarray | None
    ) -> tuple[list[bool], int]:
        """Zeroize ``passes`` times, verify, read the verdict back once; returns (flags, us)."""
        if self._is_cuda:
            return self._run_cuda(ids, passes, positions)
        idx = torch.as_tensor(ids, dtype=torch.long)
        pos = None if positions is None else torch.from_numpy(positions)
        t0 = time.perf_counter_ns()
        for _ in range(passes):
            self._zeroize(idx)
        clean = self._verify(idx, pos)
        t1 = time.perf_counter_ns()
        return clean.tolist(), (t1 - t0) // 1000

    def _run_cuda(
        self, ids: list[int], passes: int, positions: np.ndarray | None
    ) -> tuple[list[bool], int]:
        device = self.pool.device
        stream = self._stream if self._stream is not None else torch.cuda.current_stream(device)
        # The model wrote K/V on the compute stream; the scrub must not race
        # ahead of those writes, or it would verify a block that is then
        # dirtied by a late kernel.
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            idx = torch.as_tensor(ids, dtype=torch.long).to(device, non_blocking=True)
            pos = None
            if positions is not None:
                pos = torch.from_numpy(positions).to(device, non_blocking=True)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(passes):
                self._zeroize(idx)
            clean = self._verify(idx, pos)
            end.record(stream)
            host = torch.empty(len(ids), dtype=torch.bool, pin_memory=True)
            host.copy_(clean, non_blocking=True)
            done = torch.cuda.Event()
            done.record(stream)
        done.synchronize()  # the one synchronisation before the verdict is read
        duration_us = round(start.elapsed_time(end) * 1000.0)
        return host.tolist(), duration_us

    # ------------------------------------------------------------ planning
    def _sample_count(self) -> int:
        elements = self.pool.shape.block_elements
        return max(1, min(elements, math.ceil(self.settings.sample_fraction * elements)))

    def _plan(self) -> tuple[bytes, np.ndarray | None, float, ScrubMethod, bool]:
        """(nonce, positions or None for full, coverage, method run, fell back?)."""
        if self.settings.method is ScrubMethod.FULL:
            return b"", None, 1.0, ScrubMethod.FULL, False
        coverage = self.sampled_coverage()
        if coverage < self.settings.coverage_threshold:
            return b"", None, 1.0, ScrubMethod.FULL, True
        nonce = self._nonce_source()
        positions = sample_positions(
            self.settings.sample_key, nonce, self.pool.shape.block_elements, self._sample_count()
        )
        # Coverage from what is actually read: distinct positions x stored element size.
        checked = positions.size * self.pool.elements.element_size()
        return nonce, positions, checked / self.pool.shape.block_bytes, ScrubMethod.SAMPLED, False

    def _check_scrubbable(self, ids: list[int], tenant: str, request_id: str | None) -> None:
        for b in ids:
            state = self.pool.state_of(b)
            if state is not BlockState.PENDING_SCRUB:
                raise BlockStateError("scrub", b, state, "PENDING_SCRUB (release it first)")
            owner = self.pool.owner_of(b)
            if (
                owner is None
                or owner.tenant != tenant
                or (request_id is not None and owner.request_id != request_id)
            ):
                raise BlockStateError("scrub", b, state, f"a block of tenant {tenant!r}")


def _random_nonce() -> bytes:
    return os.urandom(16)
