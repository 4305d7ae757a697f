"""The cache API services call: put, get, get_or_compute, revoke,
confirm_freshness, and their bulk forms.

Every read is evaluated against its contract and answered with proof: the
value (for the Owner role), a VerificationStatus, a FreshnessProof, a
SignatureSummary and the fingerprint. Any failed check is a miss with the
exact reason (a :class:`~cachet.verdict.MissReason` callers can match on),
and contract violations are ContractViolation events. Every read is a
CacheRead event.

Writes are durable when they return: ``put``, ``put_many``, ``revoke`` and
``confirm_freshness`` return only after the broker acknowledged their events
(acks=all). ``put_async`` is the one exception, and says so: it returns a
:class:`PendingPut` that is durable once ``acknowledged()`` returns. Bad
arguments raise :class:`InvalidArgument` naming the argument, before
anything is emitted (a rejected call costs no sequence number).
"""

from __future__ import annotations

import dataclasses
import hmac
import random
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.config import ContractConfig
from cachet.config.enums import Classification, InvalidationMode, Role, VerificationMode
from cachet.crypto.aead import (
    AeadError,
    associated_data,
    open_value,
    seal_value,
)
from cachet.crypto.identifiers import same_identifier
from cachet.crypto.vault import VaultError
from cachet.errors import CachetError
from cachet.freshness import FreshnessProof
from cachet.materializers.view import EntryState, ViewEntry
from cachet.producers.cache_node import CacheNode, L1Entry
from cachet.producers.data_keys import DataKeyStatus, commitment_key, data_key_name
from cachet.producers.fingerprint import Computation, fingerprint, key_fingerprint
from cachet.producers.sealing import Delivery, EmitRejected, NotAcknowledged, RecordTooLarge
from cachet.schemas.events import EventType
from cachet.schemas.payloads import (
    FRESHNESS_CONFIRMED,
    CacheWritten,
    EncryptedValue,
    Invalidated,
    StateTransitioned,
    TransitionAuthority,
)
from cachet.verdict import (
    SERVED,
    ContractCheck,
    EntryFacts,
    MissReason,
    ReadVerdict,
    SignatureSummary,
    VerificationStatus,
    compile_contract,
    judge_read,
    served_detail,
)

__all__ = [
    "CacheClient",
    "CacheError",
    "CacheResponse",
    "InvalidArgument",
    "PendingPut",
    "PutReceipt",
    "UnknownContract",
    "ValueTooLarge",
    "WriteNotAcknowledged",
    "ForeignScope",
    "WriteRejected",
]

AAD_VERSION = 1
# Reads that missed because the entry broke its contract (not merely absent).
_VIOLATIONS = frozenset(
    {
        MissReason.STALE,
        MissReason.FINGERPRINT_MISMATCH,
        MissReason.SIGNATURE_UNVERIFIED,
        MissReason.FRESHNESS_UNCONFIRMED,
        MissReason.VIEW_STALE,
        MissReason.LOG_DISCONTINUITY,
        MissReason.DECRYPT_FAILED,
    }
)


# Room a CacheWritten record needs beside the value, the cache key, the
# namespace and the contract name: envelope (magic, fingerprint, event id,
# producer id, sequences, seal ref), hashes, nonce, GCM tag, key framing,
# classification, record key. Generous: the producer checks the exact size.
_RECORD_RESERVE = 2048
# Classifications whose entries are about a person: they must carry a subject.
_NEEDS_SUBJECT = frozenset({Classification.PHI, Classification.PII})
_MAX_LONG = 2**63 - 1


class CacheError(CachetError):
    """A cache call that cannot be made (unknown contract, wrong role)."""


class InvalidArgument(CacheError, ValueError):
    """An argument of a cache call is wrong; ``argument`` names it. Nothing
    was emitted. (Also a ValueError: it is the caller's input that is bad.)"""

    def __init__(self, argument: str, problem: str) -> None:
        super().__init__(f"{argument}: {problem}")
        self.argument = argument


class UnknownContract(InvalidArgument):
    """The call names a contract this node does not know."""


class ValueTooLarge(InvalidArgument):
    """The value does not fit in one record of the producer's max message size."""

    def __init__(self, size: int, limit: int, max_message_bytes: int) -> None:
        super().__init__(
            "value",
            f"{size} bytes, over the limit of {limit} bytes for this key, namespace and "
            f"contract (the producer's max message size is {max_message_bytes} bytes)",
        )
        self.size = size
        self.limit = limit


class ForeignScope(CacheError):
    """The key's current version belongs to another tenant or data subject.

    One key hash names one entry per namespace; the scope is a mandatory
    filter on every lookup (DESIGN, "Privacy and access"), so a client may
    neither read nor overwrite, revoke or confirm another scope's entry.
    """


class WriteRejected(CacheError):
    """The producer refused the write before it reached the broker; nothing
    was written and no sequence number was taken."""


class WriteNotAcknowledged(CacheError):
    """The write was produced but the broker did not acknowledge it: it is
    not durable (a timeout: it may still be written; a delivery failure:
    it is not in the ledger). Retrying writes a new version."""


@dataclass(frozen=True, slots=True)
class PutReceipt:
    """What a put wrote. ``partition`` and ``offset`` are where the broker
    stored the CacheWritten event; they are set once it acknowledged it."""

    key_hash: bytes
    fingerprint: bytes
    version: int
    event_id: str
    partition: int | None = None
    offset: int | None = None

    @property
    def acknowledged(self) -> bool:
        return self.offset is not None


@dataclass(frozen=True, slots=True)
class PendingPut:
    """A put emitted but not yet acknowledged by the broker (from
    :meth:`CacheClient.put_async`): a crash of this process before
    :meth:`acknowledged` returns can lose it."""

    receipt: PutReceipt
    deliveries: tuple[Delivery, ...]

    def acknowledged(self, timeout_s: float = 10.0) -> PutReceipt:
        """Wait for the broker's acknowledgement (acks=all) of every event of
        the put; returns the receipt with where the write is stored. Raises
        :class:`WriteNotAcknowledged`."""
        deadline = time.monotonic() + timeout_s
        acks = []
        try:
            for d in self.deliveries:
                acks.append(d.wait(max(0.0, deadline - time.monotonic())))
        except NotAcknowledged as exc:
            raise WriteNotAcknowledged(
                f"version {self.receipt.version} (event {self.receipt.event_id}) "
                f"is not durable: {exc}"
            ) from exc
        return dataclasses.replace(self.receipt, partition=acks[0].partition, offset=acks[0].offset)


@dataclass(frozen=True, slots=True)
class CacheResponse:
    """The answer to a read. ``value`` is None unless the reader is an Owner
    and the read hit; Regulators and Auditors get the proofs and metadata."""

    hit: bool
    value: bytes | None
    reason: MissReason | None
    status: VerificationStatus
    freshness: FreshnessProof | None
    signatures: SignatureSummary | None
    fingerprint: bytes | None
    version: int | None
    commitment: bytes | None = None
    detail: str = ""
    computed: bool = False


@dataclass(frozen=True, slots=True)
class _ReadPlan:
    """How a client reads under one contract, worked out on its first read:
    the contract, its compiled checks and the ``[verification]`` mode of its
    classification (None: unclassified, never re-checked)."""

    config: ContractConfig
    check: ContractCheck
    mode: VerificationMode | None
    probabilistic_rate: float


@dataclass(frozen=True, slots=True)
class _Opened:
    """A decrypted value, or why there is none."""

    plaintext: bytes | None
    reason: MissReason = MissReason.DECRYPT_FAILED
    detail: str = ""


def _frame(key: str, value: bytes) -> bytes:
    # The plaintext cache key travels only inside the ciphertext.
    raw = key.encode()
    return struct.pack(">I", len(raw)) + raw + value


def _unframe(frame: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from(">I", frame)
    return frame[4 : 4 + n].decode(), frame[4 + n :]


def _check_text(argument: str, value: object) -> str:
    if not isinstance(value, str):
        raise InvalidArgument(argument, f"must be a str, got {type(value).__name__}")
    if not value:
        raise InvalidArgument(argument, "must not be empty")
    try:
        value.encode()
    except UnicodeEncodeError as exc:
        raise InvalidArgument(argument, f"is not valid Unicode text: {exc}") from None
    return value


def _check_timeout(timeout_s: object) -> float:
    if isinstance(timeout_s, bool) or not isinstance(timeout_s, int | float) or timeout_s <= 0:
        raise InvalidArgument("timeout_s", f"must be a number of seconds > 0, got {timeout_s!r}")
    return float(timeout_s)


class CacheClient:
    """The cache as one role (and one tenant or subject scope) sees it.

    ``clock`` says when a read happens: freshness is judged against it.
    ``scope`` is the data subject (or tenant) the client's entries belong
    to: each (subject, namespace, contract) has its own data key, so an
    erasure of the subject can destroy it. Entries of a contract classified
    PHI or PII must have one. ``sample`` draws in [0, 1) for probabilistic
    verification (default: the system's CSPRNG).
    """

    def __init__(
        self,
        node: CacheNode,
        role: Role = Role.OWNER,
        scope: str | None = None,
        clock: Clock = SYSTEM_CLOCK,
        sample: Callable[[], float] | None = None,
    ) -> None:
        self._node = node
        self.role = role
        self.scope = scope
        self._scope_hash = node.hasher.subject(scope) if scope else None
        self._clock = clock
        # Derived once, not per read.
        self._now_us = clock.now_us
        self._scope = self._scope_hash.hex() if self._scope_hash else None
        self._role_value = role.value
        self._owner = role is Role.OWNER
        # Only events covered by a seal verified with every required scheme
        # ever reach the view, so every entry carries these schemes.
        self._sealed_schemes = tuple(s.value for s in node.config.attestation.schemes)
        # Draws in [0, 1) for probabilistic verification (unpredictable by
        # default: a reader must not know which reads are checked).
        self._sample = sample or random.SystemRandom().random
        # Read plans by contract name, made on a contract's first read.
        self._plans: dict[str, _ReadPlan] = {}
        # cachet_reads kinds by miss reason (None: served), made on first use.
        self._read_kinds: dict[MissReason | None, tuple[str, str]] = {}

    # -- helpers ------------------------------------------------------------

    def _contract(self, name: object) -> ContractConfig:
        if not isinstance(name, str):
            raise InvalidArgument("contract", f"must be a str, got {type(name).__name__}")
        try:
            return self._node.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self._node.contracts)) or "none configured"
            raise UnknownContract(
                "contract", f"unknown contract {name!r} (known: {known})"
            ) from None

    def _require_owner(self, action: str) -> None:
        if self.role is not Role.OWNER:
            raise CacheError(f"{self.role.value} may not {action}: only the owner role writes")

    def _fingerprint(
        self, key: str, contract: ContractConfig, computation: Computation | None
    ) -> bytes:
        if computation is None:  # a plain key: the fast form of the same encoding
            return key_fingerprint(
                key, contract.computation_type, contract.fingerprint_fields or None
            )
        return fingerprint(computation, contract.fingerprint_fields or None)

    def _acknowledged(self, what: str, deliveries: Iterable[Delivery], timeout_s: float) -> None:
        try:
            for d in deliveries:
                d.wait(timeout_s)
        except NotAcknowledged as exc:
            raise WriteNotAcknowledged(f"{what} is not durable: {exc}") from exc

    # -- writes ---------------------------------------------------------------

    def put(
        self,
        key: str,
        value: bytes,
        *,
        contract: str,
        namespace: str = "default",
        computation: Computation | None = None,
        ttl_ms: int | None = None,
        wait: bool = False,
        timeout_s: float = 10.0,
    ) -> PutReceipt:
        """Write a new version; the previous Active version becomes Superseded.

        Returns only once the broker acknowledged the write (acks=all): a
        returned receipt is durable and names the partition and offset.
        ``wait`` also waits until this node's view serves the new version.
        ``ttl_ms`` None: the default TTL of the contract's classification
        (``[ttl]``); none for an unclassified contract. A contract classified
        PHI or PII refuses a client without a subject scope.
        Bad arguments raise :class:`InvalidArgument` (naming the argument)
        before anything is emitted; a refused write raises
        :class:`WriteRejected`, an unacknowledged one
        :class:`WriteNotAcknowledged`.
        """
        deadline = time.monotonic() + _check_timeout(timeout_s)
        pending = self.put_async(
            key,
            value,
            contract=contract,
            namespace=namespace,
            computation=computation,
            ttl_ms=ttl_ms,
        )
        receipt = pending.acknowledged(timeout_s)
        if wait:
            self._wait_visible(receipt, max(0.0, deadline - time.monotonic()), timeout_s)
        return receipt

    def put_async(
        self,
        key: str,
        value: bytes,
        *,
        contract: str,
        namespace: str = "default",
        computation: Computation | None = None,
        ttl_ms: int | None = None,
    ) -> PendingPut:
        """Emit a write and return before the broker acknowledged it: NOT
        durable until :meth:`PendingPut.acknowledged` returns (a crash in
        between loses it). For callers that pipeline many writes; arguments
        are validated exactly as in :meth:`put`."""
        self._require_owner("write")
        c = self._check_put(key, value, contract, namespace, computation, ttl_ms)
        return self._emit_put(key, bytes(value), c, namespace, computation, ttl_ms)

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        contract: str,
        namespace: str = "default",
        ttl_ms: int | None = None,
        wait: bool = False,
        timeout_s: float = 10.0,
    ) -> list[PutReceipt]:
        """Write several keys; every item is validated before any is emitted,
        and the call returns once the broker acknowledged every write (one
        wait for all: the acknowledgements overlap). ``wait``: and this
        node's view serves them all."""
        self._require_owner("write")
        deadline = time.monotonic() + _check_timeout(timeout_s)
        c = self._contract(contract)
        batch = list(items)
        seen: set[str] = set()
        for i, item in enumerate(batch):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise InvalidArgument(f"items[{i}]", "must be a (key, value) pair")
            self._check_put(item[0], item[1], contract, namespace, None, ttl_ms, f"items[{i}].")
            if item[0] in seen:
                # Both would be written as the same version of one key.
                raise InvalidArgument(f"items[{i}].key", f"{item[0]!r} appears twice")
            seen.add(item[0])
        pending = [self._emit_put(k, bytes(v), c, namespace, None, ttl_ms) for k, v in batch]
        receipts = [p.acknowledged(max(0.0, deadline - time.monotonic())) for p in pending]
        for r in receipts if wait else ():
            self._wait_visible(r, max(0.0, deadline - time.monotonic()), timeout_s)
        return receipts

    def _check_put(
        self,
        key: object,
        value: object,
        contract: object,
        namespace: object,
        computation: object,
        ttl_ms: object,
        where: str = "",
    ) -> ContractConfig:
        """Every argument of a write, checked before anything is emitted (a
        bad argument found later would cost a sequence number or a ledger
        entry for nothing)."""
        key = _check_text(where + "key", key)
        namespace = _check_text("namespace", namespace)
        if not isinstance(value, bytes | bytearray):
            raise InvalidArgument(where + "value", f"must be bytes, got {type(value).__name__}")
        if ttl_ms is not None and (type(ttl_ms) is not int or not 0 <= ttl_ms <= _MAX_LONG):
            raise InvalidArgument(
                "ttl_ms",
                f"must be None or an int of milliseconds >= 0, got {type(ttl_ms).__name__} "
                f"{repr(ttl_ms)[:80]}",
            )
        if computation is not None and not isinstance(computation, Computation):
            raise InvalidArgument(
                "computation", f"must be a Computation, got {type(computation).__name__}"
            )
        c = self._contract(contract)
        if c.classification in _NEEDS_SUBJECT and self._scope_hash is None:
            # Erasure finds and destroys a person's data by subject: data
            # about a person written without one could never be erased.
            assert c.classification is not None
            raise InvalidArgument(
                "scope",
                f"contract {c.name!r} is classified {c.classification.value}: its entries must "
                "carry a data subject so they can be erased; write through a client scoped to "
                "the subject (CacheClient(node, scope=subject_id), or cachet.open(scope=...))",
            )
        max_message = self._node.producer.max_message_bytes
        overhead = (
            _RECORD_RESERVE
            + len(key.encode())
            + len(namespace.encode())
            + len(c.name.encode())
            # The data key id: its name and "#<generation>".
            + len(data_key_name(namespace, c.name, self._scope_hash))
            + 24
        )
        limit = max_message - overhead
        if len(value) > limit:
            raise ValueTooLarge(len(value), max(0, limit), max_message)
        return c

    def _emit_put(
        self,
        key: str,
        value: bytes,
        c: ContractConfig,
        namespace: str,
        computation: Computation | None,
        ttl_ms: int | None,
    ) -> PendingPut:
        node = self._node
        if ttl_ms is None and c.classification is not None:
            # The classification's default TTL ([ttl]) when the write sets none.
            ttl_ms = node.config.ttl.for_class(c.classification)
        key_hash = node.key_hash(namespace, key)
        fp = self._fingerprint(key, c, computation)
        current = node.view.current(key_hash)
        if current is not None and not same_identifier(current.subject_hash, self._scope_hash):
            # Overwriting would hand another tenant's key to this one.
            raise ForeignScope(
                f"key in namespace {namespace!r} holds an entry of another tenant or subject"
            )
        version = current.version + 1 if current else 1
        try:
            data_key = node.data_keys.for_write(data_key_name(namespace, c.name, self._scope_hash))
        except VaultError as exc:
            raise WriteRejected(f"write of version {version} not made: {exc}") from exc
        nonce, ciphertext = seal_value(
            data_key, _frame(key, value), associated_data(key_hash, fp, version)
        )
        payload = CacheWritten(
            key_hash=key_hash,
            namespace=namespace,
            contract=c.name,
            fingerprint=fp,
            version=version,
            value=EncryptedValue(
                ciphertext=ciphertext,
                nonce=nonce,
                data_key_id=data_key.key_id,
                # Keyed by the data key: destroying it makes this unlinkable.
                commitment=node.data_keys.committer(data_key).commit(value),
                aad_version=AAD_VERSION,
            ),
            subject_hash=self._scope_hash,
            classification=c.classification.value if c.classification else "unclassified",
            ttl_ms=ttl_ms,
            prev_event_hash=current.event_hash if current else None,
        )
        try:
            written = node.producer.emit_with_receipt(
                EventType.CACHE_WRITTEN, payload.to_avro(), key=key_hash
            )
        except RecordTooLarge as exc:
            # Our reserve was too small for this record: the producer's exact
            # check refused it, and nothing was taken.
            value_limit = max(0, exc.limit - (exc.size - len(value)))
            raise ValueTooLarge(len(value), value_limit, exc.limit) from exc
        except EmitRejected as exc:
            raise WriteRejected(f"write of version {version} not made: {exc}") from exc
        deliveries = [written]
        if current is not None and current.state is EntryState.ACTIVE:
            try:
                deliveries.append(
                    self._transition(
                        current, EntryState.SUPERSEDED, f"superseded by version {version}"
                    )
                )
            except EmitRejected as exc:
                raise WriteRejected(
                    f"version {version} emitted (event {written.event.event_id}) but the "
                    f"supersede of version {current.version} was refused: {exc}"
                ) from exc
        return PendingPut(
            PutReceipt(key_hash, fp, version, written.event.event_id), tuple(deliveries)
        )

    def _transition(self, entry: ViewEntry, to: EntryState, reason: str) -> Delivery:
        node = self._node
        payload = StateTransitioned(
            key_hash=entry.key_hash,
            namespace=entry.namespace,
            version=entry.version,
            from_state=entry.state,
            to_state=to,
            authority=TransitionAuthority.by_key(node.keys.signing.key_set_id, self.role),
            reason=reason,
            prev_event_hash=entry.event_hash,
        )
        return node.producer.emit_with_receipt(
            EventType.STATE_TRANSITIONED, payload.to_avro(), key=entry.key_hash
        )

    def revoke(
        self,
        key: str,
        *,
        namespace: str = "default",
        reason: str = "revoked",
        timeout_s: float = 10.0,
    ) -> bool:
        """Revoke the current version everywhere: a StateTransitioned for the
        record and an eager Invalidated on the broadcast topic for every L1.
        Returns True once the broker acknowledged both (this node stops
        serving the version at once)."""
        self._require_owner("revoke")
        _check_text("key", key)
        _check_text("namespace", namespace)
        _check_text("reason", reason)
        _check_timeout(timeout_s)
        node = self._node
        key_hash = node.hasher.key(namespace, key)
        current = node.view.current(key_hash)
        if (
            current is None
            or current.state is not EntryState.ACTIVE
            # Another scope's entry is, for this client, not there.
            or not same_identifier(current.subject_hash, self._scope_hash)
        ):
            return False
        try:
            invalidation = Invalidated(
                key_hash=key_hash,
                namespace=namespace,
                mode=InvalidationMode.EAGER,
                version=current.version,
                authority=TransitionAuthority.by_key(node.keys.signing.key_set_id, self.role),
                reason=reason,
            )
            # Leaves at once (no linger): other nodes' listeners hide the key on arrival.
            invalidated = node.emit_invalidation(invalidation)
            transitioned = self._transition(current, EntryState.REVOKED, reason)
        except EmitRejected as exc:
            raise WriteRejected(f"revocation of version {current.version}: {exc}") from exc
        # This node revoked it: it need not wait for its own seal to stop serving.
        node.view.note_invalidated(key_hash, current.version)
        node._evict(key_hash)
        self._acknowledged(
            f"revocation of version {current.version}", (invalidated, transitioned), timeout_s
        )
        return True

    def commitment_opening(self, key: str, *, namespace: str = "default") -> bytes:
        """The key that opens the current version's value commitment, for the
        Owner to hand an Auditor with the value: ``verify_commitment(
        response.commitment, opening, value)`` then proves the value is what
        the sealed CacheWritten committed to, without the Auditor ever
        holding the data key. Derived from the data key
        (:func:`~cachet.producers.data_keys.commitment_key`), so once an
        erasure destroyed the key there is no opening any more: raises
        :class:`CacheError` then, or when the key has no version."""
        self._require_owner("open a value commitment")
        _check_text("key", key)
        _check_text("namespace", namespace)
        entry = self._node.view.current(self._node.hasher.key(namespace, key))
        # Scope is a mandatory filter here as on a read: another subject's
        # entry is "not there" for this client.
        scope = entry.subject_hash.hex() if entry is not None and entry.subject_hash else None
        if entry is None or scope != self._scope:
            raise CacheError(f"no version of this key in namespace {namespace!r} for this scope")
        found = self._node.data_keys.for_read(entry.data_key_id)
        if found.key is None:
            raise CacheError(f"no opening for version {entry.version}: {found.detail}")
        return commitment_key(found.key)

    def confirm_freshness(
        self, key: str, *, namespace: str = "default", timeout_s: float = 10.0
    ) -> bool:
        """The source confirms the current value is still right (contractual
        mode). Returns True once the broker acknowledged the confirmation."""
        self._require_owner("confirm freshness")
        _check_text("key", key)
        _check_text("namespace", namespace)
        _check_timeout(timeout_s)
        current = self._node.view.current(self._node.hasher.key(namespace, key))
        if (
            current is None
            or current.state is not EntryState.ACTIVE
            or not same_identifier(current.subject_hash, self._scope_hash)
        ):
            return False
        try:
            confirmed = self._transition(current, EntryState.ACTIVE, FRESHNESS_CONFIRMED)
        except EmitRejected as exc:
            raise WriteRejected(f"confirmation of version {current.version}: {exc}") from exc
        self._acknowledged(f"confirmation of version {current.version}", (confirmed,), timeout_s)
        return True

    def _wait_visible(self, receipt: PutReceipt, left_s: float, timeout_s: float) -> None:
        deadline = time.monotonic() + left_s
        while True:
            e = self._node.view.current(receipt.key_hash)
            if e is not None and e.version >= receipt.version:
                return
            if time.monotonic() >= deadline:
                break
            time.sleep(0.005)
        raise CacheError(
            f"version {receipt.version} (acknowledged, durable) not visible in this node's "
            f"view within {timeout_s}s (are seals verifying? see the node's /health)"
        )

    # -- reads ----------------------------------------------------------------

    def get(
        self,
        key: str,
        *,
        contract: str,
        namespace: str = "default",
        computation: Computation | None = None,
    ) -> CacheResponse:
        """Read and evaluate the contract; every read is audited.

        Per read: the key's hash (cached), the L1 or the view, the contract
        evaluation against the view's health and the reader's clock, the
        decryption (L1 misses only), the audit. The steps are the methods
        below, so ``cachet bench reads`` can time each one. A hit from the
        L1 allocates its response, its freshness proof and its audit record,
        and nothing else."""
        try:
            plan = self._plans[contract]
        except (KeyError, TypeError):  # first read of this contract, or not a name at all
            plan = self._plan(contract)
        key_hash = self._key_hash(namespace, key)
        now = self._now_us()
        cached, generation, entry, facts = self._lookup(key_hash)
        judged = self._evaluate(plan, key, key_hash, entry, facts, computation, now)
        if isinstance(judged, FreshnessProof) and entry is not None and facts is not None:
            failed: _Opened | None = None
            if cached is not None:
                plaintext: bytes | None = cached.plaintext
                if self._verifies(plan):
                    failed = self._recheck(cached)
            else:
                verify = self._verifies(plan)
                opened = self._decrypt(key, entry, verify)
                plaintext = opened.plaintext
                if plaintext is None:
                    failed = opened
                elif generation is not None:  # read from the view: cache it
                    self._node.l1_put(
                        entry, plaintext, facts, generation, commitment_verified=verify
                    )
            if failed is None:
                response = _served(
                    plaintext if self._owner else None,
                    judged,
                    facts.verified_summary,
                    entry,
                )
            else:
                response = _missed(_late_miss(judged, facts, failed.reason, failed.detail))
        else:
            assert isinstance(judged, ReadVerdict)
            response = _missed(judged)
        self._audit(key_hash, namespace, contract, response)
        return response

    def _plan(self, name: object) -> _ReadPlan:
        """The read plan of contract ``name``, made on its first read (raises
        :class:`InvalidArgument` / :class:`UnknownContract` as writes do)."""
        c = self._contract(name)
        verification = self._node.config.verification
        plan = _ReadPlan(
            config=c,
            check=compile_contract(c),
            mode=verification.mode_for(c.classification) if c.classification else None,
            probabilistic_rate=verification.probabilistic_rate,
        )
        self._plans[c.name] = plan
        return plan

    def _key_hash(self, namespace: str, key: str) -> bytes:
        return self._node.key_hash(namespace, key)

    def _lookup(
        self, key_hash: bytes
    ) -> tuple[L1Entry | None, int | None, ViewEntry | None, EntryFacts | None]:
        """(L1 entry, L1 generation, view entry, its facts): from the L1 when
        it holds the key, else from the view (the generation taken first)."""
        cached, generation = self._node.l1.lookup(key_hash)
        if cached is not None:
            return cached, None, cached.entry, cached.facts
        entry = self._node.view.current(key_hash)
        return None, generation, entry, self._facts(entry)

    def _evaluate(
        self,
        plan: _ReadPlan,
        key: str,
        key_hash: bytes,
        entry: ViewEntry | None,
        facts: EntryFacts | None,
        computation: Computation | None,
        now_us: int,
    ) -> FreshnessProof | ReadVerdict:
        """The contract's verdict on ``entry`` (its freshness proof when it
        may be served), then what only the view knows: a newer event waiting
        for its seal, an eager invalidation."""
        view = self._node.view
        judged = judge_read(
            plan.check,
            facts,
            self._fingerprint(key, plan.config, computation) if computation else None,
            self._scope,
            view.standing(),
            now_us,
        )
        if not isinstance(judged, FreshnessProof) or entry is None or facts is None:
            return judged
        if view.pending(key_hash):
            # A newer event for this key was read and waits for its seal:
            # serving the version before it would serve what is being replaced.
            return _late_miss(
                judged,
                facts,
                MissReason.VIEW_CATCHING_UP,
                "an event for this key is waiting for its seal",
            )
        if view.invalidated(key_hash, entry.version):
            return _late_miss(judged, facts, MissReason.REVOKED, "eagerly invalidated")
        if entry.ttl_ms is not None and now_us - entry.written_at_us > entry.ttl_ms * 1000:
            # Past its TTL: never served, even before the expiry processor's
            # transition lands (the TTL may be tighter than the contract).
            return _late_miss(
                judged,
                facts,
                MissReason.EXPIRED,
                f"version {entry.version} is {(now_us - entry.written_at_us) // 1000} ms old, "
                f"past its TTL of {entry.ttl_ms} ms",
            )
        return judged

    def _verifies(self, plan: _ReadPlan) -> bool:
        """Whether this read checks the served value against its sealed
        commitment: always under ALWAYS_VERIFY, on a random sample of
        ``probabilistic_rate`` under PROBABILISTIC (``[verification]`` for
        the contract's classification); never for an unclassified contract."""
        mode = plan.mode
        if mode is None:
            return False
        if mode is VerificationMode.ALWAYS_VERIFY:
            return True
        if mode is VerificationMode.PROBABILISTIC:
            return self._sample() < plan.probabilistic_rate
        return False

    def _recheck(self, cached: L1Entry) -> _Opened | None:
        """A verified read of an L1 entry: None when it may be served, else
        the miss (``erased`` when the data key is gone, ``decrypt_failed``
        when it cannot be had or the plaintext does not open the commitment
        the entry's sealed CacheWritten carries), and the key's L1 entry is
        evicted.

        The data key is asked for on every verified read (an erasure
        destroys it). The commitment is checked once per L1 entry, and that
        is safe: the check is a pure function of the entry's commitment, its
        plaintext and its data key (a key id names one key for good), and an
        L1 entry never changes; a change to the key evicts it, and whatever
        is cached after that is a new entry, unverified until checked."""
        entry = cached.entry
        node = self._node
        found = node.data_keys.for_read(entry.data_key_id)
        if found.key is None:
            node.l1.evict(entry.key_hash)
            reason = (
                MissReason.ERASED
                if found.status is DataKeyStatus.ERASED
                else MissReason.DECRYPT_FAILED
            )
            return _Opened(None, reason, f"version {entry.version}: {found.detail}")
        if cached.commitment_verified:
            return None
        if node.data_keys.committer(found.key).verify(entry.commitment, cached.plaintext):
            node.l1.mark_verified(cached)
            return None
        node.l1.evict(entry.key_hash)
        return _Opened(None, MissReason.DECRYPT_FAILED, _commitment_mismatch(entry.version))

    def get_many(
        self, keys: Sequence[str], *, contract: str, namespace: str = "default"
    ) -> list[CacheResponse]:
        return [self.get(k, contract=contract, namespace=namespace) for k in keys]

    def get_or_compute(
        self,
        key: str,
        compute: Callable[[], bytes],
        *,
        contract: str,
        namespace: str = "default",
        computation: Computation | None = None,
        ttl_ms: int | None = None,
    ) -> CacheResponse:
        """A hit, or: compute, write the new version (superseding the old) and
        return the computed value with the reason the cache missed."""
        r = self.get(key, contract=contract, namespace=namespace, computation=computation)
        if r.hit:
            return r
        value = compute()
        receipt = self.put(
            key,
            value,
            contract=contract,
            namespace=namespace,
            computation=computation,
            ttl_ms=ttl_ms,
        )
        return CacheResponse(
            hit=False,
            value=value,
            reason=r.reason,
            status=r.status,
            freshness=None,
            signatures=None,
            fingerprint=receipt.fingerprint,
            version=receipt.version,
            detail=r.detail,
            computed=True,
        )

    def _facts(self, entry: ViewEntry | None) -> EntryFacts | None:
        """What the contract evaluation needs of ``entry`` (derived once per
        entry: the L1 keeps it next to the plaintext)."""
        if entry is None:
            return None
        return EntryFacts(
            state=entry.state.value,
            fingerprint=entry.fingerprint,
            version=entry.version,
            written_at_us=entry.written_at_us,
            sealed_schemes=self._sealed_schemes,
            key_set_id="",
            producer_id=entry.producer_id,
            seal_seq=entry.seal_seq,
            namespace=entry.namespace,
            scope=entry.subject_hash.hex() if entry.subject_hash else None,
            confirmed_at_us=entry.state_changed_at_us
            if entry.state_reason == FRESHNESS_CONFIRMED
            else None,
        )

    def _decrypt(self, key: str, entry: ViewEntry, verify: bool) -> _Opened:
        """The plaintext of ``entry`` (with ``verify``: checked against the
        commitment its sealed CacheWritten carries, so what is served is
        what the seal covered), or the miss reason: ``erased`` when its data
        key was destroyed, ``decrypt_failed`` for anything else (a
        commitment mismatch also evicts the key's L1 entry). Never raises to
        the reader."""
        found = self._node.data_keys.for_read(entry.data_key_id)
        if found.key is None:
            if found.status is DataKeyStatus.ERASED:
                return _Opened(
                    None,
                    MissReason.ERASED,
                    f"version {entry.version} was erased: its data key is destroyed",
                )
            return _Opened(
                None,
                MissReason.DECRYPT_FAILED,
                f"data key of version {entry.version} unavailable: {found.detail}",
            )
        failed = _Opened(
            None, MissReason.DECRYPT_FAILED, f"value of version {entry.version} does not decrypt"
        )
        try:
            frame = open_value(
                found.key,
                entry.nonce,
                entry.ciphertext,
                associated_data(entry.key_hash, entry.fingerprint, entry.version),
            )
        except AeadError:
            return failed
        stored_key, value = _unframe(frame)
        # Defends against an entry filed under another key's hash.
        if not hmac.compare_digest(stored_key.encode(), key.encode()):
            return failed
        if verify and not self._node.data_keys.committer(found.key).verify(entry.commitment, value):
            self._node.l1.evict(entry.key_hash)
            return _Opened(None, MissReason.DECRYPT_FAILED, _commitment_mismatch(entry.version))
        return _Opened(value)

    def _audit(self, key_hash: bytes, namespace: str, contract: str, r: CacheResponse) -> None:
        node = self._node
        reason = r.reason.value if r.reason else SERVED
        kind = self._read_kinds.get(r.reason)
        if kind is None:
            kind = self._read_kinds[r.reason] = ("hit" if r.hit else "miss", reason)
        node.reads.count(kind)
        if r.reason in _VIOLATIONS:
            node.violations.labels(contract, reason).inc()
            node.alert(
                EventType.CONTRACT_VIOLATION,
                {
                    "key_hash": key_hash,
                    "namespace": namespace,
                    "contract": contract,
                    "reason": reason,
                    "detail": r.detail,
                    "node_id": node.node_id,
                },
            )
        read = {
            "key_hash": key_hash,
            "namespace": namespace,
            "contract": contract,
            "outcome": "HIT" if r.hit else "MISS",
            "reason": reason,
            "fingerprint": r.fingerprint,
            "version": r.version,
            "freshness": None,
            "reader_role": self._role_value,
            "node_id": node.node_id,
        }
        proof = r.freshness
        if proof is not None:
            # Flat, for the garbage collector's sake (ReadAudit nests it).
            read["age_ms"] = proof.age_ms
            read["max_staleness_ms"] = proof.max_staleness_ms
            read["headroom_ms"] = proof.headroom_ms
            read["view_lag_ms"] = proof.view_lag_ms
        node.audit.record(key_hash, read)


# Every hit makes a response. A frozen dataclass's __init__ sets each field
# with object.__setattr__ (to get past the frozen __setattr__), three times
# what the slots' own setters cost: _served builds the same object through
# those (CacheResponse has no __post_init__ to skip; a test holds both ways
# to the same result). Unpacking fails at import if a field is added
# without being set in _served.
_new = object.__new__
(
    _set_hit,
    _set_value,
    _set_reason,
    _set_status,
    _set_freshness,
    _set_signatures,
    _set_fingerprint,
    _set_version,
    _set_commitment,
    _set_detail,
    _set_computed,
) = (CacheResponse.__dict__[f.name].__set__ for f in dataclasses.fields(CacheResponse))


def _served(
    value: bytes | None, proof: FreshnessProof, signatures: SignatureSummary, entry: ViewEntry
) -> CacheResponse:
    """The response to a hit on ``entry``, served with ``proof``."""
    r = _new(CacheResponse)
    _set_hit(r, True)
    _set_value(r, value)
    _set_reason(r, None)
    _set_status(r, VerificationStatus.VERIFIED)
    _set_freshness(r, proof)
    _set_signatures(r, signatures)
    _set_fingerprint(r, entry.fingerprint)
    _set_version(r, entry.version)
    _set_commitment(r, entry.commitment)
    _set_detail(r, served_detail(entry.version, proof))
    _set_computed(r, False)
    return r


def _commitment_mismatch(version: int) -> str:
    return (
        f"value of version {version} does not match the commitment its sealed CacheWritten carries"
    )


def _late_miss(
    proof: FreshnessProof, facts: EntryFacts, reason: MissReason, detail: str
) -> ReadVerdict:
    """A miss decided after the contract served the entry (what only the view
    knows, the decryption): it keeps what the contract established."""
    return ReadVerdict(
        hit=False,
        reason=reason,
        detail=detail,
        freshness=proof,
        signatures=facts.verified_summary,
        fingerprint=facts.fingerprint,
        version=facts.version,
    )


def _missed(verdict: ReadVerdict) -> CacheResponse:
    """The response to a read that missed."""
    return CacheResponse(
        hit=False,
        value=None,
        reason=verdict.reason,
        status=verdict.signatures.status if verdict.signatures else VerificationStatus.UNVERIFIED,
        freshness=verdict.freshness,
        signatures=verdict.signatures,
        fingerprint=verdict.fingerprint,
        version=verdict.version,
        detail=verdict.detail,
    )
