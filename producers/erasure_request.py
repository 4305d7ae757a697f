"""Asking for an erasure, and setting or lifting a legal hold: sealed events.

An erasure is a data-protection decision, so it travels as a sealed event
whose *authority is the key that sealed it*: the erasure processor, the
nodes and the KV-scrub workers act on an ``ErasureRequested`` (or a
``LegalHoldChanged``) only when its seal verifies and the sealing identity
is one of ``[erasure] allowed_requesters``. ``requested_by`` and
``changed_by`` are labels for people, never credentials.

Each function returns only once the broker acknowledged the event
(``acks=all``); the producer's next seal covers it. Subject ids are hashed
with :meth:`~cachet.crypto.identifiers.IdentifierHasher.subject`, the same
hash a client's subject scope writes into ``CacheWritten.subject_hash``, so
the request finds the subject's entries; the id itself never reaches Kafka.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cachet.crypto.identifiers import IdentifierHasher
from cachet.errors import CachetError
from cachet.producers.sealing import EmitRejected, NotAcknowledged, SealingProducer
from cachet.schemas.events import EventType, uuid7
from cachet.schemas.payloads import (
    ErasureRequested,
    ErasureScope,
    LegalHoldAction,
    LegalHoldChanged,
)

__all__ = [
    "ErasureRequestError",
    "ErasureTicket",
    "HoldTicket",
    "lift_legal_hold",
    "request_erasure",
    "set_legal_hold",
]

DEFAULT_LEGAL_BASIS = "GDPR Art. 17(1)"


class ErasureRequestError(CachetError):
    """An erasure request or legal hold was not made: a bad argument (named),
    or the broker did not acknowledge the event (it may still be written)."""


@dataclass(frozen=True, slots=True)
class ErasureTicket:
    """An acknowledged erasure request: what ``cachet erase status`` takes.

    ``request_id`` (a UUIDv7) names the erasure in every later event;
    ``subject_hash`` is the keyed hash the log knows the subject by;
    ``requested_at_us`` is the request's event time (latency counts from it).
    """

    request_id: str
    subject_hash: bytes
    namespace: str | None
    requested_at_us: int
    producer_id: str
    producer_seq: int


@dataclass(frozen=True, slots=True)
class HoldTicket:
    """An acknowledged legal hold change."""

    hold_id: str
    action: LegalHoldAction
    subject_hash: bytes | None
    namespace: str | None
    changed_at_us: int


def _text(argument: str, value: object, *, optional: bool = False) -> str | None:
    if value is None and optional:
        return None
    if not isinstance(value, str) or not value.strip():
        raise ErasureRequestError(f"{argument}: expected a non-empty string, got {value!r}")
    return value


def _timeout(timeout_s: object) -> float:
    if (
        isinstance(timeout_s, bool)
        or not isinstance(timeout_s, int | float)
        or not math.isfinite(timeout_s)
        or timeout_s <= 0
    ):
        raise ErasureRequestError(f"timeout_s: expected a positive number, got {timeout_s!r}")
    return float(timeout_s)


def request_erasure(
    producer: SealingProducer,
    hasher: IdentifierHasher,
    subject: str,
    *,
    namespace: str | None = None,
    requested_by: str,
    legal_basis: str = DEFAULT_LEGAL_BASIS,
    timeout_s: float = 10.0,
) -> ErasureTicket:
    """Emit a sealed ``ErasureRequested`` for ``subject`` and wait for the ack.

    ``namespace`` limits the erasure to one namespace (None: all). Raises
    :class:`ErasureRequestError` for a bad argument (nothing emitted) or
    when the broker did not acknowledge within ``timeout_s``.
    """
    _text("subject", subject)
    _text("namespace", namespace, optional=True)
    _text("requested_by", requested_by)
    _text("legal_basis", legal_basis)
    wait_s = _timeout(timeout_s)
    subject_hash = hasher.subject(subject)
    payload = ErasureRequested(
        request_id=uuid7(),
        subject_hash=subject_hash,
        scope=ErasureScope.SUBJECT,
        requested_by=requested_by,
        legal_basis=legal_basis,
        namespace=namespace,
    )
    try:
        delivery = producer.emit_with_receipt(
            EventType.ERASURE_REQUESTED, payload.to_avro(), key=subject_hash
        )
        delivery.wait(wait_s)
    except (EmitRejected, NotAcknowledged) as exc:
        raise ErasureRequestError(f"erasure request {payload.request_id}: {exc}") from exc
    event = delivery.event
    return ErasureTicket(
        request_id=payload.request_id,
        subject_hash=subject_hash,
        namespace=namespace,
        requested_at_us=event.occurred_at_us,
        producer_id=event.producer_id,
        producer_seq=event.producer_seq,
    )


def set_legal_hold(
    producer: SealingProducer,
    hasher: IdentifierHasher,
    *,
    subject: str | None = None,
    namespace: str | None = None,
    reason: str,
    changed_by: str,
    timeout_s: float = 10.0,
) -> HoldTicket:
    """Emit a sealed ``LegalHoldChanged`` SET on a subject, a namespace, or a
    subject within a namespace (at least one), and wait for the ack.
    Entries it covers are held from every erasure until it is lifted."""
    if subject is None and namespace is None:
        raise ErasureRequestError("a legal hold needs a subject, a namespace, or both")
    _text("subject", subject, optional=True)
    _text("namespace", namespace, optional=True)
    subject_hash = hasher.subject(subject) if subject is not None else None
    return _emit_hold(
        producer,
        uuid7(),
        LegalHoldAction.SET,
        subject_hash,
        namespace,
        reason,
        changed_by,
        timeout_s,
    )


def lift_legal_hold(
    producer: SealingProducer,
    hold_id: str,
    *,
    reason: str,
    changed_by: str,
    timeout_s: float = 10.0,
) -> HoldTicket:
    """Emit a sealed ``LegalHoldChanged`` LIFTED for ``hold_id`` and wait for
    the ack. Erasures it held are carried out (stage ``hold_lifted``)."""
    _text("hold_id", hold_id)
    return _emit_hold(
        producer, hold_id, LegalHoldAction.LIFTED, None, None, reason, changed_by, timeout_s
    )


def _emit_hold(
    producer: SealingProducer,
    hold_id: str,
    action: LegalHoldAction,
    subject_hash: bytes | None,
    namespace: str | None,
    reason: str,
    changed_by: str,
    timeout_s: float,
) -> HoldTicket:
    _text("reason", reason)
    _text("changed_by", changed_by)
    wait_s = _timeout(timeout_s)
    payload = LegalHoldChanged(
        hold_id=hold_id,
        action=action,
        subject_hash=subject_hash,
        namespace=namespace,
        reason=reason,
        changed_by=changed_by,
    )
    try:
        delivery = producer.emit_with_receipt(
            EventType.LEGAL_HOLD_CHANGED, payload.to_avro(), key=hold_id.encode()
        )
        delivery.wait(wait_s)
    except (EmitRejected, NotAcknowledged) as exc:
        raise ErasureRequestError(f"legal hold {hold_id} {action.name}: {exc}") from exc
    return HoldTicket(hold_id, action, subject_hash, namespace, delivery.event.occurred_at_us)
