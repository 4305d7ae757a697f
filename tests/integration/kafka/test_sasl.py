"""Kafka credentials from cachet.toml against a real authenticating embedded broker.

The embedded broker (Tansu 0.6) started with ``--authentication`` speaks
SASL/SCRAM-SHA-512 and refuses every client that does not authenticate.
What it cannot do: hold a user. Its SCRAM users live in its storage, the
only local storage this build has is in memory, and ``tansu user create``
(or any AlterUserScramCredentials) against a broker with authentication on
is itself refused as NotAuthenticated; PLAIN is not offered. So this test
shows that the configured credentials reach the broker and that a client
whose user the broker does not know is refused with a clear error; a
client with *right* credentials working needs Apache Kafka (the ACL setup in
docker-compose.yml, docs/kafka-security.md).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Producer

from cachet.config import parse_config
from cachet.kafka.settings import (
    KafkaSetupError,
    create_topics,
    librdkafka_log,
    producer_settings,
    use_security,
)
from cachet.ops.broker import EmbeddedBroker
from cachet.topics import TopicNames

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def authenticating_broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    log_path = tmp_path_factory.mktemp("sasl-broker") / "tansu.log"
    with EmbeddedBroker(port=0, authentication=True, log_path=log_path) as broker:
        yield broker.bootstrap_servers


def _sasl_config(servers: str, user: str) -> object:
    return parse_config(
        {
            "kafka": {
                "bootstrap_servers": servers,
                "security_protocol": "SASL_PLAINTEXT",
                "sasl_mechanism": "SCRAM-SHA-512",
                "sasl_username": user,
                "sasl_password_env": "CACHET_TEST_KAFKA_PASSWORD",
            }
        }
    ).kafka


def test_configured_scram_credentials_reach_the_broker_and_a_wrong_user_is_refused(
    authenticating_broker: str,
) -> None:
    kafka = _sasl_config(authenticating_broker, f"intruder-{uuid.uuid4().hex[:6]}")
    use_security(
        kafka.bootstrap_servers, kafka.security, {"CACHET_TEST_KAFKA_PASSWORD": "not-the-password"}
    )
    with pytest.raises(KafkaSetupError) as raised:
        create_topics(kafka.bootstrap_servers, TopicNames("sasl."), partitions=1, timeout_s=3)
    message = str(raised.value)
    # The SCRAM exchange happened (the broker answered for this user), and
    # the error says the credentials were refused, not that the broker is down.
    assert "refused this client's credentials" in message
    assert "SASL authentication error" in message and "unknown-user" in message
    assert "not-the-password" not in message


def test_a_producer_from_the_shared_settings_is_refused_too(authenticating_broker: str) -> None:
    kafka = _sasl_config(authenticating_broker, "intruder-producer")
    use_security(kafka.bootstrap_servers, kafka.security, {"CACHET_TEST_KAFKA_PASSWORD": "pw"})
    settings = producer_settings(kafka.bootstrap_servers, {"message.timeout.ms": 3000})
    assert settings["sasl.username"] == "intruder-producer"
    failures: list[str] = []
    producer = Producer(settings)
    producer.produce("sasl.entries", b"v", on_delivery=lambda err, _m: failures.append(str(err)))
    producer.flush(10)
    assert len(failures) == 1  # never delivered
    refused = librdkafka_log(kafka.bootstrap_servers).auth_failure
    assert refused is not None and "SASL authentication error" in refused


def test_a_client_without_credentials_is_refused(
    authenticating_broker: str, tmp_path: Path
) -> None:
    # Same broker under another spelling: a bridge and security of its own (none).
    servers = authenticating_broker.replace("127.0.0.1", "localhost")
    with pytest.raises(KafkaSetupError) as raised:
        create_topics(servers, TopicNames("plain."), partitions=1, timeout_s=3)
    assert servers in str(raised.value)


def test_the_session_broker_without_authentication_still_serves_plain_clients(
    bootstrap_servers: str,
) -> None:
    # Control: the refusals above come from authentication, not from the client code.
    outcome = create_topics(bootstrap_servers, TopicNames(f"t{uuid.uuid4().hex[:8]}."), 1)
    assert set(outcome.values()) == {"created"}
