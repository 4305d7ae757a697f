"""The erasure docket: every request, its completed stages and the legal holds.

Rebuilt on every start from the ``erasure`` topic, read from offset 0
through the verifying consumer (:mod:`cachet.processors.erasure.intake`):
the log, not the processor's memory, says which requests were carried out.
That is what makes the processor idempotent and resumable: a stage is due
exactly when no verified ``ErasureCompleted`` of the processor's identity
reports it, so a request completed before a crash is never redone, and one
interrupted mid-way is carried out again (revocations skip what is already
REVOKED, key destruction is idempotent).

Stages of a request (``ErasureCompleted.stage``), each reported once:

* ``immediate`` -- due as soon as the request is known;
* ``retention_end`` -- due when the latest completion held groups under a
  retention obligation, at the latest ``held_until_us`` among them;
* ``hold_lifted`` -- due when the latest completion held groups under a legal
  hold and no active hold covers any of them any more.

One ``retention_end`` and one ``hold_lifted`` per request: a follow-up stage
is due only once every obligation of its kind on the request's held groups
ended, so it never needs a second report.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field

from cachet.crypto.identifiers import same_identifier
from cachet.processors.erasure.plan import LegalHold
from cachet.schemas.payloads import (
    ErasureCompleted,
    ErasureRequested,
    ErasureStage,
    LegalHoldAction,
    LegalHoldChanged,
)

__all__ = ["DueStage", "ErasureCase", "ErasureDocket", "KvScrubEvidence"]

log = logging.getLogger(__name__)

_SCRUB_EVIDENCE_KEPT = 10_000


@dataclass
class ErasureCase:
    """One erasure request and the stages reported for it, in log order."""

    request: ErasureRequested
    requested_at_us: int
    requested_by_identity: str
    completions: dict[str, ErasureCompleted] = field(default_factory=dict)
    latest: ErasureCompleted | None = None

    def done(self, stage: ErasureStage) -> bool:
        return stage.value in self.completions


@dataclass(frozen=True, slots=True)
class DueStage:
    """A stage to carry out now. ``only_groups`` (follow-ups): the
    (namespace, contract) groups the latest completion held."""

    request: ErasureRequested
    requested_at_us: int
    stage: ErasureStage
    only_groups: frozenset[tuple[str, str]] | None


@dataclass(frozen=True, slots=True)
class KvScrubEvidence:
    """A verified KvScrubCompleted with trigger ERASURE."""

    worker_id: str
    tenant: str  # hex of the tenant's keyed hash (the subject's, in a summary)
    blocks: int
    occurred_at_us: int
    # A worker's summary of one erasure names its request id; a session's own
    # evidence names the session's request.
    request_id: str | None = None


class ErasureDocket:
    """Thread-safe record of requests, completions, holds and scrub evidence.

    Fed only with verified events from identities allowed to make them (the
    intake checks); read by the processor's worker thread.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._cases: dict[str, ErasureCase] = {}
        self._holds: dict[str, LegalHold] = {}
        # Only the recent past matters (a request waits for evidence a few
        # seconds); bounded, though the intake reads kvscrub from offset 0.
        self._scrubs: deque[KvScrubEvidence] = deque(maxlen=_SCRUB_EVIDENCE_KEPT)
        self.changed = threading.Event()  # set on every change: the worker wakes up

    # -- feeding (the intake's poll thread) -----------------------------------

    def add_request(self, request: ErasureRequested, at_us: int, identity: str) -> bool:
        """Record a request; False when its request_id is already known (a
        retried request never acts twice)."""
        with self._lock:
            known = self._cases.get(request.request_id)
            if known is not None:
                if not same_identifier(known.request.subject_hash, request.subject_hash):
                    log.warning(
                        "erasure request %s re-sent for another subject: ignored",
                        request.request_id,
                    )
                return False
            self._cases[request.request_id] = ErasureCase(request, at_us, identity)
        self.changed.set()
        return True

    def add_completion(self, completed: ErasureCompleted) -> bool:
        """Record a verified completion of the processor's identity; False for
        a second report of the same (request_id, stage), which changes nothing."""
        with self._lock:
            case = self._cases.get(completed.request_id)
            if case is None:
                # Completions follow their request in the same partition (one
                # record key, the subject hash); defend against the odd one.
                log.warning("ErasureCompleted for unknown request %s", completed.request_id)
                return False
            if completed.stage in case.completions:
                log.warning(
                    "second ErasureCompleted for %s stage %s: the first one stands",
                    completed.request_id,
                    completed.stage,
                )
                return False
            case.completions[completed.stage] = completed
            case.latest = completed
        self.changed.set()
        return True

    def hold_changed(self, change: LegalHoldChanged) -> None:
        """Set or lift a legal hold."""
        with self._lock:
            if change.action is LegalHoldAction.SET:
                self._holds[change.hold_id] = LegalHold(
                    change.hold_id, change.subject_hash, change.namespace, change.reason
                )
            elif change.action is LegalHoldAction.LIFTED:
                if self._holds.pop(change.hold_id, None) is None:
                    log.warning(
                        "legal hold %s lifted but never set (or lifted twice)", change.hold_id
                    )
            else:
                log.warning("legal hold %s: unknown action, ignored", change.hold_id)
        self.changed.set()

    def note_kv_scrub(self, evidence: KvScrubEvidence) -> None:
        with self._lock:
            self._scrubs.append(evidence)
        self.changed.set()

    # -- reading (the worker thread) ------------------------------------------

    def holds(self) -> tuple[LegalHold, ...]:
        with self._lock:
            return tuple(self._holds.values())

    def case(self, request_id: str) -> ErasureCase | None:
        with self._lock:
            return self._cases.get(request_id)

    def kv_scrubs(
        self, tenant: str, since_us: int, erasure: str | None = None
    ) -> list[KvScrubEvidence]:
        """Scrub evidence for erasure request ``erasure``: the workers'
        summaries of it when there are any (one per worker, counted once);
        else evidence for ``tenant`` (hex) at or after ``since_us`` (workers
        that do not summarize)."""
        with self._lock:
            summaries = [s for s in self._scrubs if erasure and s.request_id == erasure]
            if summaries:
                return list({s.worker_id: s for s in summaries}.values())
            return [s for s in self._scrubs if s.tenant == tenant and s.occurred_at_us >= since_us]

    def due(self, now_us: int) -> list[DueStage]:
        """The stages due at ``now_us``, oldest request first."""
        with self._lock:
            holds = list(self._holds.values())
            cases = sorted(self._cases.values(), key=lambda c: c.requested_at_us)
            return [d for c in cases if (d := _due(c, holds, now_us)) is not None]

    def next_retention_end_us(self) -> int | None:
        """When the next retention_end stage falls due (None: none pending)."""
        with self._lock:
            times = [t for c in self._cases.values() if (t := _retention_end(c)) is not None]
        return min(times) if times else None

    def pending(self) -> int:
        """Requests with a stage not reported yet (due now or later)."""
        with self._lock:
            holds = list(self._holds.values())
            return sum(1 for c in self._cases.values() if _open(c, holds))


def _groups(completed: ErasureCompleted, *, indefinite: bool) -> frozenset[tuple[str, str]]:
    return frozenset(
        (h.namespace, h.contract) for h in completed.held if (h.held_until_us is None) == indefinite
    )


def _retention_end(case: ErasureCase) -> int | None:
    if case.latest is None or case.done(ErasureStage.RETENTION_END):
        return None
    ends = [h.held_until_us for h in case.latest.held if h.held_until_us is not None]
    return max(ends) if ends else None


def _still_held(case: ErasureCase, holds: Iterable[LegalHold]) -> bool:
    assert case.latest is not None
    subject = case.request.subject_hash
    groups = _groups(case.latest, indefinite=True)
    return any(h.covers(subject, ns) for h in holds for ns, _ in groups)


def _due(case: ErasureCase, holds: list[LegalHold], now_us: int) -> DueStage | None:
    if not case.done(ErasureStage.IMMEDIATE):
        return DueStage(case.request, case.requested_at_us, ErasureStage.IMMEDIATE, None)
    latest = case.latest
    assert latest is not None
    end = _retention_end(case)
    if end is not None and now_us >= end:
        groups = _groups(latest, indefinite=False) | _groups(latest, indefinite=True)
        return DueStage(case.request, case.requested_at_us, ErasureStage.RETENTION_END, groups)
    if (
        _groups(latest, indefinite=True)
        and not case.done(ErasureStage.HOLD_LIFTED)
        and not _still_held(case, holds)
    ):
        groups = _groups(latest, indefinite=False) | _groups(latest, indefinite=True)
        return DueStage(case.request, case.requested_at_us, ErasureStage.HOLD_LIFTED, groups)
    return None


def _open(case: ErasureCase, holds: list[LegalHold]) -> bool:
    if not case.done(ErasureStage.IMMEDIATE):
        return True
    assert case.latest is not None
    if _retention_end(case) is not None:
        return True
    return bool(_groups(case.latest, indefinite=True)) and not case.done(ErasureStage.HOLD_LIFTED)
