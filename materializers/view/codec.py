"""The live view's on-disk layout, byte by byte.

Everything lives in RocksDB's default column family under one-byte-letter
prefixes, so one WriteBatch covers all of it and the key order is the
order a third party re-deriving :func:`state_hash` must use. Integers are
big-endian; ``H(x)`` below is ``u8 len(x) || x``, a length-prefixed hash, so
no key hash can be a prefix of another one's record (hashes are 1..255 bytes;
Cachet's are 32).

============  ==============================================  ===================
prefix        key                                             value
============  ==============================================  ===================
``m/``        ``m/`` name (ASCII)                             meta bytes
``e/``        ``e/`` H(key_hash)                              entry (current)
``h/``        ``h/`` H(key_hash) u64(2^64-1-version)          entry (older)
``o/``        ``o/`` topic (UTF-8, no NUL) ``\\0`` u32(part)  u64(next offset)
``s/``        ``s/`` H(subject_hash) H(key_hash)              empty
============  ==============================================  ===================

History versions are stored inverted so a forward scan yields newest first.

An entry value is ``u8 layout (=1)`` then the :class:`ViewEntry` fields in
declaration order: bytes and strings (UTF-8) as ``u32 len || bytes``;
``version``, ``written_at_us``, ``state_changed_at_us``, ``seal_seq`` as
``i64``; ``aad_version`` as ``i32``; ``state`` as one byte (ACTIVE=1,
SUPERSEDED=2, EXPIRED=3, REVOKED=4); an optional field as ``u8 0`` (absent)
or ``u8 1`` then the field. One entry has exactly one encoding, which is
what makes a rebuilt view byte-identical to the live one.
"""

from __future__ import annotations

import struct

from cachet.materializers.view.entry import EntryState, ViewEntry
from cachet.materializers.view.errors import ViewCorruptError

__all__ = [
    "CURRENT_PREFIX",
    "ENTRY_LAYOUT",
    "HISTORY_PREFIX",
    "META_PREFIX",
    "OFFSET_PREFIX",
    "SUBJECT_PREFIX",
    "current_key",
    "decode_entry",
    "decode_offset",
    "encode_entry",
    "encode_offset",
    "history_key",
    "history_prefix",
    "key_hash_of_current",
    "meta_key",
    "offset_key",
    "parse_offset_key",
    "parse_subject_key",
    "subject_key",
    "subject_prefix",
]

META_PREFIX = b"m/"
CURRENT_PREFIX = b"e/"
HISTORY_PREFIX = b"h/"
OFFSET_PREFIX = b"o/"
SUBJECT_PREFIX = b"s/"

ENTRY_LAYOUT = 1

_U8 = struct.Struct(">B")
_U32 = struct.Struct(">I")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_U64 = struct.Struct(">Q")
_MAX_U64 = (1 << 64) - 1

# Fixed codes, not enum ordinals: reordering the enum must not change bytes.
_STATE_CODE: dict[EntryState, int] = {
    EntryState.ACTIVE: 1,
    EntryState.SUPERSEDED: 2,
    EntryState.EXPIRED: 3,
    EntryState.REVOKED: 4,
    # A transition to a state a newer writer knows and this one does not:
    # stored as it came (the log says it), never served (only ACTIVE is).
    EntryState.UNKNOWN: 5,
}
_CODE_STATE: dict[int, EntryState] = {code: state for state, code in _STATE_CODE.items()}


# --------------------------------------------------------------------------- keys


def _h(label: str, value: bytes) -> bytes:
    if not 1 <= len(value) <= 255:
        raise ValueError(f"{label} must be 1..255 bytes, got {len(value)}")
    return _U8.pack(len(value)) + value


def _version(version: int) -> bytes:
    if not 0 <= version < (1 << 63):
        raise ValueError(f"entry version must be in 0..2^63-1, got {version}")
    return _U64.pack(_MAX_U64 - version)


def meta_key(name: str) -> bytes:
    if not name or not name.isascii() or "\0" in name:
        raise ValueError(f"meta name must be non-empty ASCII without NUL, got {name!r}")
    return META_PREFIX + name.encode("ascii")


def current_key(key_hash: bytes) -> bytes:
    return CURRENT_PREFIX + _h("key_hash", key_hash)


def key_hash_of_current(key: bytes) -> bytes:
    return key[len(CURRENT_PREFIX) + 1 :]


def history_prefix(key_hash: bytes) -> bytes:
    return HISTORY_PREFIX + _h("key_hash", key_hash)


def history_key(key_hash: bytes, version: int) -> bytes:
    return history_prefix(key_hash) + _version(version)


def subject_prefix(subject_hash: bytes) -> bytes:
    return SUBJECT_PREFIX + _h("subject_hash", subject_hash)


def subject_key(subject_hash: bytes, key_hash: bytes) -> bytes:
    return subject_prefix(subject_hash) + _h("key_hash", key_hash)


def parse_subject_key(key: bytes, prefix: bytes) -> bytes:
    """The key hash of a subject index row under ``prefix``."""
    rest = key[len(prefix) :]
    if not rest or rest[0] != len(rest) - 1:
        raise ViewCorruptError(key, "subject index row with a malformed key hash")
    return rest[1:]


def offset_key(topic: str, partition: int) -> bytes:
    if not topic or "\0" in topic:
        raise ValueError(f"topic must be non-empty without NUL, got {topic!r}")
    if not 0 <= partition < (1 << 32):
        raise ValueError(f"partition must be in 0..2^32-1, got {partition}")
    return OFFSET_PREFIX + topic.encode("utf-8") + b"\0" + _U32.pack(partition)


def parse_offset_key(key: bytes) -> tuple[str, int]:
    # The partition is the fixed-size tail (it may contain NUL bytes); the
    # topic, which never does, ends at the NUL just before it.
    body = key[len(OFFSET_PREFIX) :]
    topic, sep, part = body[: -_U32.size - 1], body[-_U32.size - 1 : -_U32.size], body[-_U32.size :]
    if len(body) < _U32.size + 2 or sep != b"\0" or b"\0" in topic:
        raise ViewCorruptError(key, "offset row with a malformed key")
    return topic.decode("utf-8"), int(_U32.unpack(part)[0])


def encode_offset(next_offset: int) -> bytes:
    if not 0 <= next_offset <= _MAX_U64:
        raise ValueError(f"next offset must be in 0..2^64-1, got {next_offset}")
    return _U64.pack(next_offset)


def decode_offset(key: bytes, value: bytes) -> int:
    if len(value) != _U64.size:
        raise ViewCorruptError(key, f"offset value of {len(value)} bytes, expected 8")
    return int(_U64.unpack(value)[0])


# --------------------------------------------------------------------------- entries


def _blob(out: list[bytes], label: str, value: bytes) -> None:
    if not isinstance(value, bytes):
        raise TypeError(f"{label} must be bytes, got {type(value).__name__}")
    out.append(_U32.pack(len(value)))
    out.append(value)


def _text(out: list[bytes], label: str, value: str) -> None:
    if not isinstance(value, str):
        raise TypeError(f"{label} must be str, got {type(value).__name__}")
    _blob(out, label, value.encode("utf-8"))


def _int(out: list[bytes], fmt: struct.Struct, label: str, value: int) -> None:
    if not isinstance(value, int) or isinstance(value, bool):
        raise TypeError(f"{label} must be int, got {type(value).__name__}")
    try:
        out.append(fmt.pack(value))
    except struct.error as exc:
        raise ValueError(f"{label}={value} does not fit the view layout") from exc


def encode_entry(entry: ViewEntry) -> bytes:
    """The one canonical encoding of ``entry`` (layout 1)."""
    out: list[bytes] = [_U8.pack(ENTRY_LAYOUT)]
    _blob(out, "key_hash", entry.key_hash)
    _text(out, "namespace", entry.namespace)
    _text(out, "contract", entry.contract)
    _blob(out, "fingerprint", entry.fingerprint)
    _int(out, _I64, "version", entry.version)
    out.append(_U8.pack(_STATE_CODE[EntryState(entry.state)]))
    _blob(out, "ciphertext", entry.ciphertext)
    _blob(out, "nonce", entry.nonce)
    _text(out, "data_key_id", entry.data_key_id)
    _blob(out, "commitment", entry.commitment)
    _int(out, _I32, "aad_version", entry.aad_version)
    if entry.subject_hash is None:
        out.append(b"\0")
    else:
        out.append(b"\1")
        _blob(out, "subject_hash", entry.subject_hash)
    _text(out, "classification", entry.classification)
    _int(out, _I64, "written_at_us", entry.written_at_us)
    if entry.ttl_ms is None:
        out.append(b"\0")
    else:
        out.append(b"\1")
        _int(out, _I64, "ttl_ms", entry.ttl_ms)
    _int(out, _I64, "state_changed_at_us", entry.state_changed_at_us)
    _text(out, "state_reason", entry.state_reason)
    _text(out, "authority", entry.authority)
    _blob(out, "event_hash", entry.event_hash)
    _text(out, "producer_id", entry.producer_id)
    _int(out, _I64, "seal_seq", entry.seal_seq)
    return b"".join(out)


class _Reader:
    """A strict cursor: every read is bounds-checked against the record."""

    __slots__ = ("_buf", "_key", "_pos")

    def __init__(self, key: bytes, buf: bytes) -> None:
        self._key = key
        self._buf = buf
        self._pos = 0

    def _take(self, n: int) -> bytes:
        end = self._pos + n
        if end > len(self._buf):
            raise ViewCorruptError(self._key, f"truncated at byte {self._pos}")
        chunk = self._buf[self._pos : end]
        self._pos = end
        return chunk

    def u8(self) -> int:
        return int(self._take(1)[0])

    def i32(self) -> int:
        return int(_I32.unpack(self._take(4))[0])

    def i64(self) -> int:
        return int(_I64.unpack(self._take(8))[0])

    def blob(self) -> bytes:
        return self._take(_U32.unpack(self._take(4))[0])

    def text(self) -> str:
        raw = self.blob()
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise ViewCorruptError(self._key, f"invalid UTF-8 at byte {self._pos}") from exc

    def present(self) -> bool:
        tag = self.u8()
        if tag > 1:
            raise ViewCorruptError(self._key, f"optional tag {tag} at byte {self._pos - 1}")
        return tag == 1

    def state(self) -> EntryState:
        code = self.u8()
        if code not in _CODE_STATE:
            raise ViewCorruptError(self._key, f"unknown state code {code}")
        return _CODE_STATE[code]

    def end(self) -> None:
        if self._pos != len(self._buf):
            raise ViewCorruptError(self._key, f"{len(self._buf) - self._pos} trailing bytes")


def decode_entry(key: bytes, value: bytes) -> ViewEntry:
    """Decode an entry stored under ``key``; any deviation is corruption."""
    r = _Reader(key, value)
    layout = r.u8()
    if layout != ENTRY_LAYOUT:
        raise ViewCorruptError(key, f"entry layout {layout}, expected {ENTRY_LAYOUT}")
    entry = ViewEntry(
        key_hash=r.blob(),
        namespace=r.text(),
        contract=r.text(),
        fingerprint=r.blob(),
        version=r.i64(),
        state=r.state(),
        ciphertext=r.blob(),
        nonce=r.blob(),
        data_key_id=r.text(),
        commitment=r.blob(),
        aad_version=r.i32(),
        subject_hash=r.blob() if r.present() else None,
        classification=r.text(),
        written_at_us=r.i64(),
        ttl_ms=r.i64() if r.present() else None,
        state_changed_at_us=r.i64(),
        state_reason=r.text(),
        authority=r.text(),
        event_hash=r.blob(),
        producer_id=r.text(),
        seal_seq=r.i64(),
    )
    r.end()
    return entry
