"""Benchmark: KV-cache scrub bandwidth against the memset ceiling.

For scattered random block sets of several sizes (1%, 10%, 50% of the pool)
it times the public path a worker uses -- ``Scrubber.scrub`` (zeroize: one
fused indexed fill per pass on CUDA, one memset per contiguous run on CPU;
verification on the device; one read-back; state bookkeeping) -- and, in the
same run on the same pool, ``pool.tensor.zero_()`` over the whole pool: the
fastest anyone can write those bytes. Bandwidth is block bytes per second
(each scrubbed byte counted once, although it is written and then read
back), and each set's ``ratio`` is its bandwidth over that ceiling.

Between timed repetitions the set is re-dirtied and, on CPU, a scratch
buffer larger than the last-level cache is written, so neither the scrub nor
the memset is timed out of a warm cache.

``cachet bench scrub`` calls :func:`run` and prints :func:`format_report`.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cachet.processors.kvscrub.pool import BlockPool, PoolShape
from cachet.processors.kvscrub.report import ScrubReport, ScrubTrigger
from cachet.processors.kvscrub.scrub import Scrubber, ScrubSettings

__all__ = ["format_report", "run"]

logger = logging.getLogger(__name__)

_FRACTIONS = (0.01, 0.10, 0.50)
_TARGET_FRACTION = 0.10  # sets this large and larger are held to the memset target
_MIB = 1 << 20
# Block geometry of a small GQA model slice: 4 layers x K/V x 8 heads x 16
# tokens x 128 dims in bf16 = 256 KiB per block.
_LAYERS, _HEADS, _HEAD_DIM, _BLOCK_SIZE = 4, 8, 128, 16
_CACHE_FLUSH_BYTES = 64 * _MIB


def _pool_mib(quick: bool, device: torch.device) -> int:
    if device.type == "cuda":
        return 1024 if quick else 8192
    return 64 if quick else 256


def _timer(device: torch.device) -> Callable[[Callable[[], object]], float]:
    """Seconds one call takes: CUDA events on a GPU, perf_counter_ns on CPU."""
    if device.type == "cuda":

        def cuda_time(fn: Callable[[], object]) -> float:
            start = torch.cuda.Event(enable_timing=True)
            end = torch.cuda.Event(enable_timing=True)
            torch.cuda.synchronize(device)
            start.record()
            fn()
            end.record()
            end.synchronize()
            return float(start.elapsed_time(end)) / 1e3

        return cuda_time

    def cpu_time(fn: Callable[[], object]) -> float:
        t0 = time.perf_counter_ns()
        fn()
        return (time.perf_counter_ns() - t0) / 1e9

    return cpu_time


def run(quick: bool = False, device: str = "cpu") -> dict[str, Any]:
    """Scrub bandwidth for scattered sets vs whole-pool memset; returns figures.

    Keys: ``device``, ``pool_bytes``, ``block_bytes``, ``num_blocks``,
    ``reps``, ``sizes`` (one dict per set size: ``fraction``, ``blocks``,
    ``bytes``, ``median_s``, ``gb_per_s`` end to end, ``device_gb_per_s`` from
    the report's device-timed duration, ``ratio`` = ``gb_per_s`` / memset),
    ``scrub_gb_per_s`` (largest set), ``memset_gb_per_s``, ``ratio`` (largest
    set / memset), ``min_ratio`` (the worst of the 10% and 50% sets: the
    target; the 1% set is a handful of blocks, bound by per-call overhead).
    """
    dev = torch.device(device)
    reps, warmups = (3, 1) if quick else (7, 2)
    dtype = torch.bfloat16
    probe = PoolShape(1, _LAYERS, _HEADS, _HEAD_DIM, _BLOCK_SIZE, dtype)
    num_blocks = max(8, _pool_mib(quick, dev) * _MIB // probe.block_bytes)
    shape = PoolShape(num_blocks, _LAYERS, _HEADS, _HEAD_DIM, _BLOCK_SIZE, dtype)
    pool = BlockPool(shape, dev)
    scrubber = Scrubber(pool, ScrubSettings())
    timed = _timer(dev)
    rng = np.random.default_rng(20240601)
    flush = torch.empty(_CACHE_FLUSH_BYTES, dtype=torch.uint8) if dev.type == "cpu" else None

    def cool() -> None:
        if flush is not None:
            flush.fill_(1)

    # Every block lives in its own one-block session so any random subset can
    # be released and scrubbed through the public API.
    session_of: dict[int, str] = {}

    def occupy(count: int) -> None:
        for _ in range(count):
            rid = f"bench-{len(session_of)}-{rng.integers(1 << 62)}"
            (block,) = pool.allocate("bench", rid, 1)
            session_of[block] = rid

    occupy(num_blocks)
    pool.tensor.fill_(1.0)

    sizes: list[dict[str, Any]] = []
    for fraction in _FRACTIONS:
        n = max(1, round(num_blocks * fraction))
        wall: list[float] = []
        device_s: list[float] = []
        for rep in range(warmups + reps):
            chosen = [int(b) for b in rng.choice(num_blocks, size=n, replace=False)]
            pool.write(chosen, 1.0)  # dirty: the scrub must really zero them
            for b in chosen:
                pool.release("bench", session_of.pop(b))
            cool()
            holder: list[ScrubReport] = []

            def scrub_once(ids: list[int] = chosen, out: list[ScrubReport] = holder) -> None:
                out.append(scrubber.scrub(ids, tenant="bench", trigger=ScrubTrigger.UNKNOWN))

            seconds = timed(scrub_once)
            report = holder[0]
            if not report.clean:
                raise RuntimeError(f"bench scrub left {len(report.quarantined)} dirty blocks")
            pool.free(report.verified)
            occupy(n)
            if rep >= warmups:
                wall.append(seconds)
                device_s.append(report.duration_us / 1e6)
        nbytes = n * shape.block_bytes
        median = statistics.median(wall)
        sizes.append(
            {
                "fraction": fraction,
                "blocks": n,
                "bytes": nbytes,
                "median_s": median,
                "gb_per_s": nbytes / median / 1e9,
                "device_gb_per_s": nbytes / max(statistics.median(device_s), 1e-9) / 1e9,
            }
        )
        logger.info("scrub %.0f%%: %.2f GB/s", fraction * 100, sizes[-1]["gb_per_s"])

    memset: list[float] = []
    for rep in range(warmups + reps):
        pool.tensor.fill_(1.0)
        cool()
        seconds = timed(pool.tensor.zero_)
        if rep >= warmups:
            memset.append(seconds)
    memset_gbps = shape.pool_bytes / statistics.median(memset) / 1e9
    for size in sizes:
        size["ratio"] = size["gb_per_s"] / memset_gbps
    scrub_gbps = float(sizes[-1]["gb_per_s"])
    return {
        "device": str(pool.device),
        "pool_bytes": shape.pool_bytes,
        "block_bytes": shape.block_bytes,
        "num_blocks": num_blocks,
        "reps": reps,
        "torch_threads": torch.get_num_threads(),
        "sizes": sizes,
        "scrub_gb_per_s": scrub_gbps,
        "memset_gb_per_s": memset_gbps,
        "ratio": scrub_gbps / memset_gbps,
        "min_ratio": min(s["ratio"] for s in sizes if s["fraction"] >= _TARGET_FRACTION),
    }


def format_report(result: dict[str, Any]) -> str:
    """The figures of :func:`run` as a short table for people."""
    lines = [
        f"KV scrub bench on {result['device']}: pool {result['pool_bytes'] / _MIB:.0f} MiB, "
        f"{result['num_blocks']} blocks x {result['block_bytes'] / 1024:.0f} KiB, "
        f"median of {result['reps']}",
        f"{'set':>6} {'blocks':>7} {'MiB':>8} {'ms':>9} {'GB/s':>7} {'dev GB/s':>9} {'ratio':>6}",
    ]
    for s in result["sizes"]:
        lines.append(
            f"{s['fraction'] * 100:>5.0f}% {s['blocks']:>7d} {s['bytes'] / _MIB:>8.1f} "
            f"{s['median_s'] * 1e3:>9.3f} {s['gb_per_s']:>7.2f} {s['device_gb_per_s']:>9.2f} "
            f"{s['ratio']:>6.2f}"
        )
    lines.append(
        f"scrub (largest set) {result['scrub_gb_per_s']:.2f} GB/s | memset ceiling "
        f"{result['memset_gb_per_s']:.2f} GB/s | ratio {result['ratio']:.2f} | "
        f"min ratio (>= {_TARGET_FRACTION:.0%} sets) {result['min_ratio']:.2f}"
    )
    return "\n".join(lines)
