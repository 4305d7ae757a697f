"""The node's L1 never serves a value superseded by a change it was told of.

A read takes the key's L1 generation, reads the view, decrypts, then
``put``s the plaintext with that generation; the view's poll thread calls
``evict`` after it committed a change. The race: a put that passed its
generation check and an evict that ran before the put stored its value
leave the superseded value in L1 for good (nothing evicts it again).

The races are forced, not hoped for: :func:`explore` stops one thread at
each line it executes inside the L1 (a ``sys.settrace`` hook parks it on a
``threading.Event``), lets the other thread run its whole operation, then
resumes the first, and checks the L1 afterwards. Every interleaving of one
put with one evict at line granularity is tried, in both directions. A
correct L1 may make the second thread wait for the first (a lock): the
parked thread then resumes after ``_PARK_S`` and the second one finishes.
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from types import FrameType
from typing import Any, Protocol

import cachetools
import pytest

from cachet.materializers.view import EntryState, ViewEntry
from cachet.producers import cache_node
from cachet.producers.cache_node import L1Cache, L1Entry
from cachet.verdict import EntryFacts

KEY = b"k" * 32
# How long a parked thread waits for the other one to finish its operation
# before it resumes on its own (it must, when the other waits for its lock).
_PARK_S = 0.05
_JOIN_S = 10.0


class L1Like(Protocol):
    """What a read and the view's poll thread call on an L1."""

    def generation(self, key_hash: bytes) -> int: ...

    def put(self, cached: L1Entry, generation: int) -> Any: ...

    def evict(self, key_hash: bytes) -> None: ...

    def get(self, key_hash: bytes) -> L1Entry | None: ...


def cached_version(version: int, key_hash: bytes = KEY) -> L1Entry:
    """A decrypted entry of ``key_hash`` at ``version``, as a read caches it."""
    entry = ViewEntry(
        key_hash=key_hash,
        namespace="default",
        contract="quotes",
        fingerprint=b"f" * 32,
        version=version,
        state=EntryState.ACTIVE,
        ciphertext=b"c",
        nonce=b"n" * 12,
        data_key_id="ns:default",
        commitment=b"m" * 32,
        aad_version=1,
        subject_hash=None,
        classification="unclassified",
        written_at_us=1,
        ttl_ms=None,
        state_changed_at_us=1,
        state_reason="",
        authority="",
        event_hash=b"e" * 32,
        producer_id="p",
        seal_seq=1,
    )
    facts = EntryFacts(
        state="ACTIVE",
        fingerprint=entry.fingerprint,
        version=version,
        written_at_us=1,
        sealed_schemes=("ml-dsa-65",),
        key_set_id="",
        producer_id="p",
        seal_seq=1,
        namespace="default",
        scope=None,
    )
    return L1Entry(entry, f"v{version}".encode(), facts)


@dataclass(frozen=True, slots=True)
class Interleaving:
    """``parked`` stopped at its ``line``-th traced line while ``other`` ran."""

    parked: str
    line: int
    cached: bytes | None


def _run_parked(
    op: Callable[[], object], stop_at: int, traced: frozenset[str], parked: threading.Event
) -> tuple[threading.Thread, threading.Event, threading.Event]:
    """Start ``op`` on a thread that parks at its ``stop_at``-th line in
    ``traced`` files until ``resume`` is set (or ``_PARK_S`` passed)."""
    resume, finished = threading.Event(), threading.Event()

    def local(frame: FrameType, event: str, arg: object) -> Any:
        if event == "line":
            lines[0] += 1
            if lines[0] == stop_at:
                parked.set()
                resume.wait(_PARK_S)
        return local

    def tracer(frame: FrameType, event: str, arg: object) -> Any:
        return local if frame.f_code.co_filename in traced else None

    lines = [0]

    def body() -> None:
        sys.settrace(tracer)
        try:
            op()
        finally:
            sys.settrace(None)
            finished.set()

    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    return thread, resume, finished


def explore(
    make_l1: Callable[[], L1Like], traced: frozenset[str], max_lines: int = 500
) -> Iterator[Interleaving]:
    """Every interleaving of a racing read's put with an evict: yields the
    outcome of each (what L1 holds for the key afterwards)."""
    for parked_name in ("put", "evict"):
        for stop_at in range(1, max_lines):
            l1 = make_l1()
            # The read: generation taken, view read (version 1), "decrypted".
            generation = l1.generation(KEY)
            stale = cached_version(1)
            # Meanwhile the view committed version 2 and calls evict.
            ops: dict[str, Callable[[], object]] = {
                "put": lambda l1=l1, g=generation, s=stale: l1.put(s, g),  # type: ignore[misc]
                "evict": lambda l1=l1: l1.evict(KEY),  # type: ignore[misc]
            }
            parked = threading.Event()
            first, resume, finished = _run_parked(ops[parked_name], stop_at, traced, parked)
            while not (parked.is_set() or finished.is_set()):
                time.sleep(0.0005)
            if not parked.is_set():  # fewer lines than stop_at: all tried
                first.join(_JOIN_S)
                break
            other_name = "evict" if parked_name == "put" else "put"

            def other(
                op: Callable[[], object] = ops[other_name], resume: threading.Event = resume
            ) -> None:
                op()
                resume.set()

            second = threading.Thread(target=other, daemon=True)
            second.start()
            second.join(_JOIN_S)
            first.join(_JOIN_S)
            assert not first.is_alive() and not second.is_alive(), "deadlock"
            got = l1.get(KEY)
            yield Interleaving(parked_name, stop_at, got.plaintext if got else None)
        else:
            raise AssertionError(f"{parked_name} ran over {max_lines} traced lines")


TRACED = frozenset({cache_node.__file__, cachetools.__file__})


def test_no_interleaving_of_put_and_evict_leaves_the_superseded_value() -> None:
    tried = list(explore(lambda: L1Cache(8), TRACED))
    by_op = {name: [i for i in tried if i.parked == name] for name in ("put", "evict")}
    # Both operations were stopped inside the L1, at several points each.
    assert len(by_op["put"]) >= 3 and len(by_op["evict"]) >= 3
    stale = [i for i in tried if i.cached is not None]
    assert stale == [], f"superseded value left in L1 after the evict: {stale}"


def test_a_read_after_the_change_fills_the_l1_again() -> None:
    l1 = L1Cache(8)
    before = l1.generation(KEY)
    l1.evict(KEY)
    assert not l1.put(cached_version(1), before)
    assert l1.get(KEY) is None
    assert l1.put(cached_version(2), l1.generation(KEY))
    cached, generation = l1.lookup(KEY)
    assert cached is not None and cached.plaintext == b"v2"
    assert generation is None  # a hit puts nothing
    l1.evict(KEY)
    assert l1.lookup(KEY) == (None, l1.generation(KEY))


def test_a_dropped_generation_never_lets_a_stale_put_back() -> None:
    # Bounded generations: the key's stamp is pushed out by changes to other
    # keys between the read's generation and its put. Forgetting the stamp
    # (generation back to 0) would accept the put; the floor refuses it.
    l1 = L1Cache(2)
    before = l1.generation(KEY)
    assert before == 0
    l1.evict(KEY)
    for i in range(5):
        l1.evict(bytes([i]) * 32)
    assert not l1.put(cached_version(1), before)
    assert l1.get(KEY) is None
    # And a generation taken after the change still lets the fresh read in.
    assert l1.put(cached_version(2), l1.generation(KEY))
    got = l1.get(KEY)
    assert got is not None and got.plaintext == b"v2"


def test_generations_never_decrease_under_any_order_of_changes() -> None:
    l1 = L1Cache(3)
    keys = [bytes([i]) * 32 for i in range(6)]
    seen = {k: l1.generation(k) for k in keys}
    for step in range(200):
        changed = keys[(step * 7) % len(keys)]
        l1.evict(changed)
        for k in keys:
            now = l1.generation(k)
            assert now >= seen[k], (step, k)
            if k == changed:
                assert now > seen[k]
            seen[k] = now


def test_the_l1_is_bounded_and_drops_the_least_recently_used() -> None:
    l1 = L1Cache(2)
    a, b, c = (bytes([i]) * 32 for i in (1, 2, 3))
    for k in (a, b):
        assert l1.put(cached_version(1, k), l1.generation(k))
    assert l1.get(a) is not None  # a is now more recent than b
    assert l1.put(cached_version(1, c), l1.generation(c))
    assert len(l1) == 2
    assert l1.get(b) is None
    assert l1.get(a) is not None and l1.get(c) is not None
    assert l1.clear() == 2 and len(l1) == 0


def test_max_entries_must_be_positive() -> None:
    with pytest.raises(ValueError, match="max_entries"):
        L1Cache(0)


def test_concurrent_reads_and_changes_never_leave_a_superseded_value() -> None:
    """Free-running threads, switching every microsecond: after each change
    settles, the L1 holds nothing or exactly the view's current version."""
    l1 = L1Cache(4)
    view = {"version": 1}
    stop = threading.Event()
    errors: list[BaseException] = []
    stale: list[tuple[int, int]] = []

    def reader() -> None:
        try:
            while not stop.is_set():
                generation = l1.generation(KEY)
                version = view["version"]  # read the view after the generation
                l1.put(cached_version(version), generation)
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            errors.append(exc)

    old_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    readers = [threading.Thread(target=reader, daemon=True) for _ in range(2)]
    try:
        for t in readers:
            t.start()
        for version in range(2, 2002):
            # Since the last change settled, only its version may be cached.
            got = l1.get(KEY)
            if got is not None and got.entry.version != view["version"]:
                stale.append((got.entry.version, view["version"]))
            view["version"] = version  # the view commits ...
            l1.evict(KEY)  # ... then tells the L1 (the poll thread's order)
            time.sleep(0)  # let the readers run between changes
    finally:
        stop.set()
        for t in readers:
            t.join(_JOIN_S)
        sys.setswitchinterval(old_interval)
    assert not errors, errors
    assert stale == [], f"(cached, current) versions: {stale[:10]}"
    got = l1.get(KEY)
    assert got is None or got.entry.version == view["version"], (
        f"L1 serves version {got.entry.version if got else None}, view is at {view['version']}"
    )
