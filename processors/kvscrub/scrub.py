"""Zeroize released KV-cache blocks, verify them on the device, and settle
their fate: VERIFIED_CLEAN (then free-able) or QUARANTINED (never reused).

The block set is first sorted into maximal runs of consecutive block ids
(:class:`~cachet.processors.kvscrub.runs.BlockRuns`): the pool is block-major,
so each run is one contiguous slice of the pool's memory. Then, by device:

* CPU (one op per run, memset speed): for each run, ``zero_()`` on the slice
  (twice with ``double_pass``), then ONE reduction over the same slice read
  as unsigned bytes -- ``amax`` per block into its place in one small verdict
  tensor. No index, no gather, no copy: the zeroize is a plain memset and the
  check a streaming read, done while the run is still in cache. The verdict
  tensor is read back once, after the last run.
* CUDA (one fused launch per pass, whatever the number of runs): ONE
  ``index_fill_`` over dim 0 of the pool's integer word view per pass -- never
  a fill per run, block or layer, which would be launch-bound on a GPU --
  then a per-block ``aminmax`` gathered in bounded chunks into one boolean
  tensor, ONE copy of it to the host and ONE synchronisation.

Verification compares bit patterns (integer views), so ``-0.0`` or a NaN
left behind counts as dirty: an unsigned byte's maximum is zero only when
every bit of the block is.

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

import hashlib
import hmac
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from cachet.processors.kvscrub.errors import BlockStateError, KvScrubError
from cachet.processors.kvscrub.policy import ExpiryReason
from cachet.processors.kvscrub.pool import BlockPool
from cachet.processors.kvscrub.report import ScrubMethod, ScrubReport, ScrubTrigger
from cachet.processors.kvscrub.runs import BlockRuns
from cachet.processors.kvscrub.state import BlockState

if TYPE_CHECKING:
    from cachet.processors.kvscrub.metrics import ScrubMetrics

__all__ = [
    "ScrubConfigError",
    "ScrubSettings",
    "Scrubber",
    "sample_positions",
]

logger = logging.getLogger(__name__)

_SAMPLE_DOMAIN = b"cachet/kvscrub/sample-positions/v1"
_CPU_VERIFY_CHUNK = 8 << 20  # fits a CPU's last-level cache: gather, then reduce hot
_CUDA_VERIFY_CHUNK = 256 << 20
# Below this many bytes per thread a CPU scrub stays on the caller's thread:
# handing work to another thread costs more than it saves.
_CPU_SHARE_MIN_BYTES = 4 << 20
# A run longer than this is zeroed and checked piece by piece, so each check
# reads back from a core's L2 what the memset just wrote there instead of
# going back to memory for a run that no longer fits.
_CPU_PIECE_BYTES = 2 << 20


class ScrubConfigError(KvScrubError, ValueError):
    """Scrub settings that cannot give the promised guarantee."""


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
    buffer; ``None`` picks a per-device default. ``cpu_threads`` (CPU pools
    only): how many threads share one scrub's memsets and checks; ``None``
    takes torch's intra-op thread count, the CPU budget the process was given.
    """

    method: ScrubMethod = ScrubMethod.FULL
    coverage_threshold: float = 0.999
    double_pass: bool = False
    sample_key: bytes = b""
    sample_fraction: float = 0.01
    verify_chunk_bytes: int | None = None
    cpu_threads: int | None = None

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
        if self.cpu_threads is not None and self.cpu_threads <= 0:
            raise ScrubConfigError(f"cpu_threads must be > 0, got {self.cpu_threads}")

    def __repr__(self) -> str:
        # The sample key is a secret: never let a repr carry it into a log.
        return (
            f"ScrubSettings(method={self.method.value}, coverage_threshold="
            f"{self.coverage_threshold}, double_pass={self.double_pass}, "
            f"sample_fraction={self.sample_fraction}, sample_key=<{len(self.sample_key)} bytes>)"
        )


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
        if not self._is_cuda:
            # Host views of the pool's own memory (no copy): the CPU path
            # zeroes and checks through these, see _run_cpu for why not torch.
            # Unsigned, so that a maximum of 0 means every bit is 0.
            words = pool.words.numpy()
            self._host_words: np.ndarray = words.view(f"u{words.itemsize}")
            # numpy fills a 1-byte array with memset (2x its word-wise fill).
            self._host_bytes: np.ndarray = words.view(np.uint8)
            elements = pool.elements.numpy()
            self._host_elements: np.ndarray = elements.view(f"u{elements.itemsize}")
        self._cpu_threads = self.settings.cpu_threads or torch.get_num_threads()
        self._executor: ThreadPoolExecutor | None = None
        self._executor_lock = threading.Lock()
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
        clean_ids: set[int] = set()
        duration_us = 0
        if ids:
            blocks = BlockRuns.of(ids)
            flags, duration_us = self._run_device(blocks, passes, positions)
            clean_ids = {b for b, ok in zip(blocks.ids, flags, strict=True) if ok}
        # Reported in the caller's order; only a block whose own check passed is verified.
        verified = tuple(b for b in ids if b in clean_ids)
        failed = tuple(b for b in ids if b not in clean_ids)
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
    def _zeroize(self, blocks: BlockRuns) -> None:
        """One zeroize pass over ``blocks``.

        CUDA: ONE indexed fill over dim 0 (a single launch for the whole set).
        CPU: one memset per run (:meth:`_zero_run`).
        """
        if self._is_cuda:
            index = blocks.index
            if index is None or index.device != self.pool.device:
                index = BlockRuns.of(blocks.ids, self.pool.device).index
            assert index is not None
            self.pool.words.index_fill_(0, index, 0)
            return
        for start, end in blocks.runs:
            self._zero_run(start, end)

    def _zero_run(self, start: int, end: int) -> None:
        """CPU: zero blocks ``start .. end - 1``, one contiguous byte range, in one memset."""
        self._host_bytes[start:end].fill(0)

    def _run_device(
        self, blocks: BlockRuns, passes: int, positions: np.ndarray | None
    ) -> tuple[list[bool], int]:
        """Zeroize ``passes`` times, verify, read the verdict back once.

        Returns (one flag per block of ``blocks.ids``, in that order; duration in us).
        """
        if self._is_cuda:
            return self._run_cuda(blocks, passes, positions)
        return self._run_cpu(blocks, passes, positions)

    def _run_cpu(
        self, blocks: BlockRuns, passes: int, positions: np.ndarray | None
    ) -> tuple[list[bool], int]:
        """Per run: ``passes`` memsets, then one reduction into the shared verdict array.

        Each run is verified right after its own zero passes, while its bytes
        are still in cache: the read returns what the memory holds (CPU caches
        are coherent), at cache speed rather than a second trip to DRAM; a
        run longer than ``_CPU_PIECE_BYTES`` is done in pieces of that size
        for the same reason. A large set is cut into up to ``cpu_threads``
        balanced shares (a run spanning a cut becomes two pieces) that run in
        parallel and are joined once.

        The work goes through numpy views of the pool tensor's memory, not
        torch ops: above 32Ki elements a torch CPU kernel opens an OpenMP
        parallel region and waits at its barrier for every intra-op thread --
        on a host whose other cores are busy, a scheduler quantum per run
        (measured 0.04-1.2 GB/s on the 2-core bench host, slower than the
        fused index op). numpy's fill and unsigned max are single-threaded,
        SIMD, and release the GIL, so the shares really run side by side.
        """
        # Per block: the largest word (FULL) or sampled element (SAMPLED) seen
        # after zeroing, unsigned; 0 means every checked bit is zero.
        residue = np.empty(len(blocks), dtype=np.uint64)
        block_bytes = self.pool.shape.block_bytes
        shares = _shares(
            blocks.runs,
            threads=self._cpu_threads,
            min_blocks=max(1, _CPU_SHARE_MIN_BYTES // block_bytes),
            max_piece=max(1, _CPU_PIECE_BYTES // block_bytes),
        )
        t0 = time.perf_counter_ns()
        if len(shares) == 1:
            self._scrub_share(shares[0], passes, positions, residue)
        else:
            executor = self._share_executor()
            pending = [
                executor.submit(self._scrub_share, share, passes, positions, residue)
                for share in shares[1:]
            ]
            self._scrub_share(shares[0], passes, positions, residue)
            for future in pending:
                future.result()  # re-raises a failed share: no verdict without every run
        flags = [r == 0 for r in residue.tolist()]  # the one read-back of the verdict
        t1 = time.perf_counter_ns()
        return flags, (t1 - t0) // 1000

    def _scrub_share(
        self,
        share: Sequence[tuple[int, int, int]],
        passes: int,
        positions: np.ndarray | None,
        residue: np.ndarray,
    ) -> None:
        """Zeroize and check each ``(start, end, offset)`` run; verdicts at ``residue[offset:]``."""
        for start, end, offset in share:
            run = BlockRuns.span(start, end)
            for _ in range(passes):
                self._zeroize(run)
            self._verify_run(start, end, positions, residue[offset : offset + end - start])

    def _share_executor(self) -> ThreadPoolExecutor:
        with self._executor_lock:
            if self._executor is None:
                # Idle threads cost nothing and are joined at interpreter exit.
                self._executor = ThreadPoolExecutor(
                    max_workers=self._cpu_threads - 1, thread_name_prefix="kvscrub-cpu"
                )
            return self._executor

    def _verify_run(
        self, start: int, end: int, positions: np.ndarray | None, out: np.ndarray
    ) -> None:
        """Largest checked word of each block ``start .. end - 1`` into ``out`` (CPU).

        FULL: ONE max-reduction over the run's words read as UNSIGNED
        integers -- no copy; unsigned, so a maximum of zero means every bit
        is zero (a signed max would miss negative words, a float view -0.0
        and NaN). SAMPLED: gather the sampled elements of at most
        ``verify_chunk_bytes`` worth of blocks at a time, then the same
        reduction.
        """
        if positions is None:
            np.maximum.reduce(self._host_words[start:end], axis=1, out=out)
            return
        row_bytes = positions.size * self._host_elements.itemsize
        rows = max(1, self._chunk_bytes // row_bytes)
        for first in range(start, end, rows):
            last = min(end, first + rows)
            gathered = np.take(self._host_elements[first:last], positions, axis=1)
            np.maximum.reduce(gathered, axis=1, out=out[first - start : last - start])

    def _verify(self, idx: torch.Tensor, positions: torch.Tensor | None) -> torch.Tensor:
        """Per-block ``True`` where every checked word is zero, as one device tensor (CUDA).

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

    def _run_cuda(
        self, blocks: BlockRuns, passes: int, positions: np.ndarray | None
    ) -> tuple[list[bool], int]:
        device = self.pool.device
        stream = self._stream if self._stream is not None else torch.cuda.current_stream(device)
        # The model wrote K/V on the compute stream; the scrub must not race
        # ahead of those writes, or it would verify a block that is then
        # dirtied by a late kernel.
        stream.wait_stream(torch.cuda.current_stream(device))
        with torch.cuda.stream(stream):
            # One host-to-device copy of the index, shared by every pass and the check.
            fused = BlockRuns.of(blocks.ids, device)
            assert fused.index is not None
            pos = None
            if positions is not None:
                pos = torch.from_numpy(positions).to(device, non_blocking=True)
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            start.record(stream)
            for _ in range(passes):
                self._zeroize(fused)
            clean = self._verify(fused.index, pos)
            end.record(stream)
            host = torch.empty(len(blocks), dtype=torch.bool, pin_memory=True)
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


def _shares(
    runs: Sequence[tuple[int, int]], *, threads: int, min_blocks: int, max_piece: int
) -> list[list[tuple[int, int, int]]]:
    """Cut ``runs`` into at most ``threads`` consecutive shares of near-equal block counts.

    Each share is a list of ``(start, end, offset)``: a piece of a run --
    the whole run unless it crosses a share boundary or is longer than
    ``max_piece`` blocks -- and where its blocks' verdicts go in the sorted
    order. No share holds fewer than ``min_blocks`` blocks (but one share
    always exists), so a small set stays on one thread.
    """
    total = sum(end - start for start, end in runs)
    count = max(1, min(threads, total // max(1, min_blocks)))
    size = -(-total // count)
    shares: list[list[tuple[int, int, int]]] = [[]]
    offset = 0  # blocks placed so far, all shares together
    for start, end in runs:
        while start < end:
            room = size * len(shares) - offset  # left in the last share
            if room == 0:
                shares.append([])
                continue
            cut = min(end, start + room, start + max_piece)
            shares[-1].append((start, cut, offset))
            offset += cut - start
            start = cut
    return shares


def _random_nonce() -> bytes:
    return os.urandom(16)
