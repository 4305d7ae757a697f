"""Schema sets learned at run time: EventCodec.learn and anchor-signed announcements.

A reader decodes with a set only after it learned it; it learns a set only
from a schema whose computed fingerprint is the announced one, announced
under the trust anchor's signatures (docs/wire.md, "Evolution").
"""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from fastavro import schemaless_writer

from cachet.crypto.registry import (
    KeyRegistry,
    RegistrationRejected,
    RejectionReason,
    schema_set_statement,
)
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet, SignatureLine
from cachet.schemas.announcement import release_of, schema_set_announcement
from cachet.schemas.codec import MAGIC, DecodeError, DecodeFailure, EventCodec, SchemaSetRefused
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType, SealRef, new_event, uuid7
from cachet.schemas.loader import (
    SCHEMA_DIR,
    SchemaLoadError,
    envelope_json,
    load_schema_set,
    schema_set_from_json,
)
from cachet.schemas.payloads import SchemaSetPublished
from tests.schema_sets import NEW_SYMBOL, newer_schema_dir


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate("anchor-root")


@pytest.fixture
def newer(tmp_path: Path) -> Path:
    """The current set with one ScrubTrigger symbol appended: a set no codec ships."""
    return newer_schema_dir(tmp_path)


def _scrub_event(codec: EventCodec, trigger: str = "ERASURE") -> bytes:
    payload = {**SAMPLE_PAYLOADS[EventType.KV_SCRUB_COMPLETED], "trigger": trigger}
    event = new_event(
        EventType.KV_SCRUB_COMPLETED,
        payload,
        producer_id="gpu-worker@1f",
        producer_seq=3,
        seal_ref=SealRef(1, 0),
    )
    return codec.encode(event)


def _registry(anchor: PrivateKeySet) -> KeyRegistry:
    return KeyRegistry(anchor.public(), tuple(SignatureScheme))


def _lines(payload: SchemaSetPublished) -> tuple[SignatureLine, ...]:
    return tuple(
        SignatureLine(s.algorithm, s.key_id, s.signature) for s in payload.anchor_signatures
    )


# --------------------------------------------------------------------------- the codec learns


def test_a_learned_set_decodes_and_an_unknown_one_does_not(newer: Path) -> None:
    written = load_schema_set(newer)
    data = _scrub_event(EventCodec(newer))
    codec = EventCodec()
    with pytest.raises(DecodeError) as info:
        codec.decode(data)
    assert info.value.failure is DecodeFailure.UNKNOWN_FINGERPRINT

    assert codec.learn(envelope_json(written), written.fingerprint, source="test") is True

    assert written.fingerprint in codec.known_fingerprints
    assert codec.decode(data).payload["trigger"] == "ERASURE"
    # Resolved to this reader's schema: a symbol it lacks reads as the default.
    assert codec.decode(_scrub_event(EventCodec(newer), NEW_SYMBOL)).payload["trigger"] == (
        "UNKNOWN"
    )


def test_learning_a_known_set_again_changes_nothing() -> None:
    current = load_schema_set(SCHEMA_DIR)
    codec = EventCodec()
    before = codec.known_fingerprints
    assert codec.learn(envelope_json(current), current.fingerprint) is False
    assert codec.known_fingerprints == before


def test_a_wrong_fingerprint_is_refused_and_nothing_is_learned(newer: Path) -> None:
    written = load_schema_set(newer)
    codec = EventCodec()
    wrong = bytes(8)
    with pytest.raises(SchemaSetRefused) as info:
        codec.learn(envelope_json(written), wrong)
    assert info.value.fingerprint == wrong
    assert written.fingerprint.hex() in str(info.value)
    assert wrong not in codec.known_fingerprints
    assert written.fingerprint not in codec.known_fingerprints


@pytest.mark.parametrize(
    "schema_json",
    ["not json", "[]", '{"type":"record","name":"cachet.events.Other","fields":[]}', '"string"'],
    ids=["not-json", "array", "not-the-envelope", "primitive"],
)
def test_a_schema_that_is_no_envelope_is_refused(schema_json: str) -> None:
    with pytest.raises(SchemaSetRefused):
        EventCodec().learn(schema_json, bytes(8))


def test_a_fingerprint_of_the_wrong_length_is_refused() -> None:
    current = load_schema_set(SCHEMA_DIR)
    with pytest.raises(SchemaSetRefused, match="8 bytes"):
        EventCodec().learn(envelope_json(current), current.fingerprint + b"\x00")


def test_the_published_json_is_the_same_schema_set() -> None:
    current = load_schema_set(SCHEMA_DIR)
    again = schema_set_from_json(envelope_json(current), "v2")
    assert (again.fingerprint, again.canonical_form) == (
        current.fingerprint,
        current.canonical_form,
    )
    with pytest.raises(SchemaLoadError):
        schema_set_from_json("{", "broken")


def test_a_v1_event_still_decodes() -> None:
    v1 = load_schema_set(SCHEMA_DIR / "history" / "v1")
    assert v1.fingerprint != EventCodec().fingerprint
    record = {
        "event_id": uuid7(),
        "type": "CacheRead",
        "occurred_at": 1_790_000_000_000_000,
        "producer_id": "node-a@1f",
        "producer_seq": 12,
        "seal_ref": {"seal_seq": 4, "leaf_index": 0},
        "payload": ("cachet.events.CacheRead", SAMPLE_PAYLOADS[EventType.CACHE_READ]),
    }
    body = io.BytesIO()
    schemaless_writer(body, v1.parsed, record)
    event = EventCodec().decode(MAGIC + v1.fingerprint + body.getvalue())
    assert event.type is EventType.CACHE_READ
    assert event.payload == SAMPLE_PAYLOADS[EventType.CACHE_READ]
    assert event.seal_ref == SealRef(4, 0)


# --------------------------------------------------------------------------- announcements


def test_the_current_set_is_a_release() -> None:
    assert release_of(load_schema_set(SCHEMA_DIR), SCHEMA_DIR) == "v4"


def test_an_unreleased_set_cannot_be_announced(newer: Path) -> None:
    with pytest.raises(SchemaLoadError, match="not released"):
        release_of(load_schema_set(newer), SCHEMA_DIR)


def test_an_announcement_verifies_under_its_anchor_only(anchor: PrivateKeySet) -> None:
    current = load_schema_set(SCHEMA_DIR)
    payload = schema_set_announcement(current, "v2", anchor)
    assert payload.fingerprint == current.fingerprint
    statement = schema_set_statement(payload.release, payload.fingerprint, payload.schema_json)
    assert statement.startswith(b"cachet.schema-set/v1\nrelease v2\n")
    _registry(anchor).check_anchor_statement(statement, _lines(payload))

    other = PrivateKeySet.generate("another-root")
    with pytest.raises(RegistrationRejected) as info:
        _registry(other).check_anchor_statement(statement, _lines(payload))
    assert info.value.reason is RejectionReason.BAD_ANCHOR_SIGNATURE


@pytest.mark.parametrize(
    "change",
    [
        {"release": "v3"},
        {"fingerprint": bytes(8)},
        {"schema_json": '{"type":"record","name":"cachet.events.Envelope","fields":[]}'},
    ],
    ids=["release", "fingerprint", "schema"],
)
def test_every_announced_field_is_signed(anchor: PrivateKeySet, change: dict) -> None:
    payload = schema_set_announcement(load_schema_set(SCHEMA_DIR), "v2", anchor)
    forged = SchemaSetPublished.from_avro(payload.to_avro() | change)
    statement = schema_set_statement(forged.release, forged.fingerprint, forged.schema_json)
    with pytest.raises(RegistrationRejected):
        _registry(anchor).check_anchor_statement(statement, _lines(forged))


def test_the_announcement_round_trips_through_the_codec(anchor: PrivateKeySet) -> None:
    codec = EventCodec()
    payload = schema_set_announcement(load_schema_set(SCHEMA_DIR), "v2", anchor)
    event = new_event(
        EventType.SCHEMA_SET_PUBLISHED,
        payload.to_avro(),
        producer_id="keys-admin@0",
        producer_seq=0,
    )
    decoded = codec.decode(codec.encode(event))
    assert SchemaSetPublished.from_avro(decoded.payload) == payload
