"""Self-verification: a failed run logs, alerts and fails health; a clean one clears it."""

from __future__ import annotations

import threading

from cachet.materializers.archive.report import ArchiveCheck, ArchiveReport, Inconsistency
from cachet.materializers.archive.selfcheck import SelfVerification
from cachet.schemas.events import EventType

BROKEN = ArchiveReport(
    "arch",
    (),
    Inconsistency(ArchiveCheck.LEAF, "leaf_mismatch", 2, "segment-000000000002.avro", 7, "t.entries", 1, 41, "verified", "leaf_mismatch"),  # fmt: skip
    10, 2, 0, 0,
)  # fmt: skip
CLEAN = ArchiveReport("arch", (), None, 12, 3, 0, 0)


def test_failure_alerts_and_fails_health_then_recovers(caplog) -> None:
    reports = [BROKEN, CLEAN]
    alerts: list[tuple[EventType, dict]] = []
    check = SelfVerification(lambda: reports.pop(0), lambda t, p: alerts.append((t, p)), 0)
    check.run_once()
    assert alerts and alerts[0][0] is EventType.INTEGRITY_FAILURE
    payload = alerts[0][1]
    assert (payload["status"], payload["topic"], payload["partition"], payload["offset"]) == ("archive.leaf", "t.entries", 1, 41)  # fmt: skip
    assert "segment-000000000002.avro record 7" in payload["detail"]
    assert check.problems and "leaf" in check.problems[0]
    assert any(r.levelname == "ERROR" for r in caplog.records)
    check.run_once()
    assert check.problems == [] and len(alerts) == 1


def test_a_crashing_verification_is_a_failure() -> None:
    alerts: list = []

    def boom() -> ArchiveReport:
        raise OSError("disk gone")

    check = SelfVerification(boom, lambda t, p: alerts.append(p), 0)
    check.run_once()
    assert alerts[0]["status"] == "archive.verify-error"
    assert "disk gone" in check.problems[0]


def test_runs_on_request() -> None:
    done = threading.Event()

    def verify() -> ArchiveReport:
        done.set()
        return CLEAN

    check = SelfVerification(verify, None, 0)  # no schedule: on request only
    stop = threading.Event()
    t = threading.Thread(target=check.run, args=(stop,))
    t.start()
    check.request()
    assert done.wait(10)
    stop.set()
    check.stop()
    t.join(10)
    assert check.runs == 1
