"""The KV-cache scrub worker: scrub requests in, forensic events out through
the signed ledger.

A worker owns one :class:`BlockPool` and its :class:`Scrubber`. Requests
reach it from two places only:

* in process: :meth:`KvScrubWorker.finish_request` when the inference code
  that opened a session ends it (the worker's own requests need no log);
* from the log, through :class:`~cachet.processors.kvscrub.intake.ScrubIntake`,
  which reads ``kvscrub`` and ``erasure`` with the verifying consumer and
  calls :meth:`~KvScrubWorker.on_scrub_requested` /
  :meth:`~KvScrubWorker.on_erasure_requested` only for a request whose seal
  verified, whose sealing identity may ask, and which is not history. Never
  wire these two methods to a plain consumer: wiping is loss of service, and
  whoever can write a topic must not be able to choose it.

Flow of one request:

1. a handler validates the request and turns it into :class:`ScrubJob`
   values in the worker's queue; a malformed request raises
   :class:`ScrubRequestError` (the intake dead-letters it);
2. :meth:`KvScrubWorker.drain` runs the queued jobs (release -> one fused
   zeroize -> device-side verify -> free the verified, quarantine the rest);
3. every scrub emits ``KvScrubCompleted`` and, when blocks were quarantined,
   ``KvBlockQuarantined`` through a :class:`SealingProducer`, so the evidence
   is covered by signed seals. Alerts go the same way (:meth:`alert`).

No plaintext identifier reaches the log (DESIGN, "Privacy and access"):
events name a tenant by ``IdentifierHasher.subject(tenant).hex()`` -- the
keyed hash under the deployment secret -- never by its id. Requests name
tenants the same way and the worker resolves the hash against the tenants it
holds. No payload byte is ever put in an event or a log line.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from prometheus_client import CollectorRegistry

from cachet.crypto.identifiers import IdentifierHasher
from cachet.processors.kvscrub.errors import KvScrubError, ScrubRequestError
from cachet.processors.kvscrub.metrics import ScrubMetrics
from cachet.processors.kvscrub.policy import SessionKey, SessionPolicy
from cachet.processors.kvscrub.pool import BlockPool
from cachet.processors.kvscrub.report import ScrubReport, ScrubTrigger
from cachet.processors.kvscrub.scrub import Scrubber
from cachet.processors.kvscrub.state import QuarantineReason
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import ErasureScope

__all__ = [
    "ErasureScope",
    "KvScrubWorker",
    "ScrubJob",
]

logger = logging.getLogger(__name__)

_HASH_BYTES = 32


@dataclass(frozen=True, slots=True)
class ScrubJob:
    """One pending scrub: a request's blocks, or (``request_id=None``) a tenant's."""

    tenant: str
    request_id: str | None
    trigger: ScrubTrigger
    cause: str  # event id of the request (or "local:<request id>"), for logs
    erasure: str | None = None  # the ErasureRequested's request_id this job serves


@dataclass(slots=True)
class _ErasureTally:
    """What this worker did for one erasure request, until its last job ran."""

    subject_hash: bytes
    jobs_left: int
    blocks: int = 0
    bytes: int = 0
    coverage: float = 1.0
    passes: int = 0
    duration_us: int = 0


class KvScrubWorker:
    """Turns scrub and erasure requests into scrubs and signed evidence.

    ``scrubber`` must be built without metrics: the worker observes every
    report into its own :class:`ScrubMetrics` (on ``registry``), so nothing
    is counted twice. ``hasher`` computes the keyed tenant/subject hashes the
    log carries. ``tenant_of_subject`` is an optional directory consulted
    when a TENANT erasure's hash matches no tenant in the pool (e.g. tenants
    whose sessions this worker has already ended); it returns the tenant id
    or ``None``.

    Thread safety: :meth:`open_session` and :meth:`finish_request` may be
    called from inference threads; handlers, :meth:`drain` and :meth:`tick`
    run on the worker's loop thread.
    """

    def __init__(
        self,
        pool: BlockPool,
        scrubber: Scrubber,
        ledger_out: SealingProducer,
        worker_id: str,
        tenant_of_subject: Callable[[bytes], str | None] | None = None,
        registry: CollectorRegistry | None = None,
        *,
        hasher: IdentifierHasher,
    ) -> None:
        if scrubber.pool is not pool:
            raise ValueError("the scrubber must scrub the worker's pool")
        self.pool = pool
        self.scrubber = scrubber
        self.worker_id = worker_id
        self.metrics = ScrubMetrics(registry)
        self._ledger = ledger_out
        self._hasher = hasher
        self._tenant_of_subject = tenant_of_subject
        self._lock = threading.Lock()
        self._queue: deque[ScrubJob] = deque()
        self._tenant_by_hash: dict[bytes, str] = {}
        self._hashed_tenants: set[str] = set()
        self._sessions_of_subject: dict[bytes, set[SessionKey]] = {}
        self._erasures: dict[str, _ErasureTally] = {}

    # ------------------------------------------------------------ sessions
    def open_session(
        self,
        tenant: str,
        request_id: str,
        n_blocks: int,
        *,
        subject: str | bytes | None = None,
        policy: SessionPolicy | None = None,
    ) -> list[int]:
        """Allocate a session's blocks; ``subject`` binds it for SUBJECT erasure."""
        blocks = self.pool.allocate(tenant, request_id, n_blocks, policy=policy)
        digest = self._hasher.subject(tenant)
        with self._lock:
            self._tenant_by_hash[digest] = tenant
            self._hashed_tenants.add(tenant)
            if subject is not None:
                key = SessionKey(tenant, request_id)
                self._sessions_of_subject.setdefault(self._hasher.subject(subject), set()).add(key)
        return blocks

    def finish_request(self, tenant: str, request_id: str) -> None:
        """Queue the scrub of a session the inference code has ended.

        The in-process path of the worker's own request ends: no log record,
        so nothing anyone else writes can trigger or suppress it. The scrub
        runs at the next :meth:`drain`; an unknown session scrubs nothing.
        """
        self._enqueue(
            [ScrubJob(tenant, request_id, ScrubTrigger.REQUEST_FINISHED, f"local:{request_id}")]
        )

    def tenant_ref(self, tenant: str) -> str:
        """How events name ``tenant``: hex of its keyed hash, never the id itself."""
        return self._hasher.subject(tenant).hex()

    def alert(self, event_type: EventType, payload: dict[str, Any]) -> None:
        """Emit an alert as a sealed event; a failure is logged, never raised.

        Alerting must not take the worker down (it is called from inside the
        verifying consumer's handlers).
        """
        try:
            self._ledger.emit(event_type, payload)
        except Exception:  # noqa: BLE001 - see above
            logger.exception("worker %s: alert %s not emitted", self.worker_id, event_type.value)

    # ------------------------------------------------------------ handlers
    # Called by ScrubIntake for verified, authorized, live requests only.
    def on_scrub_requested(self, event: Event) -> None:
        """Queue the scrub a verified ``KvScrubRequested`` asks of this worker (if any)."""
        p = event.payload
        target = p.get("worker_id")
        if target is not None and target != self.worker_id:
            return
        trigger = _trigger(p.get("trigger"))
        digest = _hash_from_hex(str(p["tenant"]))
        request_id = p.get("request_id")
        if trigger is ScrubTrigger.REQUEST_FINISHED and request_id is None:
            raise ScrubRequestError(f"{event.event_id}: REQUEST_FINISHED needs a request_id")
        tenant = self._resolve_tenant(digest)
        if tenant is None:
            logger.debug("scrub request %s: tenant not held here", event.event_id)
            return
        if trigger is ScrubTrigger.ERASURE:
            # Erasure takes the whole tenant, whatever request or subject is
            # named: the conservative superset of what must go.
            request_id = None
        self._enqueue([ScrubJob(tenant, request_id, trigger, event.event_id)])

    def on_erasure_requested(self, event: Event) -> None:
        """Queue the scrubs a verified ``ErasureRequested`` implies for this worker's blocks."""
        p = event.payload
        digest = bytes(p["subject_hash"])
        try:
            scope = ErasureScope(p.get("scope"))
        except ValueError:
            scope = ErasureScope.UNKNOWN
        erasure = str(p["request_id"])
        if scope is ErasureScope.TENANT:
            tenant = self._resolve_tenant(digest)
            jobs = (
                []
                if tenant is None
                else [ScrubJob(tenant, None, ScrubTrigger.ERASURE, event.event_id, erasure)]
            )
        elif scope is ErasureScope.SUBJECT:
            with self._lock:
                keys = sorted(
                    self._sessions_of_subject.pop(digest, set()),
                    key=lambda k: (k.tenant, k.request_id),
                )
            jobs = [
                ScrubJob(k.tenant, k.request_id, ScrubTrigger.ERASURE, event.event_id, erasure)
                for k in keys
            ]
        else:
            raise ScrubRequestError(f"{event.event_id}: erasure scope {p.get('scope')!r} unknown")
        # One summary per erasure, after its last job (at once when there is
        # none): the erasure processor's evidence that this worker acted, even
        # when it held nothing of the subject, named by the request id.
        tally = _ErasureTally(digest, len(jobs))
        if not jobs:
            self._summarize(erasure, tally)
            return
        with self._lock:
            self._erasures[erasure] = tally
        self._enqueue(jobs)

    # ------------------------------------------------------------ work
    @property
    def pending(self) -> int:
        """Scrub jobs waiting in the queue."""
        with self._lock:
            return len(self._queue)

    def drain(self) -> list[ScrubReport]:
        """Run every queued job; returns their reports.

        A job that fails inside the scrubber is logged and skipped (its
        blocks are either still PENDING_SCRUB or quarantined, never free); a
        failure of the signed ledger (SealingError) propagates: a worker that
        cannot record its evidence must stop.
        """
        reports: list[ScrubReport] = []
        while True:
            with self._lock:
                if not self._queue:
                    break
                job = self._queue.popleft()
                self.metrics.set_queue_depth(len(self._queue))
            try:
                report = self._run(job)
            except KvScrubError:
                logger.exception(
                    "scrub job for request %s failed (trigger=%s)", job.cause, job.trigger.value
                )
                self._tally(job, None)
                continue
            self._tally(job, report)
            if report is not None:
                reports.append(report)
        self.metrics.observe_pool(self.pool)
        return reports

    def tick(self, now: float | None = None) -> list[ScrubReport]:
        """Scrub every session whose TTL or reuse budget is spent at ``now`` (pool clock)."""
        reports = self.scrubber.enforce_policies(now)
        for report in reports:
            self._record(report)
        if reports:
            self._prune_subjects()
        self.metrics.observe_pool(self.pool)
        return reports

    # ------------------------------------------------------------ internals
    def _enqueue(self, jobs: list[ScrubJob]) -> None:
        with self._lock:
            self._queue.extend(jobs)
            self.metrics.set_queue_depth(len(self._queue))

    def _run(self, job: ScrubJob) -> ScrubReport | None:
        if job.request_id is None:
            report = self.scrubber.scrub_tenant(job.tenant, job.trigger)
        else:
            report = self.scrubber.scrub_request(job.tenant, job.request_id, job.trigger)
        self._prune_subjects()
        # An empty scrub is evidence only for an erasure ("this worker held
        # nothing of it"); for other triggers it is a redelivery, not news.
        if report.blocks == 0 and job.trigger is not ScrubTrigger.ERASURE:
            return None
        self._record(report)
        return report

    def _tally(self, job: ScrubJob, report: ScrubReport | None) -> None:
        """Counts a finished erasure job; the erasure's last one emits its summary."""
        if job.erasure is None:
            return
        with self._lock:
            tally = self._erasures.get(job.erasure)
            if tally is None:
                return
            tally.jobs_left -= 1
            if report is None:
                tally.coverage = 0.0  # a failed job verified nothing
            else:
                tally.blocks += report.blocks
                tally.bytes += report.bytes
                tally.coverage = min(tally.coverage, report.coverage)
                tally.passes = max(tally.passes, report.passes)
                tally.duration_us += report.duration_us
            if tally.jobs_left > 0:
                return
            del self._erasures[job.erasure]
        self._summarize(job.erasure, tally)

    def _summarize(self, erasure: str, tally: _ErasureTally) -> None:
        """KvScrubCompleted for the whole erasure: tenant is the subject hash,
        request_id the erasure's request id."""
        self._ledger.emit(
            EventType.KV_SCRUB_COMPLETED,
            {
                "worker_id": self.worker_id,
                "tenant": tally.subject_hash.hex(),
                "request_id": erasure,
                "trigger": ScrubTrigger.ERASURE.value,
                "blocks": tally.blocks,
                "bytes": tally.bytes,
                "coverage": tally.coverage,
                "method": self.scrubber.settings.method.value,
                "passes": tally.passes,
                "duration_us": tally.duration_us,
                "device": str(self.pool.device),
            },
            key=tally.subject_hash,
        )

    def _record(self, report: ScrubReport) -> None:
        """Metrics, then the forensic events through the signed ledger."""
        self.metrics.observe(report)
        digest = self._hasher.subject(report.tenant)
        tenant = digest.hex()
        self._ledger.emit(
            EventType.KV_SCRUB_COMPLETED,
            {
                "worker_id": self.worker_id,
                "tenant": tenant,
                "request_id": report.request_id,
                "trigger": report.trigger.value,
                "blocks": report.blocks,
                "bytes": report.bytes,
                "coverage": report.coverage,
                "method": report.method.value,
                "passes": report.passes,
                "duration_us": report.duration_us,
                "device": report.device,
            },
            key=digest,
        )
        if report.quarantined:
            self._ledger.emit(
                EventType.KV_BLOCK_QUARANTINED,
                {
                    "worker_id": self.worker_id,
                    "tenant": tenant,
                    "request_id": report.request_id,
                    "blocks": len(report.quarantined),
                    "bytes": len(report.quarantined) * self.pool.shape.block_bytes,
                    "reason": QuarantineReason.VERIFY_FAILED.value,
                    "coverage": report.coverage,
                },
                key=digest,
            )

    def _resolve_tenant(self, digest: bytes) -> str | None:
        with self._lock:
            tenant = self._tenant_by_hash.get(digest)
            if tenant is None:
                # Sessions may have been opened on the pool directly: hash the
                # tenants it holds now (each once; the map only grows by tenant).
                for key in self.pool.sessions():
                    if key.tenant not in self._hashed_tenants:
                        self._hashed_tenants.add(key.tenant)
                        self._tenant_by_hash[self._hasher.subject(key.tenant)] = key.tenant
                tenant = self._tenant_by_hash.get(digest)
        if tenant is None and self._tenant_of_subject is not None:
            tenant = self._tenant_of_subject(digest)
        return tenant

    def _prune_subjects(self) -> None:
        live = set(self.pool.sessions())
        with self._lock:
            for digest in list(self._sessions_of_subject):
                keys = self._sessions_of_subject[digest] & live
                if keys:
                    self._sessions_of_subject[digest] = keys
                else:
                    del self._sessions_of_subject[digest]


def _trigger(symbol: object) -> ScrubTrigger:
    try:
        return ScrubTrigger(symbol)
    except ValueError:
        return ScrubTrigger.UNKNOWN


def _hash_from_hex(text: str) -> bytes:
    try:
        digest = bytes.fromhex(text)
    except ValueError:
        digest = b""
    if len(digest) != _HASH_BYTES:
        # Refuse, rather than match, a plaintext id: it must not be on the log.
        raise ScrubRequestError(
            "KvScrubRequested.tenant must be the hex of the tenant's keyed hash "
            f"({2 * _HASH_BYTES} hex characters), got {len(text)} characters"
        )
    return digest
