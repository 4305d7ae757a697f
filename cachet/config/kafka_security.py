"""How Kafka clients authenticate and encrypt: the security keys of ``[kafka]``.

::

    [kafka]
    security_protocol = "SASL_SSL"      # PLAINTEXT (default), SSL, SASL_PLAINTEXT, SASL_SSL
    sasl_mechanism = "SCRAM-SHA-512"    # SCRAM-SHA-512, SCRAM-SHA-256, PLAIN
    sasl_username = "cachet-node-a"
    sasl_password_env = "CACHET_KAFKA_PASSWORD"   # the *name* of the variable
    ssl_ca_file = "/etc/cachet/kafka-ca.pem"
    ssl_cert_file = "/etc/cachet/node-a.pem"      # mutual TLS (optional, with ssl_key_file)
    ssl_key_file = "/etc/cachet/node-a.key"

The configuration never holds the password: ``sasl_password_env`` names the
environment variable that does, read when the process builds its clients
(:mod:`cachet.kafka.settings`). Combinations that would silently weaken a
deployment are refused here, naming the key: SASL keys without a SASL
protocol, TLS files without TLS, PLAIN over an unencrypted connection (the
password would cross the network in clear text).
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from pathlib import Path

from cachet.config.values import Table

__all__ = [
    "OWNED_LIBRDKAFKA_KEYS",
    "SECURITY_KEYS",
    "KafkaSecurity",
    "KafkaSecurityProtocol",
    "SaslMechanism",
    "build_kafka_security",
]


class KafkaSecurityProtocol(enum.StrEnum):
    """librdkafka's ``security.protocol``."""

    PLAINTEXT = "PLAINTEXT"
    SSL = "SSL"
    SASL_PLAINTEXT = "SASL_PLAINTEXT"
    SASL_SSL = "SASL_SSL"

    @property
    def sasl(self) -> bool:
        return self in (KafkaSecurityProtocol.SASL_PLAINTEXT, KafkaSecurityProtocol.SASL_SSL)

    @property
    def tls(self) -> bool:
        return self in (KafkaSecurityProtocol.SSL, KafkaSecurityProtocol.SASL_SSL)


class SaslMechanism(enum.StrEnum):
    """librdkafka's ``sasl.mechanism`` (the ones a password configures)."""

    SCRAM_SHA_512 = "SCRAM-SHA-512"
    SCRAM_SHA_256 = "SCRAM-SHA-256"
    PLAIN = "PLAIN"


@dataclass(frozen=True, slots=True)
class KafkaSecurity:
    """The security settings every Kafka client of a deployment gets.

    Defaults: PLAINTEXT, no credentials (the embedded broker on loopback).
    """

    protocol: KafkaSecurityProtocol = KafkaSecurityProtocol.PLAINTEXT
    sasl_mechanism: SaslMechanism | None = None
    sasl_username: str | None = None
    sasl_password_env: str | None = None
    ssl_ca_file: Path | None = None
    ssl_cert_file: Path | None = None
    ssl_key_file: Path | None = None


# The keys of [kafka] read here, and the librdkafka settings they own: an
# override may not set those (a password in producer_overrides would put a
# secret in the configuration file).
SECURITY_KEYS: tuple[str, ...] = (
    "security_protocol",
    "sasl_mechanism",
    "sasl_username",
    "sasl_password_env",
    "ssl_ca_file",
    "ssl_cert_file",
    "ssl_key_file",
)
# librdkafka settings these keys own: producer_/consumer_overrides may not set them.
OWNED_LIBRDKAFKA_KEYS: tuple[str, ...] = ("security.protocol", "sasl.", "ssl.")
_ENV_NAME = r"[A-Za-z_][A-Za-z0-9_]*"


def build_kafka_security(table: Table) -> KafkaSecurity:
    """Read the security keys of the ``[kafka]`` table (the caller finishes the table)."""
    protocol = table.enum_(
        ("security_protocol",), KafkaSecurityProtocol, KafkaSecurityProtocol.PLAINTEXT
    )
    mechanism_got = table.take("sasl_mechanism")
    mechanism = (
        None
        if mechanism_got is None
        else table.check_enum(mechanism_got[0], mechanism_got[1], SaslMechanism)
    )
    security = KafkaSecurity(
        protocol=protocol,
        sasl_mechanism=mechanism,
        sasl_username=table.opt_str(("sasl_username",)),
        sasl_password_env=_opt_env_name(table, "sasl_password_env"),
        ssl_ca_file=table.opt_path(("ssl_ca_file",)),
        ssl_cert_file=table.opt_path(("ssl_cert_file",)),
        ssl_key_file=table.opt_path(("ssl_key_file",)),
    )
    _check(table, security)
    return security


def _opt_env_name(table: Table, name: str) -> str | None:
    value = table.opt_str((name,))
    if value is not None and re.fullmatch(_ENV_NAME, value) is None:
        raise table.error(name, f"must name an environment variable ({_ENV_NAME}), got {value!r}")
    return value


def _check(table: Table, s: KafkaSecurity) -> None:
    sasl_keys: dict[str, object] = {
        "sasl_mechanism": s.sasl_mechanism,
        "sasl_username": s.sasl_username,
        "sasl_password_env": s.sasl_password_env,
    }
    if s.protocol.sasl:
        for key, value in sasl_keys.items():
            if value is None:
                raise table.error(key, f"required with security_protocol = {s.protocol.value!r}")
        if s.sasl_mechanism is SaslMechanism.PLAIN and not s.protocol.tls:
            raise table.error(
                "sasl_mechanism",
                "PLAIN over SASL_PLAINTEXT sends the password in clear text; "
                "use SASL_SSL, or a SCRAM mechanism",
            )
    else:
        for key, value in sasl_keys.items():
            if value is not None:
                raise table.error(
                    key,
                    f"only with security_protocol SASL_PLAINTEXT or SASL_SSL "
                    f"(it is {s.protocol.value!r}): it would be ignored",
                )
    ssl_keys: dict[str, object] = {
        "ssl_ca_file": s.ssl_ca_file,
        "ssl_cert_file": s.ssl_cert_file,
        "ssl_key_file": s.ssl_key_file,
    }
    if not s.protocol.tls:
        for key, value in ssl_keys.items():
            if value is not None:
                raise table.error(
                    key,
                    f"only with security_protocol SSL or SASL_SSL "
                    f"(it is {s.protocol.value!r}): it would be ignored",
                )
    if (s.ssl_cert_file is None) != (s.ssl_key_file is None):
        missing = "ssl_key_file" if s.ssl_key_file is None else "ssl_cert_file"
        raise table.error(missing, "a client certificate needs both ssl_cert_file and ssl_key_file")
