"""Cachet's Avro schemas, the event model and the single-object wire codec."""

from cachet.schemas.codec import DecodeError, DecodeFailure, EncodeError, EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event, uuid7
from cachet.schemas.loader import SchemaLoadError

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
