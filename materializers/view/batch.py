"""A batch of changes to the live view, held in memory until committed.

Nothing a :class:`ViewBatch` records touches RocksDB: :meth:`ViewStore.commit
<cachet.materializers.view.store.ViewStore.commit>` writes it all as one synced
WriteBatch, or the batch is dropped and the view on disk never saw it.
"""

from __future__ import annotations

import dataclasses
import enum
import hmac

from rocksdict import WriteBatch

from cachet.materializers.view import codec
from cachet.materializers.view.entry import EntryState, ViewEntry
from cachet.materializers.view.errors import ViewBatchError, ViewCorruptError
from cachet.materializers.view.rows import ViewRows

__all__ = ["FORMAT_META", "ViewBatch", "decode_current", "decode_history"]

# The meta row holding the on-disk format version; reserved for the store.
FORMAT_META = "format_version"


class _BatchState(enum.Enum):
    OPEN = "open"
    COMMITTED = "committed"


@dataclasses.dataclass(slots=True)
class _Versions:
    """Every stored version of one key: the current one and older ones, newest first."""

    current: ViewEntry | None
    history: list[ViewEntry]

    def subjects(self) -> set[bytes]:
        found = {e.subject_hash for e in self.history if e.subject_hash is not None}
        if self.current is not None and self.current.subject_hash is not None:
            found.add(self.current.subject_hash)
        return found


def decode_current(key: bytes, value: bytes) -> ViewEntry:
    entry = codec.decode_entry(key, value)
    # Defends against a row copied under another key (or a codec bug):
    # the entry must describe the key it is stored under.
    if not hmac.compare_digest(codec.current_key(entry.key_hash), key):
        raise ViewCorruptError(key, "entry key_hash does not match its row key")
    return entry


def decode_history(key: bytes, value: bytes) -> ViewEntry:
    entry = codec.decode_entry(key, value)
    if not hmac.compare_digest(codec.history_key(entry.key_hash, entry.version), key):
        raise ViewCorruptError(key, "history entry does not match its row key")
    return entry


class ViewBatch:
    """Changes to the view, applied atomically by :meth:`ViewStore.commit`.

    Reads through the batch (:meth:`current`, :meth:`history`, ...) see the
    batch's own uncommitted changes over the committed view, so several
    events for one key in one batch compose as if committed one by one.
    """

    __slots__ = ("_base_seq", "_groups", "_owner", "_pending", "_rows", "_state")

    def __init__(self, rows: ViewRows, base_seq: int, owner: object) -> None:
        self._rows = rows
        self._owner = owner  # the ViewStore that may commit this batch
        self._base_seq = base_seq  # the DB sequence number the reads started from
        # key -> new value, or None for a delete. Only ever in memory.
        self._pending: dict[bytes, bytes | None] = {}
        # scan prefix (one key's history, one subject's index) -> its pending
        # keys, so a read inside a big batch does not walk every pending row.
        self._groups: dict[bytes, set[bytes]] = {}
        self._state = _BatchState.OPEN

    # ----------------------------------------------------------------- reads

    def _get(self, key: bytes) -> bytes | None:
        if key in self._pending:
            return self._pending[key]
        return self._rows.get(key)

    def _scan(self, prefix: bytes) -> list[tuple[bytes, bytes]]:
        rows = dict(self._rows.scan(prefix))
        for key in self._groups.get(prefix, ()):
            value = self._pending[key]
            if value is None:
                rows.pop(key, None)
            else:
                rows[key] = value
        return sorted(rows.items())

    def _write(self, key: bytes, value: bytes | None, group: bytes | None = None) -> None:
        self._pending[key] = value
        if group is not None:
            self._groups.setdefault(group, set()).add(key)

    def current(self, key_hash: bytes) -> ViewEntry | None:
        """The latest version of ``key_hash`` as this batch would leave it."""
        key = codec.current_key(key_hash)
        raw = self._get(key)
        return None if raw is None else decode_current(key, raw)

    def history(self, key_hash: bytes) -> list[ViewEntry]:
        """Older versions of ``key_hash``, newest first, as this batch would leave them."""
        return [decode_history(k, v) for k, v in self._scan(codec.history_prefix(key_hash))]

    def keys_of_subject(self, subject_hash: bytes) -> list[bytes]:
        prefix = codec.subject_prefix(subject_hash)
        return [codec.parse_subject_key(k, prefix) for k, _ in self._scan(prefix)]

    def offset(self, topic: str, partition: int) -> int | None:
        key = codec.offset_key(topic, partition)
        raw = self._get(key)
        return None if raw is None else codec.decode_offset(key, raw)

    def get_meta(self, name: str) -> bytes | None:
        return self._get(codec.meta_key(name))

    # ---------------------------------------------------------------- writes

    def _check_open(self) -> None:
        if self._state is not _BatchState.OPEN:
            raise ViewBatchError("this batch was already committed; begin a new one")

    def _load(self, key_hash: bytes) -> _Versions:
        return _Versions(self.current(key_hash), self.history(key_hash))

    def _store_versions(self, key_hash: bytes, before: _Versions, after: _Versions) -> None:
        """Write the difference between two states of one key, subject index included."""
        if after.current != before.current:
            value = None if after.current is None else codec.encode_entry(after.current)
            self._write(codec.current_key(key_hash), value)
        group = codec.history_prefix(key_hash)
        old = {e.version: e for e in before.history}
        new = {e.version: e for e in after.history}
        for version in old.keys() - new.keys():
            self._write(codec.history_key(key_hash, version), None, group)
        for version, entry in new.items():
            if old.get(version) != entry:
                self._write(codec.history_key(key_hash, version), codec.encode_entry(entry), group)
        # The index lists a key under a subject while any stored version
        # (current or history) carries that subject: erasure must find every
        # ciphertext of the subject, old versions included.
        had, has = before.subjects(), after.subjects()
        for subject in had - has:
            self._write(codec.subject_key(subject, key_hash), None, codec.subject_prefix(subject))
        for subject in has - had:
            self._write(codec.subject_key(subject, key_hash), b"", codec.subject_prefix(subject))

    def put(self, entry: ViewEntry, *, history_depth: int) -> None:
        """Store a version of a key (from a CacheWritten).

        A newer version becomes current and the previous current moves to
        history; the same version replaces itself (a redelivery); an older
        version than the current one (out of order) lands in history. History
        keeps the ``history_depth`` newest older versions.
        """
        self._check_open()
        if history_depth < 0:
            raise ValueError(f"history_depth must be >= 0, got {history_depth}")
        # Refuse an entry the layout cannot hold now, before any row changes.
        codec.encode_entry(entry)
        codec.history_key(entry.key_hash, entry.version)
        if entry.subject_hash is not None:
            codec.subject_prefix(entry.subject_hash)
        key_hash = entry.key_hash
        before = self._load(key_hash)
        cur, hist = before.current, [e for e in before.history if e.version != entry.version]
        if cur is None or cur.version == entry.version:
            cur = entry
        elif cur.version < entry.version:
            hist.append(cur)
            cur = entry
        else:
            hist.append(entry)
        hist.sort(key=lambda e: e.version, reverse=True)
        self._store_versions(key_hash, before, _Versions(cur, hist[:history_depth]))

    def transition(
        self,
        key_hash: bytes,
        version: int,
        state: EntryState,
        *,
        at_us: int,
        reason: str,
        authority: str,
        event_hash: bytes,
        producer_id: str,
        seal_seq: int,
    ) -> ViewEntry | None:
        """Change the state of one version of a key (from a StateTransitioned).

        Applies to the current entry if its version matches, else to that
        version in history; returns the changed entry, or None when the view
        holds no such version. The key's hash-chain head (``event_hash``,
        ``producer_id``, ``seal_seq``) moves on the current entry either way,
        since the transition is now the last event applied to the key.
        Whether the transition is allowed is the caller's rule, not the store's.
        """
        self._check_open()
        state = EntryState(state)
        before = self._load(key_hash)
        cur, hist = before.current, list(before.history)
        if cur is None:
            return None
        changed: ViewEntry | None = None
        if cur.version == version:
            changed = cur = dataclasses.replace(
                cur,
                state=state,
                state_changed_at_us=at_us,
                state_reason=reason,
                authority=authority,
                event_hash=event_hash,
                producer_id=producer_id,
                seal_seq=seal_seq,
            )
        else:
            for i, old in enumerate(hist):
                if old.version == version:
                    changed = hist[i] = dataclasses.replace(
                        old,
                        state=state,
                        state_changed_at_us=at_us,
                        state_reason=reason,
                        authority=authority,
                        event_hash=event_hash,
                        producer_id=producer_id,
                        seal_seq=seal_seq,
                    )
                    cur = dataclasses.replace(
                        cur, event_hash=event_hash, producer_id=producer_id, seal_seq=seal_seq
                    )
                    break
        if changed is None:
            return None
        codec.encode_entry(changed)
        self._store_versions(key_hash, before, _Versions(cur, hist))
        return changed

    def delete_subject_index(self, subject_hash: bytes) -> list[bytes]:
        """Drop every index row of a subject (after erasure); returns the keys it listed."""
        self._check_open()
        prefix = codec.subject_prefix(subject_hash)
        rows = self._scan(prefix)
        for key, _ in rows:
            self._write(key, None, prefix)
        return [codec.parse_subject_key(k, prefix) for k, _ in rows]

    def set_offset(self, topic: str, partition: int, next_offset: int) -> None:
        """Record the NEXT offset to read of a partition, committed with the changes."""
        self._check_open()
        self._pending[codec.offset_key(topic, partition)] = codec.encode_offset(next_offset)

    def put_meta(self, name: str, value: bytes) -> None:
        """Store node metadata (e.g. the log identity); not part of the state hash."""
        self._check_open()
        if name == FORMAT_META:
            raise ValueError(f"meta name {name!r} is reserved for the view format")
        if not isinstance(value, bytes):
            raise TypeError(f"meta value must be bytes, got {type(value).__name__}")
        self._pending[codec.meta_key(name)] = value

    def delete_meta(self, name: str) -> None:
        """Delete a node metadata row, committed with the changes."""
        self._check_open()
        if name == FORMAT_META:
            raise ValueError(f"meta name {name!r} is reserved for the view format")
        self._pending[codec.meta_key(name)] = None

    def __len__(self) -> int:
        """Number of rows this batch will write or delete."""
        return len(self._pending)

    def _seal(self) -> WriteBatch | None:
        """The RocksDB WriteBatch of every pending row (sorted), or None when empty.

        Called by the store's commit; the batch is then closed for good.
        """
        self._check_open()
        if not self._pending:
            return None
        wb = WriteBatch(raw_mode=True)
        for key in sorted(self._pending):
            value = self._pending[key]
            if value is None:
                wb.delete(key)
            else:
                wb.put(key, value)
        return wb

    def _mark_committed(self) -> None:
        self._state = _BatchState.COMMITTED
