"""The read of a read bundle: which read of a CacheReadBatch event it proves.

Since schema set v4 a node logs its reads many to a CacheReadBatch event, so
one read is proven by (the batch event, the read's index) plus the batch's
inclusion proof in its seal. A read bundle (CAB version 2,
``docs/cab-format.md``) is an event bundle of the batch plus a read section:
the index and the read itself, encoded exactly as the batch encodes it (the
Avro binary of a ``cachet.events.CacheRead`` of the event's writer schema
set). The cryptographic steps prove the batch; this step proves that the
read the bundle shows is the one at that index.

Everything here works under the event's *writer* schema set (named by the
fingerprint in its first ten bytes: the current set or a released one), never
through schema resolution, so the comparison is of exactly what was sealed.
It needs fastavro, imported only when a read bundle is built or verified.
"""

from __future__ import annotations

import functools
import hmac
import io
import struct
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from fastavro import schemaless_reader, schemaless_writer

from cachet.ledger.cab_format import CabError, ReadClaim
from cachet.schemas.loader import SCHEMA_DIR, SchemaSet, history_dirs, load_schema_set

__all__ = ["ReadCheck", "check_read", "read_claim", "read_json"]

_HEADER = 10  # C3 01 and the 8-byte writer fingerprint
_BATCH = "cachet.events.CacheReadBatch"
_READ = "cachet.events.CacheRead"
# What fastavro raises on bytes that are not the schema's (as the codec lists them).
_AVRO_ERRORS = (
    EOFError,
    ValueError,
    IndexError,
    KeyError,
    TypeError,
    OverflowError,
    MemoryError,
    struct.error,
)


@functools.lru_cache(maxsize=1)
def _writer_sets() -> Mapping[bytes, SchemaSet]:
    """The schema sets a bundle's event may be written with: the current set
    and every released one (those the envelope check decodes)."""
    sets = [load_schema_set(SCHEMA_DIR), *(load_schema_set(d) for d in history_dirs(SCHEMA_DIR))]
    return {s.fingerprint: s for s in sets}


class _NotABatch(Exception):
    """The event bytes hold no CacheReadBatch; the message says why."""


def _batch_reads(event_bytes: bytes) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The ``reads`` of the CacheReadBatch in ``event_bytes``, decoded under its
    writer set, and that set's CacheRead schema."""
    writer = _writer_sets().get(bytes(event_bytes[2:_HEADER]))
    if event_bytes[:2] != b"\xc3\x01" or len(event_bytes) < _HEADER or writer is None:
        raise _NotABatch("the event is not written with a known schema set")
    read_schema = writer.payloads.get(_READ)
    if _BATCH not in writer.payloads or read_schema is None:
        raise _NotABatch(f"schema set {writer.fingerprint.hex()} has no CacheReadBatch")
    fo = io.BytesIO(event_bytes)
    fo.seek(_HEADER)
    try:
        envelope: Any = schemaless_reader(
            fo,
            writer.parsed,
            None,
            return_record_name=True,
            return_record_name_override=True,
        )
    except _AVRO_ERRORS as exc:
        raise _NotABatch(f"the event does not decode: {type(exc).__name__}") from exc
    if fo.tell() != len(event_bytes):
        raise _NotABatch("the event does not decode: bytes after the envelope")
    name, payload = envelope["payload"]
    if name != _BATCH or envelope["type"] != "CacheReadBatch":
        raise _NotABatch(f"the event is a {envelope['type']}, not a CacheReadBatch")
    return payload["reads"], read_schema


def _encode(schema: dict[str, Any], read: Mapping[str, Any]) -> bytes:
    out = io.BytesIO()
    schemaless_writer(out, schema, dict(read))
    return out.getvalue()


def read_claim(event_bytes: bytes, index: int) -> ReadClaim:
    """The read section for read ``index`` of the batch in ``event_bytes``.
    Raises :class:`CabError` when the bytes hold no such read."""
    try:
        reads, schema = _batch_reads(event_bytes)
    except _NotABatch as exc:
        raise CabError(f"no read bundle: {exc}") from exc
    if not 0 <= index < len(reads):
        raise CabError(f"read index {index}: the batch holds {len(reads)} reads")
    return ReadClaim(index, _encode(schema, reads[index]))


@dataclass(frozen=True, slots=True)
class ReadCheck:
    """The read step's verdict; ``read`` is the proven read when it passed."""

    passed: bool
    detail: str
    read: Mapping[str, Any] | None = None


def _differs(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return sorted(k for k in a.keys() | b.keys() if a.get(k) != b.get(k))


def check_read(event_bytes: bytes, claim: ReadClaim) -> ReadCheck:
    """Whether ``claim`` is read ``claim.index`` of the batch in ``event_bytes``:
    the event is a CacheReadBatch with more reads than the index; the claim's
    record decodes as one CacheRead of the batch's writer set with no byte
    left over, re-encodes to exactly its bytes (one encoding per read), and
    equals the batch's read at that index field by field. Never raises on
    bad bytes."""
    try:
        reads, schema = _batch_reads(event_bytes)
    except _NotABatch as exc:
        return ReadCheck(False, str(exc))
    # The index is checked against the sealed batch, never trusted: an index
    # past the end names no read.
    if claim.index >= len(reads):
        return ReadCheck(False, f"index {claim.index} is past the batch's {len(reads)} reads")
    fo = io.BytesIO(claim.record)
    try:
        shown: Any = schemaless_reader(fo, schema, None)
    except _AVRO_ERRORS as exc:
        return ReadCheck(False, f"the read section is not a CacheRead ({type(exc).__name__})")
    if fo.tell() != len(claim.record):
        return ReadCheck(
            False, f"{len(claim.record) - fo.tell()} byte(s) after the read section's CacheRead"
        )
    # One encoding per read: otherwise bytes of the section could change (an
    # overlong varint, say) without changing the verdict.
    if not hmac.compare_digest(_encode(schema, shown), claim.record):
        return ReadCheck(False, "the read section's CacheRead is not in canonical encoding")
    actual = reads[claim.index]
    # The attack this stops: a genuine batch and proof, with the index of
    # another read (or an edited read) shown as the one proven.
    if shown != actual:
        fields = ", ".join(_differs(shown, actual))
        return ReadCheck(
            False,
            f"read {claim.index} of the batch is not the bundle's read (differs in {fields})",
        )
    return ReadCheck(
        True, f"read {claim.index} of {len(reads)} in the batch, by {shown['node_id']}", shown
    )


def read_json(read: Mapping[str, Any]) -> dict[str, Any]:
    """A decoded read as JSON values (bytes as lowercase hex)."""
    return {k: v.hex() if isinstance(v, bytes) else v for k, v in read.items()}
