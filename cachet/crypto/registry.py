"""The key registry verifying consumers consult: which key set was good when.

The root of trust is the anchor :class:`~cachet.crypto.seal.KeySet` named in
``cachet.toml``. Every change to the registry is a statement the anchor
signed (carried on the ``control`` topic as SigningKeyRegistered / Rotated /
Revoked); the registry refuses a statement whose anchor signatures do not
all verify. Statements are ``\\n``-terminated text lines, like seal headers,
each starting with its own format line so a signature over one kind can
never be replayed as another::

    cachet.key-registration/v1      cachet.key-revocation/v1
    producer <producer_id>          producer <producer_id>
    keyset <key_set_id>             keyset <key_set_id>
    key <scheme> <key_id> <b64 pk>  compromised-at <us>
    ...one per scheme, scheme order reason <reason>
    valid-from <us>

    cachet.key-rotation/v1          cachet.schema-set/v1
    producer <producer_id>          release <release>
    from <old key_set_id>           fingerprint <16 hex>
    to <new key_set_id>             schema-sha3-256 <64 hex>
    key <scheme> <key_id> <b64 pk>  (the new set's keys, scheme order)
    rotated-at <us>

The schema-set statement is not about keys: it is how the anchor vouches
for a schema set announced on ``control`` (SchemaSetPublished), signed and
checked with the same anchor (:func:`sign_statement`,
:meth:`KeyRegistry.check_anchor_statement`).

Time semantics (event time, microseconds): a key set is valid for seals
with ``valid_from <= sealed_at``; a rotation at E registers the new set
(valid from E) and RETIRES the old one for seals at or after E; after a revocation with compromise time
T every seal at or after T is REVOKED, while earlier seals stay valid.
``sealed_at`` is the signer's claim, so a thief could backdate it: the seal
chain (``prev``) and sequence checks are what pin a seal's place in time.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    PrivateKeySet,
    SchemeStatus,
    SealHeader,
    SealVerdict,
    SignatureLine,
    b64,
    check_id,
    check_signatures,
    check_uint,
    sign_message,
    verify_seal_batch,
)
from cachet.crypto.signing import key_id
from cachet.errors import CachetError

__all__ = [
    "KeyLookup",
    "KeyRegistry",
    "KeyStatus",
    "SealCheck",
    "RegistrationRejected",
    "RejectionReason",
    "RevocationReason",
    "registration_statement",
    "revocation_statement",
    "rotation_statement",
    "schema_set_statement",
    "sign_statement",
]


class RevocationReason(StrEnum):
    """Why a key set was revoked (recorded in the signed statement)."""

    KEY_COMPROMISE = "key-compromise"
    SUPERSEDED = "superseded"
    CESSATION = "cessation-of-operation"


class RejectionReason(StrEnum):
    """Why the registry refused a statement."""

    BAD_ANCHOR_SIGNATURE = "bad-anchor-signature"
    INCOMPLETE_KEY_SET = "incomplete-key-set"
    CONFLICTING_KEY_SET = "conflicting-key-set"
    UNKNOWN_PRODUCER = "unknown-producer"
    UNKNOWN_KEY_SET = "unknown-key-set"


class RegistrationRejected(CachetError):
    """A registry statement was refused; ``reason`` says why."""

    def __init__(self, reason: RejectionReason, message: str) -> None:
        super().__init__(f"{reason.value}: {message}")
        self.reason = reason


class KeyStatus(StrEnum):
    """The answer to "may this key set have made a seal at this time?"."""

    VALID = "valid"
    UNKNOWN_PRODUCER = "unknown-producer"
    UNKNOWN_KEY_SET = "unknown-key-set"
    REVOKED = "revoked"
    NOT_YET_VALID = "not-yet-valid"
    RETIRED = "retired"


@dataclass(frozen=True, slots=True)
class KeyLookup:
    """A lookup result; ``key_set`` is set only when ``status`` is VALID, so a
    caller cannot verify against a revoked key by accident."""

    status: KeyStatus
    key_set: KeySet | None = None


@dataclass(frozen=True, slots=True)
class SealCheck:
    """A seal checked end to end: the registry's answer and the signatures'."""

    lookup: KeyLookup
    verdict: SealVerdict | None  # None when the key lookup already failed

    @property
    def ok(self) -> bool:
        return (
            self.lookup.status is KeyStatus.VALID and self.verdict is not None and self.verdict.ok
        )


@dataclass(frozen=True, slots=True)
class _Entry:
    key_set: KeySet
    valid_from_us: int
    retired_at_us: int | None = None
    compromised_at_us: int | None = None
    revocation_reason: RevocationReason | None = None


def _lines(*lines: str) -> bytes:
    return "".join(line + "\n" for line in lines).encode("ascii")


def _key_lines(key_set: KeySet) -> list[str]:
    return [
        f"key {s.value} {key_id(s, key_set.public_keys[s])} " + b64(key_set.public_keys[s])
        for s in SignatureScheme
        if s in key_set.public_keys
    ]


def registration_statement(producer_id: str, key_set: KeySet, valid_from_us: int) -> bytes:
    """The bytes the anchor signs to register ``key_set`` for ``producer_id``."""
    return _lines(
        "cachet.key-registration/v1",
        f"producer {check_id('producer id', producer_id)}",
        f"keyset {key_set.key_set_id}",
        *_key_lines(key_set),
        f"valid-from {check_uint('valid_from_us', valid_from_us)}",
    )


def revocation_statement(
    producer_id: str, key_set_id: str, compromised_at_us: int, reason: RevocationReason | str
) -> bytes:
    """The bytes the anchor signs to revoke a key set from ``compromised_at_us`` on.

    ``reason`` may be its wire string; an unknown reason raises ValueError.
    """
    return _lines(
        "cachet.key-revocation/v1",
        f"producer {check_id('producer id', producer_id)}",
        f"keyset {check_id('key set id', key_set_id)}",
        f"compromised-at {check_uint('compromised_at_us', compromised_at_us)}",
        f"reason {RevocationReason(reason).value}",
    )


def rotation_statement(
    producer_id: str, old_key_set_id: str, new_key_set: KeySet, rotated_at_us: int
) -> bytes:
    """The bytes the anchor signs to replace one key set by a new one at ``rotated_at_us``."""
    return _lines(
        "cachet.key-rotation/v1",
        f"producer {check_id('producer id', producer_id)}",
        f"from {check_id('key set id', old_key_set_id)}",
        f"to {new_key_set.key_set_id}",
        *_key_lines(new_key_set),
        f"rotated-at {check_uint('rotated_at_us', rotated_at_us)}",
    )


def schema_set_statement(release: str, fingerprint: bytes, schema_json: str) -> bytes:
    """The bytes the anchor signs to announce the schema set ``schema_json``
    (its writer envelope, exact text) as ``release`` with ``fingerprint``.

    The schema is bound by the SHA3-256 of its UTF-8 bytes: CRC-64 (the
    fingerprint) is not collision resistant, so it cannot name a schema on
    its own. A fingerprint that is not 8 bytes raises ValueError.
    """
    if len(fingerprint) != 8:
        raise ValueError(f"a schema set fingerprint is 8 bytes, not {len(fingerprint)}")
    digest = hashlib.sha3_256(schema_json.encode("utf-8")).hexdigest()
    return _lines(
        "cachet.schema-set/v1",
        f"release {check_id('release', release)}",
        f"fingerprint {bytes(fingerprint).hex()}",
        f"schema-sha3-256 {digest}",
    )


def sign_statement(statement: bytes, anchor_private: PrivateKeySet) -> tuple[SignatureLine, ...]:
    """Sign a registry statement with every key of the trust anchor."""
    return sign_message(statement, anchor_private)


class KeyRegistry:
    """Registered key sets per producer, built only from anchor-signed statements.

    Replaying the same statement is harmless (idempotent), so the registry can
    be rebuilt from the ``control`` topic at every start.
    """

    def __init__(self, anchor: KeySet, required_schemes: Collection[SignatureScheme]) -> None:
        if not required_schemes:
            raise ValueError("the registry must require at least one signature scheme")
        missing = [s.value for s in required_schemes if s not in anchor.public_keys]
        if missing:
            raise ValueError(f"trust anchor {anchor.key_set_id} lacks keys for {missing}")
        self._anchor = anchor
        self._required = frozenset(required_schemes)
        self._entries: dict[str, dict[str, _Entry]] = {}

    @property
    def required_schemes(self) -> frozenset[SignatureScheme]:
        return self._required

    def check_anchor_statement(self, statement: bytes, signatures: Sequence[SignatureLine]) -> None:
        """Raises :class:`RegistrationRejected` (BAD_ANCHOR_SIGNATURE) unless
        every required scheme of the trust anchor signed ``statement``: for
        anchor statements that are not registry changes (a schema set)."""
        self._check_anchor(statement, signatures)

    def _check_anchor(self, statement: bytes, signatures: Sequence[SignatureLine]) -> None:
        statuses = check_signatures(statement, signatures, self._anchor, self._required)
        bad = {s.value: st.value for s, st in statuses.items() if st is not SchemeStatus.VALID}
        if bad:
            raise RegistrationRejected(
                RejectionReason.BAD_ANCHOR_SIGNATURE,
                f"statement not signed by trust anchor {self._anchor.key_set_id}: {bad}",
            )

    def _entry(self, producer_id: str, key_set_id: str) -> _Entry:
        sets = self._entries.get(producer_id)
        if sets is None:
            raise RegistrationRejected(
                RejectionReason.UNKNOWN_PRODUCER, f"producer {producer_id} has no key sets"
            )
        entry = sets.get(key_set_id)
        if entry is None:
            raise RegistrationRejected(
                RejectionReason.UNKNOWN_KEY_SET,
                f"producer {producer_id} has no key set {key_set_id}",
            )
        return entry

    def _require_complete(self, key_set: KeySet) -> None:
        lacking = sorted(s.value for s in self._required if s not in key_set.public_keys)
        if lacking:
            raise RegistrationRejected(
                RejectionReason.INCOMPLETE_KEY_SET,
                f"key set {key_set.key_set_id} lacks required schemes {lacking}",
            )

    def _add(self, producer_id: str, key_set: KeySet, valid_from_us: int) -> None:
        sets = self._entries.setdefault(producer_id, {})
        existing = sets.get(key_set.key_set_id)
        if existing is None:
            sets[key_set.key_set_id] = _Entry(key_set, valid_from_us)
            return
        if existing.key_set != key_set:
            raise RegistrationRejected(
                RejectionReason.CONFLICTING_KEY_SET,
                f"producer {producer_id} already registered different keys "
                f"under key set id {key_set.key_set_id}",
            )
        # A replayed statement, or a registration and a rotation naming the
        # same keys: the key set is valid from the earliest signed time.
        if valid_from_us < existing.valid_from_us:
            sets[key_set.key_set_id] = replace(existing, valid_from_us=valid_from_us)

    def register(
        self,
        producer_id: str,
        key_set: KeySet,
        valid_from_us: int,
        anchor_signatures: Sequence[SignatureLine],
    ) -> None:
        """Add a key set; refuses unless the anchor signed exactly this registration."""
        statement = registration_statement(producer_id, key_set, valid_from_us)
        self._check_anchor(statement, anchor_signatures)
        self._require_complete(key_set)
        self._add(producer_id, key_set, valid_from_us)

    def revoke(
        self,
        producer_id: str,
        key_set_id: str,
        compromised_at_us: int,
        reason: RevocationReason | str,
        anchor_signatures: Sequence[SignatureLine],
    ) -> None:
        """Revoke a key set for every seal made at or after ``compromised_at_us``."""
        statement = revocation_statement(producer_id, key_set_id, compromised_at_us, reason)
        self._check_anchor(statement, anchor_signatures)
        entry = self._entry(producer_id, key_set_id)
        # Of several revocations the earliest compromise time wins: a later
        # statement can widen a revocation, never narrow it.
        if entry.compromised_at_us is None or compromised_at_us < entry.compromised_at_us:
            self._entries[producer_id][key_set_id] = replace(
                entry,
                compromised_at_us=compromised_at_us,
                revocation_reason=RevocationReason(reason),
            )

    def rotate(
        self,
        producer_id: str,
        old_key_set_id: str,
        new_key_set: KeySet,
        rotated_at_us: int,
        anchor_signatures: Sequence[SignatureLine],
    ) -> None:
        """Register ``new_key_set`` (valid from ``rotated_at_us``) and retire the
        old set for seals made at or after ``rotated_at_us``."""
        statement = rotation_statement(producer_id, old_key_set_id, new_key_set, rotated_at_us)
        self._check_anchor(statement, anchor_signatures)
        self._require_complete(new_key_set)
        old = self._entry(producer_id, old_key_set_id)
        if new_key_set.key_set_id == old_key_set_id:
            raise RegistrationRejected(
                RejectionReason.CONFLICTING_KEY_SET, "a rotation must name a new key set id"
            )
        self._add(producer_id, new_key_set, rotated_at_us)
        # Of several rotations the earliest time wins (replays are harmless).
        if old.retired_at_us is None or rotated_at_us < old.retired_at_us:
            self._entries[producer_id][old_key_set_id] = replace(old, retired_at_us=rotated_at_us)

    def lookup(self, producer_id: str, key_set_id: str, sealed_at_us: int) -> KeyLookup:
        """May ``key_set_id`` of ``producer_id`` have made a seal at ``sealed_at_us``?"""
        sets = self._entries.get(producer_id)
        if sets is None:
            return KeyLookup(KeyStatus.UNKNOWN_PRODUCER)
        entry = sets.get(key_set_id)
        if entry is None:
            return KeyLookup(KeyStatus.UNKNOWN_KEY_SET)
        if entry.compromised_at_us is not None and sealed_at_us >= entry.compromised_at_us:
            return KeyLookup(KeyStatus.REVOKED)
        if sealed_at_us < entry.valid_from_us:
            return KeyLookup(KeyStatus.NOT_YET_VALID)
        if entry.retired_at_us is not None and sealed_at_us >= entry.retired_at_us:
            return KeyLookup(KeyStatus.RETIRED)
        return KeyLookup(KeyStatus.VALID, entry.key_set)

    def verify_seal(
        self,
        header: SealHeader,
        signatures: Sequence[SignatureLine],
        leaf_hashes: Sequence[bytes],
        leaf_topics: Sequence[str] | None = None,
    ) -> SealCheck:
        """Everything a verifying consumer checks for one seal, in one call:
        the key set was valid for this producer at ``sealed_at``, every
        required signature verifies under it, and the leaves match the root
        and size. (Chain link and sequence checks need the previous seal and
        belong to the consumer.)"""
        lookup = self.lookup(header.producer_id, header.key_set_id, header.sealed_at_us)
        if lookup.key_set is None:
            return SealCheck(lookup, None)
        verdict = verify_seal_batch(
            header,
            signatures,
            leaf_hashes,
            lookup.key_set,
            self._required,
            leaf_topics=leaf_topics,
        )
        return SealCheck(lookup, verdict)
