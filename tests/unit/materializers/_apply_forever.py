"""Child process of the view kill test: applies a fixed sequence of batches.

``python _apply_forever.py DB_PATH TOTAL`` opens the view, resumes at the
committed offset n of ("t", 0), prints ``ready <n>`` and applies batches
n..TOTAL-1, one synced commit each, then prints ``done``. The parent kills it
with SIGKILL at random moments. Batch i is a pure function of i and of the
view as batches 0..i-1 left it, so a resumed run must reach the same state
as an uninterrupted one.
"""

from __future__ import annotations

import hashlib
import sys
from pathlib import Path

from cachet.materializers.view import EntryState, ViewBatch, ViewEntry, ViewStore

TOPIC = "t"
KEYS = 11
SUBJECTS = 4
HISTORY_DEPTH = 3
_T0 = 1_790_000_000_000_000


def _h(label: str) -> bytes:
    return hashlib.sha3_256(label.encode()).digest()


def key_hash(k: int) -> bytes:
    return _h(f"key:{k}")


def entry_for(i: int) -> ViewEntry:
    """The entry batch ``i`` writes: key i % KEYS, version i // KEYS + 1."""
    k = i % KEYS
    return ViewEntry(
        key_hash=key_hash(k),
        namespace=f"ns{k % 3}",
        contract="finra_quotes",
        fingerprint=_h(f"fp:{i}"),
        version=i // KEYS + 1,
        state=EntryState.ACTIVE,
        ciphertext=_h(f"ct:{i}") * (1 + i % 4),
        nonce=_h(f"nonce:{i}")[:12],
        data_key_id=f"dk-{k}",
        commitment=_h(f"commit:{i}"),
        aad_version=1,
        subject_hash=_h(f"subject:{i % SUBJECTS}") if i % 3 else None,
        classification="financial",
        written_at_us=_T0 + i,
        ttl_ms=30_000 if i % 2 else None,
        state_changed_at_us=_T0 + i,
        state_reason="",
        authority="",
        event_hash=_h(f"event:write:{i}"),
        producer_id="kill-test",
        seal_seq=i // 5,
    )


def apply_batch(batch: ViewBatch, i: int) -> None:
    """Batch i: a write, transitions that read the batch's own changes, offset i+1."""
    written = entry_for(i)
    batch.put(written, history_depth=HISTORY_DEPTH)
    if i % 2 == 0:
        # Expire the current version of another key (or this one: i*7 % 11
        # == i % 11 every 11th batch, which composes with the put above).
        target = key_hash((i * 7) % KEYS)
        cur = batch.current(target)
        if cur is not None:
            batch.transition(
                target,
                cur.version,
                EntryState.EXPIRED,
                at_us=_T0 + i,
                reason="ttl_elapsed",
                authority="SYSTEM_EXPIRY",
                event_hash=_h(f"event:expire:{i}"),
                producer_id="kill-test",
                seal_seq=i // 5,
            )
    if i % 5 == 0:
        hist = batch.history(written.key_hash)
        if hist:
            batch.transition(
                written.key_hash,
                hist[0].version,
                EntryState.SUPERSEDED,
                at_us=_T0 + i,
                reason=f"superseded_by_v{written.version}",
                authority="KEY:kill-key:OWNER",
                event_hash=_h(f"event:supersede:{i}"),
                producer_id="kill-test",
                seal_seq=i // 5,
            )
    if i % 50 == 49:
        batch.delete_subject_index(_h("subject:0"))
    batch.set_offset(TOPIC, 0, i + 1)


def run(path: Path, total: int) -> None:
    with ViewStore.open(path) as store:
        n = store.offsets().get((TOPIC, 0), 0)
        print(f"ready {n}", flush=True)
        for i in range(n, total):
            batch = store.begin()
            apply_batch(batch, i)
            store.commit(batch)
    print("done", flush=True)


if __name__ == "__main__":
    run(Path(sys.argv[1]), int(sys.argv[2]))
