"""The typed sections of ``cachet.toml``: frozen values with their defaults.

Every field's default is what a section left out of the file means; the
builders in :mod:`cachet.config.build` read the file into these.
"""

from __future__ import annotations

import socket
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from cachet.config.enums import (
    AuditMode,
    Classification,
    InvalidationMode,
    KvDtype,
    MatchMode,
    Role,
    ScrubDevice,
    ScrubMethod,
    TenantScope,
    TlsVersion,
    TransitSecurity,
    VerificationMode,
)
from cachet.config.kafka_security import KafkaSecurity
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.vault.config import VaultBackend, VaultConfig
from cachet.topics import Topic, TopicNames

__all__ = [
    "ALL_SCHEMES",
    "DEFAULT_INVALIDATION_FETCH_WAIT_MS",
    "DEFAULT_VIEW_FETCH_WAIT_MS",
    "FINGERPRINT_COMPONENTS",
    "LLM_KEY_FIELDS",
    "MAX_FETCH_WAIT_MS",
    "AccessControlConfig",
    "AiCacheConfig",
    "AttestationConfig",
    "ArchiveConfig",
    "AuditConfig",
    "ContractDefaults",
    "EmbeddedBrokerConfig",
    "EncryptionConfig",
    "ErasureConfig",
    "HttpClientCertificate",
    "HttpConfig",
    "HttpToken",
    "KafkaConfig",
    "KeyRotationConfig",
    "KeysConfig",
    "KvScrubConfig",
    "NodeConfig",
    "StateMachineConfig",
    "TtlConfig",
    "VaultBackend",
    "VaultConfig",
    "VerificationConfig",
]

ALL_SCHEMES: tuple[SignatureScheme, ...] = tuple(SignatureScheme)
# The parts of a computation fingerprint (DESIGN: "The cache").
FINGERPRINT_COMPONENTS: tuple[str, ...] = (
    "input",
    "computation",
    "parameters",
    "version",
    "hardware_class",
)
LLM_KEY_FIELDS: tuple[str, ...] = (
    "prompt_hash",
    "model_version",
    "temperature",
    "system_prompt_hash",
    "top_p",
    "max_tokens",
)

KafkaSetting = str | int | bool


def _frozen_map(items: Mapping[str, KafkaSetting] | None = None) -> Mapping[str, KafkaSetting]:
    return MappingProxyType(dict(items or {}))


# The defaults of [kafka] view_fetch_wait_ms and invalidation_fetch_wait_ms
# (why these: cachet.kafka.settings).
DEFAULT_VIEW_FETCH_WAIT_MS = 100
DEFAULT_INVALIDATION_FETCH_WAIT_MS = 10
# Above this a view sees watermark ticks too late for any contract whose
# ticks come every 200 ms (cachet.processors.watermarks).
MAX_FETCH_WAIT_MS = 1000


@dataclass(frozen=True, slots=True)
class KafkaConfig:
    """Where the log lives and how its topics are laid out."""

    bootstrap_servers: str = "127.0.0.1:9092"
    topic_prefix: str = "cachet."
    partitions: int = 3
    partitions_per_topic: Mapping[Topic, int] = field(default_factory=lambda: MappingProxyType({}))
    replication_factor: int = 1
    # How long the broker may hold an empty fetch (librdkafka's
    # fetch.wait.max.ms) of a node's live-view consumer and of its
    # invalidation listener: on the embedded broker each is both the
    # consumer's latency floor and its idle cost (the figures are in
    # cachet.kafka.settings, next to where they are used).
    view_fetch_wait_ms: int = DEFAULT_VIEW_FETCH_WAIT_MS
    invalidation_fetch_wait_ms: int = DEFAULT_INVALIDATION_FETCH_WAIT_MS
    # Extra librdkafka settings, applied over cachet.kafka's visible defaults.
    producer_overrides: Mapping[str, KafkaSetting] = field(default_factory=_frozen_map)
    consumer_overrides: Mapping[str, KafkaSetting] = field(default_factory=_frozen_map)
    # SASL/TLS for every client (cachet.config.kafka_security).
    security: KafkaSecurity = field(default_factory=KafkaSecurity)

    def topic_names(self) -> TopicNames:
        """Full topic names under this deployment's prefix."""
        return TopicNames(self.topic_prefix)

    def partitions_for(self, topic: Topic) -> int:
        """The partition count ``topic`` is created with."""
        return self.partitions_per_topic.get(topic, self.partitions)


@dataclass(frozen=True, slots=True)
class EmbeddedBrokerConfig:
    """The local Tansu broker started by ``cachet broker``.

    ``host`` is always a loopback address: the embedded broker has no
    authentication and no TLS, so on any other interface every event would
    be readable and writable by the network. ``port = 0`` picks a free port.
    """

    port: int = 9092
    host: str = "127.0.0.1"
    startup_timeout_s: float = 15.0


def _hostname() -> str:
    return socket.gethostname() or "cachet-node"


@dataclass(frozen=True, slots=True)
class NodeConfig:
    """This process's identity and local resources. Port 0 = endpoint off."""

    node_id: str = field(default_factory=_hostname)
    data_dir: Path = Path("./var")
    metrics_port: int = 0
    health_port: int = 0
    # The in-process L1 of decrypted values: at most this many entries (least
    # recently used dropped first); also bounds the cached key hashes and the
    # per-key change generations that guard it.
    l1_max_entries: int = 100_000


@dataclass(frozen=True, slots=True)
class HttpToken:
    """One bearer token of a node's HTTP front: the SHA-256 of the token
    (never the token itself) and the principal, role and scope it grants.
    ``scope`` None: entries without a subject only. ``expires_at_us``: when
    the token stops being accepted (UTC microseconds since the epoch; None:
    never)."""

    principal: str
    token_sha256: bytes
    role: Role
    scope: str | None = None
    expires_at_us: int | None = None


@dataclass(frozen=True, slots=True)
class HttpClientCertificate:
    """A client certificate's subject CN (mutual TLS) mapped to a principal."""

    principal: str
    common_name: str
    role: Role
    scope: str | None = None


@dataclass(frozen=True, slots=True)
class HttpConfig:
    """A node's HTTP front: where it listens, its bounds and its credentials.

    Role and scope come from a credential only (``tokens``, the tokens file,
    ``client_certificates``), never from a request. TLS is on when
    ``ssl_certfile`` is set; ``ssl_ca_certs`` verifies client certificates,
    which ``require_client_certificate`` makes mandatory.
    """

    host: str = "127.0.0.1"
    max_body_bytes: int = 8 * 1024 * 1024
    request_timeout_ms: int = 10_000
    keep_alive_timeout_ms: int = 5_000
    tokens: tuple[HttpToken, ...] = ()
    # More tokens, in a file of their own (written by ``cachet tokens add``;
    # read when the front starts).
    tokens_file: Path | None = None
    client_certificates: tuple[HttpClientCertificate, ...] = ()
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    ssl_ca_certs: Path | None = None
    require_client_certificate: bool = False


@dataclass(frozen=True, slots=True)
class KeysConfig:
    """Where signing keys live and how the keystore is unlocked.

    ``kek_env`` is the *name* of the environment variable holding the
    key-encryption key; the keystore reads it, configuration never does.
    ``kek_file``, when set, is used instead.
    """

    keystore_path: Path = Path("./var/keys/keystore.json")
    kek_file: Path | None = None
    kek_env: str = "CACHET_KEK"
    trust_anchor_id: str = "root"


@dataclass(frozen=True, slots=True)
class AttestationConfig:
    """Which signatures a seal carries and how events are batched into seals."""

    schemes: tuple[SignatureScheme, ...] = ALL_SCHEMES
    fingerprint_fields: tuple[str, ...] = FINGERPRINT_COMPONENTS
    # A batch closes at this many events, or once it is seal_batch_max_ms old
    # and the signing budget allows a seal, or at seal_max_delay_ms whatever
    # the budget says. Under load batches therefore grow (up to the maximum)
    # instead of seals multiplying: signing costs milliseconds per seal.
    seal_batch_max_events: int = 4096
    seal_batch_max_ms: int = 50
    seal_max_delay_ms: int = 200
    # The share of one core signing may take, sustained (a burst of half a
    # second of signing is always allowed): bounds the CPU an idle or busy
    # producer spends on seals.
    sign_cpu_budget: float = 0.10
    # Past this, an event no seal covers raises UnsealedTimeout.
    unsealed_timeout_ms: int = 5000


@dataclass(frozen=True, slots=True)
class AccessControlConfig:
    """The roles the query layer grants."""

    roles: tuple[Role, ...] = tuple(Role)
    # Auditors get inclusion and attestation proofs against a value
    # commitment, never plaintext (the seeds call this "zk queries").
    auditor_proofs: bool = True
    enforce_separation_of_duties: bool = True


@dataclass(frozen=True, slots=True)
class StateMachineConfig:
    """Entry lifecycle. The states and their proofs are fixed by the design."""

    # Terminal (Superseded/Expired/Revoked) versions kept per key in the view.
    audit_trail_depth: int = 100


@dataclass(frozen=True, slots=True)
class ArchiveConfig:
    """The archive consumer (``cachet archive run``). Its segments go to
    ``[audit] archive_dir``; ``backup_dir`` (when set) gets a second copy of
    every closed segment. A segment closes at ``segment_max_bytes`` or
    ``segment_max_age_ms`` after its first record, whichever comes first.
    ``verify_interval_ms`` schedules the archive's self-verification (0 =
    off). ``identity`` signs the ArchiveSegmentSealed anchors (default
    ``<node.node_id>-archive``). ``health_port`` 0 = no health endpoint."""

    backup_dir: Path | None = None
    segment_max_bytes: int = 64 * 1024 * 1024
    segment_max_age_ms: int = 60_000
    verify_interval_ms: int = 3_600_000
    identity: str | None = None
    codec: str = "null"
    health_port: int = 0


@dataclass(frozen=True, slots=True)
class AuditConfig:
    """Read auditing, the archive and evidence exports.

    Reads are written many to a record (CacheReadBatch events of at most
    ``batch_max_reads`` reads, fewer when the record would exceed the
    producer's message size limit), flushed by count and by
    ``flush_interval_ms``. In ``async`` mode a crash can lose at most
    ``loss_window_ms`` of reads (those buffered, at most
    ``max_pending_events``, and those not yet acknowledged); ``sync``
    serves only after the broker acknowledged the read's batch (group
    commit: concurrent readers share one acknowledgement).
    """

    mode: AuditMode = AuditMode.ASYNC
    loss_window_ms: int = 1000
    flush_interval_ms: int = 100
    max_pending_events: int = 10_000
    batch_max_reads: int = 1000
    archive_dir: Path = Path("./var/archive")
    # FINRA 4511: six years; 2192 days covers any six years, leap days included.
    retention_days: int = 2192
    fingerprint_log: Path | None = None
    transition_log: Path | None = None
    rotation_log: Path | None = None
    erasure_log: Path | None = None
    cab_output_dir: Path | None = None


@dataclass(frozen=True, slots=True)
class ContractDefaults:
    """Values a ``[contracts.NAME]`` table inherits when it leaves them out."""

    max_staleness_ms: int = 30_000
    strict: bool = True
    invalidation: InvalidationMode = InvalidationMode.EAGER


@dataclass(frozen=True, slots=True)
class EncryptionConfig:
    """Transport security; at rest is always AES-256-GCM per data subject."""

    transit: TransitSecurity = TransitSecurity.NONE
    tls_min_version: TlsVersion = TlsVersion.TLS_1_3
    ca_file: Path | None = None
    cert_file: Path | None = None
    key_file: Path | None = None


@dataclass(frozen=True, slots=True)
class KeyRotationConfig:
    """Signing key rotation schedule."""

    interval_days: int = 90
    auto_rotate: bool = True
    re_sign_on_rotation: bool = True


@dataclass(frozen=True, slots=True)
class AiCacheConfig:
    """LLM cache defaults; a contract records the mode it actually uses."""

    match: MatchMode = MatchMode.EXACT
    semantic_threshold: float = 0.95
    tenant_scope: TenantScope = TenantScope.TENANT
    # Shared caches are timing oracles: cross-tenant hits are opt-in.
    cross_tenant_sharing: bool = False
    key_fields: tuple[str, ...] = LLM_KEY_FIELDS


@dataclass(frozen=True, slots=True)
class VerificationConfig:
    """Verification mode per classification, and the probabilistic rate."""

    phi: VerificationMode = VerificationMode.ALWAYS_VERIFY
    pii: VerificationMode = VerificationMode.ALWAYS_VERIFY
    financial: VerificationMode = VerificationMode.ALWAYS_VERIFY
    proprietary: VerificationMode = VerificationMode.ALWAYS_VERIFY
    public: VerificationMode = VerificationMode.PROBABILISTIC
    probabilistic_rate: float = 0.10

    def mode_for(self, classification: Classification) -> VerificationMode:
        """The mode reads of ``classification`` use."""
        mode: VerificationMode = getattr(self, classification.value)
        return mode


@dataclass(frozen=True, slots=True)
class TtlConfig:
    """Default TTL per classification, in milliseconds (seed 002's table)."""

    phi_ms: int = 3_600_000  # 1 hour
    pii_ms: int = 86_400_000  # 24 hours
    financial_ms: int = 14_400_000  # 4 hours
    proprietary_ms: int = 259_200_000  # 72 hours
    public_ms: int = 604_800_000  # 7 days

    def for_class(self, classification: Classification) -> int:
        """The TTL of ``classification`` in milliseconds."""
        ttl: int = getattr(self, f"{classification.value}_ms")
        return ttl


@dataclass(frozen=True, slots=True)
class ErasureConfig:
    """Crypto-shredding erasure."""

    # Past this without ErasureCompleted, the erasure processor alerts.
    completion_timeout_ms: int = 60_000
    scrub_kv_cache: bool = True
    # Producer identities whose sealed ErasureRequested nodes and the erasure
    # processor act on (empty: nobody's; an erasure is a data-protection
    # decision from a configured identity).
    allowed_requesters: tuple[str, ...] = ()
    # The identity the erasure processor seals with: nodes act on a verified
    # ErasureCompleted only from it.
    processor_identity: str = "erasure"


@dataclass(frozen=True, slots=True)
class KvScrubConfig:
    """The GPU worker's KV block pool and how its zeroization is verified."""

    coverage_threshold: float = 0.999
    double_pass: bool = False
    method: ScrubMethod = ScrubMethod.FULL
    device: ScrubDevice = ScrubDevice.AUTO
    block_size: int = 16
    layers: int = 2
    heads: int = 8
    head_dim: int = 64
    num_blocks: int = 1024
    dtype: KvDtype = KvDtype.FLOAT16
    # Producer identities whose sealed KvScrubRequested / ErasureRequested a
    # worker acts on. Wiping is loss of service: empty = nobody's (a worker
    # still acts on its own request ends and its own identity's requests).
    allowed_requesters: tuple[str, ...] = ()
