"""The archive verifies itself: on a schedule and on demand, alerting on failure.

SEC 17a-4(f)(2)(i)(A) asks a recordkeeping system to "verify automatically
the completeness and accuracy" of what it keeps. :class:`SelfVerification`
runs :func:`~cachet.materializers.archive.verify.verify_archive` every
``interval_s`` (and whenever :meth:`SelfVerification.request` is called),
and on a failed run logs an error, marks the archive's health failing and
emits an IntegrityFailure alert into the signed ledger naming the check,
the segment and the record. A later clean run clears the health problem.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from typing import Any

from cachet.materializers.archive.report import AFTER_RECORDS, ArchiveReport
from cachet.schemas.events import EventType

__all__ = ["SelfVerification", "alert_payload"]

log = logging.getLogger(__name__)

AlertEmitter = Callable[[EventType, dict[str, Any]], None]


def alert_payload(report: ArchiveReport, source: str) -> dict[str, Any]:
    """The IntegrityFailure payload for a failed verification."""
    f = report.first
    assert f is not None
    record = f" record {f.record_index}" if 0 <= f.record_index < AFTER_RECORDS else ""
    return {
        "status": f"archive.{f.check.value}",
        "producer_id": None,
        "seal_seq": None,
        "producer_seq": None,
        "topic": f.topic or "",
        "partition": -1 if f.partition is None else f.partition,
        "offset": -1 if f.offset is None else f.offset,
        "detail": f"{source}: {f.segment}{record}: {f.describe()}"[:1000],
    }


class SelfVerification:
    """Runs ``verify`` on a schedule; see the module docstring.

    ``verify`` returns a report (the caller binds the archive, the pinned
    anchor and the backup set); ``alert`` sends an alert event (e.g. a
    :class:`~cachet.producers.sealing.LedgerAlerts`); ``interval_s`` <= 0
    runs only on request.
    """

    def __init__(
        self,
        verify: Callable[[], ArchiveReport],
        alert: AlertEmitter | None,
        interval_s: float,
        *,
        source: str = "archive",
    ) -> None:
        self._verify = verify
        self._alert = alert
        self._interval_s = interval_s
        self._source = source
        self._wake = threading.Event()
        self.last: ArchiveReport | None = None
        self.runs = 0
        self.error: str | None = None

    @property
    def problems(self) -> list[str]:
        """What the health endpoint reports about the last run."""
        if self.error is not None:
            return [f"archive_verify_error: {self.error}"]
        if self.last is not None and self.last.first is not None:
            return [f"archive_verify_failed: {self.last.first.describe()}"]
        return []

    def request(self) -> None:
        """Run a verification now (from a signal handler or another thread)."""
        self._wake.set()

    def run_once(self) -> ArchiveReport | None:
        self.runs += 1
        try:
            report = self._verify()
        except Exception as exc:  # noqa: BLE001 - a verifier crash is a failed verification
            self.error = f"{type(exc).__name__}: {exc}"
            log.exception("%s: self-verification could not run", self._source)
            self._send(
                {
                    "status": "archive.verify-error",
                    "producer_id": None,
                    "seal_seq": None,
                    "producer_seq": None,
                    "topic": "",
                    "partition": -1,
                    "offset": -1,
                    "detail": f"{self._source}: {self.error}"[:1000],
                }
            )
            return None
        self.error = None
        self.last = report
        if report.ok:
            log.info(
                "%s: self-verification passed (%d segments, %d records verified)",
                self._source,
                len(report.segments),
                report.records_verified,
            )
        else:
            assert report.first is not None
            log.error("%s: self-verification FAILED: %s", self._source, report.first.describe())
            self._send(alert_payload(report, self._source))
        return report

    def _send(self, payload: dict[str, Any]) -> None:
        if self._alert is not None:
            self._alert(EventType.INTEGRITY_FAILURE, payload)

    def run(self, stop: threading.Event) -> None:
        """Verifies every ``interval_s`` (and on request) until ``stop`` is set."""
        while not stop.is_set():
            timeout = self._interval_s if self._interval_s > 0 else None
            self._wake.wait(timeout)
            if stop.is_set():
                return
            self._wake.clear()
            self.run_once()

    def stop(self) -> None:
        """Wakes :meth:`run` so it sees its stop event."""
        self._wake.set()
