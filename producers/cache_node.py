"""A cache node: the in-process runtime a service embeds.

It owns this process's replica of the live view (RocksDB), an in-process L1
of decrypted values, the sealing producer every write, read audit and
transition goes through, and the contracts in force. Clients
(:class:`producers.cache_client.CacheClient`) are cheap views of a node for
one role and scope.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from confluent_kafka import Producer
from prometheus_client import CollectorRegistry, Counter

from cachet.config import CachetConfig, ContractConfig
from cachet.config.enums import Role
from cachet.crypto.aead import DataKey
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.keystore import Keystore, KeystoreError
from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.kafka import MAX_RECORD_BYTES, producer_settings
from cachet.topics import Topic
from materializers.live_view import LiveView
from materializers.view import ViewEntry
from producers.read_audit import ReadAudit
from producers.sealing import SealingProducer, SealingSettings
from schemas.codec import EventCodec
from schemas.events import EventType

__all__ = ["CacheNode", "NodeHealth", "NodeKeys"]

DATA_MASTER_KEY_ID = "cachet:data-master"
COMMITMENT_KEY_ID = "cachet:commitment"

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The secrets a node works with (from the keystore, or made for a test).

    ``identity`` signs with ``signing``; ``anchor`` is the pinned trust
    anchor; ``identifier_secret`` keys the hashes of cache keys and subject
    ids; ``data_master`` derives the per-namespace data keys;
    ``commitment_key`` keys the value commitments auditors check against.
    Every node of a deployment shares all but ``signing``.
    """

    identity: str
    signing: PrivateKeySet = field(repr=False)
    anchor: KeySet
    identifier_secret: bytes = field(repr=False)
    data_master: bytes = field(repr=False)
    commitment_key: bytes = field(repr=False)

    @classmethod
    def from_keystore(cls, keystore: Keystore, identity: str) -> NodeKeys:
        """The keys ``identity`` works with, from the keystore.

        Signing: the identity's latest unretired key set. Anchor: the
        keystore's trust anchor (public half). The identifier secret, the data
        master and the commitment key are the deployment's shared secrets; the
        latter two are data keys created on first use. Raises
        :class:`KeystoreError` when the identity has no key set (checked
        first: nothing is created then).
        """
        try:
            signing = keystore.key_set(identity)
        except KeystoreError as exc:
            raise KeystoreError(
                f"{exc}; create and register one with `cachet keys register --identity {identity}`"
            ) from exc
        shared: dict[str, bytes] = {}
        for key_id in (DATA_MASTER_KEY_ID, COMMITMENT_KEY_ID):
            try:
                shared[key_id] = keystore.data_key(key_id).key
            except KeystoreError:
                # Every node must hold the same secret: this keystore is the
                # one to copy (or the deployment's shared one).
                log.warning("keystore %s: creating shared data key %s", keystore.path, key_id)
                created = DataKey(key_id, os.urandom(32))
                keystore.put_data_key(created)
                shared[key_id] = created.key
        return cls(
            identity=identity,
            signing=signing,
            anchor=keystore.anchor().public(),
            identifier_secret=keystore.identifier_secret(),
            data_master=shared[DATA_MASTER_KEY_ID],
            commitment_key=shared[COMMITMENT_KEY_ID],
        )

    def data_key(self, namespace: str) -> DataKey:
        """The namespace's AES-256-GCM data key (HKDF-style, SHA3-256 HMAC)."""
        key_id = f"ns:{namespace}"
        key = hmac.new(
            self.data_master, b"cachet/data-key/v1\x00" + key_id.encode(), hashlib.sha3_256
        ).digest()
        return DataKey(key_id, key)


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """Whether a node may serve, and why not: what ``/health`` reports.

    ``ready`` is True only when nothing is wrong: the view caught up with the
    log end it observed at start (events waiting for seals included), a
    watermark tick newer than the tightest contract allows arrived in every
    partition, no log discontinuity, and the producer gets its writes
    acknowledged.
    """

    ready: bool
    problems: tuple[str, ...]
    node_id: str
    caught_up: bool
    last_tick_age_ms: int | None
    lag_ms: int
    state_hash: str

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ready,
            "ready": self.ready,
            "problems": list(self.problems),
            "node_id": self.node_id,
            "caught_up": self.caught_up,
            "last_tick_age_ms": self.last_tick_age_ms,
            "lag_ms": self.lag_ms,
            "state_hash": self.state_hash,
        }


@dataclass(frozen=True, slots=True)
class _Cached:
    entry: ViewEntry
    plaintext: bytes


class CacheNode:
    """One node: a full replica of the view plus the producers a cache needs."""

    def __init__(
        self,
        config: CachetConfig,
        bootstrap_servers: str,
        keys: NodeKeys,
        data_dir: Path,
        *,
        node_id: str | None = None,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.config = config
        self.keys = keys
        self.node_id = node_id or config.node.node_id
        self.names = config.kafka.topic_names()
        self.contracts: Mapping[str, ContractConfig] = config.contracts
        self.hasher = IdentifierHasher(keys.identifier_secret)
        self.codec = EventCodec()

        def client() -> Producer:
            return Producer(producer_settings(bootstrap_servers, config.kafka.producer_overrides))

        self.producer = SealingProducer(
            client(),
            self.codec,
            self.names,
            keys.identity,
            keys.signing,
            SealingSettings(
                config.attestation.seal_batch_max_events,
                config.attestation.seal_batch_max_ms,
                # The sealing producer refuses what the client would refuse later.
                max_message_bytes=int(
                    config.kafka.producer_overrides.get("message.max.bytes", MAX_RECORD_BYTES)
                ),
            ),
            producer_factory=client,
        )
        self._l1: dict[bytes, _Cached] = {}
        self._l1_gen: dict[bytes, int] = {}
        self.view = LiveView.open(
            data_dir / f"view-{self.node_id}",
            bootstrap_servers=bootstrap_servers,
            names=self.names,
            anchor=keys.anchor,
            required=config.attestation.schemes,
            alert=self.alert,
            partitions={t: config.kafka.partitions_for(t) for t in Topic},
            history_depth=config.state_machine.audit_trail_depth,
            unsealed_timeout_s=config.attestation.unsealed_timeout_ms / 1000,
            on_change=self._evict,
            # The log (and the broker's memory of our producer session) is
            # gone: go on, and alert, on a new epoch the broker accepts.
            on_log_vanished=self.producer.new_epoch,
            codec=self.codec,
            name=f"view-{self.node_id}",
        )
        self.audit = ReadAudit(
            self.producer,
            config.audit.mode,
            max_pending=config.audit.max_pending_events,
            flush_interval_ms=config.audit.flush_interval_ms,
        )
        registry = registry if registry is not None else CollectorRegistry()
        self.reads = Counter(
            "cachet_reads", "Reads by outcome and reason", ["outcome", "reason"], registry=registry
        )
        self.violations = Counter(
            "cachet_contract_violations",
            "Reads that violated their contract",
            ["contract", "reason"],
            registry=registry,
        )
        self.registry = registry
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cachet-node-{self.node_id}", daemon=True
        )
        self._publish_contracts()
        self._thread.start()

    # -- the background loop ---------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.view.poll(0.05)
            except Exception:  # noqa: BLE001 - a node must not die on one failure
                log.exception("node %s: view poll failed", self.node_id)
                time.sleep(0.1)

    def _publish_contracts(self) -> None:
        for name, contract in sorted(self.contracts.items()):
            definition = contract.canonical_json()
            self.producer.emit(
                EventType.CONTRACT_DEFINED,
                {
                    "name": name,
                    "definition_json": definition,
                    "definition_hash": hashlib.sha3_256(definition.encode()).digest(),
                },
                key=name.encode(),
            )

    def alert(self, event_type: EventType, payload: dict[str, Any]) -> None:
        """Alerts are events in the signed ledger like any other."""
        try:
            self.producer.emit(event_type, payload)
        except Exception:  # noqa: BLE001 - alerting must never take the node down
            log.exception("node %s: alert %s not emitted", self.node_id, event_type.value)

    # -- L1 ---------------------------------------------------------------

    def _evict(self, key_hash: bytes) -> None:
        self._l1_gen[key_hash] = self._l1_gen.get(key_hash, 0) + 1
        self._l1.pop(key_hash, None)

    def l1_get(self, key_hash: bytes) -> _Cached | None:
        return self._l1.get(key_hash)

    def l1_generation(self, key_hash: bytes) -> int:
        """Take before reading the view; pass to :meth:`l1_put`."""
        return self._l1_gen.get(key_hash, 0)

    def l1_put(self, entry: ViewEntry, plaintext: bytes, generation: int) -> None:
        """Cache a decrypted entry unless the key changed since ``generation``
        was taken (a read that raced a change must not refill L1 with it)."""
        if self._l1_gen.get(entry.key_hash, 0) == generation:
            self._l1[entry.key_hash] = _Cached(entry, plaintext)

    def evict_all(self) -> int:
        n = len(self._l1)
        self._l1.clear()
        return n

    # -- clients and lifecycle ---------------------------------------------

    def client(self, role: Role = Role.OWNER, scope: str | None = None) -> Any:
        from producers.cache_client import CacheClient

        return CacheClient(self, role, scope)

    def wait_caught_up(self, timeout_s: float = 30.0, *, ticks: bool = True) -> bool:
        """Wait until the view reached the end of the log (and, with ``ticks``,
        saw a watermark tick in every partition): until then reads miss."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            health = self.view.health()
            if health.caught_up and (not ticks or health.last_tick_age_ms is not None):
                return True
            time.sleep(0.02)
        return False

    def health(self) -> NodeHealth:
        """The truth about this node now (see :class:`NodeHealth`)."""
        h = self.view.health()
        problems: list[str] = []
        if not h.caught_up:
            problems.append("view_catching_up: " + ", ".join(self.view.catching_up()))
        # The tightest window a read may need: a tick older than it means some
        # reads already miss (view_stale), so the node is not fully serving.
        windows = [c.max_staleness_ms for c in self.contracts.values() if c.strict] or [
            c.max_staleness_ms for c in self.contracts.values()
        ]
        tightest = min(windows) if windows else None
        if h.last_tick_age_ms is None:
            problems.append("no_watermark_tick: no tick seen in every partition yet")
        elif tightest is not None and h.last_tick_age_ms > tightest:
            problems.append(
                f"watermark_stale: last tick {h.last_tick_age_ms} ms old, "
                f"tightest contract allows {tightest} ms"
            )
        if h.discontinuity:
            problems.append(f"log_discontinuity: {self.view.discontinuity}")
        problems.extend(f"producer: {p}" for p in self.producer.problems())
        problems.extend(f"read audit: {p}" for p in self.audit.problems())
        return NodeHealth(
            ready=not problems,
            problems=tuple(problems),
            node_id=self.node_id,
            caught_up=h.caught_up,
            last_tick_age_ms=h.last_tick_age_ms,
            lag_ms=h.lag_ms,
            state_hash=self.view.state_hash().hex(),
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.audit.close()
        try:
            self.producer.close(10)
        finally:
            self.view.close()

    def __enter__(self) -> CacheNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
