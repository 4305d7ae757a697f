"""Where a record came from in the log, and its exact bytes.

A plain value the ledger works on (the verifier checks a seal's leaf hash
against :attr:`RecordOrigin.raw`), so it lives below the Kafka adapter.
"""

from __future__ import annotations

from dataclasses import dataclass

from confluent_kafka import Message

__all__ = ["RecordOrigin", "as_bytes", "as_int"]


@dataclass(frozen=True, slots=True)
class RecordOrigin:
    """Where a record came from in the log."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    timestamp_ms: int
    headers: tuple[tuple[str, bytes], ...] = ()
    # The record's value exactly as it is in the log: what a seal's leaf hash
    # covers. Re-encoding a decoded event is not guaranteed to give it back.
    raw: bytes = b""

    @classmethod
    def of(cls, msg: Message) -> RecordOrigin:
        """The origin of a consumed record (never an error event)."""
        _, ts = msg.timestamp()
        headers = tuple((str(h[0]), as_bytes(h[1])) for h in (msg.headers() or ()))
        return cls(
            msg.topic() or "",
            as_int(msg.partition()),
            as_int(msg.offset()),
            as_bytes(msg.key()),
            ts,
            headers,
            as_bytes(msg.value()),
        )


def as_bytes(value: str | bytes | None) -> bytes:
    return value.encode() if isinstance(value, str) else (value or b"")


def as_int(value: int | None) -> int:
    return -1 if value is None else value
