"""A cache node: the in-process runtime a service embeds.

It owns this process's replica of the live view (RocksDB), an in-process L1
of decrypted values, the sealing producer every write, read audit and
transition goes through, and the contracts in force. Clients
(:class:`cachet.producers.cache_client.CacheClient`) are cheap views of a node for
one role and scope.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from cachetools import LRUCache
from prometheus_client import CollectorRegistry, Counter

from cachet.config import CachetConfig, ContractConfig
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.keystore import Keystore, KeystoreError
from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.crypto.vault import KeyCache, KeyVault, VaultBackend, VaultConfig, open_vault
from cachet.errors import StateFailure
from cachet.materializers.invalidation_listener import InvalidationListener
from cachet.materializers.live_view import LiveView
from cachet.materializers.unverified_invalidations import EarlySighting
from cachet.materializers.view import ViewEntry
from cachet.producers.data_keys import DataKeys, data_key_name
from cachet.producers.read_audit import ReadAudit
from cachet.producers.read_tally import ReadTally
from cachet.producers.sealing import Delivery, LedgerAlerts, SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType
from cachet.schemas.payloads import ErasureCompleted, ErasureRequested, ErasureScope, Invalidated
from cachet.topics import Topic
from cachet.verdict import EntryFacts

__all__ = ["CacheNode", "L1Cache", "L1Entry", "NodeHealth", "NodeKeys"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeKeys:
    """The secrets a node works with (from the keystore, or made for a test).

    ``identity`` signs with ``signing``; ``anchor`` is the pinned trust
    anchor; ``identifier_secret`` keys the hashes of cache keys and subject
    ids; ``vault`` holds the random data keys values are encrypted under
    (wrapped under its KEK; destroying one is an erasure). No data key is
    derived from a secret here: every one lives in the vault, so an erasure
    can destroy it. Every node of a deployment shares all but ``signing``
    (every node of a host shares one vault file). Whoever built the keys
    owns the vault and closes it; a node never does.
    """

    identity: str
    signing: PrivateKeySet = field(repr=False)
    anchor: KeySet
    identifier_secret: bytes = field(repr=False)
    vault: KeyVault = field(repr=False)

    @classmethod
    def from_keystore(
        cls, keystore: Keystore, identity: str, vault: VaultConfig | None = None
    ) -> NodeKeys:
        """The keys ``identity`` works with, from the keystore.

        Signing: the identity's latest unretired key set. Anchor: the
        keystore's trust anchor (public half). The identifier secret is the
        deployment's shared secret. ``vault`` (``config.vault``) says which
        key vault holds the data keys; None, or a file vault at the default
        path: the file vault ``vault.sqlite`` next to the keystore. Raises :class:`KeystoreError` when the
        identity has no key set (checked first: nothing is opened then).
        """
        try:
            signing = keystore.key_set(identity)
        except KeystoreError as exc:
            raise KeystoreError(
                f"{exc}; create and register one with `cachet keys register --identity {identity}`"
            ) from exc
        if vault is None or (
            vault.backend is VaultBackend.FILE and vault.path == VaultConfig().path
        ):
            # A file vault left at its default path lives next to the
            # keystore (the default keystore directory is the default vault
            # directory): a keystore kept elsewhere takes its vault along,
            # and never meets another keystore's vault (another KEK).
            vault = replace(vault or VaultConfig(), path=keystore.path.parent / "vault.sqlite")
        return cls(
            identity=identity,
            signing=signing,
            anchor=keystore.anchor().public(),
            identifier_secret=keystore.identifier_secret(),
            vault=open_vault(vault, keystore),
        )


@dataclass(frozen=True, slots=True)
class NodeHealth:
    """Whether a node may serve, and why not: what ``/health`` reports.

    ``ready`` is True only when nothing is wrong: the view caught up with the
    log end it observed at start (events waiting for seals included), a
    watermark tick newer than the tightest contract allows arrived in every
    partition, no log discontinuity, the view's store works, and the
    producer gets its writes acknowledged. ``state_hash`` is None when the
    view's store cannot answer (the view failed).
    """

    ready: bool
    problems: tuple[str, ...]
    node_id: str
    caught_up: bool
    last_tick_age_ms: int | None
    lag_ms: int
    state_hash: str | None

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
class L1Entry:
    """A decrypted entry the L1 serves: the view entry, its plaintext, and the
    facts a read evaluates against its contract (derived once, when cached).

    ``commitment_verified``: this plaintext was checked against the value
    commitment of the entry's sealed CacheWritten (by the read that cached
    it, or by :meth:`L1Cache.mark_verified` after a later read checked it).
    It describes this object only: an entry never changes (a change to its
    key evicts it, and anything cached later is a new, unverified object)."""

    entry: ViewEntry
    plaintext: bytes
    facts: EntryFacts
    commitment_verified: bool = False


class _ChangeStamps(LRUCache[bytes, int]):
    """Per key hash: the stamp of its last change, at most ``maxsize`` keys.

    ``floor`` is the highest stamp ever dropped to make room; a key without
    a stamp reports it (see :class:`L1Cache` for why that keeps the race
    fix sound).
    """

    def __init__(self, maxsize: int) -> None:
        super().__init__(maxsize)
        self.floor = 0

    def popitem(self) -> tuple[bytes, int]:
        key_hash, stamp = super().popitem()
        self.floor = max(self.floor, stamp)
        return key_hash, stamp


class L1Cache:
    """A node's in-process cache of decrypted entries: a bounded LRU that a
    change to a key empties for good, whatever reads race it.

    Promise: once :meth:`evict` for a key returned, the cache holds nothing
    for that key that a read took its :meth:`generation` for before that
    :meth:`evict` began, and never will (:meth:`put` refuses it). A read
    takes the generation before it reads the view; the view calls
    :meth:`evict` after it committed a change. So a value read from the view
    before a change can never be served from L1 after it.

    One lock makes :meth:`put`'s check-then-set and :meth:`evict`'s
    bump-then-pop atomic with respect to each other: without it a put could
    pass its check, the poll thread evict, and the put then store the
    superseded value after the evict (for good: nothing evicts it again).

    Generations: a node-wide counter stamps every change; a key's generation
    is its last stamp. The stamps are bounded like the entries (LRU of
    ``max_entries`` keys); a key whose stamp was dropped reports ``floor``,
    the highest stamp ever dropped. So a key's generation never decreases
    (its stamp ``s`` is only ever replaced by ``floor >= s`` or by a newer,
    larger stamp) and every evict raises it above any value handed out
    before (a new stamp exceeds every earlier stamp, hence the floor). A
    generation taken before an evict therefore never matches after it, even
    when the key's stamp was dropped in between; naively forgetting the
    stamp (generation back to 0) would let exactly that stale put back in.
    The price of the floor is only spurious refusals: a drop raises the
    generation of every unstamped key, so reads in flight for those keys do
    not fill the cache this once.
    """

    def __init__(self, max_entries: int) -> None:
        if max_entries < 1:
            raise ValueError(f"L1 max_entries must be >= 1, got {max_entries}")
        self.max_entries = max_entries
        self._lock = threading.Lock()
        self._entries: LRUCache[bytes, L1Entry] = LRUCache(max_entries)
        self._stamps = _ChangeStamps(max_entries)
        self._last_stamp = 0

    def _generation(self, key_hash: bytes) -> int:  # holding the lock
        stamp = self._stamps.get(key_hash)
        return self._stamps.floor if stamp is None else stamp

    def lookup(self, key_hash: bytes) -> tuple[L1Entry, None] | tuple[None, int]:
        """The cached entry, or (when nothing is cached) the key's
        generation: one step before reading the view; pass the generation
        to :meth:`put`. (A hit puts nothing, so it takes no generation.)"""
        with self._lock:
            cached = self._entries.get(key_hash)
            if cached is not None:
                return cached, None
            return None, self._generation(key_hash)

    def get(self, key_hash: bytes) -> L1Entry | None:
        with self._lock:
            return self._entries.get(key_hash)

    def generation(self, key_hash: bytes) -> int:
        """Take before reading the view; pass to :meth:`put`."""
        with self._lock:
            return self._generation(key_hash)

    def put(self, cached: L1Entry, generation: int) -> bool:
        """Cache ``cached`` unless its key changed since ``generation`` was
        taken (a read that raced a change must not refill L1 with what it
        read). Returns whether it was cached."""
        key_hash = cached.entry.key_hash
        with self._lock:
            current = self._generation(key_hash)
            if current != generation:
                return False
            self._entries[key_hash] = cached
            return True

    def mark_verified(self, cached: L1Entry) -> bool:
        """Replace ``cached`` by the same entry marked ``commitment_verified``,
        if ``cached`` is still what the cache holds for its key (an evict or
        a newer put in between: nothing is replaced). Returns whether it was."""
        key_hash = cached.entry.key_hash
        with self._lock:
            if self._entries.get(key_hash) is not cached:
                return False
            self._entries[key_hash] = replace(cached, commitment_verified=True)
            return True

    def evict(self, key_hash: bytes) -> None:
        """The key changed (in the view, or was invalidated): drop its entry
        and refuse every put whose generation was taken before now."""
        with self._lock:
            self._last_stamp += 1
            self._stamps[key_hash] = self._last_stamp
            self._entries.pop(key_hash, None)

    def clear(self) -> int:
        """Drop every entry; returns how many there were."""
        with self._lock:
            n = len(self._entries)
            self._entries.clear()
            return n

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


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
        self.producer = SealingProducer.from_config(
            config, bootstrap_servers, keys.identity, keys.signing, codec=self.codec
        )
        # Alerts are events in the signed ledger like any other.
        self.alert = LedgerAlerts(self.producer, f"node {self.node_id}")
        self.l1 = L1Cache(config.node.l1_max_entries)
        # Unwrapped data keys: in memory only, bounded, dropped on erasure.
        self.data_keys = DataKeys(
            keys.vault,
            KeyCache(config.vault.key_cache_entries),
            max_names=config.vault.key_cache_entries,
        )
        # Cache keys hash through a keyed SHA3 HMAC; a read hashes each key
        # once per L1 lifetime, not once per read (bounded like the L1).
        self._key_hashes = functools.lru_cache(maxsize=config.node.l1_max_entries)(self.hasher.key)
        self.view = LiveView.from_config(
            config,
            bootstrap_servers,
            keys.anchor,
            data_dir / f"view-{self.node_id}",
            alert=self.alert,
            on_change=self._evict,
            # The log (and the broker's memory of our producer session) is
            # gone: go on, and alert, on a new epoch the broker accepts.
            on_log_vanished=self.producer.new_epoch,
            codec=self.codec,
        )
        self.audit = ReadAudit(
            self.producer,
            config.audit.mode,
            node_id=self.node_id,
            max_pending=config.audit.max_pending_events,
            flush_interval_ms=config.audit.flush_interval_ms,
            batch_max_reads=config.audit.batch_max_reads,
        )
        registry = registry if registry is not None else CollectorRegistry()
        self.reads = ReadTally(registry)
        self.violations = Counter(
            "cachet_contract_violations",
            "Reads that violated their contract",
            ["contract", "reason"],
            registry=registry,
        )
        self.erasure_evictions = Counter(
            "cachet_erasure_evictions",
            "L1 entries evicted because a verified erasure event named their subject",
            registry=registry,
        )
        early = Counter(
            "cachet_early_invalidations",
            "Eager invalidations the low-latency listener read before the view verified "
            "them, by what the sighting did",
            ["outcome"],
            registry=registry,
        )
        self._sightings = {s: early.labels(s.value) for s in EarlySighting}
        self.registry = registry
        self.view.add_erasure_listener(self._on_erasure_event)
        # Eager invalidations reach this node's view (and L1) as they arrive,
        # not a poll cycle later: a hide bounded like any unverified one, and
        # nothing else (see cachet.materializers.invalidation_listener).
        self.listener = InvalidationListener(
            self.view,
            bootstrap_servers,
            self.names,
            self.codec,
            config.kafka.partitions_for(Topic.INVALIDATIONS),
            fetch_wait_ms=config.kafka.invalidation_fetch_wait_ms,
            on_sighting=lambda s: self._sightings[s].inc(),
            name=f"cachet-invalidations-{self.node_id}",
        )
        self._stop = threading.Event()
        # Set when the view stopped for good (its own store failed): the
        # process running this node should exit and be restarted.
        self.view_stopped = threading.Event()
        self._thread = threading.Thread(
            target=self._run, name=f"cachet-node-{self.node_id}", daemon=True
        )
        self._publish_contracts()
        self._thread.start()
        self.listener.start()

    # -- the background loop ---------------------------------------------

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.view.poll(0.05)
            except StateFailure:
                # The view stopped (its store failed, or its state may not be
                # whole): it serves nothing and health says why; polling again
                # cannot mend it, a restart (from the last commit) does.
                log.exception("node %s: the view stopped", self.node_id)
                self.view_stopped.set()
                return
            except Exception:  # noqa: BLE001 - a node must not die on one failure
                log.exception("node %s: view poll failed", self.node_id)
                time.sleep(0.1)

    def emit_invalidation(self, invalidation: Invalidated) -> Delivery:
        """Emit an eager Invalidated and hand it to the broker at once, not
        after the producer's ``linger.ms``: every other node's listener sees
        it a fetch later. Returns once the broker answered (or after a short
        bound: the delivery tells). Its seal follows with the producer's next
        batch, as for any event. Raises
        :class:`~cachet.producers.sealing.EmitRejected` (nothing emitted)
        like any emit."""
        delivery = self.producer.emit_with_receipt(
            EventType.INVALIDATED, invalidation.to_avro(), key=invalidation.key_hash
        )
        self.producer.send_now(delivery)
        return delivery

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

    # -- L1 ---------------------------------------------------------------

    def _evict(self, key_hash: bytes) -> None:
        self.l1.evict(key_hash)

    # -- erasure ----------------------------------------------------------

    def _on_erasure_event(self, event: Event, identity: str) -> None:
        """A verified erasure-topic event (on the view's poll thread).

        Acts only on an ErasureRequested sealed by an identity in ``[erasure]
        allowed_requesters`` and an ErasureCompleted sealed by ``[erasure]
        processor_identity``: evicts every L1 entry of the subject and drops
        the subject's data keys from memory. Both are idempotent, so a
        replayed or repeated event does no harm; anything else is ignored
        (a sealed event from another identity is not an authority to erase).
        """
        erasure = self.config.erasure
        destroyed: tuple[str, ...] = ()
        try:
            if event.type is EventType.ERASURE_REQUESTED:
                if identity not in erasure.allowed_requesters:
                    log.warning(
                        "node %s: ErasureRequested sealed by %s, not an allowed requester: ignored",
                        self.node_id,
                        identity,
                    )
                    return
                request = ErasureRequested.from_avro(event.payload)
                if request.scope is ErasureScope.UNKNOWN:
                    return  # a scope this reader does not know: never guess what to erase
                subject, namespace = request.subject_hash, request.namespace
            elif event.type is EventType.ERASURE_COMPLETED:
                if identity != erasure.processor_identity:
                    log.warning(
                        "node %s: ErasureCompleted sealed by %s, not the erasure processor: "
                        "ignored",
                        self.node_id,
                        identity,
                    )
                    return
                completed = ErasureCompleted.from_avro(event.payload)
                subject, namespace = completed.subject_hash, completed.namespace
                destroyed = completed.destroyed_key_ids
            else:
                return
        except (KeyError, TypeError, ValueError) as exc:
            log.warning("node %s: malformed %s ignored: %s", self.node_id, event.type.value, exc)
            return
        self.forget_subject(subject, namespace)
        self.data_keys.drop(destroyed)

    def forget_subject(self, subject_hash: bytes, namespace: str | None = None) -> int:
        """Evict every L1 entry of a subject (``namespace``: only there) and
        drop its data keys from memory; returns how many keys it evicted.

        The subject index lists every key with a version of the subject, so
        old versions' keys are dropped too.
        """
        entries = self.view.subject_entries(subject_hash, namespace)
        names: set[str] = set()
        for entry in entries:
            self.l1.evict(entry.key_hash)
            names.add(data_key_name(entry.namespace, entry.contract, subject_hash))
        self.data_keys.drop_names(names)
        self.erasure_evictions.inc(len(entries))
        if entries:
            log.info(
                "node %s: evicted %d entries of an erased subject, dropped %d data keys",
                self.node_id,
                len(entries),
                len(names),
            )
        return len(entries)

    def key_hash(self, namespace: str, key: str) -> bytes:
        """``hasher.key(namespace, key)``, from a bounded LRU of recent keys."""
        return self._key_hashes(namespace, key)

    def l1_get(self, key_hash: bytes) -> L1Entry | None:
        return self.l1.get(key_hash)

    def l1_lookup(self, key_hash: bytes) -> tuple[L1Entry, None] | tuple[None, int]:
        """The cached entry and the key's generation (see :meth:`L1Cache.lookup`)."""
        return self.l1.lookup(key_hash)

    def l1_generation(self, key_hash: bytes) -> int:
        """Take before reading the view; pass to :meth:`l1_put`."""
        return self.l1.generation(key_hash)

    def l1_put(
        self,
        entry: ViewEntry,
        plaintext: bytes,
        facts: EntryFacts,
        generation: int,
        *,
        commitment_verified: bool = False,
    ) -> bool:
        """Cache a decrypted entry unless the key changed since ``generation``
        was taken (a read that raced a change must not refill L1 with it).
        ``commitment_verified``: the caller checked ``plaintext`` against the
        entry's sealed commitment (see :class:`L1Entry`)."""
        return self.l1.put(L1Entry(entry, plaintext, facts, commitment_verified), generation)

    def evict_all(self) -> int:
        """Drop every cached value and key hash; returns how many values."""
        self._key_hashes.cache_clear()
        return self.l1.clear()

    # -- lifecycle -----------------------------------------------------

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
        state_hash: str | None = None
        try:
            state_hash = self.view.state_hash().hex()
        except StateFailure as exc:
            problems.append(f"view_failed: {self.view.failure or exc}")
        else:
            if h.failed:
                problems.append(f"view_failed: {self.view.failure}")
        problems.extend(f"producer: {p}" for p in self.producer.problems())
        problems.extend(f"read audit: {p}" for p in self.audit.problems())
        return NodeHealth(
            ready=not problems,
            problems=tuple(problems),
            node_id=self.node_id,
            caught_up=h.caught_up,
            last_tick_age_ms=h.last_tick_age_ms,
            lag_ms=h.lag_ms,
            state_hash=state_hash,
        )

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.listener.close()  # before the view it hides in
        self.audit.close()
        try:
            self.producer.close(10)
        finally:
            self.view.close()

    def __enter__(self) -> CacheNode:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
