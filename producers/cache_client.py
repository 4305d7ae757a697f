"""The cache API services call: put, get, get_or_compute, revoke,
confirm_freshness, and their bulk forms.

Every read is evaluated against its contract and answered with proof: the
value (for the Owner role), a VerificationStatus, a FreshnessProof, a
SignatureSummary and the fingerprint. Any failed check is a miss with the
exact reason (a :class:`~cachet.verdict.MissReason` callers can match on),
and contract violations are ContractViolation events. Every read is a
CacheRead event.
"""

from __future__ import annotations

import hmac
import struct
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from cachet.config import ContractConfig
from cachet.config.enums import Role
from cachet.crypto.aead import AeadError, associated_data, open_value, seal_value, value_commitment
from cachet.errors import CachetError
from cachet.freshness import FreshnessProof
from cachet.verdict import (
    EntryFacts,
    MissReason,
    ReadVerdict,
    SignatureSummary,
    VerificationStatus,
    evaluate_read,
)
from materializers.live_view import FRESHNESS_CONFIRMED
from materializers.view import EntryState, ViewEntry
from producers.cache_node import CacheNode
from producers.fingerprint import Computation, fingerprint
from schemas.events import EventType

__all__ = ["CacheClient", "CacheError", "CacheResponse", "PutReceipt"]

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


class CacheError(CachetError):
    """A cache call that cannot be made (unknown contract, wrong role)."""


@dataclass(frozen=True, slots=True)
class PutReceipt:
    key_hash: bytes
    fingerprint: bytes
    version: int
    event_id: str


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


def _frame(key: str, value: bytes) -> bytes:
    # The plaintext cache key travels only inside the ciphertext.
    raw = key.encode()
    return struct.pack(">I", len(raw)) + raw + value


def _unframe(frame: bytes) -> tuple[str, bytes]:
    (n,) = struct.unpack_from(">I", frame)
    return frame[4 : 4 + n].decode(), frame[4 + n :]


def _now_us() -> int:
    return time.time_ns() // 1000


class CacheClient:
    """The cache as one role (and one tenant or subject scope) sees it."""

    def __init__(
        self,
        node: CacheNode,
        role: Role = Role.OWNER,
        scope: str | None = None,
        clock_us: Callable[[], int] = _now_us,
    ) -> None:
        self._node = node
        self.role = role
        self.scope = scope
        self._scope_hash = node.hasher.subject(scope) if scope else None
        self._clock_us = clock_us

    # -- helpers ------------------------------------------------------------

    def _contract(self, name: str) -> ContractConfig:
        try:
            return self._node.contracts[name]
        except KeyError:
            known = ", ".join(sorted(self._node.contracts)) or "none configured"
            raise CacheError(f"unknown contract {name!r} (known: {known})") from None

    def _require_owner(self, action: str) -> None:
        if self.role is not Role.OWNER:
            raise CacheError(f"{self.role.value} may not {action}: only the owner role writes")

    def _fingerprint(
        self, key: str, contract: ContractConfig, computation: Computation | None
    ) -> bytes:
        c = computation or Computation(input=key, computation=contract.computation_type)
        return fingerprint(c, contract.fingerprint_fields or None)

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
        ``wait`` returns only once this node's view serves the new version."""
        self._require_owner("write")
        c = self._contract(contract)
        node = self._node
        key_hash = node.hasher.key(namespace, key)
        fp = self._fingerprint(key, c, computation)
        current = node.view.current(key_hash)
        version = current.version + 1 if current else 1
        data_key = node.keys.data_key(namespace)
        nonce, ciphertext = seal_value(
            data_key, _frame(key, value), associated_data(key_hash, fp, version)
        )
        event = node.producer.emit(
            EventType.CACHE_WRITTEN,
            {
                "key_hash": key_hash,
                "namespace": namespace,
                "contract": contract,
                "fingerprint": fp,
                "version": version,
                "value": {
                    "ciphertext": ciphertext,
                    "nonce": nonce,
                    "data_key_id": data_key.key_id,
                    "commitment": value_commitment(node.keys.commitment_key, value),
                    "aad_version": AAD_VERSION,
                },
                "subject_hash": self._scope_hash,
                "classification": c.classification.value if c.classification else "unclassified",
                "ttl_ms": ttl_ms,
                "prev_event_hash": current.event_hash if current else None,
            },
            key=key_hash,
        )
        if current is not None and current.state is EntryState.ACTIVE:
            self._transition(current, EntryState.SUPERSEDED, f"superseded by version {version}")
        receipt = PutReceipt(key_hash, fp, version, event.event_id)
        if wait:
            self._wait_visible(receipt, timeout_s)
        return receipt

    def put_many(
        self,
        items: Iterable[tuple[str, bytes]],
        *,
        contract: str,
        namespace: str = "default",
        wait: bool = False,
    ) -> list[PutReceipt]:
        receipts = [self.put(k, v, contract=contract, namespace=namespace) for k, v in items]
        for r in receipts if wait else ():
            self._wait_visible(r, 10.0)
        return receipts

    def _transition(self, entry: ViewEntry, to: EntryState, reason: str) -> None:
        node = self._node
        node.producer.emit(
            EventType.STATE_TRANSITIONED,
            {
                "key_hash": entry.key_hash,
                "namespace": entry.namespace,
                "version": entry.version,
                "from_state": entry.state.value,
                "to_state": to.value,
                "authority": {
                    "kind": "KEY",
                    "key_id": node.keys.signing.key_set_id,
                    "role": self.role.value,
                },
                "reason": reason,
                "prev_event_hash": entry.event_hash,
            },
            key=entry.key_hash,
        )

    def revoke(self, key: str, *, namespace: str = "default", reason: str = "revoked") -> bool:
        """Revoke the current version everywhere: a StateTransitioned for the
        record and an eager Invalidated on the broadcast topic for every L1."""
        self._require_owner("revoke")
        node = self._node
        key_hash = node.hasher.key(namespace, key)
        current = node.view.current(key_hash)
        if current is None or current.state is not EntryState.ACTIVE:
            return False
        node.producer.emit(
            EventType.INVALIDATED,
            {
                "key_hash": key_hash,
                "namespace": namespace,
                "mode": "EAGER",
                "version": current.version,
                "authority": {
                    "kind": "KEY",
                    "key_id": node.keys.signing.key_set_id,
                    "role": self.role.value,
                },
                "reason": reason,
            },
            key=key_hash,
        )
        self._transition(current, EntryState.REVOKED, reason)
        # This node revoked it: it need not wait for its own seal to stop serving.
        node.view.note_invalidated(key_hash, current.version)
        node._evict(key_hash)
        return True

    def confirm_freshness(self, key: str, *, namespace: str = "default") -> bool:
        """The source confirms the current value is still right (contractual mode)."""
        self._require_owner("confirm freshness")
        current = self._node.view.current(self._node.hasher.key(namespace, key))
        if current is None or current.state is not EntryState.ACTIVE:
            return False
        self._transition(current, EntryState.ACTIVE, FRESHNESS_CONFIRMED)
        return True

    def _wait_visible(self, receipt: PutReceipt, timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            e = self._node.view.current(receipt.key_hash)
            if e is not None and e.version >= receipt.version:
                return
            time.sleep(0.005)
        raise CacheError(
            f"version {receipt.version} not visible within {timeout_s}s "
            "(is the broker reachable and are seals verifying?)"
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
        """Read and evaluate the contract; every read is audited."""
        node = self._node
        c = self._contract(contract)
        key_hash = node.hasher.key(namespace, key)
        now = self._clock_us()
        cached = node.l1_get(key_hash)
        generation = node.l1_generation(key_hash)
        entry = cached.entry if cached else node.view.current(key_hash)
        expected = self._fingerprint(key, c, computation) if computation else None
        verdict = evaluate_read(
            contract=c,
            entry=self._facts(entry),
            expected_fingerprint=expected,
            scope=self._scope_hash.hex() if self._scope_hash else None,
            view=node.view.health(),
            now_us=now,
        )
        value, detail = None, verdict.detail
        if verdict.hit and entry is not None and node.view.invalidated(key_hash, entry.version):
            verdict = self._miss(verdict, MissReason.REVOKED, "eagerly invalidated")
        if verdict.hit and entry is not None:
            plaintext = cached.plaintext if cached else self._decrypt(key, entry)
            if plaintext is None:
                verdict = self._miss(
                    verdict,
                    MissReason.DECRYPT_FAILED,
                    f"value of version {entry.version} does not decrypt",
                )
            else:
                if cached is None:
                    node.l1_put(entry, plaintext, generation)
                value = plaintext if self.role is Role.OWNER else None
        response = CacheResponse(
            hit=verdict.hit,
            value=value,
            reason=verdict.reason,
            status=(
                VerificationStatus.VERIFIED
                if verdict.hit
                else verdict.signatures.status
                if verdict.signatures
                else VerificationStatus.UNVERIFIED
            ),
            freshness=verdict.freshness,
            signatures=verdict.signatures,
            fingerprint=verdict.fingerprint,
            version=verdict.version,
            commitment=entry.commitment if entry is not None and verdict.hit else None,
            detail=detail,
        )
        self._audit(key_hash, namespace, contract, response)
        return response

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
        if entry is None:
            return None
        node = self._node
        return EntryFacts(
            state=entry.state.value,
            fingerprint=entry.fingerprint,
            version=entry.version,
            written_at_us=entry.written_at_us,
            # Only events covered by a seal verified with every required
            # scheme ever reach the view.
            sealed_schemes=tuple(s.value for s in node.config.attestation.schemes),
            key_set_id="",
            producer_id=entry.producer_id,
            seal_seq=entry.seal_seq,
            namespace=entry.namespace,
            scope=entry.subject_hash.hex() if entry.subject_hash else None,
            confirmed_at_us=entry.state_changed_at_us
            if entry.state_reason == FRESHNESS_CONFIRMED
            else None,
        )

    def _decrypt(self, key: str, entry: ViewEntry) -> bytes | None:
        data_key = self._node.keys.data_key(entry.namespace)
        try:
            frame = open_value(
                data_key,
                entry.nonce,
                entry.ciphertext,
                associated_data(entry.key_hash, entry.fingerprint, entry.version),
            )
        except AeadError:
            return None
        stored_key, value = _unframe(frame)
        # Defends against an entry filed under another key's hash.
        return value if hmac.compare_digest(stored_key.encode(), key.encode()) else None

    @staticmethod
    def _miss(verdict: ReadVerdict, reason: MissReason, detail: str) -> ReadVerdict:
        return ReadVerdict(
            hit=False,
            reason=reason,
            detail=detail,
            freshness=verdict.freshness,
            signatures=verdict.signatures,
            fingerprint=verdict.fingerprint,
            version=verdict.version,
        )

    def _audit(self, key_hash: bytes, namespace: str, contract: str, r: CacheResponse) -> None:
        node = self._node
        reason = r.reason.value if r.reason else "served"
        node.reads.labels("hit" if r.hit else "miss", reason).inc()
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
        node.audit.record(
            key_hash,
            {
                "key_hash": key_hash,
                "namespace": namespace,
                "contract": contract,
                "outcome": "HIT" if r.hit else "MISS",
                "reason": reason,
                "fingerprint": r.fingerprint,
                "version": r.version,
                "freshness": r.freshness.to_payload() if r.freshness else None,
                "reader_role": self.role.value,
                "node_id": node.node_id,
            },
        )
