"""Eager invalidations read but not yet verified: what each may hide, and for how long.

An eager invalidation takes effect on arrival, before the seal covering it
verifies (a revoke must stop serving at once), but only as far as a record
nobody has verified yet can be trusted (DESIGN.md: "An unverified eager
invalidation may hide what existed when it arrived, only until its unsealed
timeout; then it is undone and alerted"). Each such record gets one marker:

* it hides only versions that existed when the record was first sighted on
  this node (``min(its version, the key's current version then)``), so a
  version written afterwards is served, whatever the record claims;
* it hides them only until its first sighting plus the unsealed timeout;
* it is dropped the moment the view applies or refuses the record (the
  verified invalidation, or the alert, takes over).

A record can be sighted twice: by the live view's consumer, which verifies
and applies everything in log order, and, earlier, by the low-latency
:class:`~cachet.materializers.invalidation_listener.InvalidationListener`,
which only ever asks for a marker. The first sighting fixes the marker; the
second adds none. The listener is told no when the view has read the record
already (the view then has applied it, refused it, or holds its own marker),
so the two orders of the race leave the same state and no stale marker.

Nothing here is verified state: no offset, chain head, sequence position or
duplicate memory changes because of a marker, and none survives a restart.
What the listener may add is bounded (``max_early``): a flood of forged
records costs at most that many markers, after which the listener's
sightings are declined and the view's own (verifying) read takes over.

Not thread-safe on its own: the live view calls it under its lock.
"""

from __future__ import annotations

import enum
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass

__all__ = ["DEFAULT_MAX_EARLY", "Coords", "EarlySighting", "UnverifiedInvalidations"]

# (topic, partition, offset) of a record.
Coords = tuple[str, int, int]

# Listener markers alive at once. A genuine deployment has a handful (one per
# revoke in flight, for the few milliseconds until the view verifies it); the
# bound only matters under a flood of forgeries.
DEFAULT_MAX_EARLY = 4096


class EarlySighting(enum.Enum):
    """What the listener's sighting of an eager invalidation did."""

    HIDDEN = "hidden"  # a marker hides the key's current version
    NOTHING_TO_HIDE = "nothing_to_hide"  # no version of the key exists yet
    READ_BY_VIEW = "read_by_view"  # the view read the record first: it is the view's
    SEEN_BEFORE = "seen_before"  # this record was sighted already
    AT_CAPACITY = "at_capacity"  # too many listener markers: left to the view


@dataclass(frozen=True, slots=True)
class _Marker:
    up_to_version: int
    expires_at_us: int
    origin: Coords | None


class UnverifiedInvalidations:
    """Markers of unverified eager invalidations (see the module docstring).

    ``read_from`` is where the view's consumer starts per (topic, partition):
    records below were applied or refused before this start.
    """

    def __init__(
        self,
        timeout_us: int,
        *,
        read_from: Mapping[tuple[str, int], int] | None = None,
        max_early: int = DEFAULT_MAX_EARLY,
    ) -> None:
        if max_early < 0:
            raise ValueError(f"max_early must be >= 0, got {max_early}")
        self.timeout_us = timeout_us
        self.max_early = max_early
        self._markers: dict[bytes, list[_Marker]] = {}
        # Every sighted record not yet applied or refused by the view.
        self._key_of: dict[Coords, bytes] = {}
        # Per partition: the next offset the view reads.
        self._read_to: dict[tuple[str, int], int] = dict(read_from or {})
        # Per partition: offsets the listener sighted and the view has not
        # read yet, ascending (the listener reads each partition in order).
        self._early: dict[tuple[str, int], deque[int]] = {}
        self._early_count = 0
        # Markers of this node's own invalidations (no record to resolve
        # them): dropped once expired, oldest first.
        self._own: deque[tuple[int, bytes]] = deque()

    # -- sightings ---------------------------------------------------------

    def view_read(self, origin: Coords) -> bool:
        """The view read the record at ``origin`` (any data record, before it
        is verified). True when the listener sighted it first: its marker, if
        any, stands and the view must add none."""
        topic, partition, offset = origin
        part = (topic, partition)
        self._read_to[part] = max(self._read_to.get(part, 0), offset + 1)
        early = self._early.get(part)
        while early and early[0] <= offset:
            sighted = early.popleft()
            self._early_count -= 1
            if sighted < offset:
                # Passed without being read as an event (the view could not
                # decode it): nothing will ever resolve it, so resolve it now.
                self.resolve((topic, partition, sighted))
        return origin in self._key_of

    def view_note(
        self, origin: Coords, key_hash: bytes, version: int | None, current: int | None, now_us: int
    ) -> bool:
        """The view read an unverified eager invalidation the listener did not
        sight first; True when a marker now hides ``current``."""
        return self._add(key_hash, version, current, now_us, origin)

    def listener_sighted(
        self, origin: Coords, key_hash: bytes, version: int | None, current: int | None, now_us: int
    ) -> EarlySighting:
        """The listener read an eager invalidation (unverified, maybe forged)."""
        topic, partition, offset = origin
        part = (topic, partition)
        if offset < self._read_to.get(part, 0):
            return EarlySighting.READ_BY_VIEW
        if origin in self._key_of:
            return EarlySighting.SEEN_BEFORE
        if self._early_count >= self.max_early:
            return EarlySighting.AT_CAPACITY
        self._early.setdefault(part, deque()).append(offset)
        self._early_count += 1
        # Even with nothing to hide: the sighting fixes what this record may
        # ever hide on this node, so the view's later read adds no marker
        # over a version written in between.
        self._key_of[origin] = key_hash
        if self._add(key_hash, version, current, now_us, origin):
            return EarlySighting.HIDDEN
        return EarlySighting.NOTHING_TO_HIDE

    def own(self, key_hash: bytes, version: int | None, current: int | None, now_us: int) -> bool:
        """This node emitted an eager invalidation: hide at once, bounded the
        same way until its own record is verified."""
        if not self._add(key_hash, version, current, now_us, None):
            return False
        self._own.append((now_us + self.timeout_us, key_hash))
        return True

    def _add(
        self,
        key_hash: bytes,
        version: int | None,
        current: int | None,
        now_us: int,
        origin: Coords | None,
    ) -> bool:
        if current is None:
            return False  # nothing exists yet, so nothing to hide
        # Never beyond what exists now: a later genuine version is served.
        limit = current if version is None else min(version, current)
        marker = _Marker(limit, now_us + self.timeout_us, origin)
        self._markers.setdefault(key_hash, []).append(marker)
        if origin is not None:
            self._key_of[origin] = key_hash
        return True

    # -- resolution and time -----------------------------------------------

    def resolve(self, origin: Coords) -> bytes | None:
        """The view applied or refused the record at ``origin``: drop its
        marker. Returns the key hash it concerned (None: never sighted)."""
        key_hash = self._key_of.pop(origin, None)
        if key_hash is None:
            return None
        marks = self._markers.get(key_hash)
        if marks:
            kept = [m for m in marks if m.origin != origin]
            if kept:
                self._markers[key_hash] = kept
            else:
                del self._markers[key_hash]
        return key_hash

    def hides(self, key_hash: bytes, version: int, now_us: int) -> bool:
        """A live marker covers ``version`` of the key (expired ones are dropped)."""
        marks = self._markers.get(key_hash)
        if not marks:
            return False
        live = [m for m in marks if m.expires_at_us > now_us]
        if len(live) != len(marks):
            if live:
                self._markers[key_hash] = live
            else:
                del self._markers[key_hash]
        return any(version <= m.up_to_version for m in live)

    def sweep(self, now_us: int) -> None:
        """Drop expired markers of this node's own invalidations (a key that
        is never read again would otherwise keep one)."""
        while self._own and self._own[0][0] <= now_us:
            _, key_hash = self._own.popleft()
            self.hides(key_hash, -1, now_us)

    # -- what is held --------------------------------------------------------

    @property
    def early_count(self) -> int:
        """Listener sightings the view has not read yet (at most ``max_early``)."""
        return self._early_count

    @property
    def marker_count(self) -> int:
        """Markers held now, expired ones not yet dropped included."""
        return sum(len(m) for m in self._markers.values())

    @property
    def sighted_count(self) -> int:
        """Sighted records the view has not applied or refused yet."""
        return len(self._key_of)
