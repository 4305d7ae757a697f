"""Producer identities and their chain epochs.

A producer *identity* (``node-1``) owns a registered key set. Each time a
producer process starts it opens a new *epoch*: its seal chain starts again
at seal 0 with an all-zero previous hash. The wire ``producer_id`` names
both, ``identity@epoch``, so two runs of one identity never interleave two
chains under one id (which a verifier would rightly call a broken chain).
"""

from __future__ import annotations

import re

from cachet.errors import CachetError

__all__ = ["GENESIS_SEAL_HASH", "ProducerIdError", "epoch_producer_id", "identity_of"]

# The previous-seal hash of the first seal of every epoch.
GENESIS_SEAL_HASH = bytes(32)

_IDENTITY = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
_EPOCH = re.compile(r"^[0-9a-f]{1,32}$")


class ProducerIdError(CachetError):
    """A producer id or identity is not of the allowed form."""


def epoch_producer_id(identity: str, epoch: str) -> str:
    if not _IDENTITY.match(identity):
        raise ProducerIdError(
            f"producer identity {identity!r}: 1-128 of letters, digits and . _ : - only"
        )
    if not _EPOCH.match(epoch):
        raise ProducerIdError(f"epoch {epoch!r}: lowercase hex, at most 32 digits")
    return f"{identity}@{epoch}"


def identity_of(producer_id: str) -> str:
    """The identity whose keys sign for ``producer_id``."""
    identity, sep, epoch = producer_id.partition("@")
    if not sep or not _IDENTITY.match(identity) or not _EPOCH.match(epoch):
        raise ProducerIdError(f"producer id {producer_id!r} is not identity@epoch")
    return identity
