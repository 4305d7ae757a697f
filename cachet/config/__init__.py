"""Cachet's configuration: one typed object loaded from ``cachet.toml``.

>>> config = load_config("cachet.toml")          # doctest: +SKIP
>>> config.contracts["finra_quotes"].max_staleness_ms  # doctest: +SKIP
500

The file is validated once (unknown keys, wrong types and impossible values
are :class:`ConfigError` naming file, key and reason) and the frozen result
is passed down; no other module reads ``cachet.toml`` or the environment.
The seeds' key names are accepted alongside ours (``verification`` for
``required_signatures``, ``strict_mode`` for ``strict``, ``FALCON-512`` for
``fn-dsa-512``), so their examples load as written.
"""

from __future__ import annotations

from cachet.config.contract import ContractConfig
from cachet.config.enums import (
    AuditMode,
    Classification,
    ExaminationExportFormat,
    InvalidationMode,
    KvDtype,
    MatchMode,
    RegulatoryClassification,
    Role,
    ScrubDevice,
    ScrubMethod,
    TenantScope,
    TlsVersion,
    TransitSecurity,
    VerificationMode,
)
from cachet.config.errors import ConfigError
from cachet.config.load import (
    DEFAULT_CONFIG_PATH,
    CachetConfig,
    default_config,
    load_config,
    parse_config,
)
from cachet.config.sections import (
    AccessControlConfig,
    AiCacheConfig,
    AttestationConfig,
    AuditConfig,
    ContractDefaults,
    EmbeddedBrokerConfig,
    EncryptionConfig,
    ErasureConfig,
    KafkaConfig,
    KeyRotationConfig,
    KeysConfig,
    KvScrubConfig,
    NodeConfig,
    StateMachineConfig,
    TtlConfig,
    VerificationConfig,
)
from cachet.config.values import parse_duration_ms
from cachet.crypto.schemes import SignatureScheme

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "AccessControlConfig",
    "AiCacheConfig",
    "AttestationConfig",
    "AuditConfig",
    "AuditMode",
    "CachetConfig",
    "Classification",
    "ConfigError",
    "ContractConfig",
    "ContractDefaults",
    "EmbeddedBrokerConfig",
    "EncryptionConfig",
    "ErasureConfig",
    "ExaminationExportFormat",
    "InvalidationMode",
    "KafkaConfig",
    "KeyRotationConfig",
    "KeysConfig",
    "KvDtype",
    "KvScrubConfig",
    "MatchMode",
    "NodeConfig",
    "RegulatoryClassification",
    "Role",
    "ScrubDevice",
    "ScrubMethod",
    "SignatureScheme",
    "StateMachineConfig",
    "TenantScope",
    "TlsVersion",
    "TransitSecurity",
    "TtlConfig",
    "VerificationConfig",
    "VerificationMode",
    "default_config",
    "load_config",
    "parse_config",
    "parse_duration_ms",
]
