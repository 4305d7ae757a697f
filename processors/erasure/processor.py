"""The erasure processor: carries every allowed erasure request out, once.

It runs with its own :class:`~cachet.producers.cache_node.CacheNode` (its own
identity, ``[erasure] processor_identity``): the node's live view gives the
subject index and each key's chain head, its sealing producer signs what the
processor emits, its vault is where keys are destroyed. Two threads:

* the **intake** thread polls :class:`ErasureIntake` (``erasure`` and
  ``kvscrub`` from offset 0, verified) into the :class:`ErasureDocket`;
* the **worker** thread (:meth:`ErasureProcessor.run`) carries out what the
  docket says is due -- never the poll thread, so a slow vault or broker
  never holds the log back.

A stage (:meth:`ErasureProcessor.carry_out`):

1. **plan** (:func:`plan_erasure`): the subject's groups, erased or held;
2. **revoke**: every ACTIVE entry of an erased group gets a sealed
   StateTransitioned ACTIVE -> REVOKED, authority SYSTEM_ERASURE, reason
   ``erasure:<request_id>``, chained to the key's last event; acknowledged
   before going on. Entries already REVOKED (a resumed run) are skipped;
3. **destroy_keys**: each erased group's data key name is destroyed in the
   vault (idempotent; on a resumed run the tombstones name what went);
4. **evict**: the count of keys every node drops from L1 when it applies the
   verified transitions and this completion;
5. **kv_scrub** (immediate stage): waits up to ``kv_scrub_wait_s`` after the
   request for KvScrubCompleted evidence with trigger ERASURE for the
   subject's hash; its absence is a failure entry, not a block;
6. a sealed **ErasureCompleted** (record key: the subject hash, so it lands
   in the request's partition) with counts, destroyed key ids, the steps,
   failures and the held entries; acknowledged.

Nothing acts before the intake caught up with the log (the docket then
knows every completion, so nothing is repeated) and the view caught up (so
revocations that landed are seen); before each stage both are brought up to
the log end their consumers last fetched, so a hold set just before a
request is known, and entries written before it are in the view.
"""

from __future__ import annotations

import enum
import logging
import threading
from collections.abc import Collection, Mapping
from dataclasses import dataclass

from confluent_kafka import Consumer, Producer, TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.crypto.vault import name_of
from cachet.kafka.settings import consumer_settings, producer_settings
from cachet.materializers.view import EntryState, ViewEntry
from cachet.processors.erasure.docket import DueStage, ErasureDocket
from cachet.processors.erasure.intake import ErasureIntake
from cachet.processors.erasure.plan import ErasurePlan, GroupPlan, plan_erasure
from cachet.processors.erasure.proof import proof_hash
from cachet.producers.cache_node import CacheNode
from cachet.producers.sealing import Delivery
from cachet.schemas.events import EventType
from cachet.schemas.payloads import (
    AuthorityKind,
    ErasureCompleted,
    ErasureStage,
    ErasureStep,
    StateTransitioned,
    TransitionAuthority,
)
from cachet.topics import Topic

__all__ = ["ERASURE_AUTHORITY", "ErasureProcessor", "ErasureStepName", "erasure_reason"]

log = logging.getLogger(__name__)

# Every transition this processor emits: a rule (the erasure), no key.
ERASURE_AUTHORITY = TransitionAuthority(kind=AuthorityKind.SYSTEM_ERASURE)
_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, float("inf"))


class ErasureStepName(enum.StrEnum):
    """``ErasureStep.name`` values, in the order the steps run."""

    REVOKE = "revoke"
    DESTROY_KEYS = "destroy_keys"
    EVICT = "evict"
    KV_SCRUB = "kv_scrub"


def erasure_reason(request_id: str) -> str:
    """StateTransitioned.reason (and the vault tombstone's reason) of a request."""
    return f"erasure:{request_id}"


class _Stopped(Exception):
    """The processor is stopping in the middle of a stage (resumed at restart)."""


@dataclass(frozen=True, slots=True)
class _Revocations:
    revoked: tuple[tuple[bytes, int], ...]  # (key_hash, version), now and before
    emitted: int


class ErasureProcessor:
    """Carries out erasure stages as the docket makes them due (module doc).

    ``node`` is the processor's own node (its identity is the processor's).
    ``allowed_requesters``: identities whose sealed requests and holds are
    acted on. ``kv_scrub_wait_s``: how long after a request scrub evidence
    is waited for. ``retry_after_s``: how long a stage whose completion was
    emitted but not seen verified waits before it is carried out again (an
    emission lost before its seal).
    """

    def __init__(
        self,
        node: CacheNode,
        *,
        bootstrap_servers: str,
        allowed_requesters: Collection[str],
        kv_scrub_wait_s: float = 5.0,
        ack_timeout_s: float = 30.0,
        retry_after_s: float | None = None,
        clock: Clock = SYSTEM_CLOCK,
        registry: CollectorRegistry | None = None,
    ) -> None:
        config = node.config
        self.node = node
        self.view = node.view
        self.vault = node.keys.vault
        self.identity = node.keys.identity
        self._clock = clock
        self._kv_scrub_wait_us = int(kv_scrub_wait_s * 1_000_000)
        self._ack_timeout_s = ack_timeout_s
        unsealed_s = config.attestation.unsealed_timeout_ms / 1000
        self._retry_after_us = int((retry_after_s or 2 * unsealed_s + 5) * 1_000_000)
        self._stop = threading.Event()
        # (request_id, stage) -> when its completion was emitted (not yet seen).
        self._in_flight: dict[tuple[str, str], int] = {}
        self.docket = ErasureDocket()
        self.intake = ErasureIntake(
            self.docket,
            bootstrap_servers=bootstrap_servers,
            names=node.names,
            anchor=node.keys.anchor,
            required=config.attestation.schemes,
            allowed_requesters=allowed_requesters,
            processor_identity=self.identity,
            alert=node.alert,
            deadletter_producer=Producer(
                producer_settings(bootstrap_servers, config.kafka.producer_overrides)
            ),
            partitions={t: config.kafka.partitions_for(t) for t in Topic},
            unsealed_timeout_s=unsealed_s,
            codec=node.codec,
            name=f"erasure-intake-{node.node_id}",
        )
        # Only the worker thread uses it (see _log_end).
        self._probe = Consumer(consumer_settings(bootstrap_servers))
        self._erasure_part_set = frozenset(self.intake.partitions)
        self._entry_parts = [
            (node.names(Topic.ENTRIES), p)
            for p in range(config.kafka.partitions_for(Topic.ENTRIES))
        ]
        self.registry = registry if registry is not None else CollectorRegistry()
        self.latency = Histogram(
            "cachet_erasure_latency_seconds",
            "From the request's event time to the acknowledged ErasureCompleted, by stage",
            ["stage"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.stages = Counter(
            "cachet_erasure_stages", "Erasure stages completed", ["stage"], registry=self.registry
        )
        self.revoked = Counter(
            "cachet_erasure_entries_revoked", "Entries revoked by erasures", registry=self.registry
        )
        self.destroyed = Counter(
            "cachet_erasure_keys_destroyed", "Data keys destroyed", registry=self.registry
        )
        pending = Gauge(
            "cachet_erasure_pending",
            "Requests with a stage not yet completed (held ones included)",
            registry=self.registry,
        )
        pending.set_function(self.docket.pending)
        refused = Gauge(
            "cachet_erasure_refused",
            "Verified requests, holds or completions refused (wrong identity)",
            registry=self.registry,
        )
        refused.set_function(lambda: self.intake.refused)

    # -- threads ---------------------------------------------------------------

    def start(self, stop: threading.Event) -> list[threading.Thread]:
        """Start the intake and worker threads; both end when ``stop`` is set."""
        threads = [
            threading.Thread(
                target=self._intake_loop, args=(stop,), name="cachet-erasure-intake", daemon=True
            ),
            threading.Thread(
                target=self.run, args=(stop,), name="cachet-erasure-worker", daemon=True
            ),
        ]
        for t in threads:
            t.start()
        return threads

    def _intake_loop(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.intake.poll(0.1)
            except Exception:  # noqa: BLE001 - one failed poll must not stop the intake
                log.exception("erasure intake: poll failed")
                stop.wait(0.1)

    def run(self, stop: threading.Event) -> None:
        """Carry out due stages until ``stop`` (the worker thread)."""
        self._stop = stop
        while not stop.is_set():
            self.docket.changed.clear()
            try:
                done = self.step()
            except _Stopped:
                return
            except Exception:  # noqa: BLE001 - retried at the next wake-up
                log.exception("erasure: stage failed; retried")
                stop.wait(0.5)
                continue
            if not done:
                self.docket.changed.wait(self._wait_s())

    def _wait_s(self) -> float:
        next_end = self.docket.next_retention_end_us()
        if next_end is None:
            return 0.25
        # Never 0: a due stage that cannot run yet (not ready, or its
        # completion in flight) must not make the worker spin.
        return min(0.25, max(0.05, (next_end - self._clock.now_us()) / 1e6))

    @property
    def ready(self) -> bool:
        """The docket knows the log and the view caught up: stages may run."""
        health = self.view.health()
        return self.intake.caught_up() and health.caught_up and not health.discontinuity

    def step(self) -> int:
        """Carry out every stage due now; returns how many completed."""
        if not self.ready:
            return 0
        now = self._clock.now_us()
        done = 0
        for due in self.docket.due(now):
            ident = (due.request.request_id, due.stage.value)
            sent = self._in_flight.get(ident)
            if sent is not None and now - sent < self._retry_after_us:
                continue  # emitted; the intake has not seen it verified yet
            self.carry_out(due)
            self._in_flight[ident] = self._clock.now_us()
            done += 1
        for ident in [i for i in self._in_flight if self._seen(i)]:
            del self._in_flight[ident]
        return done

    def _seen(self, ident: tuple[str, str]) -> bool:
        case = self.docket.case(ident[0])
        return case is not None and ident[1] in case.completions

    # -- one stage -------------------------------------------------------------

    def _catch_up_with_log(self) -> None:
        """Bring the docket and the view up to the log ends the broker reports
        now (see the module docstring); returns once both are there."""
        ends = self._log_end([*self.intake.partitions, *self._entry_parts])
        erasure_ends = {tp: e for tp, e in ends.items() if tp in self._erasure_part_set}
        entry_ends = {tp: e for tp, e in ends.items() if tp not in self._erasure_part_set}
        waited = 0
        while not (self.intake.resolved_through(erasure_ends) and self._view_through(entry_ends)):
            if self._stop.wait(0.02):
                raise _Stopped()
            waited += 1
            if waited % 250 == 0:
                log.warning(
                    "erasure: still catching up with the log end (erasure %s; entries %s, "
                    "view at %s)",
                    erasure_ends,
                    entry_ends,
                    self.view.store.offsets(),
                )

    def _log_end(self, parts: list[tuple[str, int]]) -> dict[tuple[str, int], int]:
        """Each partition's end as the broker answers ListOffsets now, asked by
        the worker's own probe consumer (a consumer belongs to the thread that
        polls it). The embedded broker's answer can lag the true end by a few
        records (DESIGN, measured quirks): a lower bound, never too far."""
        ends = {}
        for topic, partition in parts:
            _, high = self._probe.get_watermark_offsets(
                TopicPartition(topic, partition), timeout=10, cached=False
            )
            ends[(topic, partition)] = high
        return ends

    def _view_through(self, ends: Mapping[tuple[str, int], int]) -> bool:
        if not self.view.health().caught_up:
            return False
        stored = self.view.store.offsets()
        return all(stored.get(tp, 0) >= end for tp, end in ends.items())

    def carry_out(self, due: DueStage) -> ErasureCompleted | None:
        """Carry out one stage and emit its acknowledged ErasureCompleted;
        None when the log, read up to its end, shows it was reported already
        (by an earlier attempt whose acknowledgement did not come back)."""
        request = due.request
        self._catch_up_with_log()
        case = self.docket.case(request.request_id)
        if case is not None and case.done(due.stage):
            return None
        plan = plan_erasure(
            request.subject_hash,
            self.view.subject_entries(request.subject_hash, request.namespace),
            self.node.contracts,
            self.docket.holds(),
            now_us=self._clock.now_us(),
            requested_at_us=due.requested_at_us,
            namespace=request.namespace,
            only_groups=due.only_groups,
        )
        reason = erasure_reason(request.request_id)
        failures = [
            f"contract_unknown: {name}: no retention obligation known to the processor; erased"
            for name in plan.unknown_contracts
        ]
        steps: list[ErasureStep] = []

        started = self._clock.now_us()
        revocations = self._revoke(plan, reason)
        steps.append(self._step(ErasureStepName.REVOKE, started, len(revocations.revoked)))

        started = self._clock.now_us()
        destroyed = self._destroy(plan, reason, failures)
        steps.append(self._step(ErasureStepName.DESTROY_KEYS, started, len(destroyed)))

        started = self._clock.now_us()
        evicted = len({e.key_hash for g in plan.erased for e in g.entries})
        steps.append(self._step(ErasureStepName.EVICT, started, evicted))

        blocks = 0
        if due.stage is ErasureStage.IMMEDIATE:
            started = self._clock.now_us()
            blocks = self._kv_scrub(
                request.request_id, request.subject_hash, due.requested_at_us, failures
            )
            steps.append(self._step(ErasureStepName.KV_SCRUB, started, blocks))

        held = plan.held_entries
        completed = ErasureCompleted(
            request_id=request.request_id,
            subject_hash=request.subject_hash,
            entries_revoked=len(revocations.revoked),
            data_keys_destroyed=len(destroyed),
            l1_evictions=evicted,
            kv_blocks_scrubbed=blocks,
            proof_hash=proof_hash(
                request_id=request.request_id,
                stage=due.stage.value,
                subject_hash=request.subject_hash,
                namespace=request.namespace,
                revoked=revocations.revoked,
                destroyed_key_ids=destroyed,
                held=held,
            ),
            namespace=request.namespace,
            stage=due.stage.value,
            destroyed_key_ids=tuple(destroyed),
            steps=tuple(steps),
            failures=tuple(failures),
            held=held,
        )
        self.node.producer.emit_with_receipt(
            EventType.ERASURE_COMPLETED, completed.to_avro(), key=request.subject_hash
        ).wait(self._ack_timeout_s)
        self.latency.labels(due.stage.value).observe(
            max(0, self._clock.now_us() - due.requested_at_us) / 1e6
        )
        self.stages.labels(due.stage.value).inc()
        self.revoked.inc(revocations.emitted)
        log.info(
            "erasure %s stage %s: %d revoked, %d keys destroyed, %d held, %d failures",
            request.request_id,
            due.stage.value,
            len(revocations.revoked),
            len(destroyed),
            len(held),
            len(failures),
        )
        return completed

    def _step(self, name: ErasureStepName, started_us: int, count: int) -> ErasureStep:
        return ErasureStep(
            name=name.value,
            started_at_us=started_us,
            finished_at_us=self._clock.now_us(),
            count=count,
        )

    def _revoke(self, plan: ErasurePlan, reason: str) -> _Revocations:
        revoked: list[tuple[bytes, int]] = []
        deliveries: list[Delivery] = []
        for group in plan.erased:
            for entry in group.entries:
                if entry.state is EntryState.ACTIVE:
                    deliveries.append(self._emit_revocation(entry, reason))
                    revoked.append((entry.key_hash, entry.version))
                elif entry.state is EntryState.REVOKED and entry.state_reason == reason:
                    # Revoked by this request before a restart: counted, not repeated.
                    revoked.append((entry.key_hash, entry.version))
        for delivery in deliveries:
            delivery.wait(self._ack_timeout_s)
        return _Revocations(tuple(revoked), len(deliveries))

    def _emit_revocation(self, entry: ViewEntry, reason: str) -> Delivery:
        payload = StateTransitioned(
            key_hash=entry.key_hash,
            namespace=entry.namespace,
            version=entry.version,
            from_state=EntryState.ACTIVE,
            to_state=EntryState.REVOKED,
            authority=ERASURE_AUTHORITY,
            reason=reason,
            # The per-key hash chain: this event follows the key's last one.
            prev_event_hash=entry.event_hash,
        )
        return self.node.producer.emit_with_receipt(
            EventType.STATE_TRANSITIONED, payload.to_avro(), key=entry.key_hash
        )

    def _destroy(self, plan: ErasurePlan, reason: str, failures: list[str]) -> list[str]:
        destroyed: set[str] = set()
        for group in plan.erased:
            now_gone = self.vault.destroy(group.key_name, reason=reason)
            self.destroyed.inc(len(now_gone))
            destroyed.update(now_gone)
            destroyed.update(self._tombstoned(group))
            for key_id in group.foreign_key_ids:
                # Not the subject's own key (written before per-subject keys):
                # destroying it could erase other subjects' values.
                failures.append(
                    f"key_not_subject_owned: {group.namespace}/{group.contract}: values under "
                    f"{key_id} (not {group.key_name}) were revoked, their key not destroyed"
                )
        return sorted(destroyed)

    def _tombstoned(self, group: GroupPlan) -> set[str]:
        """Key ids of the group's entries already destroyed (a resumed run)."""
        out = set()
        for key_id in {e.data_key_id for e in group.entries}:
            if name_of(key_id) == group.key_name and self.vault.tombstone(key_id) is not None:
                out.add(key_id)
        return out

    def _kv_scrub(
        self, request_id: str, subject_hash: bytes, requested_at_us: int, failures: list[str]
    ) -> int:
        """Blocks scrubbed for the request, as KV-scrub workers reported
        (trigger ERASURE: their summary of this request, else evidence for the
        subject's hash); waits until ``kv_scrub_wait_s`` after the request."""
        tenant = subject_hash.hex()
        deadline = requested_at_us + self._kv_scrub_wait_us
        while True:
            seen = self.docket.kv_scrubs(tenant, requested_at_us, request_id)
            if seen or self._clock.now_us() >= deadline:
                break
            if self._stop.wait(0.05):
                raise _Stopped()
        if not seen:
            failures.append(
                f"kv_scrub_not_observed: no KvScrubCompleted (trigger ERASURE) for subject hash "
                f"{tenant[:16]}... within {self._kv_scrub_wait_us // 1000} ms of the request"
            )
        return sum(s.blocks for s in seen)

    def close(self) -> None:
        self.intake.close()
        self._probe.close()
