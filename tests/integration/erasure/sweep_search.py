"""Every byte a deployment holds, and every key it still holds: what the
erasure sweep searches after an erasure."""

from __future__ import annotations

import base64
import sqlite3
from typing import Any

from confluent_kafka import Consumer

from cachet.crypto.aead import AeadError, DataKey, associated_data, open_value
from cachet.crypto.vault.base import open_wrapped
from cachet.crypto.vault.open import vault_kek
from cachet.kafka.settings import consumer_settings
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic
from tests.integration.cache.logtools import decode, read_topic

from .sweep_deployment import Deployment


def patterns(marker: bytes) -> dict[str, bytes]:
    """The marker as it could leak: raw, hex, and base64 at all three alignments
    (a base64 text of a longer value holds one of these)."""
    out = {"raw": marker, "hex": marker.hex().encode()}
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + marker)
        # Only the characters made of marker bits alone: from the first whole
        # 6-bit group after the padding bytes, dropping the last (padded) quad.
        start = (shift * 8 + 5) // 6
        out[f"base64+{shift}"] = encoded[start : len(encoded) - 4]
    return out


def _topic_records(d: Deployment) -> list[tuple[str, Any]]:
    """Every record of every topic of this deployment, with its topic name."""
    c = Consumer(consumer_settings(d.servers))
    try:
        topics = sorted(t for t in c.list_topics(timeout=10).topics if t.startswith(d.names.prefix))
    finally:
        c.close()
    assert len(topics) >= len(Topic) - 1, topics
    return [(t, r) for t in topics for r in read_topic(d.servers, t)]


def held_bytes(d: Deployment) -> dict[str, bytes]:
    """Every byte the deployment holds, by where: each topic record's key,
    value and headers; every file under the deployment's root (node and
    processor RocksDB directories, the vault, the keystore, every log);
    PostgreSQL's data directory when the vault is there."""
    out: dict[str, bytes] = {}
    for topic, r in _topic_records(d):
        parts = [r.key or b"", r.value] + [k.encode() + v for k, v in r.headers]
        out[f"{topic}[{r.partition}]@{r.offset}"] = b"\0".join(parts)
    roots = [d.root] + ([d.pg_data_dir] if d.pg_data_dir else [])
    for root in roots:
        for path in root.rglob("*"):
            if path.is_file() and not path.is_symlink():
                try:
                    out[str(path)] = path.read_bytes()
                except PermissionError:  # postmaster.pid and friends of another uid
                    continue
    return out


def vault_rows(d: Deployment, pg_dsn: str | None) -> list[tuple[str, bytes]]:
    """(key id, wrapped key) of every key the vault still holds."""
    if pg_dsn is None:
        with sqlite3.connect(d.root / "vault" / "vault.sqlite") as conn:
            rows = conn.execute("SELECT key_id, wrapped FROM keys").fetchall()
    else:
        import psycopg

        with psycopg.connect(pg_dsn) as conn:
            rows = conn.execute("SELECT key_id, wrapped FROM cachet_vault_keys").fetchall()
    return [(key_id, bytes(wrapped)) for key_id, wrapped in rows]


def unwrapped(d: Deployment, rows: list[tuple[str, bytes]]) -> list[DataKey]:
    """The keys of ``rows`` unwrapped under the deployment's vault KEK."""
    kek = vault_kek(d.keystore())
    return [open_wrapped(kek, key_id, wrapped) for key_id, wrapped in rows]


def age_out_wal(dsn: str) -> None:
    """What docs/key-vault.md asks of a PostgreSQL operator within the erasure
    deadline: the write-ahead log that held the inserted key rows aged out.
    Here: segments are removed, not recycled (a recycled segment keeps its
    old bytes), and the log is switched and checkpointed past them; the
    checkpoint also writes the vacuumed table's pages to disk."""
    import psycopg

    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET wal_recycle = off")
        conn.execute("SELECT pg_reload_conf()")
        for _ in range(3):
            conn.execute("SELECT pg_switch_wal()")
            conn.execute("CHECKPOINT")


def keystore_keys(d: Deployment) -> list[DataKey]:
    store = d.keystore()
    # The keystore has no public listing of its data keys: read its ids here.
    ids = list(store._body["data_keys"])  # noqa: SLF001 - test introspection
    return [store.data_key(key_id) for key_id in ids]


def subject_ciphertexts(d: Deployment, subject_hash: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(nonce, ciphertext, associated data) of every CacheWritten of the subject."""
    out = []
    for _, e in decode(read_topic(d.servers, d.names(Topic.ENTRIES)), EventCodec()):
        p = e.payload
        if e.type is EventType.CACHE_WRITTEN and p.get("subject_hash") == subject_hash:
            v = p["value"]
            aad = associated_data(p["key_hash"], p["fingerprint"], p["version"])
            out.append((v["nonce"], v["ciphertext"], aad))
    return out


def decrypted(ciphertexts: list[tuple[bytes, bytes, bytes]], keys: list[DataKey]) -> int:
    n = 0
    for nonce, ciphertext, aad in ciphertexts:
        for key in keys:
            try:
                open_value(key, nonce, ciphertext, aad)
            except AeadError:
                continue
            n += 1
            break
    return n


def completed(d: Deployment, request_id: str) -> bool:
    return any(
        e.type is EventType.ERASURE_COMPLETED and e.payload["request_id"] == request_id
        for _, e in decode(read_topic(d.servers, d.names(Topic.ERASURE)), EventCodec())
    )


def memory_hits(pid: int, needles: dict[str, bytes]) -> list[str]:
    """Which needles are somewhere in the readable memory of process ``pid``
    (a child of this process: /proc/PID/mem is readable to its parent)."""
    hits: set[str] = set()
    with open(f"/proc/{pid}/maps") as maps, open(f"/proc/{pid}/mem", "rb", 0) as mem:
        for line in maps:
            address, perms = line.split()[:2]
            if not perms.startswith("r"):
                continue
            start, end = (int(x, 16) for x in address.split("-"))
            try:
                mem.seek(start)
                region = mem.read(end - start)
            except (OSError, ValueError, OverflowError):
                continue  # [vvar] and other regions that cannot be read
            hits.update(what for what, needle in needles.items() if needle in region)
    return sorted(hits)
