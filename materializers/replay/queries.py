"""The questions an examiner asks of the verified log.

* :func:`key_history`: every verified event of one key (writes, state
  changes, invalidations, reads: each read of a CacheReadBatch is an item of
  its own, with its index), with the value as the asking role may see
  it: a Regulator or Auditor gets the value's commitment (to check inclusion
  without the plaintext), an Owner gets the plaintext only when it asks for
  it and supplies the means to open it (``reveal``); nobody else gets either.
* :func:`reads_by_node`: every read one node served (hit or miss) in a window,
  from CacheRead events and from the CacheReadBatch events that replaced them.
* :func:`violations`: every ContractViolation of one contract in a window.

Each reads the source through :func:`~cachet.materializers.replay.verified.iter_verified`,
up to the window's end: nothing unverified is ever returned.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from cachet.config.enums import Role
from cachet.crypto.identifiers import same_identifier
from cachet.ledger.reads import READ_EVENT_TYPES, audited_reads
from cachet.materializers.replay.as_of import ReadServed
from cachet.materializers.replay.errors import ReplayError
from cachet.materializers.replay.source import ReplaySource
from cachet.materializers.replay.verified import (
    Refusal,
    ReplayTrust,
    SealProof,
    VerifiedEvent,
    iter_verified,
)
from cachet.schemas.events import EventType
from cachet.schemas.payloads import CacheWritten, ContractViolation
from cachet.topics import Topic

__all__ = [
    "HistoryItem",
    "ValueView",
    "Violation",
    "key_history",
    "reads_by_node",
    "violations",
]

Reveal = Callable[[CacheWritten], bytes]
"""Opens a written value (decrypts its ciphertext); only for an Owner."""

_KEY_EVENTS = frozenset(
    {
        EventType.CACHE_WRITTEN,
        EventType.STATE_TRANSITIONED,
        EventType.INVALIDATED,
    }
)


class ValueView(enum.Enum):
    """What of a written value a history item shows."""

    NONE = "none"  # not a write, or a role that may see no value
    COMMITMENT = "commitment"
    PLAINTEXT = "plaintext"


@dataclass(frozen=True, slots=True)
class HistoryItem:
    """One verified event of a key: what happened, when, sealed by whom.

    A read in a CacheReadBatch is an item of its own: ``event_type`` is the
    batch's, ``read_index`` its position in the batch (None for every other
    item, a CacheRead event included: the event is the read)."""

    occurred_at_us: int
    event_type: EventType
    version: int | None
    detail: str
    producer_id: str
    seal: SealProof | None
    topic: str
    partition: int
    offset: int
    value_view: ValueView = ValueView.NONE
    value: bytes | None = None  # the commitment or the plaintext, per ``value_view``
    read_index: int | None = None


@dataclass(frozen=True, slots=True)
class Violation:
    """A verified ContractViolation: a read that broke its contract."""

    occurred_at_us: int
    contract: str
    reason: str
    detail: str
    node_id: str
    key_hash: bytes
    namespace: str
    producer_id: str
    topic: str
    partition: int
    offset: int


def _value_for(role: Role, reveal: Reveal | None) -> ValueView:
    """What a role may see of a value: refused outright for a role that may
    see nothing, and for plaintext asked by anyone but an Owner."""
    if role in (Role.REGULATOR, Role.AUDITOR):
        if reveal is not None:
            raise ReplayError(f"role {role.value} may not see plaintext: only an owner may")
        return ValueView.COMMITMENT
    if role is Role.OWNER:
        return ValueView.PLAINTEXT if reveal is not None else ValueView.COMMITMENT
    raise ReplayError(f"role {role.value} may not read a key's history")


def _detail(v: VerifiedEvent) -> tuple[int | None, str]:
    p = v.event.payload
    t = v.event.type
    if t is EventType.CACHE_WRITTEN:
        return p["version"], f"written (contract {p['contract']})"
    if t is EventType.STATE_TRANSITIONED:
        return p["version"], f"{p['from_state']} -> {p['to_state']}: {p['reason']}"
    return p.get("version"), f"invalidated ({p['mode']}): {p['reason']}"


def _read_detail(p: Mapping[str, Any]) -> str:
    return f"read by {p['node_id']} as {p['reader_role']}: {p['outcome']} ({p['reason']})"


def _of_key(p: Mapping[str, Any], key_hash: bytes, namespace: str | None) -> bool:
    if not same_identifier(p.get("key_hash"), key_hash):
        return False
    return namespace is None or p.get("namespace") == namespace


def _read_items(v: VerifiedEvent, key_hash: bytes, namespace: str | None) -> Iterator[HistoryItem]:
    """The reads of ``key_hash`` a read event holds, one item each."""
    for audited in audited_reads(v.event):
        p = audited.payload
        if not _of_key(p, key_hash, namespace):
            continue
        yield HistoryItem(
            v.occurred_at_us,
            v.event.type,
            p.get("version"),
            _read_detail(p),
            v.event.producer_id,
            v.seal,
            v.topic,
            v.partition,
            v.offset,
            read_index=audited.index,
        )


def key_history(
    source: ReplaySource,
    key_hash: bytes,
    *,
    trust: ReplayTrust,
    role: Role,
    namespace: str | None = None,
    reveal: Reveal | None = None,
    until_us: int | None = None,
    on_refused: Callable[[Refusal], None] | None = None,
) -> list[HistoryItem]:
    """Every verified event of ``key_hash`` (in ``namespace`` when given), in
    event-time order. Raises :class:`ReplayError` for a role that may not
    see the history, or plaintext asked by a role other than Owner."""
    view = _value_for(role, reveal)
    out: list[HistoryItem] = []
    for v in iter_verified(source, trust=trust, until_us=until_us, on_refused=on_refused):
        p = v.event.payload
        if v.event.type in READ_EVENT_TYPES:
            out.extend(_read_items(v, key_hash, namespace))
            continue
        if v.event.type not in _KEY_EVENTS or not _of_key(p, key_hash, namespace):
            continue
        version, detail = _detail(v)
        shown, value = ValueView.NONE, None
        if v.event.type is EventType.CACHE_WRITTEN:
            written = CacheWritten.from_avro(p)
            shown = view
            # Plaintext only here, only for an Owner who asked (see _value_for).
            value = (
                reveal(written)
                if view is ValueView.PLAINTEXT and reveal
                else written.value.commitment
            )
        out.append(
            HistoryItem(
                v.occurred_at_us,
                v.event.type,
                version,
                detail,
                v.event.producer_id,
                v.seal,
                v.topic,
                v.partition,
                v.offset,
                shown,
                value,
            )
        )
    out.sort(
        key=lambda h: (
            h.occurred_at_us,
            h.topic,
            h.partition,
            h.offset,
            -1 if h.read_index is None else h.read_index,
        )
    )
    return out


def _window(
    source: ReplaySource,
    trust: ReplayTrust,
    from_us: int,
    to_us: int,
    on_refused: Callable[[Refusal], None] | None,
) -> Iterator[VerifiedEvent]:
    if to_us < from_us:
        raise ReplayError(f"window ends ({to_us}) before it starts ({from_us})")
    for v in iter_verified(source, trust=trust, until_us=to_us, on_refused=on_refused):
        if from_us <= v.occurred_at_us <= to_us:
            yield v


def reads_by_node(
    source: ReplaySource,
    node_id: str,
    from_us: int,
    to_us: int,
    *,
    trust: ReplayTrust,
    on_refused: Callable[[Refusal], None] | None = None,
) -> list[ReadServed]:
    """Every verified read ``node_id`` served (hits and misses) with event
    time in ``[from_us, to_us]``, in event-time order (a batch's reads in
    batch order), each with its event and its index in the batch."""
    reads_topic = source.names(Topic.READS)
    out = []
    for v in _window(source, trust, from_us, to_us, on_refused):
        if v.event.type not in READ_EVENT_TYPES or v.topic != reads_topic:
            continue
        for audited in audited_reads(v.event):
            if audited.payload["node_id"] == node_id:
                out.append(ReadServed.of(v.event, audited, v.topic, v.partition, v.offset))
    out.sort(key=lambda r: r.order)
    return out


def violations(
    source: ReplaySource,
    contract: str,
    from_us: int,
    to_us: int,
    *,
    trust: ReplayTrust,
    on_refused: Callable[[Refusal], None] | None = None,
) -> list[Violation]:
    """Every verified ContractViolation of ``contract`` with event time in
    ``[from_us, to_us]``, in event-time order."""
    out = []
    for v in _window(source, trust, from_us, to_us, on_refused):
        if v.event.type is not EventType.CONTRACT_VIOLATION:
            continue
        c = ContractViolation.from_avro(v.event.payload)
        if c.contract != contract:
            continue
        out.append(
            Violation(
                v.occurred_at_us,
                c.contract,
                c.reason,
                c.detail,
                c.node_id,
                c.key_hash,
                c.namespace,
                v.event.producer_id,
                v.topic,
                v.partition,
                v.offset,
            )
        )
    out.sort(key=lambda x: (x.occurred_at_us, x.partition, x.offset))
    return out
