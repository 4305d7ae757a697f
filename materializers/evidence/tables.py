"""Typed tables: what every export format writes, one row per verified event.

A :class:`Table` has typed columns (Avro ``string``/``long``/``boolean``,
optionally nullable) and rows of plain values; hashes are lowercase hex.
Every row of an event table ends with the same provenance columns
(:data:`PROVENANCE`): when the event happened, which event it is, where it
sat in the log and which verified seal covers it, so an examiner can ask
for the attestation bundle of any row (``cachet cab export --event-id``).
A row of a read adds :data:`READ_INDEX` after them: the read's place in its
CacheReadBatch (``cachet cab export --event-id ... --read-index ...``).
"""

from __future__ import annotations

import enum
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from cachet.materializers.evidence.records import EvidenceRecord, iso

__all__ = [
    "PROVENANCE",
    "READ_INDEX",
    "Column",
    "ColumnType",
    "Table",
    "col",
    "provenance",
]

Value = str | int | bool | None


class ColumnType(enum.Enum):
    """A column's Avro type (the CSV and JSONL writers follow it too)."""

    STRING = "string"
    LONG = "long"
    BOOLEAN = "boolean"


@dataclass(frozen=True, slots=True)
class Column:
    """One column: name, type, whether it may be null, what it means."""

    name: str
    type: ColumnType
    nullable: bool = False
    doc: str = ""

    def avro(self) -> dict[str, Any]:
        kind: Any = ["null", self.type.value] if self.nullable else self.type.value
        return {"name": self.name, "type": kind, "doc": self.doc}

    def check(self, value: object, table: str) -> None:
        """Raise TypeError unless ``value`` fits this column."""
        if value is None:
            if not self.nullable:
                raise TypeError(f"{table}.{self.name} may not be null")
            return
        # bool is an int in Python: keep LONG columns free of booleans.
        if type(value) is not _PYTHON_TYPE[self.type] and not (
            self.type is not ColumnType.LONG and isinstance(value, _PYTHON_TYPE[self.type])
        ):
            raise TypeError(f"{table}.{self.name}: {value!r} is not {self.type.value}")


_PYTHON_TYPE: dict[ColumnType, type] = {
    ColumnType.STRING: str,
    ColumnType.LONG: int,
    ColumnType.BOOLEAN: bool,
}


def col(
    name: str, kind: ColumnType = ColumnType.STRING, doc: str = "", *, null: bool = False
) -> Column:
    return Column(name, kind, null, doc)


S, L, B = ColumnType.STRING, ColumnType.LONG, ColumnType.BOOLEAN

PROVENANCE: tuple[Column, ...] = (
    col("occurred_at", S, "event time, ISO 8601 UTC"),
    col("occurred_at_us", L, "event time, microseconds since the Unix epoch"),
    col("event_id", S, "the event's UUIDv7 (cachet cab export --event-id)"),
    col("producer_id", S, "identity@epoch of the producer that emitted it"),
    col("producer_seq", L, "the producer's sequence number of the event"),
    col("topic", S, "the topic it was read from (without the deployment prefix)"),
    col("partition", L, "Kafka partition"),
    col("offset", L, "Kafka offset"),
    col("attestation", S, "sealed (a verified seal covers it) or anchor_signed"),
    col("seal_seq", L, "sequence number of the covering seal", null=True),
    col("leaf_index", L, "the event's leaf in that seal's Merkle tree", null=True),
    col("seal_key_set_id", S, "the producer key set that signed the seal", null=True),
    col("leaf_hash", S, "SHA3-256(0x00 || exact log bytes), hex"),
)


READ_INDEX = col(
    "read_index",
    L,
    "the read's index in its CacheReadBatch event (null: a CacheRead event, "
    "which is the read itself; null for a write)",
    null=True,
)


def provenance(record: EvidenceRecord) -> tuple[Value, ...]:
    """The provenance cells of ``record``, in :data:`PROVENANCE` order."""
    e, seal = record.event, record.seal
    return (
        iso(e.occurred_at_us),
        e.occurred_at_us,
        e.event_id,
        e.producer_id,
        e.producer_seq,
        record.topic.value,
        record.partition,
        record.offset,
        record.attestation.value,
        seal.seal_seq if seal else None,
        seal.leaf_index if seal else None,
        seal.key_set_id if seal else None,
        record.leaf_hash.hex(),
    )


@dataclass(frozen=True, slots=True)
class Table:
    """A named table; ``title`` and ``doc`` say what it shows, for people."""

    name: str
    title: str
    doc: str
    columns: tuple[Column, ...]
    rows: tuple[tuple[Value, ...], ...]

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            raise ValueError(f"table {self.name}: duplicate column names")
        width = len(self.columns)
        # The fast path: exact types (and null where allowed); anything else
        # gets the full check, which names the offending cell.
        exact = [(_PYTHON_TYPE[c.type], c.nullable) for c in self.columns]
        for i, row in enumerate(self.rows):
            if len(row) != width:
                raise ValueError(f"table {self.name} row {i}: {len(row)} cells for {width} columns")
            for (kind, nullable), column, value in zip(exact, self.columns, row, strict=True):
                if type(value) is not kind and not (value is None and nullable):
                    column.check(value, self.name)

    @classmethod
    def of(
        cls,
        name: str,
        title: str,
        doc: str,
        columns: Sequence[Column],
        rows: Sequence[Sequence[Value]],
    ) -> Table:
        return cls(name, title, doc, tuple(columns), tuple(tuple(r) for r in rows))

    def column(self, name: str) -> list[Value]:
        """Every value of one column."""
        index = [c.name for c in self.columns].index(name)
        return [row[index] for row in self.rows]

    def dicts(self) -> list[dict[str, Value]]:
        names = [c.name for c in self.columns]
        return [dict(zip(names, row, strict=True)) for row in self.rows]

    def avro_schema(self) -> dict[str, Any]:
        return {
            "type": "record",
            "name": self.name,
            "namespace": "cachet.evidence",
            "doc": self.doc,
            "fields": [c.avro() for c in self.columns],
        }
