"""Nodes and erasure: per-subject data keys from the vault, erasure events,
the classification policy.

Real broker, two nodes in one process sharing one real file vault, real
PQ-sealed events. The erasure processor itself is not here (it has its own
tests); its ErasureCompleted is emitted directly, sealed by its identity.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable

import pytest

from cachet.clock import ManualClock
from cachet.config import CachetConfig
from cachet.crypto.aead import value_commitment, verify_commitment
from cachet.crypto.seal import PrivateKeySet
from cachet.crypto.vault import FileVault, KeyDestroyed
from cachet.producers.cache_client import CacheClient, CacheError, InvalidArgument
from cachet.producers.cache_node import CacheNode
from cachet.producers.data_keys import commitment_key, data_key_name
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType, new_event
from cachet.schemas.payloads import ErasureCompleted, ErasureRequested, ErasureScope
from cachet.topics import Topic, TopicNames
from cachet.verdict import MissReason
from tests.integration.ledger_support import Ledger

from .conftest import CONTRACTS
from .logtools import produce_raw, read_alerts

pytestmark = pytest.mark.integration

SUBJECT = "patient-4711"
OTHER = "patient-0815"
NAMESPACES = ("clinic-a", "clinic-b")


def wait_for(predicate: Callable[[], object], timeout_s: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.02)
    return bool(predicate())


@pytest.fixture
def config(make_config: Callable[..., CachetConfig]) -> CachetConfig:
    return make_config(
        contracts={
            **CONTRACTS,
            "charts": {"max_staleness_ms": 600_000, "classification": "phi"},
            "leaflets": {"max_staleness_ms": 30_000, "classification": "public"},
        },
        erasure={"allowed_requesters": ["dpo"], "processor_identity": "erasure"},
        ttl={"phi_ms": 60_000},
    )


@pytest.fixture
def sealed_by(
    ledger: Ledger, make_keys: Callable[[str], object], producer_keys: PrivateKeySet
) -> Callable[[str], SealingProducer]:
    """A sealing producer of a registered identity (a requester, the processor)."""
    made: dict[str, SealingProducer] = {}

    def make(identity: str) -> SealingProducer:
        if identity not in made:
            make_keys(identity)  # registers it
            made[identity] = ledger.sealing_producer(identity, producer_keys)
        return made[identity]

    yield make
    for sp in made.values():
        sp.close(10)


def _ready(*nodes: CacheNode) -> None:
    for node in nodes:
        assert node.wait_caught_up(60), f"{node.node_id} not caught up"


def _write_subjects(node: CacheNode, contract: str = "quotes") -> dict[str, list[bytes]]:
    """Key ``chart-<subject>`` of SUBJECT in both namespaces and of OTHER in
    the first (a cache key names one entry whatever its subject, so each
    subject has its own); the key hashes written."""
    written: dict[str, list[bytes]] = {SUBJECT: [], OTHER: []}
    for subject, namespaces in ((SUBJECT, NAMESPACES), (OTHER, NAMESPACES[:1])):
        client = CacheClient(node, scope=subject)
        for ns in namespaces:
            receipt = client.put(
                f"chart-{subject}",
                f"marker-{subject}-{ns}".encode(),
                contract=contract,
                namespace=ns,
                wait=True,
            )
            written[subject].append(receipt.key_hash)
    return written


def _visible(node: CacheNode, key_hashes: list[bytes]) -> bool:
    return all(node.view.current(k) is not None for k in key_hashes)


def _request(subject_hash: bytes, namespace: str | None = None) -> dict[str, object]:
    return ErasureRequested(
        request_id=str(uuid.uuid4()),
        subject_hash=subject_hash,
        scope=ErasureScope.SUBJECT,
        requested_by="dpo@example",
        legal_basis="GDPR Art. 17(1)(a)",
        namespace=namespace,
    ).to_avro()


def test_destroyed_subject_keys_read_as_erased_on_every_node(
    make_node: Callable[..., CacheNode],
    ticker: object,
    vault: FileVault,
    config: CachetConfig,
    sealed_by: Callable[[str], SealingProducer],
) -> None:
    n1, n2 = make_node("node-1", config), make_node("node-2", config)
    _ready(n1, n2)
    written = _write_subjects(n1)
    assert wait_for(lambda: _visible(n2, written[SUBJECT] + written[OTHER]))
    subject_hash = n1.hasher.subject(SUBJECT)

    # Each (subject, namespace, contract) has its own random key from the vault,
    # and the commitment is keyed by it.
    entries = [n1.view.current(k) for k in written[SUBJECT]]
    assert all(e is not None for e in entries)
    key_ids = {e.data_key_id for e in entries if e is not None}
    assert len(key_ids) == 2
    first = entries[0]
    assert first is not None
    data_key = vault.key(first.data_key_id)
    assert first.commitment == value_commitment(
        commitment_key(data_key), f"marker-{SUBJECT}-{NAMESPACES[0]}".encode()
    )

    # The Owner can open the commitment for an Auditor; another scope cannot.
    owner = CacheClient(n1, scope=SUBJECT)
    opening = owner.commitment_opening(f"chart-{SUBJECT}", namespace=NAMESPACES[0])
    marker = f"marker-{SUBJECT}-{NAMESPACES[0]}".encode()
    assert verify_commitment(first.commitment, opening, marker)
    assert not verify_commitment(first.commitment, opening, marker + b"!")
    with pytest.raises(CacheError, match="scope"):
        CacheClient(n1, scope=OTHER).commitment_opening(f"chart-{SUBJECT}", namespace=NAMESPACES[0])

    destroyed: list[str] = []
    for ns in NAMESPACES:
        destroyed += vault.destroy(data_key_name(ns, "quotes", subject_hash), reason="test erasure")
    assert set(destroyed) == key_ids
    with pytest.raises(KeyDestroyed):
        vault.key(first.data_key_id)  # nor can the commitment be recomputed now
    with pytest.raises(CacheError, match="destroyed"):
        CacheClient(n2, scope=SUBJECT).commitment_opening(
            f"chart-{SUBJECT}", namespace=NAMESPACES[0]
        )

    # node-2 never held the keys in memory: it misses at once.
    for ns in NAMESPACES:
        r = CacheClient(n2, scope=SUBJECT).get(f"chart-{SUBJECT}", contract="quotes", namespace=ns)
        assert (r.hit, r.reason, r.value) == (False, MissReason.ERASED, None), r.detail
    # node-1 wrote them and holds them until the processor's verified
    # ErasureCompleted tells it which keys were destroyed.
    completed = ErasureCompleted(
        request_id=str(uuid.uuid4()),
        subject_hash=subject_hash,
        entries_revoked=0,
        data_keys_destroyed=len(destroyed),
        l1_evictions=0,
        kv_blocks_scrubbed=0,
        proof_hash=bytes(32),
        destroyed_key_ids=tuple(destroyed),
    )
    seen: list[str] = []
    n1.view.add_erasure_listener(lambda event, identity: seen.append(identity))
    # Sealed by an identity that is not the erasure processor: no authority.
    sealed_by("mallory").emit(EventType.ERASURE_COMPLETED, completed.to_avro(), key=subject_hash)
    assert wait_for(lambda: "mallory" in seen)
    assert all(k in n1.data_keys.cache for k in key_ids)
    sealed_by("erasure").emit(EventType.ERASURE_COMPLETED, completed.to_avro(), key=subject_hash)
    assert wait_for(lambda: not any(k in n1.data_keys.cache for k in key_ids))
    for node in (n1, n2):
        for ns in NAMESPACES:
            r = CacheClient(node, scope=SUBJECT).get(
                f"chart-{SUBJECT}", contract="quotes", namespace=ns
            )
            assert (r.hit, r.reason, r.value) == (False, MissReason.ERASED, None), r.detail
        # Another subject's data still reads.
        other = CacheClient(node, scope=OTHER).get(
            f"chart-{OTHER}", contract="quotes", namespace=NAMESPACES[0]
        )
        assert other.hit and other.value == f"marker-{OTHER}-{NAMESPACES[0]}".encode()


def test_verified_erasure_request_evicts_l1_and_cached_keys(
    make_node: Callable[..., CacheNode],
    ticker: object,
    config: CachetConfig,
    sealed_by: Callable[[str], SealingProducer],
    ledger: Ledger,
    topics: TopicNames,
    codec: EventCodec,
) -> None:
    node = make_node("node-1", config)
    _ready(node)
    written = _write_subjects(node)
    for subject, key_hashes in written.items():
        for ns in NAMESPACES[: len(key_hashes)]:
            assert (
                CacheClient(node, scope=subject)
                .get(f"chart-{subject}", contract="quotes", namespace=ns)
                .hit
            )
    assert all(node.l1.get(k) is not None for k in written[SUBJECT] + written[OTHER])
    subject_hash = node.hasher.subject(SUBJECT)
    subject_key_ids = {node.view.current(k).data_key_id for k in written[SUBJECT]}  # type: ignore[union-attr]
    assert all(k in node.data_keys.cache for k in subject_key_ids)
    seen: list[tuple[EventType, str]] = []
    node.view.add_erasure_listener(lambda event, identity: seen.append((event.type, identity)))

    # 1. An attacker without keys produces an ErasureRequested straight onto
    # the topic, claiming the data-protection officer: never sealed, so the
    # node times it out, alerts it, and evicts nothing.
    forged: Event = new_event(
        EventType.ERASURE_REQUESTED, _request(subject_hash), producer_id="dpo@0", producer_seq=0
    )
    produce_raw(
        ledger.servers, topics(Topic.ERASURE), [(subject_hash, codec.encode(forged), (), 0)]
    )
    erasure_topic = topics(Topic.ERASURE)
    assert wait_for(
        lambda: any(
            a.payload.get("topic") == erasure_topic
            for a in read_alerts(ledger.servers, topics, codec)
            if a.type in (EventType.UNSEALED_TIMEOUT, EventType.INTEGRITY_FAILURE)
        ),
        30,
    ), "the forged ErasureRequested was not alerted"
    # 2. A genuine, sealed request from an identity not allowed to erase.
    sealed_by("mallory").emit(EventType.ERASURE_REQUESTED, _request(subject_hash), key=subject_hash)
    assert wait_for(lambda: (EventType.ERASURE_REQUESTED, "mallory") in seen)
    assert seen == [(EventType.ERASURE_REQUESTED, "mallory")]  # the forgery never got here
    assert all(node.l1.get(k) is not None for k in written[SUBJECT])
    assert all(k in node.data_keys.cache for k in subject_key_ids)

    # 3. The data-protection officer's sealed request: the subject's L1
    # entries and cached data keys go, the other subject's stay.
    sealed_by("dpo").emit(EventType.ERASURE_REQUESTED, _request(subject_hash), key=subject_hash)
    assert wait_for(lambda: all(node.l1.get(k) is None for k in written[SUBJECT]))
    assert not any(k in node.data_keys.cache for k in subject_key_ids)
    assert all(node.l1.get(k) is not None for k in written[OTHER])


def test_a_request_for_one_namespace_evicts_only_there(
    make_node: Callable[..., CacheNode],
    ticker: object,
    config: CachetConfig,
    sealed_by: Callable[[str], SealingProducer],
) -> None:
    node = make_node("node-1", config)
    _ready(node)
    written = _write_subjects(node)
    for ns in NAMESPACES:
        assert (
            CacheClient(node, scope=SUBJECT)
            .get(f"chart-{SUBJECT}", contract="quotes", namespace=ns)
            .hit
        )
    subject_hash = node.hasher.subject(SUBJECT)
    sealed_by("dpo").emit(
        EventType.ERASURE_REQUESTED, _request(subject_hash, NAMESPACES[1]), key=subject_hash
    )
    in_a, in_b = written[SUBJECT]
    assert wait_for(lambda: node.l1.get(in_b) is None)
    assert node.l1.get(in_a) is not None


def test_phi_put_without_a_subject_is_refused_before_anything_is_emitted(
    make_node: Callable[..., CacheNode], ticker: object, config: CachetConfig
) -> None:
    node = make_node("node-1", config)
    _ready(node)
    before = node.producer.position.next_seq
    for attempt in (
        lambda: CacheClient(node).put("chart", b"x", contract="charts", namespace="clinic-a"),
        lambda: CacheClient(node).put_many([("chart", b"x")], contract="charts"),
    ):
        with pytest.raises(InvalidArgument) as raised:
            attempt()
        assert raised.value.argument == "scope"
        message = str(raised.value)
        assert "'charts'" in message and "phi" in message and "scope=" in message
    assert node.producer.position.next_seq == before
    # With the subject it is written, under the classification's default TTL.
    receipt = CacheClient(node, scope=SUBJECT).put("chart", b"x", contract="charts", wait=True)
    entry = node.view.current(receipt.key_hash)
    assert entry is not None and entry.ttl_ms == 60_000
    assert entry.data_key_id.startswith(
        data_key_name("default", "charts", node.hasher.subject(SUBJECT))
    )


def test_a_read_past_the_ttl_misses_before_the_expiry_processor_acts(
    make_node: Callable[..., CacheNode], ticker: object, config: CachetConfig
) -> None:
    node = make_node("node-1", config)
    _ready(node)
    receipt = CacheClient(node, scope=SUBJECT).put("chart", b"x", contract="charts", wait=True)
    entry = node.view.current(receipt.key_hash)
    assert entry is not None
    within = ManualClock(now_us=entry.written_at_us + 59_000_000)
    past = ManualClock(now_us=entry.written_at_us + 61_000_000)
    assert CacheClient(node, scope=SUBJECT, clock=within).get("chart", contract="charts").hit
    late = CacheClient(node, scope=SUBJECT, clock=past).get("chart", contract="charts")
    assert (late.hit, late.reason) == (False, MissReason.EXPIRED)
    assert "TTL of 60000 ms" in late.detail


@pytest.mark.parametrize(
    ("contract", "draw", "detected"),
    [
        ("charts", 0.99, True),  # PHI: ALWAYS_VERIFY, whatever the draw
        ("leaflets", 0.0, True),  # public: PROBABILISTIC, this read is sampled
        ("leaflets", 0.99, False),  # public: PROBABILISTIC, this read is not
        ("quotes", 0.0, False),  # unclassified: no check on L1 hits
    ],
)
def test_verification_mode_checks_served_values_against_the_sealed_commitment(
    make_node: Callable[..., CacheNode],
    ticker: object,
    config: CachetConfig,
    contract: str,
    draw: float,
    detected: bool,
) -> None:
    node = make_node("node-1", config)
    _ready(node)
    client = CacheClient(node, scope=SUBJECT, sample=lambda: draw)
    receipt = client.put("chart", b"genuine", contract=contract, wait=True)
    assert client.get("chart", contract=contract).value == b"genuine"
    cached = node.l1.get(receipt.key_hash)
    assert cached is not None
    # Corrupt the node's L1 copy (memory tampering, a bug): not what was sealed.
    node.l1.evict(receipt.key_hash)
    generation = node.l1_generation(receipt.key_hash)
    assert node.l1_put(cached.entry, b"tampered", cached.facts, generation)
    r = client.get("chart", contract=contract)
    if detected:
        assert (r.hit, r.reason, r.value) == (False, MissReason.DECRYPT_FAILED, None)
        assert "commitment" in r.detail
        assert node.l1.get(receipt.key_hash) is None  # the bad copy is gone
        assert client.get("chart", contract=contract).value == b"genuine"
    else:
        assert r.hit and r.value == b"tampered"
