"""Kafka SASL/TLS from cachet.toml: parsed strictly, applied to every client, secrets kept out."""

from __future__ import annotations

import ast
import logging
from pathlib import Path
from typing import Any

import pytest

from cachet.config import ConfigError, parse_config
from cachet.config.kafka_security import KafkaSecurity, KafkaSecurityProtocol, SaslMechanism
from cachet.kafka import settings as kafka_settings
from cachet.kafka.settings import (
    KafkaSetupError,
    LibrdkafkaLog,
    consumer_settings,
    producer_settings,
    security_settings,
    use_security,
)

ROOT = Path(__file__).resolve().parents[3]
SASL = {
    "security_protocol": "SASL_SSL",
    "sasl_mechanism": "SCRAM-SHA-512",
    "sasl_username": "cachet-node-a",
    "sasl_password_env": "TEST_KAFKA_PASSWORD",
}


def _security(**kafka: Any) -> KafkaSecurity:
    return parse_config({"kafka": kafka}).kafka.security


def _error_key(**kafka: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        parse_config({"kafka": kafka})
    return raised.value.key


# -- configuration -------------------------------------------------------------


def test_default_is_plaintext_without_credentials() -> None:
    assert _security() == KafkaSecurity()
    assert security_settings(KafkaSecurity()) == {}


def test_sasl_ssl_with_mutual_tls_parses(tmp_path: Path) -> None:
    got = _security(
        **SASL,
        ssl_ca_file="/etc/ca.pem",
        ssl_cert_file="/etc/node.pem",
        ssl_key_file="/etc/node.key",
    )
    assert got == KafkaSecurity(
        protocol=KafkaSecurityProtocol.SASL_SSL,
        sasl_mechanism=SaslMechanism.SCRAM_SHA_512,
        sasl_username="cachet-node-a",
        sasl_password_env="TEST_KAFKA_PASSWORD",
        ssl_ca_file=Path("/etc/ca.pem"),
        ssl_cert_file=Path("/etc/node.pem"),
        ssl_key_file=Path("/etc/node.key"),
    )


@pytest.mark.parametrize(
    ("kafka", "key"),
    [
        ({"security_protocol": "KERBEROS"}, "kafka.security_protocol"),
        ({**SASL, "sasl_mechanism": "GSSAPI"}, "kafka.sasl_mechanism"),
        ({**SASL, "sasl_mechanism": None}, "kafka.sasl_mechanism"),
        ({k: v for k, v in SASL.items() if k != "sasl_username"}, "kafka.sasl_username"),
        ({k: v for k, v in SASL.items() if k != "sasl_password_env"}, "kafka.sasl_password_env"),
        ({k: v for k, v in SASL.items() if k != "sasl_mechanism"}, "kafka.sasl_mechanism"),
        ({**SASL, "sasl_password_env": "not a variable"}, "kafka.sasl_password_env"),
        # PLAIN over an unencrypted connection: the password in clear text.
        (
            {**SASL, "security_protocol": "SASL_PLAINTEXT", "sasl_mechanism": "PLAIN"},
            "kafka.sasl_mechanism",
        ),
        # Settings that would be silently ignored.
        ({"sasl_username": "x"}, "kafka.sasl_username"),
        ({"security_protocol": "SSL", "sasl_mechanism": "SCRAM-SHA-256"}, "kafka.sasl_mechanism"),
        (
            {**SASL, "security_protocol": "SASL_PLAINTEXT", "ssl_ca_file": "/ca"},
            "kafka.ssl_ca_file",
        ),
        ({"security_protocol": "SSL", "ssl_cert_file": "/c.pem"}, "kafka.ssl_key_file"),
        ({"security_protocol": "SSL", "ssl_key_file": "/c.key"}, "kafka.ssl_cert_file"),
        ({"sasl_password": "hunter2"}, "kafka.sasl_password"),  # no secret in the file
        (
            {"producer_overrides": {"sasl.password": "hunter2"}},
            "kafka.producer_overrides.sasl.password",
        ),
        (
            {"consumer_overrides": {"security.protocol": "PLAINTEXT"}},
            "kafka.consumer_overrides.security.protocol",
        ),
        (
            {"producer_overrides": {"ssl.ca.location": "/x"}},
            "kafka.producer_overrides.ssl.ca.location",
        ),
    ],
)
def test_mistakes_name_the_key(kafka: dict[str, Any], key: str) -> None:
    if kafka.get("sasl_mechanism", "") is None:
        kafka = {k: v for k, v in kafka.items() if k != "sasl_mechanism"}
    assert _error_key(**kafka) == key


def test_plain_is_accepted_over_tls() -> None:
    assert _security(**{**SASL, "sasl_mechanism": "PLAIN"}).sasl_mechanism is SaslMechanism.PLAIN


# -- librdkafka settings ---------------------------------------------------------


def test_sasl_settings_take_the_password_from_the_named_variable(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    security = _security(**SASL, ssl_ca_file=str(ca))
    got = security_settings(security, {"TEST_KAFKA_PASSWORD": "s3cret"})
    assert got == {
        "security.protocol": "SASL_SSL",
        "sasl.mechanism": "SCRAM-SHA-512",
        "sasl.username": "cachet-node-a",
        "sasl.password": "s3cret",
        "enable.ssl.certificate.verification": True,
        "ssl.endpoint.identification.algorithm": "https",
        "ssl.ca.location": str(ca),
    }


def test_missing_password_names_the_key_and_the_variable() -> None:
    with pytest.raises(KafkaSetupError, match="kafka.sasl_password_env") as raised:
        security_settings(_security(**SASL), {})
    assert "TEST_KAFKA_PASSWORD" in str(raised.value)


def test_missing_tls_file_names_the_key(tmp_path: Path) -> None:
    security = _security(**SASL, ssl_ca_file=str(tmp_path / "nope.pem"))
    with pytest.raises(KafkaSetupError, match="kafka.ssl_ca_file"):
        security_settings(security, {"TEST_KAFKA_PASSWORD": "pw"})


def test_every_client_for_the_servers_gets_the_security(monkeypatch: pytest.MonkeyPatch) -> None:
    servers = "sasl-test-broker:9093"
    use_security(
        servers,
        _security(**{**SASL, "security_protocol": "SASL_PLAINTEXT"}),
        {"TEST_KAFKA_PASSWORD": "pw-1"},
    )
    built: list[dict[str, Any]] = []
    monkeypatch.setattr(kafka_settings, "AdminClient", lambda s: built.append(s))
    kafka_settings.admin_client(servers)
    for settings in (
        producer_settings(servers),
        # An override (or a caller's extra) cannot switch the credentials off.
        producer_settings(servers, {"linger.ms": 5}, **{"security.protocol": "PLAINTEXT"}),
        consumer_settings(servers, "g"),
        built[0],
    ):
        assert settings["security.protocol"] == "SASL_PLAINTEXT"
        assert (settings["sasl.username"], settings["sasl.password"]) == ("cachet-node-a", "pw-1")
    # Other clusters are not given these credentials.
    assert "sasl.password" not in producer_settings("other-broker:9092")


def _called(node: ast.AST | None) -> str | None:
    func = getattr(node, "func", None)
    return getattr(func, "id", getattr(func, "attr", None))


def test_every_kafka_client_in_the_code_is_built_from_the_shared_settings() -> None:
    """A Producer/Consumer/AdminClient built any other way would miss SASL/TLS."""
    builders = {"Producer": "producer_settings", "Consumer": "consumer_settings"}
    offenders = []
    for folder in ("cachet", "producers", "processors", "materializers", "ops"):
        for path in (ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text(encoding="utf-8"))
            for scope in ast.walk(tree):
                if not isinstance(scope, ast.FunctionDef | ast.AsyncFunctionDef | ast.Module):
                    continue
                # Names this function assigns from a settings builder.
                built = {
                    target.id: _called(node.value)
                    for node in ast.walk(scope)
                    if isinstance(node, ast.Assign)
                    for target in node.targets
                    if isinstance(target, ast.Name)
                }
                for node in ast.walk(scope):
                    if not isinstance(node, ast.Call):
                        continue
                    name = _called(node)
                    where = f"{path.relative_to(ROOT)}:{node.lineno}"
                    if name == "AdminClient" and path.name != "settings.py":
                        offenders.append(where)
                    elif name in builders:
                        arg = node.args[0] if node.args else None
                        source = built.get(arg.id) if isinstance(arg, ast.Name) else _called(arg)
                        if source != builders[name]:
                            offenders.append(where)
    assert sorted(set(offenders)) == []


# -- refusals are named, not "unreachable" --------------------------------------------


def test_refused_credentials_are_an_error_of_their_own(caplog: pytest.LogCaptureFixture) -> None:
    logger = logging.getLogger("test.librdkafka.security")
    bridge = LibrdkafkaLog("h:9093", logger)
    with caplog.at_level(logging.DEBUG, logger=logger.name):
        bridge.log(
            logging.ERROR,
            "%s [%s] %s",
            "FAIL",
            "rdkafka#producer-1",
            "sasl_plaintext://h:9093/bootstrap: SASL authentication error: SASL SCRAM "
            "authentication failed: broker responded with unknown-user",
        )
    messages = [r.getMessage() for r in caplog.records if r.name == logger.name]
    assert len(messages) == 1
    assert "refused this client" in messages[0] and "unknown-user" in messages[0]
    assert "unreachable" not in messages[0]
    assert bridge.auth_failure is not None and "unknown-user" in bridge.auth_failure
