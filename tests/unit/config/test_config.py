"""cachet.config: the seeds' examples load, defaults hold, mistakes are named."""

from __future__ import annotations

import dataclasses
import json
import socket
import tomllib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from cachet.config import (
    AuditMode,
    CachetConfig,
    Classification,
    ConfigError,
    ExaminationExportFormat,
    InvalidationMode,
    KvDtype,
    RegulatoryClassification,
    Role,
    ScrubDevice,
    ScrubMethod,
    TlsVersion,
    TransitSecurity,
    VerificationMode,
    default_config,
    load_config,
    parse_config,
    parse_duration_ms,
)
from cachet.crypto.schemes import SignatureScheme
from cachet.topics import Topic

SEEDS = Path(__file__).resolve().parents[2] / "fixtures" / "seeds"
SEED_FILES = sorted(SEEDS.glob("*.toml"))
ALL = (
    SignatureScheme.ML_DSA_65,
    SignatureScheme.FN_DSA_512,
    SignatureScheme.SLH_DSA_SHA2_128F,
)


def seed(name: str) -> CachetConfig:
    return load_config(SEEDS / name)


def error_of(doc: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ConfigError:
    """Load ``doc`` as ./cachet.toml and return the ConfigError it raises."""
    monkeypatch.chdir(tmp_path)
    Path("cachet.toml").write_text(doc, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config("cachet.toml")
    return info.value


@pytest.fixture
def in_empty_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(tmp_path)
    yield tmp_path


# -- the seeds ---------------------------------------------------------------


def test_every_seed_example_was_extracted() -> None:
    # 000: one block, 001: two, 002: one, 003: none (a SOC 2 mapping, no TOML).
    assert [p.name for p in SEED_FILES] == [
        "000_ec7d8359180815a1_1.toml",
        "001_03aa5eb6891403bc_1.toml",
        "001_03aa5eb6891403bc_2.toml",
        "002_fae4b8bb2ff2001d_1.toml",
    ]
    for path in SEED_FILES:
        assert "cachee" not in path.read_text(encoding="utf-8").lower()


@pytest.mark.parametrize("path", SEED_FILES, ids=lambda p: p.name)
def test_every_seed_fixture_loads(path: Path) -> None:
    config = load_config(path)
    assert isinstance(config, CachetConfig)
    # Every section the fixture wrote must have been read, not ignored.
    document = tomllib.loads(path.read_text(encoding="utf-8"))
    assert set(document) <= {f.name for f in dataclasses.fields(CachetConfig)}


def test_seed_000_soc2_controls() -> None:
    config = seed("000_ec7d8359180815a1_1.toml")
    assert config.attestation.schemes == ALL
    assert config.attestation.fingerprint_fields == (
        "input",
        "computation",
        "parameters",
        "version",
        "hardware_class",
    )
    assert config.access_control.roles == (Role.OWNER, Role.REGULATOR, Role.AUDITOR)
    assert config.access_control.auditor_proofs is True
    assert config.audit.retention_days == 400
    assert config.audit.rotation_log == Path("/var/log/cachet/key-rotations.log")
    assert config.audit.cab_output_dir == Path("/var/lib/cachet/cab-bundles/")
    assert config.contract_defaults.max_staleness_ms == 30_000
    assert config.contract_defaults.strict is True
    assert config.contracts == {}
    assert config.encryption.transit is TransitSecurity.MTLS
    assert config.encryption.tls_min_version is TlsVersion.TLS_1_3
    assert config.key_rotation.interval_days == 90
    assert config.key_rotation.re_sign_on_rotation is True


def test_seed_001_contracts() -> None:
    config = seed("001_03aa5eb6891403bc_1.toml")
    assert list(config.contracts) == ["finra_quotes", "risk_calculations", "soc2_sessions"]
    finra = config.contracts["finra_quotes"]
    assert finra.name == "finra_quotes"
    assert finra.computation_type == "market_quote"
    assert finra.max_staleness_ms == 500
    assert finra.required_signatures == ALL
    assert finra.fingerprint_fields == ("symbol", "exchange", "quote_type", "feed_version")
    assert finra.audit_trail_depth_days == 2190
    assert finra.invalidation is InvalidationMode.EAGER
    assert finra.strict is True
    sessions = config.contracts["soc2_sessions"]
    assert sessions.max_staleness_ms == 1_800_000
    assert sessions.audit_trail_depth_days == 400
    assert sessions.invalidation is InvalidationMode.VERSIONED
    risk = config.contracts["risk_calculations"]
    assert risk.max_staleness_ms == 5000
    assert risk.invalidation is InvalidationMode.CONTRACTUAL


def test_seed_001_finra_extensions() -> None:
    config = seed("001_03aa5eb6891403bc_2.toml")
    nbbo = config.contracts["nbbo_quotes"]
    assert nbbo.max_staleness_ms == 250
    assert nbbo.regulatory_classification is RegulatoryClassification.QUOTE
    assert nbbo.books_and_records_category == "4511(c)"
    assert nbbo.supervisory_review is True
    assert nbbo.examination_export_format is ExaminationExportFormat.FINRA_XML
    order = config.contracts["order_state"]
    assert order.max_staleness_ms == 100
    assert order.regulatory_classification is RegulatoryClassification.ORDER
    assert order.books_and_records_category == "4511(b)"


def test_seed_002_ai_cache() -> None:
    config = seed("002_fae4b8bb2ff2001d_1.toml")
    assert config.verification.phi is VerificationMode.ALWAYS_VERIFY
    assert config.verification.financial is VerificationMode.ALWAYS_VERIFY
    # The seed's "general_mode" is our public classification.
    assert config.verification.public is VerificationMode.PROBABILISTIC
    assert config.verification.probabilistic_rate == pytest.approx(0.10)
    assert config.ttl.phi_ms == 3_600_000
    assert config.ttl.pii_ms == 86_400_000
    assert config.ttl.for_class(Classification.FINANCIAL) == 14_400_000
    assert config.ttl.proprietary_ms == 259_200_000
    assert config.ttl.public_ms == 604_800_000
    assert config.ai_cache.key_fields[:2] == ("prompt_hash", "model_version")
    assert config.audit.erasure_log == Path("/var/log/cachet/ai-erasures.log")
    assert config.audit.retention_days == 400


# -- defaults ------------------------------------------------------------------


def test_defaults() -> None:
    config = default_config()
    assert config.kafka.bootstrap_servers == "127.0.0.1:9092"
    assert config.kafka.topic_prefix == "cachet."
    assert config.kafka.partitions == 3
    assert config.kafka.partitions_for(Topic.ENTRIES) == 3
    assert config.kafka.replication_factor == 1
    assert config.kafka.topic_names()(Topic.SEALS) == "cachet.seals"
    assert config.broker.host == "127.0.0.1"
    assert config.broker.port == 9092
    assert config.node.node_id == socket.gethostname()
    assert config.node.data_dir == Path("./var")
    assert config.keys.keystore_path == Path("./var/keys/keystore.json")
    assert config.keys.kek_file is None
    assert config.keys.kek_env == "CACHET_KEK"
    assert config.keys.trust_anchor_id == "root"
    assert config.attestation.schemes == ALL
    assert config.attestation.seal_batch_max_events == 4096
    assert config.attestation.seal_batch_max_ms == 50
    assert config.attestation.seal_max_delay_ms == 200
    assert config.attestation.sign_cpu_budget == 0.10
    assert config.attestation.unsealed_timeout_ms == 5000
    assert config.audit.mode is AuditMode.ASYNC
    assert config.audit.retention_days >= 6 * 365 + 2
    assert config.ai_cache.cross_tenant_sharing is False
    assert config.verification.mode_for(Classification.PII) is VerificationMode.ALWAYS_VERIFY
    assert config.ttl.for_class(Classification.PUBLIC) == 7 * 86_400_000
    assert config.kvscrub.coverage_threshold == pytest.approx(0.999)
    assert config.kvscrub.double_pass is False
    assert config.kvscrub.method is ScrubMethod.FULL
    assert config.kvscrub.device is ScrubDevice.AUTO
    assert config.kvscrub.dtype is KvDtype.FLOAT16
    assert config.contracts == {}


def test_empty_document_means_defaults() -> None:
    assert parse_config({}) == default_config()


def test_no_path_and_no_default_file_means_defaults(in_empty_dir: Path) -> None:
    assert load_config(None) == default_config()


def test_no_path_reads_default_file_when_present(in_empty_dir: Path) -> None:
    Path("cachet.toml").write_text('[kafka]\ntopic_prefix = "t1."\n', encoding="utf-8")
    assert load_config(None).kafka.topic_prefix == "t1."


def test_explicit_missing_path_is_an_error(in_empty_dir: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_config("nope.toml")
    assert info.value.path == "nope.toml"
    assert str(info.value).startswith("nope.toml: ")


def test_config_is_frozen() -> None:
    config = seed("001_03aa5eb6891403bc_1.toml")
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.kafka.partitions = 7  # type: ignore[misc]
    with pytest.raises(TypeError):
        config.contracts["x"] = config.contracts["finra_quotes"]  # type: ignore[index]


def test_documented_values_are_read() -> None:
    config = parse_config(
        {
            "kafka": {
                "partitions": 6,
                "partitions_per_topic": {"entries": 12},
                "producer_overrides": {"linger.ms": 5},
            },
            "broker": {"host": "::1", "port": 0},
            "keys": {"kek_file": "/run/secrets/kek"},
            "audit": {"mode": "sync", "retention_years": 6},
            "kvscrub": {"method": "sampled", "device": "cuda", "dtype": "bfloat16"},
            "ttl": {"phi_ms": "30m"},
        }
    )
    assert config.kafka.partitions_for(Topic.ENTRIES) == 12
    assert config.kafka.partitions_for(Topic.READS) == 6
    assert config.kafka.producer_overrides == {"linger.ms": 5}
    assert config.broker.host == "::1"
    assert config.keys.kek_file == Path("/run/secrets/kek")
    assert config.audit.mode is AuditMode.SYNC
    assert config.audit.retention_days == 6 * 366
    assert config.kvscrub.device is ScrubDevice.CUDA
    assert config.ttl.phi_ms == 1_800_000


def test_scheme_aliases_normalize() -> None:
    config = parse_config({"attestation": {"algorithms": ["SLH-DSA", "falcon_512", "ML-DSA-65"]}})
    assert config.attestation.schemes == ALL  # set semantics, canonical order
    one = parse_config({"attestation": {"schemes": ["fn-dsa-512"]}})
    assert one.attestation.schemes == (SignatureScheme.FN_DSA_512,)
    # A contract that omits required_signatures inherits attestation.schemes.
    one = parse_config({"attestation": {"schemes": ["fn-dsa-512"]}, "contracts": {"c": {}}})
    assert one.contracts["c"].required_signatures == (SignatureScheme.FN_DSA_512,)


# -- errors --------------------------------------------------------------------


def test_error_format_is_file_key_reason(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = error_of("[contracts.finra_quotes]\nmax_staleness_ms = -5\n", tmp_path, monkeypatch)
    assert str(error) == (
        "cachet.toml: contracts.finra_quotes.max_staleness_ms: expected a positive integer, got -5"
    )
    assert error.path == "cachet.toml"
    assert error.key == "contracts.finra_quotes.max_staleness_ms"
    assert error.reason == "expected a positive integer, got -5"


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        ("[kafka]\npartitions = 0\n", "kafka.partitions"),
        ('[kafka]\npartitions = "3"\n', "kafka.partitions"),
        ("[broker]\nport = true\n", "broker.port"),
        ("[broker]\nport = 70000\n", "broker.port"),
        ('[audit]\nmode = "eventually"\n', "audit.mode"),
        ("[audit]\nretention_days = 1.5\n", "audit.retention_days"),
        ("[kvscrub]\ncoverage_threshold = 1.5\n", "kvscrub.coverage_threshold"),
        ('[kvscrub]\ndevice = "tpu"\n', "kvscrub.device"),
        ('[contracts.q]\ninvalidation = "lazy"\n', "contracts.q.invalidation"),
        ('[contracts.q]\nstrict_mode = "yes"\n', "contracts.q.strict_mode"),
        ('[contracts.q]\nfingerprint_fields = "symbol"\n', "contracts.q.fingerprint_fields"),
        ("kafka = 3\n", "kafka"),
        ('[node]\nnode_id = "a b"\n', "node.node_id"),
        ('[keys]\nkek_env = "MY-KEK"\n', "keys.kek_env"),
    ],
)
def test_wrong_type_or_value_names_the_key(
    doc: str, key: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = error_of(doc, tmp_path, monkeypatch)
    assert error.key == key
    assert str(error).startswith(f"cachet.toml: {key}: ")
    assert "\n" not in str(error)


@pytest.mark.parametrize(
    ("doc", "key", "suggestion"),
    [
        ('[kafka]\nbootstrap_server = "x:1"\n', "kafka.bootstrap_server", "bootstrap_servers"),
        ("[kafak]\npartitions = 3\n", "kafak", "kafka"),
        ("[contracts.q]\nmax_stalenes_ms = 5\n", "contracts.q.max_stalenes_ms", "max_staleness_ms"),
        (
            "[contracts]\ndefault_freshnes_ms = 5\n",
            "contracts.default_freshnes_ms",
            "default_freshness_ms",
        ),
        (
            "[kafka.partitions_per_topic]\nentry = 3\n",
            "kafka.partitions_per_topic.entry",
            "entries",
        ),
        ("[kvscrub]\ncoverage = 0.9\n", "kvscrub.coverage", "coverage_threshold"),
    ],
)
def test_unknown_key_is_named_with_a_suggestion(
    doc: str, key: str, suggestion: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    error = error_of(doc, tmp_path, monkeypatch)
    assert error.key == key
    assert "unknown" in error.reason
    assert f"did you mean '{suggestion}'?" in error.reason


def test_unknown_key_without_a_close_match_has_no_suggestion() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"ttl": {"zzzz": 1}}, "x.toml")
    assert str(info.value) == "x.toml: ttl.zzzz: unknown key"


def test_two_spellings_of_one_setting_is_an_error() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"contracts": {"q": {"strict": True, "strict_mode": False}}})
    assert info.value.key == "contracts.q.strict_mode"


@pytest.mark.parametrize(
    "value", [-5, "-5s", "-100ms", 0, "0s"], ids=["int", "s", "ms", "zero", "zero-s"]
)
def test_negative_or_zero_staleness_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"contracts": {"q": {"max_staleness": value}}})
    assert info.value.key == "contracts.q.max_staleness"


@pytest.mark.parametrize(
    ("section", "key", "value"),
    [
        ("attestation", "algorithms", ["ML-DSA-65", "RSA-2048"]),
        ("attestation", "algorithms", ["SLH-DSA-SHAKE-128f"]),
        ("attestation", "algorithms", []),
        ("attestation", "algorithms", ["ML-DSA-65", "mldsa65"]),
    ],
)
def test_bad_scheme_name_is_refused(section: str, key: str, value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({section: {key: value}})
    assert info.value.key == f"{section}.{key}"


def test_unknown_contract_scheme_is_named() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"contracts": {"q": {"verification": ["ML-DSA-44"]}}}, "c.toml")
    assert str(info.value).startswith("c.toml: contracts.q.verification: unknown signature scheme")
    assert "'ML-DSA-44'" in str(info.value)


def test_contract_cannot_require_a_scheme_no_seal_carries() -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(
            {
                "attestation": {"algorithms": ["ML-DSA-65"]},
                "contracts": {"q": {"verification": ["FALCON-512"]}},
            }
        )
    assert info.value.key == "contracts.q.verification"


@pytest.mark.parametrize("host", ["0.0.0.0", "10.0.0.5", "::", "example.com", "127.0.0.1.nip.io"])
def test_non_loopback_broker_host_is_refused(host: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"broker": {"host": host}})
    assert info.value.key == "broker.host"
    assert "loopback" in info.value.reason
    assert "authentication" in info.value.reason  # says why


@pytest.mark.parametrize(
    ("host", "bound"),
    [
        ("127.0.0.1", "127.0.0.1"),
        ("127.0.0.2", "127.0.0.2"),
        ("::1", "::1"),
        ("localhost", "127.0.0.1"),
    ],
)
def test_loopback_broker_hosts_are_accepted(host: str, bound: str) -> None:
    assert parse_config({"broker": {"host": host}}).broker.host == bound


def test_semantic_lookup_is_refused_for_phi_and_pii() -> None:
    for cls in ("phi", "PII"):
        with pytest.raises(ConfigError) as info:
            parse_config({"contracts": {"q": {"classification": cls, "match": "semantic"}}})
        assert info.value.key == "contracts.q.match"
    ok = parse_config({"contracts": {"q": {"classification": "public", "match": "semantic"}}})
    assert ok.contracts["q"].semantic_threshold == pytest.approx(0.95)  # recorded in contract


@pytest.mark.parametrize(
    ("doc", "key"),
    [
        (
            {"state_machine": {"require_transition_proof": False}},
            "state_machine.require_transition_proof",
        ),
        ({"state_machine": {"states": ["Active", "Expired"]}}, "state_machine.states"),
        ({"attestation": {"enabled": False}}, "attestation.enabled"),
        ({"attestation": {"fingerprint_hash": "SHA-1"}}, "attestation.fingerprint_hash"),
        ({"attestation": {"unsealed_timeout_ms": 50}}, "attestation.unsealed_timeout_ms"),
        ({"audit": {"flush_interval_ms": 5000}}, "audit.flush_interval_ms"),
        ({"erasure": {"mode": "ttl"}}, "erasure.mode"),
        (
            {"kafka": {"producer_overrides": {"enable.idempotence": False}}},
            "kafka.producer_overrides.enable.idempotence",
        ),
        ({"kafka": {"producer_overrides": {"acks": 1}}}, "kafka.producer_overrides.acks"),
        (
            {"kafka": {"consumer_overrides": {"isolation.level": "read_uncommitted"}}},
            "kafka.consumer_overrides.isolation.level",
        ),
        ({"node": {"metrics_port": 9100, "health_port": 9100}}, "node.health_port"),
        ({"contracts": {"a.b": {}}}, "contracts.a.b"),
    ],
)
def test_guarantees_cannot_be_configured_away(doc: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config(doc)
    assert info.value.key == key


def test_error_is_one_line_even_for_multiline_reasons() -> None:
    error = ConfigError("f.toml", "a.b", "first\nsecond\n")
    assert str(error) == "f.toml: a.b: first second"
    with pytest.raises(ConfigError) as info:
        parse_config({"node": {"node_id": "line\nbreak"}}, "f.toml")
    assert "\n" not in str(info.value)


def test_invalid_toml_names_the_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    error = error_of("[kafka\npartitions = 3\n", tmp_path, monkeypatch)
    assert str(error).startswith("cachet.toml: invalid TOML: ")
    assert "\n" not in str(error)


def test_config_never_reads_the_environment() -> None:
    package = Path(__file__).resolve().parents[3] / "cachet" / "config"
    for source in package.glob("*.py"):
        text = source.read_text(encoding="utf-8")
        assert "os.environ" not in text and "getenv" not in text, source.name


# -- parse_duration_ms -------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "ms"),
    [
        (500, 500),
        ("100ms", 100),
        ("5s", 5_000),
        ("30m", 1_800_000),
        ("24h", 86_400_000),
        ("7d", 604_800_000),
        ("1h30m", 5_400_000),
        ("1.5s", 1_500),
        (" 5 s ", 5_000),
    ],
)
def test_parse_duration_ms(value: Any, ms: int) -> None:
    assert parse_duration_ms(value, "k") == ms


@pytest.mark.parametrize(
    "value",
    [-5, "-5s", "5", "5x", "", "s", 1.5, True, "0.5ms", 0, "0ms", None, "5s5", [5], "5 seconds"],
)
def test_parse_duration_ms_refuses(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_duration_ms(value, "contracts.q.max_staleness")
    assert info.value.key == "contracts.q.max_staleness"
    assert info.value.path is None
    assert "\n" not in str(info.value)


def test_parse_duration_ms_zero_when_allowed() -> None:
    assert parse_duration_ms(0, "k", allow_zero=True) == 0
    assert parse_duration_ms("0s", "k", allow_zero=True) == 0


# -- canonical_json ------------------------------------------------------------------

_CONTRACT_A = """
[contracts.finra_quotes]
computation_type = "market_quote"
max_staleness_ms = 500
verification = ["ML-DSA-65", "FALCON-512", "SLH-DSA-SHA2-128f"]
fingerprint_fields = ["symbol", "exchange"]
invalidation = "eager"
strict_mode = true
regulatory_classification = "quote"
"""
# The same contract: other key order, other scheme order and spelling.
_CONTRACT_B = """
[contracts.finra_quotes]
regulatory_classification = "QUOTE"
strict = true
required_signatures = ["slh-dsa", "fn-dsa-512", "ml-dsa-65"]
invalidation = "Eager"
fingerprint_fields = ["symbol", "exchange"]
max_staleness = "500ms"
computation_type = "market_quote"
"""


def _contract(doc: str) -> str:
    return parse_config(tomllib.loads(doc)).contracts["finra_quotes"].canonical_json()


def test_canonical_json_is_order_independent() -> None:
    assert _contract(_CONTRACT_A) == _contract(_CONTRACT_B)


def test_canonical_json_is_sorted_compact_and_pinned() -> None:
    text = _contract(_CONTRACT_A)
    assert " " not in text and "\n" not in text
    doc = json.loads(text)
    assert list(doc) == sorted(doc)
    # Pinned: a change here changes every published ContractDefined hash.
    assert text == (
        '{"audit_trail_depth_days":2192,"books_and_records_category":null,'
        '"classification":null,"computation_type":"market_quote",'
        '"examination_export_format":null,"fingerprint_fields":["symbol","exchange"],'
        '"invalidation":"eager","match":"exact","max_staleness_ms":500,'
        '"name":"finra_quotes","regulatory_classification":"quote",'
        '"required_signatures":["ml-dsa-65","fn-dsa-512","slh-dsa-sha2-128f"],'
        '"semantic_threshold":null,"strict":true,"supervisory_review":false}'
    )


def test_canonical_json_changes_with_any_value() -> None:
    base = _contract(_CONTRACT_A)
    assert _contract(_CONTRACT_A.replace("500", "501")) != base
    assert _contract(_CONTRACT_A.replace('"exchange"]', '"venue"]')) != base
    assert _contract(_CONTRACT_A.replace("strict_mode = true", "strict_mode = false")) != base


def test_a_seal_delay_shorter_than_the_batch_window_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = "[attestation]\nseal_batch_max_ms = 100\nseal_max_delay_ms = 50\n"
    assert "seal_max_delay_ms" in str(error_of(doc, tmp_path, monkeypatch))


@pytest.mark.parametrize("budget", ["0", "1.5", '"lots"'])
def test_a_signing_budget_outside_zero_to_one_is_refused(
    budget: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    doc = f"[attestation]\nsign_cpu_budget = {budget}\n"
    assert "sign_cpu_budget" in str(error_of(doc, tmp_path, monkeypatch))
