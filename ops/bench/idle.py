"""``cachet bench idle``: what an idle deployment costs in CPU, and where it goes.

A deployment with nothing to do still ticks (a triple-signed seal per tick
round), its nodes still verify those seals, and their consumers still ask
the broker for records. This measures the CPU time the embedded broker, one
cache node and the ticker (with the deployment's own tick interval,
:func:`tick_interval_ms`) use over a quiet window, as a share of one core.
Baseline in the same run: an idle redis-server measured the same way (when
installed).

Then it explains the figure. The embedded broker's idle cost is the fetches
it answers: it reads every partition a fetch names when the fetch arrives
and again when the fetch wait is over (:mod:`cachet.kafka.settings`), so
each consumer costs it in proportion to its partitions over its fetch
wait. For each of the node's consumers the report gives its topics,
partitions, fetch wait and the partition reads per second that makes, and
the broker CPU it costs, measured: once the node is closed, a window with
only the ticker left and one more with a consumer exactly like it, the
difference being its cost. The node and
ticker process is split by thread. The redis baseline runs after the
deployment is gone, so neither window holds the other's work.
"""

from __future__ import annotations

import collections
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from confluent_kafka import OFFSET_END, Consumer, TopicPartition

from cachet.config import CachetConfig, default_config
from cachet.kafka.settings import consumer_settings
from cachet.ops.bench._node import bench_ledger
from cachet.ops.bench._redis import redis_server, redis_server_binary
from cachet.processors.watermarks import tick_interval_ms
from cachet.producers.cache_node import CacheNode
from cachet.topics import Topic

__all__ = ["broker_reads_per_fetch", "format_report", "run"]

_TICKS_PER_S = os.sysconf("SC_CLK_TCK")
# The embedded broker (Tansu 0.6) cuts a fetch wait of at least this into
# halves, reading every partition after each (cachet.kafka.settings).
_TANSU_HALVING_MS = 250


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


def broker_reads_per_fetch(wait_ms: int) -> int:
    """How often the embedded broker reads each partition of one empty fetch
    that waits ``wait_ms``: on arrival, then after each sleep (the whole
    wait below 250 ms; halves of what is left from 250 ms on), and once
    more when the wait is over."""
    reads, elapsed = 0, 0.0
    while True:
        reads += 1
        remaining = wait_ms - elapsed
        if remaining <= 0:
            return reads
        elapsed += remaining / 2 if remaining >= _TANSU_HALVING_MS else remaining


@dataclass(frozen=True, slots=True)
class _NodeConsumer:
    """One of a node's broker consumers, as the report describes it."""

    name: str
    assignment: tuple[tuple[str, int], ...]
    fetch_wait_ms: int

    def topics(self, prefix: str) -> list[str]:
        return sorted({topic.removeprefix(prefix) for topic, _ in self.assignment})

    def reads_per_s(self) -> float:
        """Partition reads per second the embedded broker makes for it when idle."""
        per_fetch = broker_reads_per_fetch(self.fetch_wait_ms)
        return len(self.assignment) * per_fetch * 1000 / self.fetch_wait_ms


def _consumers(node: CacheNode) -> list[_NodeConsumer]:
    # What each was assigned, as the node built it (librdkafka's
    # assignment() waits on the consumer's poll thread).
    kafka = node.config.kafka
    listener_topic = node.names(Topic.INVALIDATIONS)
    listener = tuple((listener_topic, p) for p in range(kafka.partitions_for(Topic.INVALIDATIONS)))
    return [
        _NodeConsumer(
            "live view",
            tuple(node.view.consumer.assignment),
            kafka.view_fetch_wait_ms,
        ),
        _NodeConsumer(
            "invalidation listener",
            listener,
            kafka.invalidation_fetch_wait_ms,
        ),
    ]


@contextmanager
def _replica(servers: str, c: _NodeConsumer) -> Iterator[None]:
    """A consumer exactly like ``c`` (same partitions, from their end, same
    fetch wait), polled on a thread of its own while the block runs."""
    replica = Consumer(
        consumer_settings(
            servers,
            overrides={"fetch.wait.max.ms": c.fetch_wait_ms, "enable.partition.eof": False},
        )
    )
    replica.assign([TopicPartition(topic, p, OFFSET_END) for topic, p in c.assignment])
    stop = threading.Event()

    def poll() -> None:
        while not stop.is_set():
            replica.poll(0.1)

    thread = threading.Thread(target=poll, name="bench-replica", daemon=True)
    thread.start()
    try:
        yield
    finally:
        stop.set()
        thread.join(5)
        replica.close()


def _thread_cpu_s() -> dict[int, tuple[str, float]]:
    """Per thread of this process: (name, CPU seconds so far)."""
    python_names = {t.native_id: t.name for t in threading.enumerate()}
    out = {}
    for task in Path("/proc/self/task").iterdir():
        try:
            stat = (task / "stat").read_text()
            comm = (task / "comm").read_text().strip()
        except OSError:
            continue  # the thread ended
        fields = stat.rsplit(")", 1)[1].split()
        tid = int(task.name)
        name = python_names.get(tid, comm)
        out[tid] = (name, (int(fields[11]) + int(fields[12])) / _TICKS_PER_S)
    return out


def _thread_label(name: str) -> str:
    """librdkafka names its threads per role, not per client: one line for them all."""
    return "librdkafka threads (every client)" if name.startswith("rdk:") else name


@dataclass(frozen=True, slots=True)
class _Window:
    """CPU over one window, as shares of one core."""

    elapsed_s: float
    process_pct: float
    broker_pct: float
    # Per thread id: (name, share); threads that ended in between are not in it.
    threads: dict[int, tuple[str, float]]

    def by_label(self, tids: set[int] | None = None) -> dict[str, float]:
        out: dict[str, float] = collections.defaultdict(float)
        for tid, (name, pct) in self.threads.items():
            if tids is None or tid in tids:
                out[_thread_label(name)] += pct
        return dict(sorted(out.items(), key=lambda item: -item[1]))


def _measure(broker: int | None, window_s: float) -> _Window:
    threads0 = _thread_cpu_s()
    start = time.monotonic()
    ours0 = time.process_time()
    broker0 = _cpu_s(broker) if broker else 0.0
    time.sleep(window_s)
    elapsed = time.monotonic() - start
    process_pct = 100 * (time.process_time() - ours0) / elapsed
    broker_pct = 100 * (_cpu_s(broker) - broker0) / elapsed if broker else 0.0
    threads = {
        tid: (name, 100 * (cpu - threads0.get(tid, (name, 0.0))[1]) / elapsed)
        for tid, (name, cpu) in _thread_cpu_s().items()
    }
    return _Window(elapsed, process_pct, broker_pct, threads)


def _redis_idle_pct(window_s: float) -> float | None:
    if not redis_server_binary():
        return None
    with redis_server() as redis:
        time.sleep(1.0)  # started and answering
        before = _cpu_s(redis.process.pid)
        time.sleep(window_s)
        return 100 * (_cpu_s(redis.process.pid) - before) / window_s


def run(quick: bool = False, config: CachetConfig | None = None) -> dict[str, Any]:
    config = config or default_config()
    window_s = 5.0 if quick else 30.0
    interval_ms = tick_interval_ms(
        config.contracts.values(), config.contract_defaults.max_staleness_ms
    )
    with bench_ledger(config, tick_interval_s=interval_ms / 1000) as ledger:
        node = ledger.node("idle-node")
        broker = _broker_pid(ledger.servers)
        time.sleep(min(5.0, window_s))  # start-up work (catch-up, first seals) done
        full = _measure(broker, window_s)
        specs = _consumers(node)
        # Then each consumer alone: the node closed, what the broker spends
        # with only the ticker left, and again with one consumer exactly
        # like the node's; the difference is that consumer's cost.
        ledger.close_node(node)
        time.sleep(1.0)
        rest = _measure(broker, window_s)
        consumers: list[dict[str, Any]] = []
        for c in specs:
            before = set(_thread_cpu_s())
            with _replica(ledger.servers, c):
                time.sleep(1.0)  # its first fetches (offsets, metadata) done
                alone = _measure(broker, window_s)
            # The replica's own threads (its poll thread and librdkafka's).
            replica_threads = set(alone.threads) - before
            consumers.append(
                {
                    "name": c.name,
                    "topics": c.topics(ledger.names.prefix),
                    "partitions": len(c.assignment),
                    "fetch_wait_ms": c.fetch_wait_ms,
                    "broker_reads_per_s": c.reads_per_s(),
                    "broker_cpu_pct": max(0.0, alone.broker_pct - rest.broker_pct),
                    "client_cpu_pct": sum(alone.by_label(replica_threads).values()),
                }
            )
    redis_pct = _redis_idle_pct(window_s)
    total = full.process_pct + full.broker_pct
    return {
        "benchmark": "idle",
        "quick": quick,
        "window_s": round(full.elapsed_s, 1),
        "tick_interval_ms": interval_ms,
        "node_and_ticker_cpu_pct": full.process_pct,
        "broker_cpu_pct": full.broker_pct,
        "idle_cpu_pct_of_one_core": total,
        "redis_idle_cpu_pct": redis_pct,
        "target_pct": 5.0,
        "consumers": consumers,
        # With no node: the ticker's produce requests and seals.
        "broker_cpu_pct_without_node": rest.broker_pct,
        "process_threads_pct": full.by_label(),
    }


def format_report(r: dict[str, Any]) -> str:
    redis = (
        f"{r['redis_idle_cpu_pct']:.2f}%"
        if r["redis_idle_cpu_pct"] is not None
        else "not measured (redis-server not installed)"
    )
    lines = [
        "cachet bench idle" + (" (quick)" if r["quick"] else ""),
        f"over {r['window_s']} s with nothing to do (ticks every {r['tick_interval_ms']} ms):",
        f"  node + ticker process: {r['node_and_ticker_cpu_pct']:.2f}% of one core",
        f"  embedded broker:       {r['broker_cpu_pct']:.2f}% of one core",
        f"  total:                 {r['idle_cpu_pct_of_one_core']:.2f}% "
        f"(target under {r['target_pct']:.0f}%)",
        f"baseline: an idle redis-server: {redis}",
        "where the broker's share goes: the fetches of the node's consumers (the embedded "
        "broker reads each partition of a fetch on arrival and again when its wait is over); "
        "each one's cost measured alone, once the node is closed, as what a consumer "
        "exactly like it adds:",
    ]
    for c in r["consumers"]:
        lines.append(
            f"  {c['name']:<22} {c['partitions']:>2} partitions of {', '.join(c['topics'])}, "
            f"fetch wait {c['fetch_wait_ms']} ms: {c['broker_reads_per_s']:.0f} partition reads/s, "
            f"broker {c['broker_cpu_pct']:.2f}%, client {c['client_cpu_pct']:.2f}%"
        )
    lines.append(
        f"  {'without the node':<22} (the ticker's ticks and seals): "
        f"broker {r['broker_cpu_pct_without_node']:.2f}%"
    )
    lines.append(
        "  knobs: [kafka] view_fetch_wait_ms, invalidation_fetch_wait_ms (the listener's is "
        "the floor of revoke latency between nodes)"
    )
    lines.append("where this process's share goes, by thread:")
    lines.extend(
        f"  {name:<34} {pct:.2f}%" for name, pct in r["process_threads_pct"].items() if pct > 0
    )
    return "\n".join(lines)
