"""Announcing a schema set on the control topic (SchemaSetPublished).

A consumer must know a schema set before producers write with it. Cachet's
own processes ship every released set (``schemas/history/``); consumers in
other stacks learn a new one from the log: the trust anchor signs the
``cachet.schema-set/v1`` statement (:func:`cachet.crypto.registry.
schema_set_statement`) over the set's release name, fingerprint and writer
schema, and the announcement is produced to ``control`` before any record
is written with the set. Readers learn a set only once the anchor's
signatures verify (the verifying consumer, :mod:`cachet.kafka.verifying`);
``docs/wire.md`` ("Evolution") is the contract.
"""

from __future__ import annotations

from pathlib import Path

from cachet.crypto.registry import schema_set_statement, sign_statement
from cachet.crypto.seal import PrivateKeySet
from cachet.schemas.loader import (
    SchemaLoadError,
    SchemaSet,
    envelope_json,
    history_dirs,
    load_schema_set,
)
from cachet.schemas.payloads import SchemaSetPublished, SignatureLine

__all__ = ["ANNOUNCING_RELEASE", "announcing_fingerprint", "release_of", "schema_set_announcement"]

ANNOUNCING_RELEASE = "v2"
"""The set every announcement is written with: the first release with the
SchemaSetPublished branch. Every reader that can learn sets knows it, so it
reads every announcement, whichever set it announces and in whatever order
(announcements of different sets may sit in different control partitions)."""


def announcing_fingerprint(schema_dir: Path) -> bytes:
    """The fingerprint of :data:`ANNOUNCING_RELEASE` (the writer of announcements)."""
    return load_schema_set(schema_dir / "history" / ANNOUNCING_RELEASE).fingerprint


def release_of(schema_set: SchemaSet, schema_dir: Path) -> str:
    """The release (folder of ``schema_dir/history``) that holds ``schema_set``.

    Raises :class:`SchemaLoadError` when no release has its fingerprint: a set
    is released before it is announced, and announced before it is used.
    """
    for directory in history_dirs(schema_dir):
        if load_schema_set(directory).fingerprint == schema_set.fingerprint:
            return directory.name
    raise SchemaLoadError(
        f"schema set {schema_set.fingerprint.hex()} ({schema_set.source}) is not released "
        f"in {schema_dir / 'history'}"
    )


def schema_set_announcement(
    schema_set: SchemaSet, release: str, anchor: PrivateKeySet
) -> SchemaSetPublished:
    """The SchemaSetPublished payload for ``schema_set``, signed by ``anchor``."""
    schema_json = envelope_json(schema_set)
    statement = schema_set_statement(release, schema_set.fingerprint, schema_json)
    return SchemaSetPublished(
        release=release,
        fingerprint=schema_set.fingerprint,
        schema_json=schema_json,
        anchor_signatures=tuple(
            SignatureLine(algorithm=s.algorithm, key_id=s.key_id, signature=s.signature)
            for s in sign_statement(statement, anchor)
        ),
    )
