"""Loading ``cachet.toml`` into one validated :class:`CachetConfig`.

The file is read and checked once, at start-up; the result is passed down.
Nothing here reads environment variables: settings that name a secret's
location (``keys.kek_env``) hold the variable's name, not its value.
"""

from __future__ import annotations

import difflib
import re
import tomllib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from cachet.config.build import (
    build_access_control,
    build_archive,
    build_attestation,
    build_audit,
    build_broker,
    build_kafka,
    build_keys,
    build_node,
    build_state_machine,
    build_vault,
)
from cachet.config.build_http import build_http
from cachet.config.build_policy import (
    build_ai_cache,
    build_encryption,
    build_erasure,
    build_key_rotation,
    build_kvscrub,
    build_ttl,
    build_verification,
)
from cachet.config.contract import (
    CONTRACT_NAME_PATTERN,
    ContractConfig,
    build_contract,
    build_contract_defaults,
)
from cachet.config.errors import ConfigError
from cachet.config.sections import (
    AccessControlConfig,
    AiCacheConfig,
    ArchiveConfig,
    AttestationConfig,
    AuditConfig,
    ContractDefaults,
    EmbeddedBrokerConfig,
    EncryptionConfig,
    ErasureConfig,
    HttpConfig,
    KafkaConfig,
    KeyRotationConfig,
    KeysConfig,
    KvScrubConfig,
    NodeConfig,
    StateMachineConfig,
    TtlConfig,
    VaultConfig,
    VerificationConfig,
)
from cachet.config.values import Table, describe

__all__ = [
    "DEFAULT_CONFIG_PATH",
    "CachetConfig",
    "default_config",
    "load_config",
    "parse_config",
]

DEFAULT_CONFIG_PATH = Path("cachet.toml")


@dataclass(frozen=True, slots=True)
class CachetConfig:
    """Every setting of one Cachet deployment, validated."""

    kafka: KafkaConfig = field(default_factory=KafkaConfig)
    broker: EmbeddedBrokerConfig = field(default_factory=EmbeddedBrokerConfig)
    node: NodeConfig = field(default_factory=NodeConfig)
    http: HttpConfig = field(default_factory=HttpConfig)
    attestation: AttestationConfig = field(default_factory=AttestationConfig)
    access_control: AccessControlConfig = field(default_factory=AccessControlConfig)
    state_machine: StateMachineConfig = field(default_factory=StateMachineConfig)
    audit: AuditConfig = field(default_factory=AuditConfig)
    archive: ArchiveConfig = field(default_factory=ArchiveConfig)
    contracts: Mapping[str, ContractConfig] = field(default_factory=lambda: MappingProxyType({}))
    contract_defaults: ContractDefaults = field(default_factory=ContractDefaults)
    encryption: EncryptionConfig = field(default_factory=EncryptionConfig)
    key_rotation: KeyRotationConfig = field(default_factory=KeyRotationConfig)
    ai_cache: AiCacheConfig = field(default_factory=AiCacheConfig)
    verification: VerificationConfig = field(default_factory=VerificationConfig)
    ttl: TtlConfig = field(default_factory=TtlConfig)
    erasure: ErasureConfig = field(default_factory=ErasureConfig)
    kvscrub: KvScrubConfig = field(default_factory=KvScrubConfig)
    keys: KeysConfig = field(default_factory=KeysConfig)
    vault: VaultConfig = field(default_factory=VaultConfig)


# Sections that need nothing but their own table, in file order of the seeds.
_SIMPLE: dict[str, Callable[[Table], Any]] = {
    "kafka": build_kafka,
    "broker": build_broker,
    "node": build_node,
    "http": build_http,
    "keys": build_keys,
    "vault": build_vault,
    "attestation": build_attestation,
    "access_control": build_access_control,
    "state_machine": build_state_machine,
    "audit": build_audit,
    "archive": build_archive,
    "encryption": build_encryption,
    "key_rotation": build_key_rotation,
    "ai_cache": build_ai_cache,
    "verification": build_verification,
    "ttl": build_ttl,
    "erasure": build_erasure,
    "kvscrub": build_kvscrub,
}
_SECTIONS = (*_SIMPLE, "contracts")


def _contracts(
    data: Any, sections: Mapping[str, Any]
) -> tuple[ContractDefaults, Mapping[str, ContractConfig]]:
    """``[contracts]``: scalar keys are defaults, sub-tables are contracts."""
    table = Table(data, "contracts")
    scalars = {k: v for k, v in table.data.items() if not isinstance(v, Mapping)}
    defaults_table = Table(scalars, "contracts")
    defaults = build_contract_defaults(defaults_table)
    defaults_table.finish()
    contracts: dict[str, ContractConfig] = {}
    for name, body in table.data.items():
        if not isinstance(body, Mapping):
            continue
        if not _is_contract_name(name):
            raise ConfigError(
                None, f"contracts.{name}", f"a contract name must match {CONTRACT_NAME_PATTERN}"
            )
        contracts[name] = build_contract(
            Table(body, f"contracts.{name}"),
            name,
            defaults,
            sections["attestation"],
            sections["audit"],
            sections["ai_cache"],
        )
    # Sorted, so iteration order (and anything published from it) does not
    # depend on the order the file happened to list contracts in.
    return defaults, MappingProxyType(dict(sorted(contracts.items())))


def _is_contract_name(name: str) -> bool:
    return re.fullmatch(CONTRACT_NAME_PATTERN, name) is not None


def parse_config(data: Mapping[str, Any], source: str = "<memory>") -> CachetConfig:
    """Validate an already-parsed TOML document.

    ``source`` names the document in errors. Raises :class:`ConfigError`
    for the first unknown key, wrong type or impossible value.
    """
    try:
        return _parse(data)
    except ConfigError as error:
        raise error.with_path(source) from None


def _parse(data: Mapping[str, Any]) -> CachetConfig:
    for name, value in data.items():
        if name not in _SECTIONS:
            close = difflib.get_close_matches(name, _SECTIONS, n=1, cutoff=0.6)
            hint = f"; did you mean '{close[0]}'?" if close else ""
            raise ConfigError(None, name, f"unknown section{hint}")
        if not isinstance(value, Mapping):
            raise ConfigError(None, name, f"expected a table [{name}], got {describe(value)}")
    sections: dict[str, Any] = {
        name: build(Table(data.get(name, {}), name)) for name, build in _SIMPLE.items()
    }
    defaults, contracts = _contracts(data.get("contracts", {}), sections)
    return CachetConfig(contracts=contracts, contract_defaults=defaults, **sections)


def default_config() -> CachetConfig:
    """The configuration an empty ``cachet.toml`` means."""
    return parse_config({}, "<defaults>")


def load_config(path: str | Path | None = None) -> CachetConfig:
    """Read and validate a ``cachet.toml``.

    ``None`` reads ``./cachet.toml`` when it exists and otherwise returns
    the defaults; an explicit path that does not exist is an error (a typo
    in a path must not silently run with defaults).
    """
    if path is None:
        if not DEFAULT_CONFIG_PATH.is_file():
            return default_config()
        path = DEFAULT_CONFIG_PATH
    source = str(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise ConfigError(source, "", "no such file") from None
    except OSError as error:
        raise ConfigError(source, "", f"cannot read: {error.strerror or error}") from None
    try:
        document = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as error:
        raise ConfigError(source, "", f"not UTF-8: {error}") from None
    except tomllib.TOMLDecodeError as error:
        raise ConfigError(source, "", f"invalid TOML: {error}") from None
    return parse_config(document, source)


CONFIG_ENV = "CACHET_CONFIG"
BOOTSTRAP_SERVERS_ENV = "CACHET_BOOTSTRAP_SERVERS"


def resolve_config(
    path: str | Path | None,
    bootstrap_servers: str | None,
    environ: Mapping[str, str],
) -> tuple[CachetConfig, Path | None]:
    """The configuration a command or service runs with, and where it came from.

    The file: ``path``, else ``$CACHET_CONFIG``, else ``./cachet.toml`` when it
    exists, else the defaults (None). The broker: ``bootstrap_servers``, else
    ``$CACHET_BOOTSTRAP_SERVERS``, else the file's ``kafka.bootstrap_servers``.
    The one place that interprets these variables (the CLI and
    ``cachet.open`` both come here with the process environment).
    """
    env = environ
    chosen = path if path is not None else env.get(CONFIG_ENV)
    if chosen is None and DEFAULT_CONFIG_PATH.is_file():
        chosen = DEFAULT_CONFIG_PATH
    config = load_config(chosen)
    servers = bootstrap_servers or env.get(BOOTSTRAP_SERVERS_ENV)
    if servers:
        config = replace(config, kafka=replace(config.kafka, bootstrap_servers=servers))
    return config, (Path(chosen) if chosen is not None else None)
