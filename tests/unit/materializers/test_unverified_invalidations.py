"""Markers of unverified eager invalidations: what the listener's and the
view's sightings may hide, for how long, and that neither order of the two
leaves a marker behind (cachet.materializers.unverified_invalidations)."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from cachet.materializers.unverified_invalidations import EarlySighting, UnverifiedInvalidations

T = "inv"
TIMEOUT_US = 3_000_000
K = b"k" * 32
OTHER = b"o" * 32


def marks(start: int = 0, max_early: int = 16) -> UnverifiedInvalidations:
    return UnverifiedInvalidations(TIMEOUT_US, read_from={(T, 0): start}, max_early=max_early)


def test_listener_first_then_the_view_adds_no_marker_and_resolving_drops_it() -> None:
    u = marks()
    assert u.listener_sighted((T, 0, 5), K, 3, 3, now_us=0) is EarlySighting.HIDDEN
    assert u.hides(K, 3, 1)
    assert u.view_read((T, 0, 5)) is True  # sighted first: the view adds none
    assert u.marker_count == 1 and u.early_count == 0
    assert u.resolve((T, 0, 5)) == K
    assert not u.hides(K, 3, 1) and u.marker_count == 0 and u.sighted_count == 0


def test_view_first_then_the_listener_is_declined() -> None:
    u = marks()
    assert u.view_read((T, 0, 5)) is False
    assert u.view_note((T, 0, 5), K, 3, 3, now_us=0)
    assert u.resolve((T, 0, 5)) == K  # verified and applied
    # The listener reads the same record afterwards: declined, nothing hidden.
    assert u.listener_sighted((T, 0, 5), K, 3, 3, now_us=1) is EarlySighting.READ_BY_VIEW
    assert not u.hides(K, 3, 1) and u.marker_count == 0 and u.sighted_count == 0


def test_records_below_where_the_view_started_are_declined() -> None:
    # Applied (or refused, or timed out) before a restart: the view starts
    # past them, and a listener that reads them again hides nothing.
    u = marks(start=100)
    for offset in (0, 50, 99):
        got = u.listener_sighted((T, 0, offset), K, None, 7, now_us=0)
        assert got is EarlySighting.READ_BY_VIEW
    assert u.listener_sighted((T, 0, 100), K, None, 7, now_us=0) is EarlySighting.HIDDEN
    assert u.marker_count == 1


def test_never_beyond_what_exists_at_the_first_sighting() -> None:
    u = marks()
    # A forged "every version" (None) or an absurd version hides the current one only.
    assert u.listener_sighted((T, 0, 1), K, None, 2, now_us=0) is EarlySighting.HIDDEN
    assert u.listener_sighted((T, 0, 2), K, 2**62, 2, now_us=0) is EarlySighting.HIDDEN
    assert u.hides(K, 2, 1)
    assert not u.hides(K, 3, 1)  # written after it arrived: served
    # The view reads them when version 3 exists: it adds nothing that would hide it.
    assert u.view_read((T, 0, 1)) and u.view_read((T, 0, 2))
    assert not u.hides(K, 3, 2)


def test_nothing_to_hide_still_fixes_the_sighting() -> None:
    u = marks()
    assert u.listener_sighted((T, 0, 1), K, None, None, now_us=0) is EarlySighting.NOTHING_TO_HIDE
    assert not u.hides(K, 1, 1)
    # Version 1 is written before the view reads the record: the view must
    # not hide it (it did not exist when the record arrived).
    assert u.view_read((T, 0, 1)) is True
    assert not u.hides(K, 1, 2)
    assert u.resolve((T, 0, 1)) == K and u.sighted_count == 0


def test_a_marker_hides_only_until_the_first_sighting_plus_the_timeout() -> None:
    u = marks()
    u.listener_sighted((T, 0, 1), K, None, 1, now_us=1_000)
    assert u.hides(K, 1, 1_000 + TIMEOUT_US - 1)
    assert not u.hides(K, 1, 1_000 + TIMEOUT_US)
    assert u.marker_count == 0  # dropped when found expired
    # The view reading it later does not start the clock again.
    assert u.view_read((T, 0, 1)) is True
    assert not u.hides(K, 1, 1_000 + TIMEOUT_US + 1)


def test_the_listener_is_bounded_and_the_view_frees_what_it_reads() -> None:
    u = marks(max_early=3)
    got = [u.listener_sighted((T, 0, o), K, None, 1, now_us=0) for o in range(10)]
    assert got[:3] == [EarlySighting.HIDDEN] * 3
    assert got[3:] == [EarlySighting.AT_CAPACITY] * 7
    assert u.early_count == 3 and u.marker_count == 3
    # Declined sightings are the view's: it marks them as it reads them.
    for o in range(10):
        sighted = u.view_read((T, 0, o))
        assert sighted is (o < 3)
        if not sighted:
            u.view_note((T, 0, o), K, None, 1, now_us=0)
    assert u.early_count == 0
    assert u.listener_sighted((T, 0, 10), K, None, 1, now_us=0) is EarlySighting.HIDDEN
    for o in range(11):
        u.resolve((T, 0, o))
    assert u.marker_count == 0 and u.sighted_count == 0


def test_a_sighting_the_view_passes_without_reading_is_dropped() -> None:
    # The view could not decode offset 4 (dead-lettered): nothing resolves it
    # through the verifier, so passing it must.
    u = marks()
    u.listener_sighted((T, 0, 4), K, None, 1, now_us=0)
    assert u.view_read((T, 0, 5)) is False
    assert u.marker_count == 0 and u.early_count == 0 and u.sighted_count == 0


def test_seen_twice_by_the_listener_counts_once() -> None:
    u = marks()
    u.listener_sighted((T, 0, 4), K, None, 1, now_us=0)
    assert u.listener_sighted((T, 0, 4), K, None, 1, now_us=0) is EarlySighting.SEEN_BEFORE
    assert u.marker_count == 1 and u.early_count == 1


def test_own_invalidations_are_swept_once_expired() -> None:
    u = marks()
    assert u.own(K, 1, 1, now_us=0)
    assert not u.own(OTHER, 1, None, now_us=0)  # nothing to hide
    assert u.hides(K, 1, 10)
    u.sweep(TIMEOUT_US - 1)
    assert u.marker_count == 1
    u.sweep(TIMEOUT_US)
    assert u.marker_count == 0


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(0, 9), min_size=1, max_size=30))
def test_records_on_two_partitions_never_share_a_fate(offsets: list[int]) -> None:
    u = UnverifiedInvalidations(TIMEOUT_US)
    for o in offsets:
        u.listener_sighted((T, 1, o), K, None, 1, now_us=0)
    u.view_read((T, 0, 9))  # another partition: nothing there is passed
    assert u.early_count == len(set(offsets))


class Interleavings(RuleBasedStateMachine):
    """The listener and the view read the same partition in any interleaving,
    the view resolves what it read, versions are written, time passes. What
    must hold at every step: nothing hides a version written after the
    record's first sighting, nothing hides past first sighting + timeout,
    the listener holds at most max_early, and once the view resolved every
    record no marker is left."""

    MAX_EARLY = 4

    def __init__(self) -> None:
        super().__init__()
        self.u = UnverifiedInvalidations(TIMEOUT_US, max_early=self.MAX_EARLY)
        self.log: list[int | None] = []  # offset -> version the record names
        self.listener_at = 0
        self.view_at = 0
        self.read: list[int] = []  # read by the view, not resolved yet
        self.current = 1
        self.now = 0
        # offset -> (version current at first sighting, time of first sighting)
        self.first: dict[int, tuple[int, int]] = {}

    def _first(self, offset: int) -> None:
        self.first.setdefault(offset, (self.current, self.now))

    @rule(version=st.one_of(st.none(), st.integers(0, 8)))
    def produce(self, version: int | None) -> None:
        self.log.append(version)

    @precondition(lambda self: self.listener_at < len(self.log))
    @rule()
    def listener_reads(self) -> None:
        o = self.listener_at
        self.listener_at += 1
        got = self.u.listener_sighted((T, 0, o), K, self.log[o], self.current, self.now)
        if got in (EarlySighting.HIDDEN, EarlySighting.NOTHING_TO_HIDE):
            self._first(o)
        if o < self.view_at:
            assert got is EarlySighting.READ_BY_VIEW

    @precondition(lambda self: self.view_at < len(self.log))
    @rule()
    def view_reads(self) -> None:
        o = self.view_at
        self.view_at += 1
        if not self.u.view_read((T, 0, o)):
            self.u.view_note((T, 0, o), K, self.log[o], self.current, self.now)
            self._first(o)
        self.read.append(o)

    @precondition(lambda self: bool(self.read))
    @rule(data=st.data())
    def view_resolves(self, data: st.DataObject) -> None:
        o = data.draw(st.sampled_from(self.read))
        self.read.remove(o)
        self.u.resolve((T, 0, o))

    @rule()
    def write_a_version(self) -> None:
        self.current += 1

    @rule(us=st.integers(1, TIMEOUT_US))
    def time_passes(self, us: int) -> None:
        self.now += us

    @invariant()
    def bounded(self) -> None:
        assert self.u.early_count <= self.MAX_EARLY

    @invariant()
    def hides_only_what_existed_and_only_for_the_timeout(self) -> None:
        if not self.u.hides(K, self.current, self.now):
            return
        unresolved = set(range(self.view_at, len(self.log))) | set(self.read)
        assert any(
            o in self.first
            and self.first[o][0] >= self.current
            and self.now < self.first[o][1] + TIMEOUT_US
            for o in unresolved
        ), "a marker hides a version written after its record was first sighted, or expired"

    @invariant()
    def nothing_left_once_everything_is_resolved(self) -> None:
        if self.view_at == len(self.log) and not self.read:
            assert self.u.marker_count == 0
            assert self.u.sighted_count == 0
            assert self.u.early_count == 0


Interleavings.TestCase.settings = settings(max_examples=150, stateful_step_count=40, deadline=None)
test_interleavings = Interleavings.TestCase
