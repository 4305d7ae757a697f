"""The tables of an examination export, for one contract (see :mod:`.finra`).

``contracts`` (in force over the window), ``transitions``, ``fingerprints``,
``reads`` (with freshness proofs), ``violations``, ``key_events`` and, when
the contract asks for supervisory review, ``supervisory_review``. Each event
table ends with the provenance columns (:data:`~.tables.PROVENANCE`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from cachet.materializers.evidence.finra import FinraProfile, contract_definition
from cachet.materializers.evidence.history import History
from cachet.materializers.evidence.records import EvidenceRecord
from cachet.materializers.evidence.tables import (
    PROVENANCE,
    READ_INDEX,
    ColumnType,
    Table,
    col,
    provenance,
)
from cachet.schemas.payloads import TransitionAuthority

__all__ = ["examination_tables", "fingerprint_log", "key_events_table"]

S, L, B = ColumnType.STRING, ColumnType.LONG, ColumnType.BOOLEAN


def _hex(value: bytes | None) -> str | None:
    return None if value is None else value.hex()


def _contracts(history: History, profile: FinraProfile) -> Table:
    defined = [r for r in history.contracts if r.event.payload["name"] == profile.contract]
    # In force over the window: the last definition before it, and each in it.
    before = [r for r in defined if r.event.occurred_at_us < history.window.from_us][-1:]
    rows = []
    for r in before + history.in_window(defined):
        p, doc = r.event.payload, contract_definition(r)
        rows.append(
            (
                p["name"],
                p["definition_hash"].hex(),
                doc.get("max_staleness_ms")
                if isinstance(doc.get("max_staleness_ms"), int)
                else None,
                doc.get("regulatory_classification"),
                doc.get("books_and_records_category"),
                bool(doc.get("supervisory_review", False)),
                doc.get("examination_export_format"),
                p["definition_json"],
                *provenance(r),
            )
        )
    columns = (
        col("contract", S, "contract name"),
        col("definition_sha3_256", S, "SHA3-256 of definition_json"),
        col("max_staleness_ms", L, "freshness bound", null=True),
        col("regulatory_classification", S, "FINRA data type", null=True),
        col("books_and_records_category", S, "FINRA Rule 4511 category", null=True),
        col("supervisory_review", B, "violations need a principal's review (Rule 3110)"),
        col("examination_export_format", S, "requested export format", null=True),
        col("definition_json", S, "the canonical definition as published"),
    )
    return Table.of(
        "contracts",
        "Contracts in force",
        "Every ContractDefined of the contract in force over the window (the last one "
        "before it opened, then each one published in it).",
        columns + PROVENANCE,
        rows,
    )


def _transitions(history: History, contract: str) -> Table:
    by_version = history.contract_of_key()
    latest = history.latest_contract_of_key()
    rows: list[tuple[Any, ...]] = []
    for r in history.in_window(history.writes + history.transitions + history.invalidations):
        p = r.event.payload
        row: tuple[Any, ...]
        if r.event.type.value == "CacheWritten":
            if p["contract"] != contract:
                continue
            row = (
                "written",
                None,
                "ACTIVE",
                None,
                None,
                _hex(p["fingerprint"]),
                _hex(p["prev_event_hash"]),
            )
        elif r.event.type.value == "StateTransitioned":
            if by_version.get((p["key_hash"], p["version"])) != contract:
                continue
            authority = TransitionAuthority.from_avro(p["authority"]).text()
            row = (
                "transitioned",
                p["from_state"],
                p["to_state"],
                authority,
                p["reason"],
                None,
                _hex(p["prev_event_hash"]),
            )
        else:
            owner = (
                by_version.get((p["key_hash"], p["version"]))
                if p["version"] is not None
                else latest.get(p["key_hash"])
            )
            if owner != contract:
                continue
            authority = TransitionAuthority.from_avro(p["authority"]).text()
            row = ("invalidated", None, None, authority, f"{p['mode']}: {p['reason']}", None, None)
        kind, *rest = row
        rows.append(
            (kind, p["key_hash"].hex(), p["namespace"], p.get("version"), *rest, *provenance(r))
        )
    rows.sort(key=lambda row: (row[11], row[12]))  # occurred_at_us, event_id
    columns = (
        col("kind", S, "written, transitioned or invalidated"),
        col("key_hash", S, "keyed hash of the cache key (never the key)"),
        col("namespace", S),
        col("version", L, "entry version (null: every version)", null=True),
        col("from_state", S, null=True),
        col("to_state", S, null=True),
        col("authority", S, "KEY:<key set>:<role> or the SYSTEM_* rule", null=True),
        col("reason", S, null=True),
        col("fingerprint", S, "computation fingerprint of a write", null=True),
        col("prev_event_hash", S, "per-key hash chain link", null=True),
    )
    return Table.of(
        "transitions",
        "Transition history",
        "Every write, state transition and invalidation of the contract's entries.",
        columns + PROVENANCE,
        rows,
    )


def fingerprint_log(history: History, contract: str | None = None) -> Table:
    """Every computation fingerprint written or read in the window, oldest
    first: the examination's (``contract`` given: that contract's, by
    namespace) and the SOC 2 processing-integrity log (every contract)."""
    rows: list[tuple[Any, ...]] = []
    # (record, the read's index or None, the write's or the read's fields, operation, actor)
    named: list[tuple[EvidenceRecord, int | None, Mapping[str, Any], str, str]] = [
        (w, None, w.event.payload, "write", w.event.producer_id)
        for w in history.in_window(history.writes)
    ]
    named += [
        (
            r.record,
            r.index,
            r.payload,
            "read_hit" if r.payload["outcome"] == "HIT" else "read_miss",
            f"{r.payload['reader_role']}@{r.payload['node_id']}",
        )
        for r in history.in_window(history.reads)
    ]
    for record, index, p, operation, actor in named:
        if p.get("fingerprint") is None or (contract is not None and p["contract"] != contract):
            continue
        # Under one contract its name says nothing: the namespace does.
        scope = p["namespace"] if contract is not None else p["contract"]
        cells = (operation, p["fingerprint"].hex(), p["key_hash"].hex(), scope, p.get("version"))
        rows.append((*cells, actor, *provenance(record), index))
    # occurred_at_us, event_id, then a batch's reads in batch order
    rows.sort(key=lambda row: (row[7], row[8], -1 if row[-1] is None else row[-1]))
    columns = (
        col("operation", S, "write, read_hit or read_miss"),
        col("fingerprint", S, "SHA3-256 computation fingerprint"),
        col("key_hash", S),
        col("namespace" if contract is not None else "contract", S),
        col("version", L, null=True),
        col("actor", S, "writer producer, or reader role@node"),
    )
    if contract is not None:
        name, about = (
            "fingerprints",
            "Every computation fingerprint written or read under the contract.",
        )
    else:
        name, about = (
            "fingerprint_log",
            "Every write and every read that named a computation fingerprint.",
        )
    return Table.of(name, "Fingerprint log", about, (*columns, *PROVENANCE, READ_INDEX), rows)


def _reads(history: History, contract: str) -> Table:
    rows: list[tuple[Any, ...]] = []
    for r in history.in_window(history.reads):
        p = r.payload
        if p["contract"] != contract:
            continue
        f = p.get("freshness") or {}
        rows.append(
            (
                p["outcome"],
                p["reason"],
                p["key_hash"].hex(),
                p["namespace"],
                p.get("version"),
                _hex(p.get("fingerprint")),
                f.get("age_ms"),
                f.get("max_staleness_ms"),
                f.get("headroom_ms"),
                f.get("view_lag_ms"),
                p["reader_role"],
                p["node_id"],
                *provenance(r.record),
                r.index,
            )
        )
    columns = (
        col("outcome", S, "HIT or MISS"),
        col("reason", S, "served, or why it missed"),
        col("key_hash", S),
        col("namespace", S),
        col("version", L, null=True),
        col("fingerprint", S, null=True),
        col("age_ms", L, "freshness proof: age of the value", null=True),
        col("max_staleness_ms", L, "freshness proof: the contract's bound", null=True),
        col("headroom_ms", L, "freshness proof: max_staleness - age - view_lag", null=True),
        col("view_lag_ms", L, "freshness proof: how far the serving view lagged", null=True),
        col("reader_role", S),
        col("node_id", S, "node that served or refused the read"),
    )
    return Table.of(
        "reads",
        "Reads served",
        "Every read under the contract, hit or miss, with its freshness proof.",
        (*columns, *PROVENANCE, READ_INDEX),
        rows,
    )


def _violations(history: History, profile: FinraProfile) -> Table:
    rows = [
        (
            r.event.payload["reason"],
            r.event.payload["detail"],
            r.event.payload["key_hash"].hex(),
            r.event.payload["namespace"],
            r.event.payload["node_id"],
            profile.supervisory_review,
            *provenance(r),
        )
        for r in history.in_window(history.violations)
        if r.event.payload["contract"] == profile.contract
    ]
    columns = (
        col("reason", S, "the check that failed"),
        col("detail", S),
        col("key_hash", S),
        col("namespace", S),
        col("node_id", S),
        col("supervisory_review_required", B, "FINRA Rule 3110 review required"),
    )
    return Table.of(
        "violations",
        "Contract violations",
        "Every ContractViolation alert of the contract (the read missed; nothing was served).",
        columns + PROVENANCE,
        rows,
    )


def _supervisory(violations: Table) -> Table:
    rows = [
        (
            v["event_id"],
            v["occurred_at"],
            v["reason"],
            v["key_hash"],
            v["node_id"],
            "pending",
            None,
            None,
        )
        for v in violations.dicts()
    ]
    columns = (
        col("violation_event_id", S),
        col("occurred_at", S),
        col("reason", S),
        col("key_hash", S),
        col("node_id", S),
        col("review_status", S, "pending until a registered principal reviews it"),
        col("reviewer", S, "filled in by the reviewing principal", null=True),
        col("reviewed_at", S, null=True),
    )
    return Table.of(
        "supervisory_review",
        "Supervisory review queue (FINRA Rule 3110)",
        "One row per violation for a registered principal to review and sign off.",
        columns,
        rows,
    )


def key_events_table(history: History) -> Table:
    """Every key registration, rotation and revocation up to the window's end."""
    rows: list[tuple[Any, ...]] = []
    for r in history.key_events:
        p = r.event.payload
        kind = r.event.type.value
        if kind == "SigningKeyRegistered":
            row = ("registered", p["key_set_id"], None, p["valid_from_us"], None)
        elif kind == "SigningKeyRotated":
            row = ("rotated", p["new_key_set_id"], p["old_key_set_id"], p["rotated_at_us"], None)
        else:
            row = ("revoked", p["key_set_id"], None, p["compromised_at_us"], p["reason"])
        algorithms = ",".join(s["algorithm"] for s in p["anchor_signatures"])
        in_window = r.event.occurred_at_us in history.window
        rows.append(
            (
                row[0],
                p["producer_id"],
                row[1],
                row[2],
                row[3],
                row[4],
                algorithms,
                in_window,
                *provenance(r),
            )
        )
    columns = (
        col("action", S, "registered, rotated or revoked"),
        col("identity", S, "producer identity"),
        col("key_set_id", S, "the key set registered, rotated to, or revoked"),
        col("old_key_set_id", S, "the key set rotated from", null=True),
        col("effective_at_us", L, "valid from / rotated at / compromised at"),
        col("revocation_reason", S, null=True),
        col("anchor_signatures", S, "schemes of the trust anchor's signatures"),
        col("in_window", B, "published inside the export window"),
    )
    return Table.of(
        "key_events",
        "Signing-key events",
        "Every anchor-signed key registration, rotation and revocation up to the window's end.",
        columns + PROVENANCE,
        rows,
    )


def examination_tables(history: History, profile: FinraProfile) -> list[Table]:
    """The tables of an examination export for ``profile``'s contract."""
    violations = _violations(history, profile)
    tables = [
        _contracts(history, profile),
        _transitions(history, profile.contract),
        fingerprint_log(history, profile.contract),
        _reads(history, profile.contract),
        violations,
        key_events_table(history),
    ]
    if profile.supervisory_review:
        tables.append(_supervisory(violations))
    return tables
