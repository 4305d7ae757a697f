"""cachet_reads_total counted per thread: nothing lost, nothing counted twice."""

from __future__ import annotations

import threading

from prometheus_client import CollectorRegistry, generate_latest

from cachet.producers.read_tally import ReadTally

HIT = ("hit", "served")
STALE = ("miss", "stale")


def _count_in_threads(tally: ReadTally, threads: int, each: int) -> None:
    start = threading.Barrier(threads)

    def read() -> None:
        start.wait()
        for i in range(each):
            tally.count(HIT if i % 3 else STALE)

    workers = [threading.Thread(target=read) for _ in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join()


def test_concurrent_readers_lose_no_count() -> None:
    tally = ReadTally()
    _count_in_threads(tally, 8, 30_000)
    hits = 8 * sum(1 for i in range(30_000) if i % 3)
    assert tally.totals() == {HIT: hits, STALE: 8 * 30_000 - hits}
    assert tally.total() == 8 * 30_000


def test_ended_threads_are_folded_and_still_counted() -> None:
    tally = ReadTally()
    for _ in range(5):
        _count_in_threads(tally, 4, 100)
    tally.count(HIT)  # a new tally on this thread folds the ended ones
    assert len(tally._live) == 1
    assert tally.total() == 5 * 4 * 100 + 1


def test_exposed_as_cachet_reads_total_with_labels() -> None:
    registry = CollectorRegistry()
    tally = ReadTally(registry)
    tally.count(HIT)
    tally.count(HIT)
    tally.count(STALE)
    text = generate_latest(registry).decode()
    assert 'cachet_reads_total{outcome="hit",reason="served"} 2.0' in text
    assert 'cachet_reads_total{outcome="miss",reason="stale"} 1.0' in text
