"""``ErasureCompleted.proof_hash``: one digest of what a stage did and kept.

SHA3-256 over ``framed(DOMAIN, request_id, stage, subject_hash, namespace,
revoked..., destroyed..., held...)`` (:func:`cachet.crypto.identifiers.framed`:
every part length-prefixed, so no two different statements encode alike):

* ``namespace``: UTF-8, empty for "every namespace";
* ``revoked``: one part per revoked entry, ``key_hash || version`` (8 bytes
  big-endian), sorted;
* ``destroyed``: one part per destroyed key id (UTF-8), sorted;
* ``held``: one part per held entry, ``framed(key_hash, namespace,
  contract, ground, held_until_us as decimal text or empty)``, sorted.

Parts of the three lists are preceded by their count (8 bytes big-endian),
so a part cannot move from one list into another. Anyone holding the event
(and the revoked entries' key hashes and versions, from the log) can
recompute it.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable

from cachet.crypto.identifiers import framed
from cachet.schemas.payloads import HeldEntry

__all__ = ["PROOF_DOMAIN", "proof_hash"]

PROOF_DOMAIN = b"cachet/erasure-proof/v1"


def _list(parts: Iterable[bytes]) -> list[bytes]:
    items = sorted(parts)
    return [len(items).to_bytes(8, "big"), *items]


def proof_hash(
    *,
    request_id: str,
    stage: str,
    subject_hash: bytes,
    namespace: str | None,
    revoked: Iterable[tuple[bytes, int]],
    destroyed_key_ids: Iterable[str],
    held: Iterable[HeldEntry],
) -> bytes:
    """The stage's proof hash (see the module docstring for the encoding)."""
    held_parts = (
        framed(
            h.key_hash,
            h.namespace.encode(),
            h.contract.encode(),
            h.ground.encode(),
            b"" if h.held_until_us is None else str(h.held_until_us).encode(),
        )
        for h in held
    )
    return hashlib.sha3_256(
        framed(
            PROOF_DOMAIN,
            request_id.encode(),
            stage.encode(),
            subject_hash,
            (namespace or "").encode(),
            *_list(k + v.to_bytes(8, "big") for k, v in revoked),
            *_list(k.encode() for k in destroyed_key_ids),
            *_list(held_parts),
        )
    ).digest()
