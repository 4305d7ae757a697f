"""The exporting identity: its key set and the registration that proves it.

An export is signed by an identity whose key set the trust anchor
registered, and the proof travels with the export. The registration is
taken from the same verified source the export reads (anchor-signed, so it
authenticates itself), never from the exporter's say-so, and a key set the
log shows revoked or rotated away by the signing time signs nothing.
"""

from __future__ import annotations

from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.materializers.evidence.errors import SignerError
from cachet.materializers.evidence.history import History
from cachet.materializers.evidence.manifest import ExportSigner
from cachet.schemas.events import EventType

__all__ = ["signer_from_log"]


def signer_from_log(
    history: History, identity: str, keys: PrivateKeySet, anchor: KeySet, at_us: int
) -> ExportSigner:
    """The :class:`ExportSigner` of ``identity`` with ``keys`` at ``at_us``.

    Raises :class:`SignerError` when the log holds no registration of that
    key set for that identity, or shows it revoked or retired by ``at_us``.
    """
    key_set_id = keys.key_set_id
    registered = None
    for record in history.registry:
        p = record.event.payload
        if p["producer_id"] != identity:
            continue
        kind = record.event.type
        if kind is EventType.SIGNING_KEY_REGISTERED and p["key_set_id"] == key_set_id:
            if registered is None or p["valid_from_us"] < registered["valid_from_us"]:
                registered = p
        elif (
            kind is EventType.SIGNING_KEY_REVOKED
            and p["key_set_id"] == key_set_id
            and p["compromised_at_us"] <= at_us
        ):
            raise SignerError(
                f"key set {key_set_id} of {identity} was revoked ({p['reason']}) from "
                f"{p['compromised_at_us']}: it may not sign an export"
            )
        elif (
            kind is EventType.SIGNING_KEY_ROTATED
            and p["old_key_set_id"] == key_set_id
            and p["rotated_at_us"] <= at_us
        ):
            raise SignerError(
                f"key set {key_set_id} of {identity} was rotated to {p['new_key_set_id']} at "
                f"{p['rotated_at_us']}: sign with the current key set"
            )
    if registered is None:
        raise SignerError(
            f"no anchor-signed SigningKeyRegistered of key set {key_set_id} for {identity} in "
            "the source (register it with `cachet keys register`; a key set that was rotated "
            "in, rather than registered, cannot sign exports yet)"
        )
    return ExportSigner.from_registration(identity, keys, anchor, registered)
