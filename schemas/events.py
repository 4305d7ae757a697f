"""Cachet's event model: the event types, the envelope as a value, UUIDv7.

An :class:`Event` is what travels in every topic: an envelope (id, event
time, producer identity and sequence, optional seal reference) around one
payload record. On an Event, payloads are plain fastavro-shaped dicts (enum
symbols as str, hashes as bytes) whose shape the ``schemas/*.avsc`` files
define; the codec (``cachet.schemas.codec``) checks them against the schema
on encode. Code builds and reads them as the typed classes of
:mod:`cachet.schemas.payloads`, converting only at that boundary.
"""

from __future__ import annotations

import enum
import hashlib
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from cachet.clock import SYSTEM_CLOCK
from cachet.crypto.signing import SignatureScheme, key_id
from cachet.topics import Topic

__all__ = [
    "TOPIC_OF_EVENT",
    "Event",
    "EventType",
    "SAMPLE_PAYLOADS",
    "SealRef",
    "new_event",
    "uuid7",
]


class EventType(str, enum.Enum):  # noqa: UP042 -- the agreed API; StrEnum changes str()
    """Every event type; the value is the Avro record name of its payload."""

    CACHE_WRITTEN = "CacheWritten"
    STATE_TRANSITIONED = "StateTransitioned"
    CACHE_READ = "CacheRead"
    INVALIDATED = "Invalidated"
    WATERMARK_TICK = "WatermarkTick"
    CONTRACT_DEFINED = "ContractDefined"
    SIGNING_KEY_REGISTERED = "SigningKeyRegistered"
    SIGNING_KEY_ROTATED = "SigningKeyRotated"
    SIGNING_KEY_REVOKED = "SigningKeyRevoked"
    ROLE_GRANTED = "RoleGranted"
    ERASURE_REQUESTED = "ErasureRequested"
    ERASURE_COMPLETED = "ErasureCompleted"
    KV_SCRUB_REQUESTED = "KvScrubRequested"
    KV_SCRUB_COMPLETED = "KvScrubCompleted"
    KV_BLOCK_QUARANTINED = "KvBlockQuarantined"
    SEAL = "Seal"
    CONTRACT_VIOLATION = "ContractViolation"
    INTEGRITY_FAILURE = "IntegrityFailure"
    UNSEALED_TIMEOUT = "UnsealedTimeout"
    LOG_DISCONTINUITY = "LogDiscontinuity"
    SCHEMA_SET_PUBLISHED = "SchemaSetPublished"
    LEGAL_HOLD_CHANGED = "LegalHoldChanged"
    ARCHIVE_SEGMENT_SEALED = "ArchiveSegmentSealed"
    CACHE_READ_BATCH = "CacheReadBatch"


@dataclass(frozen=True, slots=True)
class SealRef:
    """Where an event sits in its producer's seals: seal sequence and leaf index."""

    seal_seq: int
    leaf_index: int


@dataclass(frozen=True, slots=True)
class Event:
    """One event: the envelope fields plus the payload record of ``type``."""

    type: EventType
    payload: dict[str, Any]  # fastavro-shaped payload record
    event_id: str  # UUIDv7 text
    occurred_at_us: int  # event time, microseconds since the Unix epoch
    producer_id: str
    producer_seq: int
    seal_ref: SealRef | None = None


class _IdRandomness:
    """``os.urandom`` read in blocks for event ids: one system call per 512
    ids instead of one per id (under load, each call is also a moment the
    scheduler may take the CPU from a thread holding the GIL). The same
    CSPRNG bytes, each handed out once: thread-safe, and a forked child
    never reuses its parent's block."""

    _BLOCK = 4096

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0

    def __call__(self, n: int) -> bytes:
        with self._lock:
            at, end = self._at, self._at + n
            if end > len(self._block):
                self._block = os.urandom(max(self._BLOCK, n))
                at, end = 0, n
            self._at = end
            return self._block[at:end]

    def _forget(self) -> None:
        # In a forked child: the parent's block and lock are not ours.
        self._lock = threading.Lock()
        self._block = b""
        self._at = 0


_ID_RANDOMNESS = _IdRandomness()
os.register_at_fork(after_in_child=_ID_RANDOMNESS._forget)


def uuid7(now_us: int | None = None, rand: Callable[[int], bytes] = _ID_RANDOMNESS) -> str:
    """An RFC 9562 UUIDv7 for ``now_us`` (default: now), as lowercase text.

    Layout: 48-bit Unix milliseconds, version 7, 12 bits of sub-millisecond
    time (RFC 9562 section 6.2, method 3, so ids from one process sort by
    time to 1/4096 ms), variant 10, 62 random bits from ``rand`` (default:
    ``os.urandom``, read in blocks).
    """
    if now_us is None:
        now_us = SYSTEM_CLOCK.now_us()
    if now_us < 0:
        raise ValueError(f"uuid7: time {now_us} is before the epoch")
    millis, sub_us = divmod(now_us, 1000)
    if millis >= 1 << 48:
        raise ValueError(f"uuid7: time {now_us} does not fit 48-bit milliseconds")
    sub_ms = sub_us * 4096 // 1000  # 0..4095
    random_bytes = rand(8)
    if len(random_bytes) != 8:
        raise ValueError(f"uuid7: rand returned {len(random_bytes)} bytes, wanted 8")
    rand_b = int.from_bytes(random_bytes, "big") & ((1 << 62) - 1)
    value = (millis << 80) | (0x7 << 76) | (sub_ms << 64) | (0b10 << 62) | rand_b
    # str(uuid.UUID(int=value)), spelled out: a third of the cost, per event.
    h = f"{value:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def new_event(
    type: EventType,
    payload: dict[str, Any],
    *,
    producer_id: str,
    producer_seq: int,
    occurred_at_us: int | None = None,
    seal_ref: SealRef | None = None,
    clock: Callable[[], int] = SYSTEM_CLOCK.now_us,
    rand: Callable[[int], bytes] = _ID_RANDOMNESS,
) -> Event:
    """A new event with a fresh UUIDv7; event time defaults to ``clock()``
    (wall clock, microseconds: e.g. a :class:`~cachet.clock.Clock`'s ``now_us``)."""
    created_us = clock()
    return Event(
        type=type if type.__class__ is EventType else EventType(type),
        payload=payload,
        event_id=uuid7(created_us, rand),
        occurred_at_us=created_us if occurred_at_us is None else occurred_at_us,
        producer_id=producer_id,
        producer_seq=producer_seq,
        seal_ref=seal_ref,
    )


# --------------------------------------------------------------------------- samples


def _h(label: str) -> bytes:
    return hashlib.sha3_256(label.encode()).digest()


def _signature_line(scheme: SignatureScheme, owner: str, size: int) -> dict[str, Any]:
    public = _h(f"pk:{owner}:{scheme.value}")
    return {"algorithm": scheme.value, "key_id": key_id(scheme, public), "signature": bytes(size)}


def _public_key(scheme: SignatureScheme, owner: str) -> dict[str, Any]:
    public = _h(f"pk:{owner}:{scheme.value}")
    return {"algorithm": scheme.value, "key_id": key_id(scheme, public), "public_key": public}


_SCHEMES = (
    SignatureScheme.ML_DSA_65,
    SignatureScheme.FN_DSA_512,
    SignatureScheme.SLH_DSA_SHA2_128F,
)
_SIGS = [_signature_line(s, "anchor", n) for s, n in zip(_SCHEMES, (64, 40, 96), strict=True)]
_KEYS = [_public_key(s, "quotes-svc") for s in _SCHEMES]
_PRODUCER = "quotes-svc@19a2f3c4d5e"  # identity@epoch (lowercase hex), as in envelopes
_TENANT = _h("tenant:acme").hex()  # the tenant's keyed hash, never its id
_T0 = 1_790_000_000_000_000  # 2026-09-21, microseconds

_READ_HIT: dict[str, Any] = {
    "key_hash": _h("key:quote:AAPL"),
    "namespace": "quotes",
    "contract": "finra_quotes",
    "outcome": "HIT",
    "reason": "served",
    "fingerprint": _h("fp:quote:AAPL:v3"),
    "version": 3,
    "freshness": {
        "age_ms": 420,
        "max_staleness_ms": 1000,
        "headroom_ms": 545,
        "view_lag_ms": 35,
    },
    "reader_role": "owner",
    "node_id": "node-a",
}
_READ_MISS: dict[str, Any] = {
    "key_hash": _h("key:quote:MSFT"),
    "namespace": "quotes",
    "contract": "finra_quotes",
    "outcome": "MISS",
    "reason": "not_found",
    "fingerprint": None,
    "version": None,
    "freshness": None,
    "reader_role": "owner",
    "node_id": "node-a",
}

# One valid, realistic payload per event type, every field present (so a
# decoded sample compares equal), every value spelled as the code writes it.
# Tests and `cachet demo` round-trip these.
SAMPLE_PAYLOADS: dict[EventType, dict[str, Any]] = {
    EventType.CACHE_WRITTEN: {
        "key_hash": _h("key:quote:AAPL"),
        "namespace": "quotes",
        "contract": "finra_quotes",
        "fingerprint": _h("fp:quote:AAPL:v3"),
        "version": 3,
        "value": {
            "ciphertext": b"\x8f\x12" * 24,
            "nonce": bytes(12),
            "data_key_id": "dk-ns-quotes-0001",
            "commitment": _h("commit:quote:AAPL:v3"),
            "aad_version": 1,
        },
        "subject_hash": None,
        "classification": "financial",
        "ttl_ms": 30_000,
        "prev_event_hash": _h("event:quote:AAPL:v2"),
    },
    EventType.STATE_TRANSITIONED: {
        "key_hash": _h("key:quote:AAPL"),
        "namespace": "quotes",
        "version": 2,
        "from_state": "ACTIVE",
        "to_state": "SUPERSEDED",
        "authority": {"kind": "KEY", "key_id": "ks-quotes-02", "role": "owner"},
        "reason": "superseded by version 3",
        "prev_event_hash": _h("event:quote:AAPL:v3"),
    },
    EventType.CACHE_READ: _READ_HIT,
    EventType.INVALIDATED: {
        "key_hash": _h("key:quote:AAPL"),
        "namespace": "quotes",
        "mode": "EAGER",
        "version": None,
        "authority": {"kind": "KEY", "key_id": "ks-quotes-02", "role": "owner"},
        "reason": "source changed",
    },
    EventType.WATERMARK_TICK: {
        "ticker_id": "ticker-1",
        "partition": 3,
        "tick_seq": 1207,
        "emitted_at_us": _T0,
    },
    EventType.CONTRACT_DEFINED: {
        "name": "finra_quotes",
        "definition_json": '{"invalidation":"eager","max_staleness_ms":1000,"strict":true}',
        "definition_hash": _h('{"invalidation":"eager","max_staleness_ms":1000,"strict":true}'),
    },
    EventType.SIGNING_KEY_REGISTERED: {
        "producer_id": "quotes-svc",
        "key_set_id": "ks-quotes-02",
        "keys": _KEYS,
        "valid_from_us": _T0,
        "anchor_signatures": _SIGS,
    },
    EventType.SIGNING_KEY_ROTATED: {
        "producer_id": "quotes-svc",
        "old_key_set_id": "ks-quotes-01",
        "new_key_set_id": "ks-quotes-02",
        "keys": _KEYS,
        "rotated_at_us": _T0 + 5_000_000,
        "anchor_signatures": _SIGS,
    },
    EventType.SIGNING_KEY_REVOKED: {
        "producer_id": "quotes-svc",
        "key_set_id": "ks-quotes-01",
        "compromised_at_us": _T0 - 60_000_000,
        "reason": "key-compromise",
        "anchor_signatures": _SIGS,
    },
    EventType.ROLE_GRANTED: {
        "principal": "examiner@finra.example",
        "role": "REGULATOR",
        "namespace": "quotes",
        "granted_by": "compliance-admin",
        "anchor_signatures": _SIGS[:1],
    },
    EventType.ERASURE_REQUESTED: {
        "request_id": "er-2026-0042",
        "subject_hash": _h("subject:user-1234"),
        "scope": "SUBJECT",
        "requested_by": "dpo@example.com",
        "legal_basis": "GDPR Art. 17(1)(a)",
        "namespace": None,
    },
    EventType.ERASURE_COMPLETED: {
        "request_id": "er-2026-0042",
        "subject_hash": _h("subject:user-1234"),
        "entries_revoked": 17,
        "data_keys_destroyed": 1,
        "l1_evictions": 34,
        "kv_blocks_scrubbed": 256,
        "proof_hash": _h("erasure-proof:er-2026-0042"),
        "namespace": None,
        "stage": "immediate",
        "destroyed_key_ids": ["subj:5f1c/ns:quotes/c:finra_quotes#0001"],
        "steps": [
            {"name": "revoke", "started_at_us": _T0, "finished_at_us": _T0 + 8_000, "count": 17},
            {
                "name": "destroy_keys",
                "started_at_us": _T0 + 8_000,
                "finished_at_us": _T0 + 9_000,
                "count": 1,
            },
        ],
        "failures": [],
        "held": [
            {
                "key_hash": _h("key:trade:T-991"),
                "namespace": "trades",
                "contract": "finra_trades",
                "ground": "FINRA 4511 / SEC 17a-4(f)",
                "held_until_us": _T0 + 189_388_800_000_000,
            }
        ],
    },
    EventType.KV_SCRUB_REQUESTED: {
        "worker_id": None,
        "trigger": "ERASURE",
        "tenant": _TENANT,
        "request_id": None,
        "subject_hash": _h("subject:user-1234"),
    },
    EventType.KV_SCRUB_COMPLETED: {
        "worker_id": "gpu-worker-0",
        "tenant": _TENANT,
        "request_id": "req-9f2c",
        "trigger": "REQUEST_FINISHED",
        "blocks": 64,
        "bytes": 64 * 2 * 16 * 8 * 128 * 2,
        "coverage": 1.0,
        "method": "FULL",
        "passes": 1,
        "duration_us": 850,
        "device": "cuda:0",
    },
    EventType.KV_BLOCK_QUARANTINED: {
        "worker_id": "gpu-worker-0",
        "tenant": _TENANT,
        "request_id": "req-9f2c",
        "blocks": 2,
        "bytes": 2 * 65536,
        "reason": "VERIFY_FAILED",
        "coverage": 0.5,
    },
    EventType.SEAL: {
        "producer_id": _PRODUCER,
        "seal_seq": 88,
        "prev_seal_hash": _h("seal:quotes-svc:87"),
        "merkle_root": _h("root:quotes-svc:88"),
        "tree_size": 3,
        "first_producer_seq": 4_200,
        "leaf_hashes": [_h("leaf:4200"), _h("leaf:4201"), _h("leaf:4202")],
        "leaf_topics": ["entries", "entries", "reads"],
        "key_set_id": "ks-quotes-02",
        "signatures": _SIGS,
        "sealed_at_us": _T0 + 2_000,
    },
    EventType.CONTRACT_VIOLATION: {
        "key_hash": _h("key:quote:AAPL"),
        "namespace": "quotes",
        "contract": "finra_quotes",
        "reason": "stale",
        "detail": "age 1450 ms exceeds max staleness 1000 ms",
        "node_id": "node-b",
    },
    EventType.INTEGRITY_FAILURE: {
        "status": "signature_invalid.fn-dsa-512",
        "producer_id": _PRODUCER,
        "seal_seq": 88,
        "producer_seq": None,
        "topic": "cachet.seals",
        "partition": 0,
        "offset": 9_120,
        "detail": f"fn-dsa-512 signature does not verify under key {_KEYS[1]['key_id']}",
    },
    EventType.UNSEALED_TIMEOUT: {
        "producer_id": _PRODUCER,
        "producer_seq": 4_203,
        "waited_ms": 30_000,
        "topic": "cachet.entries",
        "partition": 5,
        "offset": 77_001,
    },
    EventType.LOG_DISCONTINUITY: {
        "kind": "below_low_watermark",
        "topic": "cachet.entries",
        "partition": 5,
        "expected_offset": 1_000,
        "found_offset": 4_096,
        "producer_id": None,
        "detail": "stored offset 1000 is below the log start 4096",
    },
    EventType.SCHEMA_SET_PUBLISHED: {
        "release": "v1",
        "fingerprint": bytes.fromhex("e80bfe7255dacc1e"),
        # Real announcements carry the whole envelope (tens of kilobytes).
        "schema_json": '{"type":"record","name":"cachet.events.Envelope","fields":[]}',
        "anchor_signatures": _SIGS,
    },
    EventType.LEGAL_HOLD_CHANGED: {
        "hold_id": "lh-2026-007",
        "action": "SET",
        "subject_hash": _h("subject:user-1234"),
        "namespace": None,
        "reason": "litigation hold, matter 26-cv-0142",
        "changed_by": "dpo@example.com",
    },
    EventType.ARCHIVE_SEGMENT_SEALED: {
        "archive_id": "archive-main",
        "segment_seq": 41,
        "file_name": "segment-000000000041.avro",
        "segment_hash": _h("segment:41"),
        "prev_segment_hash": _h("segment:40"),
        "record_count": 5_120,
        "ranges": [
            {
                "topic": "cachet.entries",
                "partition": 0,
                "first_offset": 9_000,
                "last_offset": 11_047,
            },
            {"topic": "cachet.seals", "partition": 0, "first_offset": 310, "last_offset": 351},
        ],
        "first_timestamp_us": _T0,
        "last_timestamp_us": _T0 + 60_000_000,
        "closed_at_us": _T0 + 60_250_000,
    },
    EventType.CACHE_READ_BATCH: {"node_id": "node-a", "reads": [dict(_READ_HIT), _READ_MISS]},
}


# Where each event type lives (DESIGN.md, "Topics").
TOPIC_OF_EVENT: dict[EventType, Topic] = {
    EventType.CACHE_WRITTEN: Topic.ENTRIES,
    EventType.STATE_TRANSITIONED: Topic.ENTRIES,
    EventType.CACHE_READ: Topic.READS,
    EventType.INVALIDATED: Topic.INVALIDATIONS,
    EventType.WATERMARK_TICK: Topic.INVALIDATIONS,
    EventType.CONTRACT_DEFINED: Topic.CONTROL,
    EventType.SIGNING_KEY_REGISTERED: Topic.CONTROL,
    EventType.SIGNING_KEY_ROTATED: Topic.CONTROL,
    EventType.SIGNING_KEY_REVOKED: Topic.CONTROL,
    EventType.ROLE_GRANTED: Topic.CONTROL,
    EventType.ERASURE_REQUESTED: Topic.ERASURE,
    EventType.ERASURE_COMPLETED: Topic.ERASURE,
    EventType.KV_SCRUB_REQUESTED: Topic.KVSCRUB,
    EventType.KV_SCRUB_COMPLETED: Topic.KVSCRUB,
    EventType.KV_BLOCK_QUARANTINED: Topic.KVSCRUB,
    EventType.SEAL: Topic.SEALS,
    EventType.CONTRACT_VIOLATION: Topic.ALERTS,
    EventType.INTEGRITY_FAILURE: Topic.ALERTS,
    EventType.UNSEALED_TIMEOUT: Topic.ALERTS,
    EventType.LOG_DISCONTINUITY: Topic.ALERTS,
    EventType.SCHEMA_SET_PUBLISHED: Topic.CONTROL,
    EventType.LEGAL_HOLD_CHANGED: Topic.ERASURE,
    EventType.ARCHIVE_SEGMENT_SEALED: Topic.ARCHIVE,
    EventType.CACHE_READ_BATCH: Topic.READS,
}
