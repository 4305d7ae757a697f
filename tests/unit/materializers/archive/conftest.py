"""Hand-built archives with real seals (cachet/crypto/seal.py), no broker.

:class:`LogBuilder` plays the log: a sealing producer in memory writes
events and their seals (real ML-DSA, FN-DSA and SLH-DSA signatures) at
dense offsets, the trust anchor registers the producers on ``control``, and
:meth:`LogBuilder.archive` writes the records into hash-chained segments,
each anchored by a sealed ArchiveSegmentSealed the way the archive consumer
does it.
"""

from __future__ import annotations

import os
import shutil
import stat
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.seal import PrivateKeySet, SealHeader, leaf_topics_digest, seal_hash, sign_header
from cachet.ledger.identity import GENESIS_SEAL_HASH
from cachet.ledger.registration import registration_payload
from cachet.materializers.archive.archiver import anchor_of
from cachet.materializers.archive.segment import (
    ZERO_HASH,
    ArchivedHeader,
    ArchivedRecord,
    ArchivedSealRef,
    SegmentInfo,
)
from cachet.materializers.archive.writer import SegmentWriter
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, SealRef, new_event
from cachet.topics import Topic, TopicNames

NAMES = TopicNames("t.")
NODE = "node-a"
ARCHIVER = "archiver-1"
ARCHIVE_ID = "a" * 32
T0 = 1_700_000_000_000_000


@pytest.fixture(scope="session")
def anchor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture(scope="session")
def node_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def archiver_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def codec() -> EventCodec:
    return EventCodec()


@dataclass
class _Signer:
    identity: str
    keys: PrivateKeySet
    seq: int = 0
    seal_seq: int = 0
    prev: bytes = GENESIS_SEAL_HASH

    @property
    def pid(self) -> str:
        return f"{self.identity}@01"


@dataclass
class LogBuilder:
    codec: EventCodec
    anchor: PrivateKeySet
    signers: dict[str, _Signer] = field(default_factory=dict)
    offsets: dict[tuple[str, int], int] = field(default_factory=dict)
    pending: list[ArchivedRecord] = field(default_factory=list)
    at_ms: int = T0 // 1000

    def _record(self, topic: Topic, value: bytes, seal: ArchivedSealRef | None, key: bytes | None = None) -> None:  # fmt: skip
        name = NAMES(topic)
        off = self.offsets.get((name, 0), 0)
        self.offsets[(name, 0)] = off + 1
        self.at_ms += 1
        self.pending.append(
            ArchivedRecord(
                name,
                0,
                off,
                self.at_ms,
                key,
                value,
                (ArchivedHeader("trace", b"trace-%s-%08d" % (topic.value.encode(), off)),),
                seal,
            )
        )

    def register(self, identity: str, keys: PrivateKeySet) -> None:
        self.signers[identity] = _Signer(identity, keys)
        payload = registration_payload(identity, keys.public(), 0, self.anchor)
        event = new_event(EventType.SIGNING_KEY_REGISTERED, payload, producer_id="anchor", producer_seq=0)  # fmt: skip
        self._record(Topic.CONTROL, self.codec.encode(event), None, identity.encode())

    def emit(self, identity: str, items: Sequence[tuple[EventType, dict, Topic]]) -> None:
        """Events of one identity, then one seal over them."""
        s = self.signers[identity]
        raws, topics, first = [], [], s.seq
        for i, (etype, payload, topic) in enumerate(items):
            event = new_event(etype, payload, producer_id=s.pid, producer_seq=s.seq, seal_ref=SealRef(s.seal_seq, i))  # fmt: skip
            raw = self.codec.encode(event)
            raws.append(raw)
            topics.append(topic.value)
            self._record(topic, raw, ArchivedSealRef(s.pid, s.seal_seq, i))
            s.seq += 1
        leaves = [leaf_hash(r) for r in raws]
        header = SealHeader(
            producer_id=s.pid,
            seal_seq=s.seal_seq,
            tree_size=len(leaves),
            first_producer_seq=first,
            merkle_root=root_from_leaf_hashes(leaves),
            prev_seal_hash=s.prev,
            key_set_id=s.keys.key_set_id,
            sealed_at_us=T0,
            leaf_topics_digest=leaf_topics_digest(topics),
        )
        sigs = list(sign_header(header, s.keys))
        payload = {
            "producer_id": s.pid,
            "seal_seq": s.seal_seq,
            "prev_seal_hash": header.prev_seal_hash,
            "merkle_root": header.merkle_root,
            "tree_size": header.tree_size,
            "first_producer_seq": first,
            "leaf_hashes": leaves,
            "leaf_topics": topics,
            "key_set_id": s.keys.key_set_id,
            "signatures": [
                {"algorithm": x.algorithm, "key_id": x.key_id, "signature": x.signature}
                for x in sigs
            ],  # fmt: skip
            "sealed_at_us": T0,
        }
        seal = new_event(EventType.SEAL, payload, producer_id=s.pid, producer_seq=s.seal_seq)
        self._record(Topic.SEALS, self.codec.encode(seal), None)
        s.prev = seal_hash(header, sigs)
        s.seal_seq += 1

    def writes(self, n: int) -> None:
        items = []
        for i in range(n):
            payload = dict(SAMPLE_PAYLOADS[EventType.CACHE_WRITTEN])
            payload["key_hash"] = (self.at_ms + i).to_bytes(32, "big")
            items.append((EventType.CACHE_WRITTEN, payload, Topic.ENTRIES))
        self.emit(NODE, items)

    def close_segment(self, directory: Path, seq: int, prev: bytes, starts: dict, *, anchor: bool = True, backup: Path | None = None, signer: str = ARCHIVER) -> SegmentInfo:  # fmt: skip
        writer = SegmentWriter(directory, archive_id=ARCHIVE_ID, seq=seq, prev_hash=prev, start_offsets=starts, backup_dir=backup)  # fmt: skip
        for rec in self.pending:
            writer.append(rec)
            starts[(rec.topic, rec.partition)] = rec.offset + 1
        self.pending = []
        info = writer.close()
        if anchor:
            a = anchor_of(info, T0)
            self.emit(signer, [(EventType.ARCHIVE_SEGMENT_SEALED, a.to_avro(), Topic.ARCHIVE)])
        return info


def build_archive(
    directory: Path,
    codec: EventCodec,
    anchor: PrivateKeySet,
    node_keys: PrivateKeySet,
    archiver_keys: PrivateKeySet,
    *,
    segments: int = 4,
    backup: Path | None = None,
    unanchored: frozenset[int] = frozenset(),
    anchor_signer: str = ARCHIVER,
) -> list[SegmentInfo]:
    """``segments`` segments; each holds two sealed batches of writes and the
    anchor of the segment before it (the last one's anchor is not archived)."""
    log = LogBuilder(codec, anchor)
    log.register(NODE, node_keys)
    log.register(ARCHIVER, archiver_keys)
    # Every partition the archive reads starts at 0.
    starts: dict[tuple[str, int], int] = {(NAMES(t), 0): 0 for t in Topic}
    infos: list[SegmentInfo] = []
    prev = ZERO_HASH
    for seq in range(segments):
        log.writes(2)
        log.writes(1)
        info = log.close_segment(directory, seq, prev, starts, backup=backup, anchor=seq not in unanchored, signer=anchor_signer)  # fmt: skip
        infos.append(info)
        prev = info.hash
    return infos


@pytest.fixture(scope="session")
def pristine(tmp_path_factory, codec, anchor_keys, node_keys, archiver_keys) -> Path:
    d = tmp_path_factory.mktemp("archive")
    build_archive(d / "primary", codec, anchor_keys, node_keys, archiver_keys, backup=d / "backup")
    return d


@pytest.fixture
def archive(pristine: Path, tmp_path: Path) -> Path:
    """A writable copy of the pristine archive (primary/ and backup/)."""
    out = tmp_path / "copy"
    shutil.copytree(pristine, out)
    for p in out.rglob("*.avro"):
        os.chmod(p, stat.S_IRUSR | stat.S_IWUSR)
    return out
