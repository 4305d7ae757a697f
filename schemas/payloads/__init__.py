"""Every event payload as a typed, frozen value; Avro dicts only at the codec.

One class per Avro record of ``schemas/*.avsc``, named after it, with the
record's fields in the record's order (the nested records too:
:class:`EncryptedValue`, :class:`TransitionAuthority`, :class:`FreshnessProof`,
:class:`SignatureLine`, :class:`PublicKeyRecord`). Code builds and reads these;
the fastavro-shaped dict an :class:`~cachet.schemas.events.Event` carries is
made by :meth:`to_avro` right before the codec and parsed by
:meth:`from_avro` right after it, the shape of confluent-kafka's
``examples/avro_producer.py`` (``User`` + ``user_to_dict``)::

    payload = CacheWritten(key_hash=..., ..., value=EncryptedValue(...))
    producer.emit(EventType.CACHE_WRITTEN, payload.to_avro(), key=payload.key_hash)
    ...
    written = CacheWritten.from_avro(event.payload)

Mapping rules (``tests/unit/schemas/test_payloads.py`` checks each class
against its .avsc, so a field added to a schema without its class fails):

* ``bytes``/``string``/``int``/``long``/``double`` -> ``bytes``/``str``/``int``/``float``;
  ``["null", T]`` -> ``T | None`` defaulting to ``None``; arrays -> tuples.
* An Avro enum -> the one Python enum of that concept (:data:`WIRE_ENUMS`);
  the Avro symbol is the member's *name* (``Role.OWNER`` travels as
  ``"OWNER"``, though its config spelling is ``"owner"``). A symbol this
  reader does not know becomes ``UNKNOWN``, every wire enum's schema default:
  whatever acts on it must treat UNKNOWN as "do nothing / serve nothing".
* Avro ``string`` fields stay ``str`` even where the code accepts only a
  closed set (``TransitionAuthority.role``, ``SigningKeyRevoked.reason``,
  ``KvBlockQuarantined.reason``): the schema lets other values through, so
  :meth:`from_avro` must too; the component that acts on them refuses.

``from_avro`` trusts the dict's shape (the codec validated it against the
schema); fields with a schema default take it when absent, as Avro
resolution does.

The classes live in one module per domain, all re-exported here:

* :mod:`~cachet.schemas.payloads.wire`: the wire-only enums and the nested records;
* :mod:`~cachet.schemas.payloads.entries`: writes, state transitions, reads,
  invalidations and watermark ticks;
* :mod:`~cachet.schemas.payloads.control`: contracts, signing keys, roles, schema sets;
* :mod:`~cachet.schemas.payloads.erasure`: erasure requests and completions, legal holds;
* :mod:`~cachet.schemas.payloads.kvscrub`: KV-cache scrubbing;
* :mod:`~cachet.schemas.payloads.seals`: batch seals and sealed archive segments;
* :mod:`~cachet.schemas.payloads.alerts`: violations, integrity failures, timeouts,
  log discontinuities.

This module holds the registry: :class:`Payload`, :data:`PAYLOAD_CLASSES`,
:data:`RECORD_CLASSES` and :data:`WIRE_ENUMS`.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Final, Protocol, Self

from cachet.config.enums import InvalidationMode, Role, ScrubMethod
from cachet.schemas.events import EventType
from cachet.schemas.payloads.alerts import (
    ContractViolation,
    IntegrityFailure,
    LogDiscontinuity,
    UnsealedTimeout,
)
from cachet.schemas.payloads.control import (
    ContractDefined,
    RoleGranted,
    SchemaSetPublished,
    SigningKeyRegistered,
    SigningKeyRevoked,
    SigningKeyRotated,
)
from cachet.schemas.payloads.entries import (
    FRESHNESS_CONFIRMED,
    CacheRead,
    CacheReadBatch,
    CacheWritten,
    Invalidated,
    StateTransitioned,
    WatermarkTick,
)
from cachet.schemas.payloads.erasure import (
    ErasureCompleted,
    ErasureRequested,
    ErasureStage,
    ErasureStep,
    HeldEntry,
    LegalHoldAction,
    LegalHoldChanged,
)
from cachet.schemas.payloads.kvscrub import (
    KvBlockQuarantined,
    KvScrubCompleted,
    KvScrubRequested,
)
from cachet.schemas.payloads.seals import (
    ArchiveRange,
    ArchiveSegmentSealed,
    Seal,
)
from cachet.schemas.payloads.wire import (
    AuthorityKind,
    EncryptedValue,
    ErasureScope,
    FreshnessProof,
    PublicKeyRecord,
    ReadOutcome,
    ScrubTrigger,
    SignatureLine,
    TransitionAuthority,
)
from cachet.verdict import EntryState

__all__ = [
    "LegalHoldChanged",
    "LegalHoldAction",
    "HeldEntry",
    "ErasureStep",
    "ErasureStage",
    "ArchiveSegmentSealed",
    "ArchiveRange",
    "FRESHNESS_CONFIRMED",
    "PAYLOAD_CLASSES",
    "RECORD_CLASSES",
    "WIRE_ENUMS",
    "AuthorityKind",
    "CacheRead",
    "CacheReadBatch",
    "CacheWritten",
    "ContractDefined",
    "ContractViolation",
    "EncryptedValue",
    "ErasureCompleted",
    "ErasureRequested",
    "ErasureScope",
    "FreshnessProof",
    "IntegrityFailure",
    "Invalidated",
    "KvBlockQuarantined",
    "KvScrubCompleted",
    "KvScrubRequested",
    "LogDiscontinuity",
    "Payload",
    "PublicKeyRecord",
    "ReadOutcome",
    "RoleGranted",
    "ScrubTrigger",
    "SchemaSetPublished",
    "Seal",
    "SignatureLine",
    "SigningKeyRegistered",
    "SigningKeyRevoked",
    "SigningKeyRotated",
    "StateTransitioned",
    "TransitionAuthority",
    "UnsealedTimeout",
    "WatermarkTick",
]

# ------------------------------------------------------------------- registry


class Payload(Protocol):
    """What every payload class is: a value that converts to and from its
    Avro record (the dict an :class:`~cachet.schemas.events.Event` carries)."""

    def to_avro(self) -> dict[str, Any]: ...

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self: ...


PAYLOAD_CLASSES: Final[Mapping[EventType, type[Payload]]] = {
    EventType.CACHE_WRITTEN: CacheWritten,
    EventType.STATE_TRANSITIONED: StateTransitioned,
    EventType.CACHE_READ: CacheRead,
    EventType.INVALIDATED: Invalidated,
    EventType.WATERMARK_TICK: WatermarkTick,
    EventType.CONTRACT_DEFINED: ContractDefined,
    EventType.SIGNING_KEY_REGISTERED: SigningKeyRegistered,
    EventType.SIGNING_KEY_ROTATED: SigningKeyRotated,
    EventType.SIGNING_KEY_REVOKED: SigningKeyRevoked,
    EventType.ROLE_GRANTED: RoleGranted,
    EventType.ERASURE_REQUESTED: ErasureRequested,
    EventType.ERASURE_COMPLETED: ErasureCompleted,
    EventType.KV_SCRUB_REQUESTED: KvScrubRequested,
    EventType.KV_SCRUB_COMPLETED: KvScrubCompleted,
    EventType.KV_BLOCK_QUARANTINED: KvBlockQuarantined,
    EventType.SEAL: Seal,
    EventType.CONTRACT_VIOLATION: ContractViolation,
    EventType.INTEGRITY_FAILURE: IntegrityFailure,
    EventType.UNSEALED_TIMEOUT: UnsealedTimeout,
    EventType.LOG_DISCONTINUITY: LogDiscontinuity,
    EventType.SCHEMA_SET_PUBLISHED: SchemaSetPublished,
    EventType.LEGAL_HOLD_CHANGED: LegalHoldChanged,
    EventType.ARCHIVE_SEGMENT_SEALED: ArchiveSegmentSealed,
    EventType.CACHE_READ_BATCH: CacheReadBatch,
}
"""The payload class of each event type."""

RECORD_CLASSES: Final[Mapping[str, type[Payload]]] = {
    "cachet.events.EncryptedValue": EncryptedValue,
    "cachet.events.TransitionAuthority": TransitionAuthority,
    "cachet.events.FreshnessProof": FreshnessProof,
    "cachet.events.SignatureLine": SignatureLine,
    "cachet.events.PublicKeyRecord": PublicKeyRecord,
    "cachet.events.ErasureStep": ErasureStep,
    "cachet.events.HeldEntry": HeldEntry,
    "cachet.events.ArchiveRange": ArchiveRange,
    **{f"cachet.events.{t.value}": cls for t, cls in PAYLOAD_CLASSES.items()},
}
"""The class of every Avro record a payload holds, by full record name."""

WIRE_ENUMS: Final[Mapping[str, type[enum.Enum]]] = {
    "cachet.events.EntryState": EntryState,
    "cachet.events.ReadOutcome": ReadOutcome,
    "cachet.events.InvalidationMode": InvalidationMode,
    "cachet.events.AuthorityKind": AuthorityKind,
    "cachet.events.Role": Role,
    "cachet.events.ErasureScope": ErasureScope,
    "cachet.events.ScrubTrigger": ScrubTrigger,
    "cachet.events.ScrubMethod": ScrubMethod,
    "cachet.events.LegalHoldAction": LegalHoldAction,
}
"""The Python enum of every Avro enum, by full name; symbols are member names."""
