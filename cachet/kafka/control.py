"""Publishing anchor-signed control events (key registry, contracts) to the log.

The events themselves are built in :mod:`cachet.ledger.registration`; this
is the Kafka side: produce one and wait for the broker's acknowledgement.
"""

from __future__ import annotations

from typing import Any

from confluent_kafka import Producer

from cachet.clock import SYSTEM_CLOCK, Clock
from cachet.crypto.keystore import Keystore
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.settings import KafkaSetupError, producer_settings
from cachet.ledger.registration import registration_payload
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType, new_event
from cachet.topics import Topic, TopicNames

__all__ = ["publish_control", "publish_to", "register_key_set"]


def publish_control(
    producer: Producer,
    codec: EventCodec,
    names: TopicNames,
    event_type: EventType,
    payload: dict[str, Any],
    *,
    admin_id: str = "keys-admin@0",
) -> Event:
    """Produce one anchor-signed control event and wait for the broker's ack."""
    event = new_event(event_type, payload, producer_id=admin_id, producer_seq=0)
    producer.produce(
        names(Topic.CONTROL), key=payload["producer_id"].encode(), value=codec.encode(event)
    )
    if producer.flush(10) != 0:
        raise KafkaSetupError(f"control event {event_type.value} not acknowledged by the broker")
    return event


def publish_to(
    bootstrap_servers: str, names: TopicNames, event_type: EventType, payload: dict[str, Any]
) -> Event:
    """:func:`publish_control` with a short-lived client of its own."""
    producer = Producer(producer_settings(bootstrap_servers, {"message.timeout.ms": 10000}))
    return publish_control(producer, EventCodec(), names, event_type, payload)


def register_key_set(
    bootstrap_servers: str,
    names: TopicNames,
    store: Keystore,
    identity: str,
    clock: Clock = SYSTEM_CLOCK,
) -> PrivateKeySet:
    """A new key set for ``identity``: stored in the keystore and registered on
    the control topic, signed by the keystore's trust anchor and acknowledged
    by the broker before this returns (a view then verifies its seals)."""
    keys = PrivateKeySet.generate()
    store.add_key_set(identity, keys)
    publish_to(
        bootstrap_servers,
        names,
        EventType.SIGNING_KEY_REGISTERED,
        registration_payload(identity, keys.public(), clock.now_us(), store.anchor()),
    )
    return keys
