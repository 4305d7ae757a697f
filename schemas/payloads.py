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
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final, Protocol, Self, TypeVar

from cachet.config.enums import InvalidationMode, Role, ScrubMethod
from cachet.freshness import FreshnessProof as ComputedFreshness
from cachet.schemas.events import EventType
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

# StateTransitioned.reason of a source's freshness confirmation: ACTIVE ->
# ACTIVE with exactly this reason (contractual invalidation mode).
FRESHNESS_CONFIRMED: Final = "freshness_confirmed"

E = TypeVar("E", bound=enum.Enum)


def _member(cls: type[E], symbol: str) -> E:
    """The member of ``cls`` an Avro symbol names; UNKNOWN for one it does not."""
    try:
        return cls[symbol]
    except KeyError:
        return cls["UNKNOWN"]


# ------------------------------------------------------------------ wire enums
# Enums only the wire knows. EntryState (cachet.verdict), Role,
# InvalidationMode and ScrubMethod (cachet.config.enums) live in the kernel,
# which needs them too and cannot import this package.


class ReadOutcome(enum.Enum):
    """Result of a read (Avro ``ReadOutcome``)."""

    HIT = "HIT"
    MISS = "MISS"
    UNKNOWN = "UNKNOWN"


class AuthorityKind(enum.Enum):
    """Who made a state change (Avro ``AuthorityKind``): KEY is a client acting
    through a node's signing keys; SYSTEM_* a Cachet processor under a rule."""

    KEY = "KEY"
    SYSTEM_CONTRACT = "SYSTEM_CONTRACT"
    SYSTEM_VERIFICATION = "SYSTEM_VERIFICATION"
    SYSTEM_EXPIRY = "SYSTEM_EXPIRY"
    SYSTEM_ERASURE = "SYSTEM_ERASURE"
    UNKNOWN = "UNKNOWN"


class ErasureScope(enum.Enum):
    """What an erasure covers (Avro ``ErasureScope``); UNKNOWN: do not act."""

    SUBJECT = "SUBJECT"
    TENANT = "TENANT"
    UNKNOWN = "UNKNOWN"


class ScrubTrigger(enum.Enum):
    """Why KV-cache blocks are scrubbed (Avro ``ScrubTrigger``)."""

    REQUEST_FINISHED = "REQUEST_FINISHED"
    TTL_EXPIRED = "TTL_EXPIRED"
    MAX_REUSE = "MAX_REUSE"
    REVOCATION = "REVOCATION"
    ERASURE = "ERASURE"
    UNKNOWN = "UNKNOWN"


# ------------------------------------------------------------- nested records


@dataclass(frozen=True, slots=True, kw_only=True)
class EncryptedValue:
    """A cache value as AES-256-GCM ciphertext (Avro ``EncryptedValue``)."""

    ciphertext: bytes
    nonce: bytes
    data_key_id: str
    commitment: bytes
    aad_version: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "ciphertext": self.ciphertext,
            "nonce": self.nonce,
            "data_key_id": self.data_key_id,
            "commitment": self.commitment,
            "aad_version": self.aad_version,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            ciphertext=d["ciphertext"],
            nonce=d["nonce"],
            data_key_id=d["data_key_id"],
            commitment=d["commitment"],
            aad_version=d["aad_version"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class TransitionAuthority:
    """Who or what made a state change (Avro ``TransitionAuthority``).

    ``key_id`` and ``role`` are set only for kind KEY: the acting node's key
    set id and the client's role in its config spelling (``Role.value``).
    """

    kind: AuthorityKind
    key_id: str | None = None
    role: str | None = None

    @classmethod
    def by_key(cls, key_set_id: str, role: Role) -> Self:
        """A client in ``role`` acting through the node keys ``key_set_id`` (kind KEY)."""
        return cls(kind=AuthorityKind.KEY, key_id=key_set_id, role=role.value)

    def text(self) -> str:
        """One line as the live view stores it: ``KEY:<key_id>:<role>``, or the kind."""
        if self.kind is AuthorityKind.KEY:
            return f"KEY:{self.key_id or ''}:{self.role or ''}"
        return self.kind.name

    def to_avro(self) -> dict[str, Any]:
        return {"kind": self.kind.name, "key_id": self.key_id, "role": self.role}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            kind=_member(AuthorityKind, d["kind"]),
            key_id=d.get("key_id"),
            role=d.get("role"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class FreshnessProof:
    """A freshness proof as CacheRead carries it (Avro ``FreshnessProof``).

    The proof a read computes is :class:`cachet.freshness.FreshnessProof`
    (which also holds the clock skew it saw); :meth:`of` converts it.
    """

    age_ms: int
    max_staleness_ms: int
    headroom_ms: int
    view_lag_ms: int

    @classmethod
    def of(cls, proof: ComputedFreshness) -> Self:
        """The wire record of a computed proof."""
        return cls(
            age_ms=proof.age_ms,
            max_staleness_ms=proof.max_staleness_ms,
            headroom_ms=proof.headroom_ms,
            view_lag_ms=proof.view_lag_ms,
        )

    def to_avro(self) -> dict[str, Any]:
        return {
            "age_ms": self.age_ms,
            "max_staleness_ms": self.max_staleness_ms,
            "headroom_ms": self.headroom_ms,
            "view_lag_ms": self.view_lag_ms,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            age_ms=d["age_ms"],
            max_staleness_ms=d["max_staleness_ms"],
            headroom_ms=d["headroom_ms"],
            view_lag_ms=d["view_lag_ms"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SignatureLine:
    """One signature, one scheme (Avro ``SignatureLine``); ``algorithm`` is the
    lowercase scheme id (``SignatureScheme.value``, e.g. ``ml-dsa-65``)."""

    algorithm: str
    key_id: str
    signature: bytes

    def to_avro(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "signature": self.signature}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(algorithm=d["algorithm"], key_id=d["key_id"], signature=d["signature"])


@dataclass(frozen=True, slots=True, kw_only=True)
class PublicKeyRecord:
    """A public key of a producer's key set (Avro ``PublicKeyRecord``)."""

    algorithm: str
    key_id: str
    public_key: bytes

    def to_avro(self) -> dict[str, Any]:
        return {"algorithm": self.algorithm, "key_id": self.key_id, "public_key": self.public_key}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(algorithm=d["algorithm"], key_id=d["key_id"], public_key=d["public_key"])


def _signatures(lines: Any) -> tuple[SignatureLine, ...]:
    return tuple(SignatureLine.from_avro(line) for line in lines)


def _keys(records: Any) -> tuple[PublicKeyRecord, ...]:
    return tuple(PublicKeyRecord.from_avro(record) for record in records)


# -------------------------------------------------------------------- entries


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheWritten:
    """A new version of a cache entry (topic entries)."""

    key_hash: bytes
    namespace: str
    contract: str
    fingerprint: bytes
    version: int
    value: EncryptedValue
    subject_hash: bytes | None = None
    classification: str
    ttl_ms: int | None = None
    prev_event_hash: bytes | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "value": self.value.to_avro(),
            "subject_hash": self.subject_hash,
            "classification": self.classification,
            "ttl_ms": self.ttl_ms,
            "prev_event_hash": self.prev_event_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            fingerprint=d["fingerprint"],
            version=d["version"],
            value=EncryptedValue.from_avro(d["value"]),
            subject_hash=d.get("subject_hash"),
            classification=d["classification"],
            ttl_ms=d.get("ttl_ms"),
            prev_event_hash=d.get("prev_event_hash"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class StateTransitioned:
    """A cache entry version changed lifecycle state (topic entries).

    ``reason`` is :data:`FRESHNESS_CONFIRMED` exactly for a source's
    freshness confirmation (ACTIVE -> ACTIVE); otherwise text for people.
    """

    key_hash: bytes
    namespace: str
    version: int
    from_state: EntryState
    to_state: EntryState
    authority: TransitionAuthority
    reason: str
    prev_event_hash: bytes

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "version": self.version,
            "from_state": self.from_state.name,
            "to_state": self.to_state.name,
            "authority": self.authority.to_avro(),
            "reason": self.reason,
            "prev_event_hash": self.prev_event_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            version=d["version"],
            from_state=_member(EntryState, d["from_state"]),
            to_state=_member(EntryState, d["to_state"]),
            authority=TransitionAuthority.from_avro(d["authority"]),
            reason=d["reason"],
            prev_event_hash=d["prev_event_hash"],
        )


# ---------------------------------------------------------------------- reads


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheRead:
    """A read was served or missed (topic reads). ``reason`` is ``served`` on a
    hit, else a :class:`cachet.verdict.MissReason` value; ``reader_role`` a
    :class:`Role` value (lowercase)."""

    key_hash: bytes
    namespace: str
    contract: str
    outcome: ReadOutcome
    reason: str
    fingerprint: bytes | None = None
    version: int | None = None
    freshness: FreshnessProof | None = None
    reader_role: str
    node_id: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "outcome": self.outcome.name,
            "reason": self.reason,
            "fingerprint": self.fingerprint,
            "version": self.version,
            "freshness": None if self.freshness is None else self.freshness.to_avro(),
            "reader_role": self.reader_role,
            "node_id": self.node_id,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        freshness = d.get("freshness")
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            outcome=_member(ReadOutcome, d["outcome"]),
            reason=d["reason"],
            fingerprint=d.get("fingerprint"),
            version=d.get("version"),
            freshness=None if freshness is None else FreshnessProof.from_avro(freshness),
            reader_role=d["reader_role"],
            node_id=d["node_id"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class CacheReadBatch:
    """Reads of one node, many to a record (topic reads, record key
    ``node_id``): each item is exactly a :class:`CacheRead`, so read ``i`` is
    proven by (this event, ``i``) plus the event's inclusion proof."""

    node_id: str
    reads: tuple[CacheRead, ...]

    def to_avro(self) -> dict[str, Any]:
        return {"node_id": self.node_id, "reads": [r.to_avro() for r in self.reads]}

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            node_id=d["node_id"],
            reads=tuple(CacheRead.from_avro(r) for r in d["reads"]),
        )


# -------------------------------------------------------------- invalidations


@dataclass(frozen=True, slots=True, kw_only=True)
class Invalidated:
    """A version of a key was invalidated (topic invalidations); ``version``
    None: every version. Cachet emits mode EAGER (a revoke)."""

    key_hash: bytes
    namespace: str
    mode: InvalidationMode
    version: int | None = None
    authority: TransitionAuthority
    reason: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "mode": self.mode.name,
            "version": self.version,
            "authority": self.authority.to_avro(),
            "reason": self.reason,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            mode=_member(InvalidationMode, d["mode"]),
            version=d.get("version"),
            authority=TransitionAuthority.from_avro(d["authority"]),
            reason=d["reason"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class WatermarkTick:
    """A periodic tick into one partition of invalidations."""

    ticker_id: str
    partition: int
    tick_seq: int
    emitted_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "ticker_id": self.ticker_id,
            "partition": self.partition,
            "tick_seq": self.tick_seq,
            "emitted_at_us": self.emitted_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            ticker_id=d["ticker_id"],
            partition=d["partition"],
            tick_seq=d["tick_seq"],
            emitted_at_us=d["emitted_at_us"],
        )


# -------------------------------------------------------------------- control


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractDefined:
    """A contract in force from this event on (topic control)."""

    name: str
    definition_json: str
    definition_hash: bytes

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "definition_json": self.definition_json,
            "definition_hash": self.definition_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            name=d["name"],
            definition_json=d["definition_json"],
            definition_hash=d["definition_hash"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRegistered:
    """A producer identity's key set, registered under the trust anchor."""

    producer_id: str  # the identity, no @epoch
    key_set_id: str
    keys: tuple[PublicKeyRecord, ...]
    valid_from_us: int
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "key_set_id": self.key_set_id,
            "keys": [k.to_avro() for k in self.keys],
            "valid_from_us": self.valid_from_us,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            key_set_id=d["key_set_id"],
            keys=_keys(d["keys"]),
            valid_from_us=d["valid_from_us"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRotated:
    """A producer identity moved to a new key set."""

    producer_id: str  # the identity, no @epoch
    old_key_set_id: str
    new_key_set_id: str
    keys: tuple[PublicKeyRecord, ...]
    rotated_at_us: int
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "old_key_set_id": self.old_key_set_id,
            "new_key_set_id": self.new_key_set_id,
            "keys": [k.to_avro() for k in self.keys],
            "rotated_at_us": self.rotated_at_us,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            old_key_set_id=d["old_key_set_id"],
            new_key_set_id=d["new_key_set_id"],
            keys=_keys(d["keys"]),
            rotated_at_us=d["rotated_at_us"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SigningKeyRevoked:
    """A key set was revoked from ``compromised_at_us`` on. ``reason`` is a
    :class:`cachet.crypto.registry.RevocationReason` value; the registry
    refuses any other."""

    producer_id: str  # the identity, no @epoch
    key_set_id: str
    compromised_at_us: int
    reason: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "key_set_id": self.key_set_id,
            "compromised_at_us": self.compromised_at_us,
            "reason": self.reason,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            key_set_id=d["key_set_id"],
            compromised_at_us=d["compromised_at_us"],
            reason=d["reason"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class RoleGranted:
    """A principal was granted a role (topic control); ``namespace`` None: all.
    Role UNKNOWN (a symbol this reader does not know) grants nothing."""

    principal: str
    role: Role
    namespace: str | None = None
    granted_by: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "principal": self.principal,
            "role": self.role.name,
            "namespace": self.namespace,
            "granted_by": self.granted_by,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            principal=d["principal"],
            role=_member(Role, d["role"]),
            namespace=d.get("namespace"),
            granted_by=d["granted_by"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class SchemaSetPublished:
    """A schema set announced under the trust anchor before producers use it
    (topic control, record key ``fingerprint``). ``schema_json`` is the
    self-contained envelope; readers learn it only after ``anchor_signatures``
    verify (:func:`cachet.crypto.registry.schema_set_statement`)."""

    release: str  # its folder name in schemas/history/, e.g. "v2"
    fingerprint: bytes  # 8 bytes, as in bytes 2-9 of the set's records
    schema_json: str
    anchor_signatures: tuple[SignatureLine, ...]

    def to_avro(self) -> dict[str, Any]:
        return {
            "release": self.release,
            "fingerprint": self.fingerprint,
            "schema_json": self.schema_json,
            "anchor_signatures": [s.to_avro() for s in self.anchor_signatures],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            release=d["release"],
            fingerprint=d["fingerprint"],
            schema_json=d["schema_json"],
            anchor_signatures=_signatures(d["anchor_signatures"]),
        )


# -------------------------------------------------------------------- erasure


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureRequested:
    """A GDPR erasure was requested (topic erasure); ``namespace`` None: all."""

    request_id: str
    subject_hash: bytes
    scope: ErasureScope
    requested_by: str
    legal_basis: str
    namespace: str | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
            "scope": self.scope.name,
            "requested_by": self.requested_by,
            "legal_basis": self.legal_basis,
            "namespace": self.namespace,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            request_id=d["request_id"],
            subject_hash=d["subject_hash"],
            scope=_member(ErasureScope, d["scope"]),
            requested_by=d["requested_by"],
            legal_basis=d["legal_basis"],
            namespace=d.get("namespace"),
        )


class ErasureStage(enum.Enum):
    """Which part of an erasure an ErasureCompleted reports (its ``stage``)."""

    IMMEDIATE = "immediate"  # the request itself
    RETENTION_END = "retention_end"  # entries held by a retention obligation, when it ended
    HOLD_LIFTED = "hold_lifted"  # entries held by a legal hold, when it was lifted


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureStep:
    """One step of an erasure (revoke, destroy_keys, evict, kv_scrub) and when it ran."""

    name: str
    started_at_us: int
    finished_at_us: int
    count: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "started_at_us": self.started_at_us,
            "finished_at_us": self.finished_at_us,
            "count": self.count,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            name=d["name"],
            started_at_us=d["started_at_us"],
            finished_at_us=d["finished_at_us"],
            count=d["count"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class HeldEntry:
    """An entry an erasure did not erase yet, the legal ground, and until when
    (``held_until_us`` None: until a legal hold is lifted)."""

    key_hash: bytes
    namespace: str
    contract: str
    ground: str
    held_until_us: int | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "ground": self.ground,
            "held_until_us": self.held_until_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            ground=d["ground"],
            held_until_us=d.get("held_until_us"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ErasureCompleted:
    """An erasure stage was carried out (topic erasure); one per (request_id, stage).

    ``stage`` is an :class:`ErasureStage` value; a symbol this reader does not
    know is kept as text (the field is a string on the wire).
    """

    request_id: str
    subject_hash: bytes
    entries_revoked: int
    data_keys_destroyed: int
    l1_evictions: int
    kv_blocks_scrubbed: int
    proof_hash: bytes
    namespace: str | None = None
    stage: str = ErasureStage.IMMEDIATE.value
    destroyed_key_ids: tuple[str, ...] = ()
    steps: tuple[ErasureStep, ...] = ()
    failures: tuple[str, ...] = ()
    held: tuple[HeldEntry, ...] = ()

    def to_avro(self) -> dict[str, Any]:
        return {
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
            "entries_revoked": self.entries_revoked,
            "data_keys_destroyed": self.data_keys_destroyed,
            "l1_evictions": self.l1_evictions,
            "kv_blocks_scrubbed": self.kv_blocks_scrubbed,
            "proof_hash": self.proof_hash,
            "namespace": self.namespace,
            "stage": self.stage,
            "destroyed_key_ids": list(self.destroyed_key_ids),
            "steps": [step.to_avro() for step in self.steps],
            "failures": list(self.failures),
            "held": [entry.to_avro() for entry in self.held],
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        # The v3 fields have defaults: a v1/v2 event decodes with them.
        return cls(
            request_id=d["request_id"],
            subject_hash=d["subject_hash"],
            entries_revoked=d["entries_revoked"],
            data_keys_destroyed=d["data_keys_destroyed"],
            l1_evictions=d["l1_evictions"],
            kv_blocks_scrubbed=d["kv_blocks_scrubbed"],
            proof_hash=d["proof_hash"],
            namespace=d.get("namespace"),
            stage=d.get("stage", ErasureStage.IMMEDIATE.value),
            destroyed_key_ids=tuple(d.get("destroyed_key_ids", ())),
            steps=tuple(ErasureStep.from_avro(x) for x in d.get("steps", ())),
            failures=tuple(d.get("failures", ())),
            held=tuple(HeldEntry.from_avro(x) for x in d.get("held", ())),
        )


class LegalHoldAction(enum.Enum):
    """What happened to a legal hold (Avro ``LegalHoldAction``); UNKNOWN: do not act."""

    SET = "SET"
    LIFTED = "LIFTED"
    UNKNOWN = "UNKNOWN"


@dataclass(frozen=True, slots=True, kw_only=True)
class LegalHoldChanged:
    """A legal hold on a subject and/or a namespace was set or lifted (topic erasure)."""

    hold_id: str
    action: LegalHoldAction
    subject_hash: bytes | None = None
    namespace: str | None = None
    reason: str
    changed_by: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "hold_id": self.hold_id,
            "action": self.action.name,
            "subject_hash": self.subject_hash,
            "namespace": self.namespace,
            "reason": self.reason,
            "changed_by": self.changed_by,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            hold_id=d["hold_id"],
            action=_member(LegalHoldAction, d["action"]),
            subject_hash=d.get("subject_hash"),
            namespace=d.get("namespace"),
            reason=d["reason"],
            changed_by=d["changed_by"],
        )


# -------------------------------------------------------------------- archive


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveRange:
    """The offsets (inclusive) of one topic partition an archive segment holds."""

    topic: str
    partition: int
    first_offset: int
    last_offset: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "topic": self.topic,
            "partition": self.partition,
            "first_offset": self.first_offset,
            "last_offset": self.last_offset,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            topic=d["topic"],
            partition=d["partition"],
            first_offset=d["first_offset"],
            last_offset=d["last_offset"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class ArchiveSegmentSealed:
    """An archive segment was closed (topic archive): its hash, chained to the
    previous segment's, anchored in the signed ledger."""

    archive_id: str
    segment_seq: int
    file_name: str
    segment_hash: bytes
    prev_segment_hash: bytes
    record_count: int
    ranges: tuple[ArchiveRange, ...]
    first_timestamp_us: int
    last_timestamp_us: int
    closed_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "archive_id": self.archive_id,
            "segment_seq": self.segment_seq,
            "file_name": self.file_name,
            "segment_hash": self.segment_hash,
            "prev_segment_hash": self.prev_segment_hash,
            "record_count": self.record_count,
            "ranges": [r.to_avro() for r in self.ranges],
            "first_timestamp_us": self.first_timestamp_us,
            "last_timestamp_us": self.last_timestamp_us,
            "closed_at_us": self.closed_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            archive_id=d["archive_id"],
            segment_seq=d["segment_seq"],
            file_name=d["file_name"],
            segment_hash=d["segment_hash"],
            prev_segment_hash=d["prev_segment_hash"],
            record_count=d["record_count"],
            ranges=tuple(ArchiveRange.from_avro(r) for r in d["ranges"]),
            first_timestamp_us=d["first_timestamp_us"],
            last_timestamp_us=d["last_timestamp_us"],
            closed_at_us=d["closed_at_us"],
        )


# -------------------------------------------------------------------- kvscrub
# ``tenant`` is always the lowercase hex of the tenant's keyed hash, never
# the tenant id itself.


@dataclass(frozen=True, slots=True, kw_only=True)
class KvScrubRequested:
    """KV-cache blocks must be scrubbed; ``worker_id`` None: every worker."""

    worker_id: str | None = None
    trigger: ScrubTrigger
    tenant: str
    request_id: str | None = None
    subject_hash: bytes | None = None

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "trigger": self.trigger.name,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "subject_hash": self.subject_hash,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d.get("worker_id"),
            trigger=_member(ScrubTrigger, d["trigger"]),
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            subject_hash=d.get("subject_hash"),
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KvScrubCompleted:
    """A worker scrubbed KV-cache blocks; ``coverage`` 0..1 of their bytes verified zero."""

    worker_id: str
    tenant: str
    request_id: str | None = None
    trigger: ScrubTrigger
    blocks: int
    bytes: int
    coverage: float
    method: ScrubMethod
    passes: int
    duration_us: int
    device: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "trigger": self.trigger.name,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "coverage": self.coverage,
            "method": self.method.name,
            "passes": self.passes,
            "duration_us": self.duration_us,
            "device": self.device,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d["worker_id"],
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            trigger=_member(ScrubTrigger, d["trigger"]),
            blocks=d["blocks"],
            bytes=d["bytes"],
            coverage=d["coverage"],
            method=_member(ScrubMethod, d["method"]),
            passes=d["passes"],
            duration_us=d["duration_us"],
            device=d["device"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class KvBlockQuarantined:
    """KV-cache blocks that failed scrub verification were quarantined;
    ``reason`` is a ``processors.kvscrub`` QuarantineReason value."""

    worker_id: str
    tenant: str
    request_id: str | None = None
    blocks: int
    bytes: int
    reason: str
    coverage: float

    def to_avro(self) -> dict[str, Any]:
        return {
            "worker_id": self.worker_id,
            "tenant": self.tenant,
            "request_id": self.request_id,
            "blocks": self.blocks,
            "bytes": self.bytes,
            "reason": self.reason,
            "coverage": self.coverage,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            worker_id=d["worker_id"],
            tenant=d["tenant"],
            request_id=d.get("request_id"),
            blocks=d["blocks"],
            bytes=d["bytes"],
            reason=d["reason"],
            coverage=d["coverage"],
        )


# ---------------------------------------------------------------------- seals


@dataclass(frozen=True, slots=True, kw_only=True)
class Seal:
    """A signed Merkle root over a batch of one producer's events (topic seals)."""

    producer_id: str  # identity@epoch
    seal_seq: int
    prev_seal_hash: bytes
    merkle_root: bytes
    tree_size: int
    first_producer_seq: int
    leaf_hashes: tuple[bytes, ...]
    leaf_topics: tuple[str, ...] = ()
    key_set_id: str
    signatures: tuple[SignatureLine, ...]
    sealed_at_us: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "seal_seq": self.seal_seq,
            "prev_seal_hash": self.prev_seal_hash,
            "merkle_root": self.merkle_root,
            "tree_size": self.tree_size,
            "first_producer_seq": self.first_producer_seq,
            "leaf_hashes": list(self.leaf_hashes),
            "leaf_topics": list(self.leaf_topics),
            "key_set_id": self.key_set_id,
            "signatures": [s.to_avro() for s in self.signatures],
            "sealed_at_us": self.sealed_at_us,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            seal_seq=d["seal_seq"],
            prev_seal_hash=d["prev_seal_hash"],
            merkle_root=d["merkle_root"],
            tree_size=d["tree_size"],
            first_producer_seq=d["first_producer_seq"],
            leaf_hashes=tuple(d["leaf_hashes"]),
            leaf_topics=tuple(d.get("leaf_topics", ())),
            key_set_id=d["key_set_id"],
            signatures=_signatures(d["signatures"]),
            sealed_at_us=d["sealed_at_us"],
        )


# --------------------------------------------------------------------- alerts


@dataclass(frozen=True, slots=True, kw_only=True)
class ContractViolation:
    """A read broke its contract; ``reason`` is its MissReason value."""

    key_hash: bytes
    namespace: str
    contract: str
    reason: str
    detail: str
    node_id: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "key_hash": self.key_hash,
            "namespace": self.namespace,
            "contract": self.contract,
            "reason": self.reason,
            "detail": self.detail,
            "node_id": self.node_id,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            key_hash=d["key_hash"],
            namespace=d["namespace"],
            contract=d["contract"],
            reason=d["reason"],
            detail=d["detail"],
            node_id=d["node_id"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class IntegrityFailure:
    """A verification failed or a record was refused; ``status`` holds
    comma-separated IntegrityStatus values (or a dead-letter/intake reason)."""

    status: str
    producer_id: str | None = None
    seal_seq: int | None = None
    producer_seq: int | None = None
    topic: str
    partition: int
    offset: int
    detail: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "status": self.status,
            "producer_id": self.producer_id,
            "seal_seq": self.seal_seq,
            "producer_seq": self.producer_seq,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
            "detail": self.detail,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            status=d["status"],
            producer_id=d.get("producer_id"),
            seal_seq=d.get("seal_seq"),
            producer_seq=d.get("producer_seq"),
            topic=d["topic"],
            partition=d["partition"],
            offset=d["offset"],
            detail=d["detail"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class UnsealedTimeout:
    """An event stayed unsealed past the timeout."""

    producer_id: str
    producer_seq: int
    waited_ms: int
    topic: str
    partition: int
    offset: int

    def to_avro(self) -> dict[str, Any]:
        return {
            "producer_id": self.producer_id,
            "producer_seq": self.producer_seq,
            "waited_ms": self.waited_ms,
            "topic": self.topic,
            "partition": self.partition,
            "offset": self.offset,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            producer_id=d["producer_id"],
            producer_seq=d["producer_seq"],
            waited_ms=d["waited_ms"],
            topic=d["topic"],
            partition=d["partition"],
            offset=d["offset"],
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class LogDiscontinuity:
    """A gap, regression or broken chain in the log, or a log that vanished;
    offsets are -1 when not known."""

    kind: str
    topic: str
    partition: int
    expected_offset: int
    found_offset: int
    producer_id: str | None = None
    detail: str

    def to_avro(self) -> dict[str, Any]:
        return {
            "kind": self.kind,
            "topic": self.topic,
            "partition": self.partition,
            "expected_offset": self.expected_offset,
            "found_offset": self.found_offset,
            "producer_id": self.producer_id,
            "detail": self.detail,
        }

    @classmethod
    def from_avro(cls, d: Mapping[str, Any]) -> Self:
        return cls(
            kind=d["kind"],
            topic=d["topic"],
            partition=d["partition"],
            expected_offset=d["expected_offset"],
            found_offset=d["found_offset"],
            producer_id=d.get("producer_id"),
            detail=d["detail"],
        )


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
