"""The expiry processor: ACTIVE entries past their limit become EXPIRED.

Reads refuse stale values on their own (the contract is evaluated on every
read), but a value nobody reads would stay ACTIVE in the log forever. This
processor makes expiry a fact of the ledger: for every ACTIVE entry of its
own live-view replica that is past its limit it emits a sealed
StateTransitioned ACTIVE -> EXPIRED, authority ``SYSTEM_EXPIRY``, chained to
the entry's last event (``prev_event_hash``) -- whether or not anybody ever
reads it.

The limit of an entry is its ``ttl_ms`` when the write set one, otherwise
its contract's ``max_staleness_ms``. A TTL counts from the write (event
time). Max staleness counts from the write too, except under contractual
invalidation, where it counts from the source's last freshness
confirmation -- the same age a read computes (:mod:`cachet.verdict`), so the
processor never expires a value a read would still serve.

Emitted at most once per (key, version) while in flight: a transition is
remembered from its emission until the view shows the entry moved on (no
longer ACTIVE, or a newer version); only if it has not landed after
``retry_after_s`` (an emission lost before its seal) is it emitted again.
A restarted processor forgets what it emitted. It scans only once its view
caught up with the log, so it sees transitions that already landed; one
still in flight at the restart is emitted a second time. That is harmless
for what is served -- both events say ACTIVE -> EXPIRED for the same
version and an EXPIRED entry is never served -- but the second one is a
real event in the ledger (it moves the key's hash-chain head and the
state-change time in the view).

Every scan walks the whole view: O(entries) per ``scan_interval_s``.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Mapping
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import ContractConfig
from cachet.config.enums import InvalidationMode
from cachet.errors import StateFailure
from cachet.materializers.live_view import FRESHNESS_CONFIRMED, LiveView
from cachet.materializers.view import EntryState, ViewEntry
from cachet.producers.sealing import SealingProducer
from cachet.schemas.events import EventType

__all__ = ["EXPIRY_AUTHORITY", "ExpiryDecision", "ExpiryLimit", "ExpiryProcessor", "expiry_of"]

log = logging.getLogger(__name__)

# TransitionAuthority of every transition this processor emits: a rule, no key.
EXPIRY_AUTHORITY: Mapping[str, str | None] = {
    "kind": "SYSTEM_EXPIRY",
    "key_id": None,
    "role": None,
}


class ExpiryLimit(enum.StrEnum):
    """Which limit an entry passed; the prefix of the transition's reason."""

    TTL = "ttl_exceeded"
    MAX_STALENESS = "max_staleness_exceeded"


@dataclass(frozen=True, slots=True)
class ExpiryDecision:
    """An ACTIVE entry past its limit, and the reason its transition carries."""

    entry: ViewEntry
    limit: ExpiryLimit
    age_ms: int
    limit_ms: int

    @property
    def reason(self) -> str:
        """Machine-matchable code, then the numbers, e.g.
        ``ttl_exceeded: age 31200 ms > ttl 30000 ms``."""
        if self.limit is ExpiryLimit.TTL:
            what = "ttl"
        else:
            what = f"contract {self.entry.contract} max staleness"
        return f"{self.limit.value}: age {self.age_ms} ms > {what} {self.limit_ms} ms"


def expiry_of(
    entry: ViewEntry, contract: ContractConfig | None, now_us: int
) -> ExpiryDecision | None:
    """The decision to expire ``entry`` at ``now_us``, or None (not ACTIVE,
    within its limit, or no limit known: no TTL and an unknown contract)."""
    if entry.state is not EntryState.ACTIVE:
        return None
    if entry.ttl_ms is not None:
        age_ms = (now_us - entry.written_at_us) // 1000
        if age_ms > entry.ttl_ms:
            return ExpiryDecision(entry, ExpiryLimit.TTL, age_ms, entry.ttl_ms)
        return None
    if contract is None:
        return None
    since_us = entry.written_at_us
    # Contractual invalidation: a confirmed value is current as of its
    # confirmation, however old the write (cachet.verdict, check 7).
    if (
        contract.invalidation is InvalidationMode.CONTRACTUAL
        and entry.state_reason == FRESHNESS_CONFIRMED
    ):
        since_us = max(since_us, entry.state_changed_at_us)
    age_ms = (now_us - since_us) // 1000
    if age_ms > contract.max_staleness_ms:
        return ExpiryDecision(entry, ExpiryLimit.MAX_STALENESS, age_ms, contract.max_staleness_ms)
    return None


class ExpiryProcessor:
    """Expires ACTIVE entries of ``view`` past their TTL or max staleness.

    ``view`` is this processor's own replica; :meth:`run` polls it, so no
    other thread may. ``producer`` signs under the processor's identity.
    Metrics go to ``registry`` (a fresh one when None). ``clock`` says when
    it is (the wall clock ages entries; the monotonic one paces scans).
    """

    def __init__(
        self,
        view: LiveView,
        producer: SealingProducer,
        contracts: Mapping[str, ContractConfig],
        *,
        clock: Clock = SYSTEM_CLOCK,
        scan_interval_s: float = 0.5,
        retry_after_s: float = 30.0,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self._view = view
        self._producer = producer
        self._contracts = contracts
        self._clock = clock
        self.scan_interval_s = scan_interval_s
        self._retry_after_us = int(retry_after_s * 1_000_000)
        # (key_hash, version) -> when its transition was emitted (wall clock, us).
        self._in_flight: dict[tuple[bytes, int], int] = {}
        self._unknown_contracts: set[str] = set()
        self.registry = registry if registry is not None else CollectorRegistry()
        self.transitions = Counter(
            "cachet_expiry_transitions",
            "ACTIVE -> EXPIRED transitions emitted, by the limit passed",
            ["limit"],
            registry=self.registry,
        )
        self.scans = Counter(
            "cachet_expiry_scans", "Scans of the view that ran", registry=self.registry
        )
        in_flight = Gauge(
            "cachet_expiry_in_flight",
            "Transitions emitted that the view does not show yet",
            registry=self.registry,
        )
        in_flight.set_function(lambda: len(self._in_flight))

    @property
    def in_flight(self) -> int:
        """Transitions emitted that the view does not show yet."""
        return len(self._in_flight)

    def scan(self, now_us: int) -> int:
        """Emit a transition for every ACTIVE entry past its limit at ``now_us``
        and not already in flight; returns how many were emitted.

        Does nothing until the view caught up with the log, or while it is in
        a log discontinuity: a view behind the log has not seen transitions
        that already happened, and would make the processor repeat them.
        """
        health = self._view.health()
        if not health.caught_up or health.discontinuity:
            return 0
        self.scans.inc()
        emitted = 0
        still_active: set[tuple[bytes, int]] = set()
        for entry in self._view.store.entries():
            if entry.state is not EntryState.ACTIVE:
                continue
            ident = (entry.key_hash, entry.version)
            still_active.add(ident)
            sent_at = self._in_flight.get(ident)
            if sent_at is not None and now_us - sent_at < self._retry_after_us:
                continue
            decision = expiry_of(entry, self._contract(entry), now_us)
            if decision is None:
                continue
            if sent_at is not None:
                log.warning(
                    "expiry of key %s version %d not in the view %.1f s after it was emitted; "
                    "emitting it again",
                    entry.key_hash.hex(),
                    entry.version,
                    (now_us - sent_at) / 1e6,
                )
            self._emit(decision)
            self._in_flight[ident] = now_us
            emitted += 1
        # The view shows these moved on (expired, superseded, revoked, a newer
        # version): nothing of theirs is in flight any more.
        for ident in self._in_flight.keys() - still_active:
            del self._in_flight[ident]
        return emitted

    def _contract(self, entry: ViewEntry) -> ContractConfig | None:
        contract = self._contracts.get(entry.contract)
        if (
            contract is None
            and entry.ttl_ms is None
            and entry.contract not in self._unknown_contracts
        ):
            # Reads of it miss with contract_unknown; without a TTL there is
            # no limit to expire it by. Said once per contract, not per scan.
            self._unknown_contracts.add(entry.contract)
            log.warning(
                "entries of unknown contract %r have no TTL: not expired by this processor",
                entry.contract,
            )
        return contract

    def _emit(self, decision: ExpiryDecision) -> None:
        entry = decision.entry
        self._producer.emit(
            EventType.STATE_TRANSITIONED,
            {
                "key_hash": entry.key_hash,
                "namespace": entry.namespace,
                "version": entry.version,
                "from_state": EntryState.ACTIVE.value,
                "to_state": EntryState.EXPIRED.value,
                "authority": dict(EXPIRY_AUTHORITY),
                "reason": decision.reason,
                # The per-key hash chain: this event follows the key's last one.
                "prev_event_hash": entry.event_hash,
            },
            key=entry.key_hash,
        )
        self.transitions.labels(decision.limit.value).inc()
        log.info(
            "expired key %s version %d (%s)", entry.key_hash.hex(), entry.version, decision.reason
        )

    def run(self, stop: threading.Event) -> None:
        """Poll the view and scan every ``scan_interval_s`` until ``stop``."""
        next_scan = self._clock.monotonic()
        poll_s = min(0.1, self.scan_interval_s)
        while not stop.is_set():
            try:
                self._view.poll(poll_s)
            except StateFailure:
                log.exception("expiry: the view stopped; expiry stops with it")
                return
            except Exception:  # noqa: BLE001 - one failed poll must not stop expiry
                log.exception("expiry: view poll failed")
                stop.wait(0.1)
                continue
            if self._clock.monotonic() < next_scan:
                continue
            next_scan = self._clock.monotonic() + self.scan_interval_s
            try:
                self.scan(self._clock.now_us())
            except Exception:  # noqa: BLE001 - retried at the next interval
                log.exception("expiry: scan failed")
