"""Hand-built verified records, a real signer (real PQ keys) and exports of them."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pytest

from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.ledger.registration import registration_payload, revocation_payload
from cachet.materializers.evidence import (
    Attestation,
    EvidenceRecord,
    ExportResult,
    SealProof,
    VerificationSummary,
    Window,
    export_examination,
)
from cachet.schemas.events import Event, EventType, SealRef
from cachet.topics import Topic

T0 = 1_790_000_000_000_000  # 2026-09-21, µs
SEC = 1_000_000
EXPORTER = "exporter-1"


def h(label: str) -> bytes:
    return hashlib.sha3_256(label.encode()).digest()


def contract_json(name: str, **finra: Any) -> str:
    doc = {
        "name": name,
        "max_staleness_ms": 1000,
        "regulatory_classification": None,
        "books_and_records_category": None,
        "supervisory_review": False,
        "examination_export_format": None,
        **finra,
    }
    return json.dumps(doc, sort_keys=True, separators=(",", ":"))


@dataclass
class Log:
    """A verified log built by hand: each call adds one record at time ``at``."""

    records: list[EvidenceRecord] = field(default_factory=list)
    refused: int = 0
    _seq: int = 0

    def add(
        self, kind: EventType, payload: dict[str, Any], at: int, topic: Topic
    ) -> EvidenceRecord:
        self._seq += 1
        anchor_signed = kind in (
            EventType.SIGNING_KEY_REGISTERED,
            EventType.SIGNING_KEY_ROTATED,
            EventType.SIGNING_KEY_REVOKED,
        )
        event = Event(
            type=kind,
            payload=payload,
            event_id=f"0190-{self._seq:04d}",
            occurred_at_us=at,
            producer_id="node-a@1" if not anchor_signed else "keys-cli",
            producer_seq=self._seq,
            seal_ref=None if anchor_signed else SealRef(self._seq, 0),
        )
        record = EvidenceRecord(
            event=event,
            topic=topic,
            partition=0,
            offset=self._seq,
            raw=b"raw:" + event.event_id.encode(),
            attestation=Attestation.ANCHOR_SIGNED if anchor_signed else Attestation.SEALED,
            seal=None
            if anchor_signed
            else SealProof("node-a@1", self._seq, 0, "ks-node-a", at + 5, h(f"root{self._seq}")),
        )
        self.records.append(record)
        return record

    def contract(self, name: str, at: int, **finra: Any) -> None:
        text = contract_json(name, **finra)
        self.add(
            EventType.CONTRACT_DEFINED,
            {"name": name, "definition_json": text, "definition_hash": h(text)},
            at,
            Topic.CONTROL,
        )

    def write(self, key: str, contract: str, version: int, at: int) -> None:
        self.add(
            EventType.CACHE_WRITTEN,
            {
                "key_hash": h(key),
                "namespace": "quotes",
                "contract": contract,
                "fingerprint": h(f"fp:{key}:{version}"),
                "version": version,
                "value": {
                    "ciphertext": b"\x01" * 40,
                    "nonce": bytes(12),
                    "data_key_id": "ns:quotes",
                    "commitment": h(f"c:{key}"),
                    "aad_version": 1,
                },
                "subject_hash": None,
                "classification": "financial",
                "ttl_ms": None,
                "prev_event_hash": None,
            },
            at,
            Topic.ENTRIES,
        )

    def transition(self, key: str, version: int, to: str, at: int, role: str = "owner") -> None:
        self.add(
            EventType.STATE_TRANSITIONED,
            {
                "key_hash": h(key),
                "namespace": "quotes",
                "version": version,
                "from_state": "ACTIVE",
                "to_state": to,
                "authority": {"kind": "KEY", "key_id": "ks-node-a", "role": role},
                "reason": "test",
                "prev_event_hash": h(f"prev:{key}:{version}"),
            },
            at,
            Topic.ENTRIES,
        )

    def read(
        self,
        key: str,
        contract: str,
        at: int,
        *,
        headroom: int | None = 500,
        reason: str = "served",
        role: str = "owner",
    ) -> None:
        hit = reason == "served"
        self.add(
            EventType.CACHE_READ,
            {
                "key_hash": h(key),
                "namespace": "quotes",
                "contract": contract,
                "outcome": "HIT" if hit else "MISS",
                "reason": reason,
                "fingerprint": h(f"fp:{key}:1") if hit else None,
                "version": 1 if hit else None,
                "freshness": {
                    "age_ms": 1000 - headroom - 5,
                    "max_staleness_ms": 1000,
                    "headroom_ms": headroom,
                    "view_lag_ms": 5,
                }
                if headroom is not None
                else None,
                "reader_role": role,
                "node_id": "node-a",
            },
            at,
            Topic.READS,
        )

    def violation(self, key: str, contract: str, at: int) -> None:
        self.add(
            EventType.CONTRACT_VIOLATION,
            {
                "key_hash": h(key),
                "namespace": "quotes",
                "contract": contract,
                "reason": "stale",
                "detail": "age 1450 ms exceeds max staleness 1000 ms",
                "node_id": "node-a",
            },
            at,
            Topic.ALERTS,
        )

    def registry(self, kind: EventType, payload: dict[str, Any], at: int) -> None:
        self.add(kind, payload, at, Topic.CONTROL)


def batched_reads(records: list[EvidenceRecord]) -> list[EvidenceRecord]:
    """The same log as a v4 node writes it: the CacheRead events of one
    moment become one CacheReadBatch (its reads in log order) where the
    first of them was; every other record unchanged."""
    out: list[EvidenceRecord] = []
    batches: dict[int, int] = {}  # event time -> its batch's position in ``out``
    for record in records:
        event = record.event
        if event.type is not EventType.CACHE_READ:
            out.append(record)
            continue
        at = batches.setdefault(event.occurred_at_us, len(out))
        if at == len(out):
            batch = replace(
                event,
                type=EventType.CACHE_READ_BATCH,
                payload={"node_id": event.payload["node_id"], "reads": []},
                event_id=event.event_id + "-batch",
            )
            out.append(replace(record, event=batch, raw=b"raw:" + batch.event_id.encode()))
        out[at].event.payload["reads"].append(event.payload)
    return out


class ListSource:
    """An EvidenceSource over hand-built records."""

    def __init__(self, records: list[EvidenceRecord], refused: int = 0) -> None:
        self._records = records
        self._summary = VerificationSummary("hand-built")
        self._refused = refused

    @property
    def summary(self) -> VerificationSummary:
        return self._summary

    def records(self) -> Iterator[EvidenceRecord]:
        from cachet.materializers.evidence.records import RefusedRecord

        for r in self._records:
            self._summary.verified += 1
            yield r
        for i in range(self._refused):
            self._summary.refused.append(RefusedRecord("leaf_mismatch", "test", "t.reads", 0, i))


@pytest.fixture(scope="session")
def anchor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def rogue_anchor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def exporter_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="session")
def other_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture
def anchor(anchor_keys: PrivateKeySet) -> KeySet:
    return anchor_keys.public()


def sample_log(anchor_keys: PrivateKeySet, exporter_keys: PrivateKeySet, **finra: Any) -> Log:
    """Two contracts, three keys of ``quotes``: reads, a violation, a revoke, key events."""
    log = Log()
    log.registry(
        EventType.SIGNING_KEY_REGISTERED,
        registration_payload(EXPORTER, exporter_keys.public(), 0, anchor_keys),
        T0 - 100 * SEC,
    )
    log.registry(
        EventType.SIGNING_KEY_REVOKED,
        revocation_payload("old-node", "ks-old", T0 - 50 * SEC, "key-compromise", anchor_keys),
        T0 - 50 * SEC,
    )
    log.contract("quotes", T0 - 60 * SEC, max_staleness_ms=2000)  # superseded before the window
    log.contract("quotes", T0 - 10 * SEC, **finra)  # in force when the window opens
    log.contract("other", T0 - 10 * SEC)
    log.write("AAPL", "quotes", 1, T0 - 5 * SEC)  # before the window: attributes later events
    log.write("MSFT", "quotes", 1, T0 + 1 * SEC)
    log.write("IBM", "quotes", 1, T0 + 1 * SEC)
    log.write("ZZZ", "other", 1, T0 + 1 * SEC)
    for i in range(3):
        log.read("AAPL", "quotes", T0 + (2 + i) * SEC, headroom=600 - 100 * i)
        log.read("MSFT", "quotes", T0 + (2 + i) * SEC, headroom=300 + 50 * i, role="regulator")
    log.read("IBM", "quotes", T0 + 3 * SEC, headroom=700)
    log.read("ZZZ", "other", T0 + 3 * SEC)
    log.read("NOPE", "quotes", T0 + 4 * SEC, headroom=None, reason="not_found")
    log.read("AAPL", "quotes", T0 + 6 * SEC, headroom=None, reason="stale")
    log.violation("AAPL", "quotes", T0 + 6 * SEC)
    log.violation("ZZZ", "other", T0 + 6 * SEC)
    log.transition("AAPL", 1, "REVOKED", T0 + 7 * SEC)
    log.transition("ZZZ", 1, "REVOKED", T0 + 7 * SEC)
    log.read("AAPL", "quotes", T0 + 200 * SEC, headroom=900)  # after the window
    return log


WINDOW = Window(T0, T0 + 100 * SEC)


@pytest.fixture
def make_export(
    tmp_path: Path, anchor_keys: PrivateKeySet, exporter_keys: PrivateKeySet
) -> Callable[..., ExportResult]:
    def make(name: str = "exam", refused: int = 0, **finra: Any) -> ExportResult:
        log = sample_log(anchor_keys, exporter_keys, **finra)
        return export_examination(
            ListSource(log.records, refused),
            contract="quotes",
            window=WINDOW,
            out=tmp_path / name,
            identity=EXPORTER,
            keys=exporter_keys,
            anchor=anchor_keys.public(),
            clock=lambda: T0 + 500 * SEC,
        )

    return make
