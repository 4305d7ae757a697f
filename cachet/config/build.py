"""Builders: one TOML table in, one typed section out.

Each builder reads every key it knows (ours and the seeds' spellings) and
then calls :meth:`Table.finish`, which rejects anything else. Seed settings
that the design fixes (the lifecycle states, SHA3-256 fingerprints,
transition proofs) are accepted only with the value the design gives them:
turning them off would silently drop a guarantee the evidence relies on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping
from types import MappingProxyType

from cachet.config.enums import (
    AuditMode,
    Role,
)
from cachet.config.kafka_security import OWNED_LIBRDKAFKA_KEYS, build_kafka_security
from cachet.config.sections import (
    FINGERPRINT_COMPONENTS,
    MAX_FETCH_WAIT_MS,
    AccessControlConfig,
    ArchiveConfig,
    AttestationConfig,
    AuditConfig,
    EmbeddedBrokerConfig,
    KafkaConfig,
    KafkaSetting,
    KeysConfig,
    NodeConfig,
    StateMachineConfig,
    VaultBackend,
    VaultConfig,
)
from cachet.config.values import Table, check_schemes, describe
from cachet.topics import Topic

__all__ = [
    "build_access_control",
    "build_archive",
    "build_attestation",
    "build_audit",
    "build_broker",
    "build_kafka",
    "build_keys",
    "build_node",
    "build_state_machine",
    "build_vault",
]

_ID = r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}"
_LIFECYCLE = ("Active", "Superseded", "Revoked", "Expired")
_DAYS_IN_A_YEAR_AT_MOST = 366


# -- kafka ---------------------------------------------------------------


def _librdkafka_settings(table: Table, name: str, *, producer: bool) -> Mapping[str, KafkaSetting]:
    got = table.take(name)
    if got is None:
        return MappingProxyType({})
    sub = Table(got[1], table.key(name))
    out: dict[str, KafkaSetting] = {}
    for key, value in sub.data.items():
        if isinstance(value, float) or not isinstance(value, str | int | bool):
            raise sub.error(key, f"expected a string, integer or boolean, got {describe(value)}")
        if key == "bootstrap.servers":
            raise sub.error(key, "set kafka.bootstrap_servers instead")
        # Credentials have keys of their own, and a password never sits in the file.
        if key.startswith(OWNED_LIBRDKAFKA_KEYS):
            raise sub.error(
                key, "set kafka.security_protocol, kafka.sasl_* and kafka.ssl_* instead"
            )
        # Idempotent acks=all producers are why a retry cannot duplicate an
        # event in the ledger; an override must not quietly undo that.
        if producer and key == "enable.idempotence" and value is not True:
            raise sub.error(key, "producers must stay idempotent (duplicates would enter the log)")
        if producer and key == "acks" and str(value) not in ("all", "-1"):
            raise sub.error(key, f"producers need acks=all, got {describe(value)}")
        # Aborted transactions must never reach a view.
        if not producer and key == "isolation.level" and value != "read_committed":
            raise sub.error(
                key, f"consumers must read committed records only, got {describe(value)}"
            )
        out[key] = value
    return MappingProxyType(out)


def _partitions_per_topic(table: Table) -> Mapping[Topic, int]:
    got = table.take("partitions_per_topic")
    if got is None:
        return MappingProxyType({})
    sub = Table(got[1], table.key("partitions_per_topic"))
    by_value = {t.value: t for t in Topic}
    sub.finish(extra_known=list(by_value))  # only topic names, e.g. "entries"
    out: dict[Topic, int] = {}
    for key, value in sub.data.items():
        out[by_value[key]] = sub.check_int(key, value, min=1, max=10_000)
    return MappingProxyType(out)


def build_kafka(table: Table) -> KafkaConfig:
    base = KafkaConfig()
    config = KafkaConfig(
        bootstrap_servers=table.str_(
            ("bootstrap_servers",), base.bootstrap_servers, pattern=r"[^\s,]+(,[^\s,]+)*"
        ),
        topic_prefix=table.str_(("topic_prefix",), base.topic_prefix, pattern=r"[A-Za-z0-9._-]+"),
        partitions=table.int_(("partitions",), base.partitions, min=1, max=10_000),
        partitions_per_topic=_partitions_per_topic(table),
        replication_factor=table.int_(("replication_factor",), base.replication_factor, min=1),
        producer_overrides=_librdkafka_settings(table, "producer_overrides", producer=True),
        consumer_overrides=_librdkafka_settings(table, "consumer_overrides", producer=False),
        security=build_kafka_security(table),
        view_fetch_wait_ms=table.int_(
            ("view_fetch_wait_ms",), base.view_fetch_wait_ms, min=1, max=MAX_FETCH_WAIT_MS
        ),
        invalidation_fetch_wait_ms=table.int_(
            ("invalidation_fetch_wait_ms",),
            base.invalidation_fetch_wait_ms,
            min=1,
            max=MAX_FETCH_WAIT_MS,
        ),
    )
    if config.invalidation_fetch_wait_ms > config.view_fetch_wait_ms:
        # The listener exists to be faster than the view's batch cycle.
        raise table.error(
            "invalidation_fetch_wait_ms",
            f"must not exceed view_fetch_wait_ms ({config.view_fetch_wait_ms}): the "
            f"invalidation listener is the fast path, got {config.invalidation_fetch_wait_ms}",
        )
    table.finish()
    return config


# -- this process ----------------------------------------------------------


def _loopback(table: Table, default: str) -> str:
    got = table.take("host")
    if got is None:
        return default
    name, value = got
    if value == "localhost":
        return "127.0.0.1"
    try:
        ok = isinstance(value, str) and ipaddress.ip_address(value).is_loopback
    except ValueError:
        ok = False
    if not ok:
        raise table.error(
            name,
            f"must be a loopback address such as 127.0.0.1, got {describe(value)}: the embedded "
            "broker has no authentication and no TLS, so on any other interface the network "
            "could read and write the ledger; use Apache Kafka (docker-compose.yml) and "
            "kafka.bootstrap_servers to serve other machines",
        )
    return str(value)


def build_broker(table: Table) -> EmbeddedBrokerConfig:
    base = EmbeddedBrokerConfig()
    config = EmbeddedBrokerConfig(
        port=table.int_(("port",), base.port, min=0, max=65535),
        host=_loopback(table, base.host),
        startup_timeout_s=table.float_(("startup_timeout_s",), base.startup_timeout_s, above=0),
    )
    table.finish()
    return config


def build_node(table: Table) -> NodeConfig:
    base = NodeConfig()
    config = NodeConfig(
        node_id=table.str_(("node_id",), base.node_id, pattern=_ID),
        data_dir=table.path(("data_dir",), base.data_dir),
        metrics_port=table.int_(("metrics_port",), base.metrics_port, min=0, max=65535),
        health_port=table.int_(("health_port",), base.health_port, min=0, max=65535),
        l1_max_entries=table.int_(("l1_max_entries",), base.l1_max_entries, min=1),
    )
    if config.metrics_port and config.metrics_port == config.health_port:
        raise table.error("health_port", f"same port as metrics_port ({config.metrics_port})")
    table.finish()
    return config


def build_keys(table: Table) -> KeysConfig:
    base = KeysConfig()
    config = KeysConfig(
        keystore_path=table.path(("keystore_path",), base.keystore_path),
        kek_file=table.opt_path(("kek_file",)),
        kek_env=table.str_(("kek_env",), base.kek_env, pattern=r"[A-Za-z_][A-Za-z0-9_]*"),
        trust_anchor_id=table.str_(("trust_anchor_id",), base.trust_anchor_id, pattern=_ID),
    )
    table.finish()
    return config


def build_vault(table: Table) -> VaultConfig:
    base = VaultConfig()
    config = VaultConfig(
        backend=table.enum_(("backend",), VaultBackend, base.backend),
        path=table.path(("path",), base.path),
        dsn=table.opt_str(("dsn",)),
        dsn_env=table.str_(("dsn_env",), base.dsn_env, pattern=r"[A-Za-z_][A-Za-z0-9_]*"),
        key_cache_entries=table.int_(
            ("key_cache_entries",), base.key_cache_entries, min=1, max=100_000_000
        ),
        vacuum_full=table.bool_(("vacuum_full",), base.vacuum_full),
    )
    if config.dsn is not None and config.backend is not VaultBackend.POSTGRES:
        raise table.error("dsn", f'is for backend = "postgres", not {config.backend.value!r}')
    table.finish()
    return config


# -- integrity and lifecycle -------------------------------------------------


def build_attestation(table: Table) -> AttestationConfig:
    base = AttestationConfig()
    table.must_be_true(("enabled",), "every event is covered by a signed seal")
    table.fixed(("fingerprint_hash",), ("SHA3-256",), "fingerprints are SHA3-256")
    got = table.take("schemes", "algorithms", "signature_schemes")
    schemes = base.schemes if got is None else check_schemes(table, got[0], got[1])
    fields = table.str_list(("fingerprint_fields",), base.fingerprint_fields)
    unknown = [f for f in fields if f not in FINGERPRINT_COMPONENTS]
    if unknown:
        raise table.error(
            "fingerprint_fields",
            f"unknown component {unknown[0]!r}; "
            f"expected some of {', '.join(FINGERPRINT_COMPONENTS)}",
        )
    config = AttestationConfig(
        schemes=schemes,
        fingerprint_fields=fields,
        seal_batch_max_events=table.int_(
            ("seal_batch_max_events",), base.seal_batch_max_events, min=1, max=65_536
        ),
        seal_batch_max_ms=table.duration_ms(
            {"seal_batch_max_ms": 1, "seal_batch_max": 1}, base.seal_batch_max_ms
        ),
        seal_max_delay_ms=table.duration_ms(
            {"seal_max_delay_ms": 1, "seal_max_delay": 1}, base.seal_max_delay_ms
        ),
        sign_cpu_budget=table.float_(
            ("sign_cpu_budget",), base.sign_cpu_budget, above=0.0, at_most=1.0
        ),
        unsealed_timeout_ms=table.duration_ms(
            {"unsealed_timeout_ms": 1, "unsealed_timeout": 1}, base.unsealed_timeout_ms
        ),
    )
    if config.seal_max_delay_ms < config.seal_batch_max_ms:
        raise table.error(
            "seal_max_delay_ms",
            f"must be at least seal_batch_max_ms ({config.seal_batch_max_ms}), "
            f"got {config.seal_max_delay_ms}",
        )
    # A timeout inside the batch window would fire on every healthy batch.
    if config.unsealed_timeout_ms <= config.seal_batch_max_ms:
        raise table.error(
            "unsealed_timeout_ms",
            f"must exceed seal_batch_max_ms ({config.seal_batch_max_ms}), "
            f"got {config.unsealed_timeout_ms}",
        )
    table.finish()
    return config


def build_access_control(table: Table) -> AccessControlConfig:
    base = AccessControlConfig()
    roles = base.roles
    got = table.take("roles", "key_types")
    if got is not None:
        name, value = got
        if not isinstance(value, list) or not value:
            raise table.error(name, f"expected a non-empty array of roles, got {describe(value)}")
        parsed = [table.check_enum(name, v, Role) for v in value]
        if len(set(parsed)) != len(parsed):
            raise table.error(name, "a role is listed twice")
        roles = tuple(r for r in Role if r in parsed)
    config = AccessControlConfig(
        roles=roles,
        auditor_proofs=table.bool_(("auditor_proofs", "auditor_zk_queries"), base.auditor_proofs),
        enforce_separation_of_duties=table.bool_(
            ("enforce_separation_of_duties",), base.enforce_separation_of_duties
        ),
    )
    table.finish()
    return config


def build_state_machine(table: Table) -> StateMachineConfig:
    got = table.take("states")
    if got is not None and (
        not isinstance(got[1], list) or sorted(map(str, got[1])) != sorted(_LIFECYCLE)
    ):
        raise table.error(
            "states",
            f"the lifecycle is fixed to {', '.join(_LIFECYCLE)} (replay and proofs depend on it), "
            f"got {describe(got[1]) if not isinstance(got[1], list) else got[1]}",
        )
    why = "every transition is a sealed event with its authority and proof"
    table.must_be_true(("require_transition_authority",), why)
    table.must_be_true(("require_transition_proof",), why)
    table.must_be_true(("log_all_transitions",), why)
    config = StateMachineConfig(
        audit_trail_depth=table.int_(
            ("audit_trail_depth",), StateMachineConfig().audit_trail_depth, min=1
        ),
    )
    table.finish()
    return config


def build_audit(table: Table) -> AuditConfig:
    base = AuditConfig()
    retention = base.retention_days
    days = table.take("retention_days")
    years = table.take("retention_years")
    if days is not None and years is not None:
        raise table.error("retention_years", "same setting as 'retention_days'; set only one")
    if days is not None:
        retention = table.check_int(days[0], days[1], min=1)
    elif years is not None:
        # Round up: a retention period must never fall short of the rule.
        retention = table.check_int(years[0], years[1], min=1) * _DAYS_IN_A_YEAR_AT_MOST
    config = AuditConfig(
        mode=table.enum_(("mode",), AuditMode, base.mode),
        loss_window_ms=table.duration_ms(
            {"loss_window_ms": 1, "loss_window": 1}, base.loss_window_ms
        ),
        flush_interval_ms=table.duration_ms(
            {"flush_interval_ms": 1, "flush_interval": 1}, base.flush_interval_ms
        ),
        max_pending_events=table.int_(("max_pending_events",), base.max_pending_events, min=1),
        batch_max_reads=table.int_(("batch_max_reads",), base.batch_max_reads, min=1),
        archive_dir=table.path(("archive_dir",), base.archive_dir),
        retention_days=retention,
        fingerprint_log=table.opt_path(("fingerprint_log",)),
        transition_log=table.opt_path(("transition_log",)),
        rotation_log=table.opt_path(("rotation_log",)),
        erasure_log=table.opt_path(("erasure_log",)),
        cab_output_dir=table.opt_path(("cab_output_dir",)),
    )
    # The documented loss window is only true if buffered reads are flushed
    # at least that often.
    if config.flush_interval_ms > config.loss_window_ms:
        raise table.error(
            "flush_interval_ms",
            f"must not exceed loss_window_ms ({config.loss_window_ms}), "
            f"got {config.flush_interval_ms}",
        )
    table.finish()
    return config


def build_archive(table: Table) -> ArchiveConfig:
    base = ArchiveConfig()
    # Absent: None (the archive command derives <node.node_id>-archive).
    identity = table.str_(("identity",), "", pattern=_ID) or None
    config = ArchiveConfig(
        backup_dir=table.opt_path(("backup_dir",)),
        segment_max_bytes=table.int_(("segment_max_bytes",), base.segment_max_bytes, min=1024),
        segment_max_age_ms=table.duration_ms(
            {"segment_max_age_ms": 1, "segment_max_age": 1}, base.segment_max_age_ms
        ),
        verify_interval_ms=table.duration_ms(
            {"verify_interval_ms": 1, "verify_interval": 1},
            base.verify_interval_ms,
            allow_zero=True,
        ),
        identity=identity,
        codec=table.str_(("codec",), base.codec, pattern=r"null|deflate"),
        health_port=table.int_(("health_port",), base.health_port, min=0, max=65535),
    )
    table.finish()
    return config
