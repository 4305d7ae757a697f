"""The tables behind the SOC 2 controls, over every contract of a window.

Event tables end with the provenance columns (:data:`~.tables.PROVENANCE`);
aggregates (reads by role, freshness per contract, transition counts) are
plain counts over the same verified events.
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from typing import Any

from cachet.materializers.evidence.history import History
from cachet.materializers.evidence.tables import PROVENANCE, ColumnType, Table, col, provenance
from cachet.schemas.payloads import TransitionAuthority

__all__ = [
    "alerts_table",
    "archive_segments_table",
    "authority_table",
    "contracts_table",
    "encrypted_writes_table",
    "freshness_table",
    "reads_by_role_table",
    "role_grants_table",
    "transition_counts_table",
    "violations_table",
]

S, L, B = ColumnType.STRING, ColumnType.LONG, ColumnType.BOOLEAN


def _authority(a: dict[str, Any]) -> str:
    return TransitionAuthority.from_avro(a).text()


def encrypted_writes_table(history: History) -> Table:
    rows = []
    for r in history.in_window(history.writes):
        p, v = r.event.payload, r.event.payload["value"]
        rows.append(
            (
                p["key_hash"].hex(),
                p["namespace"],
                p["contract"],
                p["version"],
                p["classification"],
                v["data_key_id"],
                v["aad_version"],
                len(v["ciphertext"]),
                len(v["nonce"]),
                v["commitment"].hex(),
                *provenance(r),
            )
        )
    columns = (
        col("key_hash", S),
        col("namespace", S),
        col("contract", S),
        col("version", L),
        col("classification", S),
        col("data_key_id", S, "the AES-256-GCM data key (not the key)"),
        col("aad_version", L, "associated-data layout binding key, fingerprint, version"),
        col("ciphertext_bytes", L),
        col("nonce_bytes", L),
        col("commitment", S, "keyed value commitment"),
    )
    return Table.of(
        "encrypted_writes",
        "Encrypted writes",
        "Every write: the value's ciphertext size, nonce size and data key id (never the value).",
        columns + PROVENANCE,
        rows,
    )


def role_grants_table(history: History) -> Table:
    rows = [
        (
            r.event.payload["principal"],
            r.event.payload["role"],
            r.event.payload.get("namespace"),
            r.event.payload["granted_by"],
            *provenance(r),
        )
        for r in history.role_grants
    ]
    columns = (
        col("principal", S),
        col("role", S),
        col("namespace", S, "null: every namespace", null=True),
        col("granted_by", S),
    )
    return Table.of(
        "role_grants",
        "Role grants",
        "Every RoleGranted up to the window's end.",
        columns + PROVENANCE,
        rows,
    )


def reads_by_role_table(history: History) -> Table:
    counts = Counter(
        (r.payload["reader_role"], r.payload["contract"], r.payload["outcome"], r.payload["reason"])
        for r in history.in_window(history.reads)
    )
    rows = [(*k, n) for k, n in sorted(counts.items())]
    columns = (
        col("reader_role", S),
        col("contract", S),
        col("outcome", S),
        col("reason", S),
        col("reads", L),
    )
    return Table.of(
        "reads_by_role",
        "Reads by role",
        "Reads in the window by reader role, contract, outcome and reason.",
        columns,
        rows,
    )


def authority_table(history: History) -> Table:
    counts = Counter(
        (_authority(r.event.payload["authority"]), r.event.payload["to_state"])
        for r in history.in_window(history.transitions)
    )
    rows = [(*k, n) for k, n in sorted(counts.items())]
    columns = (
        col("authority", S, "KEY:<key set>:<role> or SYSTEM_* rule"),
        col("to_state", S),
        col("transitions", L),
    )
    return Table.of(
        "transition_authorities",
        "Who changed entry states",
        "State transitions in the window by authority and target state.",
        columns,
        rows,
    )


def _percentile(values: list[int], q: float) -> int | None:
    if not values:
        return None
    ordered = sorted(values)
    # Nearest rank: the smallest value with at least q of the values at or below it.
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def freshness_table(history: History) -> Table:
    hits: dict[str, list[dict[str, Any]]] = defaultdict(list)
    misses: Counter[str] = Counter()
    for r in history.in_window(history.reads):
        p = r.payload
        if p["outcome"] == "HIT" and p.get("freshness"):
            hits[p["contract"]].append(p["freshness"])
        elif p["outcome"] != "HIT":
            misses[p["contract"]] += 1
    violations = Counter(r.event.payload["contract"] for r in history.in_window(history.violations))
    rows = []
    for contract in sorted({*hits, *misses, *violations}):
        proofs = hits[contract]
        ages = [f["age_ms"] for f in proofs]
        heads = [f["headroom_ms"] for f in proofs]
        lags = [f["view_lag_ms"] for f in proofs]
        rows.append(
            (
                contract,
                len(proofs),
                misses[contract],
                violations[contract],
                _percentile(ages, 0.5),
                _percentile(ages, 0.95),
                max(ages, default=None),
                min(heads, default=None),
                _percentile(heads, 0.5),
                max(lags, default=None),
                sum(1 for h in heads if h < 0),
            )
        )
    columns = (
        col("contract", S),
        col("hits_with_proof", L),
        col("misses", L),
        col("violations", L),
        col("age_ms_p50", L, null=True),
        col("age_ms_p95", L, null=True),
        col("age_ms_max", L, null=True),
        col("headroom_ms_min", L, null=True),
        col("headroom_ms_p50", L, null=True),
        col("view_lag_ms_max", L, null=True),
        col("hits_with_negative_headroom", L, "must be 0: a value past its bound is never served"),
    )
    return Table.of(
        "freshness_aggregates",
        "Freshness-proof aggregates",
        "Per contract: served reads and their freshness proofs, misses, violations.",
        columns,
        rows,
    )


def violations_table(history: History) -> Table:
    rows = [
        (
            r.event.payload["contract"],
            r.event.payload["reason"],
            r.event.payload["detail"],
            r.event.payload["key_hash"].hex(),
            r.event.payload["node_id"],
            *provenance(r),
        )
        for r in history.in_window(history.violations)
    ]
    columns = (
        col("contract", S),
        col("reason", S),
        col("detail", S),
        col("key_hash", S),
        col("node_id", S),
    )
    return Table.of(
        "violations",
        "Violation report",
        "Every ContractViolation in the window (the read missed).",
        columns + PROVENANCE,
        rows,
    )


def alerts_table(history: History) -> Table:
    rows = []
    for r in history.in_window(history.alerts):
        p = r.event.payload
        status = p.get("status") or p.get("kind") or "unsealed"
        detail = p.get("detail") or f"waited {p.get('waited_ms')} ms"
        rows.append(
            (
                r.event.type.value,
                str(status),
                str(detail),
                p["topic"],
                p["partition"],
                p["offset"],
                p.get("producer_id"),
                *provenance(r),
            )
        )
    columns = (
        col("alert", S, "IntegrityFailure, UnsealedTimeout or LogDiscontinuity"),
        col("status", S),
        col("detail", S),
        col("alerted_topic", S),
        col("alerted_partition", L),
        col("alerted_offset", L),
        col("alerted_producer", S, null=True),
    )
    return Table.of(
        "alerts",
        "Monitoring alerts",
        "Integrity failures, unsealed timeouts and log discontinuities in the window.",
        columns + PROVENANCE,
        rows,
    )


def contracts_table(history: History) -> Table:
    rows = [
        (
            r.event.payload["name"],
            r.event.payload["definition_hash"].hex(),
            r.event.payload["definition_json"],
            r.event.occurred_at_us in history.window,
            *provenance(r),
        )
        for r in history.contracts
    ]
    columns = (
        col("contract", S),
        col("definition_sha3_256", S),
        col("definition_json", S),
        col("in_window", B),
    )
    return Table.of(
        "contract_definitions",
        "Contract definitions",
        "Every ContractDefined up to the window's end.",
        columns + PROVENANCE,
        rows,
    )


def transition_counts_table(history: History) -> Table:
    counts = Counter(
        (
            r.event.payload["from_state"],
            r.event.payload["to_state"],
            r.event.payload["authority"]["kind"],
        )
        for r in history.in_window(history.transitions)
    )
    rows = [(*k, n) for k, n in sorted(counts.items())]
    columns = (
        col("from_state", S),
        col("to_state", S),
        col("authority_kind", S),
        col("transitions", L),
    )
    return Table.of(
        "transition_counts",
        "Entry state changes",
        "State transitions in the window by kind and authority.",
        columns,
        rows,
    )


def archive_segments_table(history: History) -> Table:
    rows = [
        (
            p["archive_id"],
            p["segment_seq"],
            p["file_name"],
            p["segment_hash"].hex(),
            p["prev_segment_hash"].hex(),
            p["record_count"],
            p["first_timestamp_us"],
            p["last_timestamp_us"],
            p["closed_at_us"],
            *provenance(r),
        )
        for r in history.in_window(history.archive_segments)
        for p in (r.event.payload,)
    ]
    columns = (
        col("archive_id", S),
        col("segment_seq", L),
        col("file_name", S),
        col("segment_hash", S, "SHA3-256 of the segment file"),
        col("prev_segment_hash", S, "the previous segment's hash (the chain)"),
        col("record_count", L),
        col("first_timestamp_us", L),
        col("last_timestamp_us", L),
        col("closed_at_us", L),
    )
    return Table.of(
        "archive_segments",
        "Archive segments anchored in the ledger",
        "Every ArchiveSegmentSealed in the window: the audit trail kept past Kafka retention.",
        columns + PROVENANCE,
        rows,
    )
