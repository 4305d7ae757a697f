"""The values the live view holds: one cache entry version and its state."""

from __future__ import annotations

from dataclasses import dataclass

# The one EntryState (the Avro symbols), defined in the kernel: the read
# verdict needs it and sits below the view. Re-exported for the view's users.
from cachet.verdict import EntryState

__all__ = ["EntryState", "ViewEntry"]


@dataclass(frozen=True, slots=True)
class ViewEntry:
    """One version of one cache key as the live view holds it.

    Built from a CacheWritten (the value and its metadata) and changed by
    StateTransitioned events; ``state`` UNKNOWN (a transition to a state this
    reader does not know) is never served. ``event_hash`` is the head of the
    key's hash chain: the SHA3-256 of the exact bytes of the last event
    applied to this key; ``producer_id``/``seal_seq`` name the seal that
    covered that event.
    """

    key_hash: bytes
    namespace: str
    contract: str
    fingerprint: bytes
    version: int
    state: EntryState
    ciphertext: bytes
    nonce: bytes
    data_key_id: str
    commitment: bytes
    aad_version: int
    subject_hash: bytes | None
    classification: str
    written_at_us: int  # event time of the CacheWritten
    ttl_ms: int | None
    state_changed_at_us: int  # event time of the last transition (== written_at_us while ACTIVE)
    state_reason: str  # "" while ACTIVE
    authority: str  # "" while ACTIVE, else e.g. "SYSTEM_EXPIRY" or "KEY:<key_id>:<role>"
    event_hash: bytes
    producer_id: str
    seal_seq: int
