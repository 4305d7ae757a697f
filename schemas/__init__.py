"""Cachet's Avro schemas, the event model and the single-object wire codec."""

from schemas.codec import (
    DecodeError,
    DecodeFailure,
    EncodeError,
    EventCodec,
    SchemaLoadError,
)
from schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event, uuid7

__all__ = [
    "SAMPLE_PAYLOADS",
    "DecodeError",
    "DecodeFailure",
    "EncodeError",
    "Event",
    "EventCodec",
    "EventType",
    "SchemaLoadError",
    "SealRef",
    "new_event",
    "uuid7",
]
