"""``cachet bench idle``: what an idle deployment costs in CPU.

A deployment with nothing to do still ticks (a triple-signed seal per tick
round) and its nodes still verify those seals and poll the broker. This
measures the CPU time the embedded broker, one cache node and the ticker
(with the deployment's own tick interval, :func:`tick_interval_ms`) use
over a quiet window, as a share of one core. Baseline in the same run: an
idle redis-server measured the same way (when installed).
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

from cachet.config import CachetConfig, default_config
from cachet.ops.bench._node import bench_ledger
from cachet.ops.bench._redis import redis_server, redis_server_binary
from cachet.processors.watermarks import tick_interval_ms

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")


def _cpu_s(pid: int) -> float:
    """User + system CPU seconds of process ``pid`` so far (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_S


def _broker_pid(servers: str) -> int | None:
    """The embedded broker serving ``servers`` (found by its listener URL)."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            continue
        if "tansu" in cmdline and f"tcp://{servers}" in cmdline:
            return int(proc.name)
    return None


def run(quick: bool = False, config: CachetConfig | None = None) -> dict[str, Any]:
    config = config or default_config()
    window_s = 5.0 if quick else 30.0
    interval_ms = tick_interval_ms(
        config.contracts.values(), config.contract_defaults.max_staleness_ms
    )
    redis_pct: float | None = None
    with bench_ledger(config, tick_interval_s=interval_ms / 1000) as ledger:
        ledger.node("idle-node")
        broker = _broker_pid(ledger.servers)
        time.sleep(min(5.0, window_s))  # start-up work (catch-up, first seals) done
        start = time.monotonic()
        ours0 = time.process_time()
        broker0 = _cpu_s(broker) if broker else 0.0
        if redis_server_binary():
            with redis_server() as redis:
                redis0 = _cpu_s(redis.process.pid)
                time.sleep(window_s)
                redis_pct = 100 * (_cpu_s(redis.process.pid) - redis0) / window_s
        else:
            time.sleep(window_s)
        elapsed = time.monotonic() - start
        process_pct = 100 * (time.process_time() - ours0) / elapsed
        broker_pct = 100 * (_cpu_s(broker) - broker0) / elapsed if broker else 0.0
    total = process_pct + broker_pct
    return {
        "benchmark": "idle",
        "quick": quick,
        "window_s": round(elapsed, 1),
        "tick_interval_ms": interval_ms,
        "node_and_ticker_cpu_pct": process_pct,
        "broker_cpu_pct": broker_pct,
        "idle_cpu_pct_of_one_core": total,
        "redis_idle_cpu_pct": redis_pct,
        "target_pct": 5.0,
    }


def format_report(r: dict[str, Any]) -> str:
    redis = (
        f"{r['redis_idle_cpu_pct']:.2f}%"
        if r["redis_idle_cpu_pct"] is not None
        else "not measured (redis-server not installed)"
    )
    return "\n".join(
        [
            "cachet bench idle" + (" (quick)" if r["quick"] else ""),
            f"over {r['window_s']} s with nothing to do (ticks every {r['tick_interval_ms']} ms):",
            f"  node + ticker process: {r['node_and_ticker_cpu_pct']:.2f}% of one core",
            f"  embedded broker:       {r['broker_cpu_pct']:.2f}% of one core",
            f"  total:                 {r['idle_cpu_pct_of_one_core']:.2f}% "
            f"(target under {r['target_pct']:.0f}%)",
            f"baseline: an idle redis-server: {redis}",
        ]
    )
