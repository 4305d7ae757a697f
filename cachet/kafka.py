"""Kafka client settings and topic provisioning, shared by every process.

The settings are visible dicts, each non-obvious key explained, so a reader
can see exactly what guarantees a producer or consumer was given.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from confluent_kafka import KafkaError, KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

from cachet.errors import CachetError
from cachet.topics import Topic, TopicNames

__all__ = [
    "MAX_RECORD_BYTES",
    "KafkaSetupError",
    "admin_client",
    "consumer_settings",
    "create_topics",
    "producer_settings",
]

log = logging.getLogger(__name__)

# A Seal with 1k leaf hashes and three signatures is ~55 KB; a cached value
# may be larger. librdkafka's default (1,000,000) is just under 1 MB of value
# once headers and framing are added, so we raise it.
MAX_RECORD_BYTES = 4 * 1024 * 1024


# librdkafka's own log lines go through Python logging (not raw stderr), so
# processes and tests decide what to show.
_LIBRDKAFKA_LOG = logging.getLogger("librdkafka")


class KafkaSetupError(CachetError):
    """The broker refused or could not be reached for an administrative step."""


def producer_settings(
    bootstrap_servers: str, overrides: Mapping[str, Any] | None = None, **extra: Any
) -> dict[str, Any]:
    """Settings for every Cachet producer: exactly-once per partition."""
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        # Idempotence: the broker drops retried duplicates, so a network retry
        # cannot put one event into the ledger twice (it implies acks=all).
        "enable.idempotence": True,
        "acks": "all",
        # Small batching window: throughput without a visible latency cost.
        "linger.ms": 2,
        "message.max.bytes": MAX_RECORD_BYTES,
        "logger": _LIBRDKAFKA_LOG,
    }
    settings.update(overrides or {})
    settings.update(extra)
    return settings


def consumer_settings(
    bootstrap_servers: str,
    group_id: str | None = None,
    overrides: Mapping[str, Any] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Settings for every Cachet consumer.

    Offsets are never auto-committed: a consumer that materializes state
    stores its position with that state (one WriteBatch), and one that
    does not commits only after it handled the record.
    """
    settings: dict[str, Any] = {
        "bootstrap.servers": bootstrap_servers,
        # librdkafka needs a group id even for assign()-only consumers; it is
        # not used for coordination unless subscribe() is called.
        "group.id": group_id or "cachet-assign-only",
        "enable.auto.commit": False,
        "enable.auto.offset.store": False,
        "auto.offset.reset": "earliest",
        # The embedded broker's group join takes ~session.timeout.ms/2.
        "session.timeout.ms": 6000,
        "fetch.max.bytes": 2 * MAX_RECORD_BYTES,
        "max.partition.fetch.bytes": MAX_RECORD_BYTES,
        # Surface the end of a partition: "caught up" is defined by it.
        "enable.partition.eof": True,
        # How long the broker may hold an empty fetch. Invalidation latency
        # rides on it (librdkafka's default is 500 ms, and the embedded broker
        # does not answer a waiting fetch early when data arrives).
        "fetch.wait.max.ms": 25,
        "logger": _LIBRDKAFKA_LOG,
    }
    settings.update(overrides or {})
    settings.update(extra)
    return settings


def admin_client(bootstrap_servers: str) -> AdminClient:
    settings: dict[str, Any] = {"bootstrap.servers": bootstrap_servers, "logger": _LIBRDKAFKA_LOG}
    return AdminClient(settings)


def create_topics(
    bootstrap_servers: str,
    names: TopicNames,
    partitions: int | Mapping[Topic, int] = 3,
    replication_factor: int = 1,
    timeout_s: float = 15.0,
) -> dict[str, str]:
    """Create every Cachet topic; already existing ones are fine.

    Returns ``{topic name: "created" | "exists"}``.
    """

    def count(t: Topic) -> int:
        return partitions if isinstance(partitions, int) else partitions.get(t, 3)

    admin = admin_client(bootstrap_servers)
    new = [NewTopic(names(t), count(t), replication_factor) for t in Topic]
    outcome: dict[str, str] = {}
    try:
        futures = admin.create_topics(new, operation_timeout=timeout_s, request_timeout=timeout_s)
    except KafkaException as exc:
        raise KafkaSetupError(f"cannot create topics on {bootstrap_servers}: {exc}") from exc
    for name, fut in futures.items():
        try:
            fut.result(timeout=timeout_s)
            outcome[name] = "created"
        except KafkaException as exc:
            err = exc.args[0] if exc.args else None
            if isinstance(err, KafkaError) and err.code() == KafkaError.TOPIC_ALREADY_EXISTS:
                outcome[name] = "exists"
                continue
            raise KafkaSetupError(
                f"cannot create topic {name} on {bootstrap_servers}: {exc}"
            ) from exc
        except Exception as exc:  # future timeouts: the broker is unreachable
            raise KafkaSetupError(
                f"cannot create topic {name} on {bootstrap_servers}: {exc}"
            ) from exc
    log.info("topics on %s: %s", bootstrap_servers, outcome)
    return outcome
