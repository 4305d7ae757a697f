"""Every read is in the signed ledger exactly once, inside CacheReadBatch
events, on the real broker: a cache node reads, its read audit writes, and
a verifying consumer (real seals, real triple signatures) applies the batch
events of the reads topic only once their seals verify."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest

from cachet.producers.cache_client import CacheClient
from cachet.schemas.events import EventType
from cachet.schemas.payloads import CacheReadBatch, ReadOutcome
from cachet.topics import Topic
from tests.integration.ledger_support import Ledger, LedgerRun

pytestmark = pytest.mark.integration


def _reads_in(run: LedgerRun, identity: str) -> list[tuple[int, CacheReadBatch]]:
    """(producer_seq, batch) of the verified CacheReadBatch events of ``identity``."""
    return sorted(
        (a.event.producer_seq, CacheReadBatch.from_avro(a.event.payload))
        for a in run.applied
        if a.event.type is EventType.CACHE_READ_BATCH
        and a.event.producer_id.startswith(f"{identity}@")
    )


def _verified(ledger: Ledger, identity: str, reads: int) -> list[CacheReadBatch]:
    run = ledger.verify(
        until=lambda r: sum(len(b.reads) for _, b in _reads_in(r, identity)) >= reads,
        topics=(Topic.READS,),
        timeout_s=30,
        settle_s=0.5,  # anything more (a read twice) would show up too
    )
    assert not run.rejected, [r.detail for r in run.rejected]
    return [batch for _, batch in _reads_in(run, identity)]


def test_every_async_read_is_in_one_verified_batch_exactly_once(
    make_node, make_config, ticker, ledger: Ledger
) -> None:
    node = make_node(
        "reader-async",
        config=make_config(audit={"mode": "async", "batch_max_reads": 40}),
    )
    assert node.wait_caught_up()
    client = CacheClient(node)
    client.put("present", b"v", contract="quotes")
    expected: list[tuple[bytes, ReadOutcome]] = []

    def read(key: str) -> bool:
        r = client.get(key, contract="quotes")
        expected.append(
            (node.hasher.key("default", key), ReadOutcome.HIT if r.hit else ReadOutcome.MISS)
        )
        return r.hit

    deadline = time.monotonic() + 10
    while not read("present"):  # until the view has it (these reads are audited too)
        assert time.monotonic() < deadline
        time.sleep(0.01)
    for i in range(300):
        read("present" if i % 3 == 0 else f"absent-{i}")
    assert any(o is ReadOutcome.HIT for _, o in expected)
    node.close()  # the audit flushes what it holds; the producer seals it

    batches = _verified(ledger, "reader-async", len(expected))
    got = [(r.key_hash, r.outcome) for b in batches for r in b.reads]
    assert got == expected  # each read once, in the order read, under a verified seal
    assert {b.node_id for b in batches} == {"reader-async"}
    assert all(1 <= len(b.reads) <= 40 for b in batches)
    assert len(batches) < len(expected) // 5


def test_concurrent_sync_readers_share_acknowledged_batches(
    make_node, make_config, ticker, ledger: Ledger
) -> None:
    node = make_node("reader-sync", config=make_config(audit={"mode": "sync"}))
    assert node.wait_caught_up()
    threads, per_thread = 8, 25
    errors: list[BaseException] = []
    audited_before_return: list[bool] = []

    def reader(t: int) -> None:
        client = CacheClient(node)
        try:
            for i in range(per_thread):
                client.get(f"t{t}-k{i}", contract="quotes")
                # sync: a read returns only once its batch was acknowledged,
                # so at least this thread's reads so far are
                audited_before_return.append(node.audit.acknowledged >= i + 1)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    workers = [threading.Thread(target=reader, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(120)
    reads = threads * per_thread
    assert errors == [] and all(audited_before_return)
    assert node.audit.acknowledged == reads and node.audit.failed == 0
    node.close()

    batches = _verified(ledger, "reader-sync", reads)
    got = Counter(r.key_hash for b in batches for r in b.reads)
    want = Counter(
        node.hasher.key("default", f"t{t}-k{i}") for t in range(threads) for i in range(per_thread)
    )
    assert got == want  # every read exactly once
    # Group commit: far fewer acknowledged records than reads.
    assert len(batches) <= reads // 2, len(batches)
