"""Builders for the policy sections: privacy, retention and KV scrubbing.

Same contract as :mod:`cachet.config.build`: read every known key, then
:meth:`Table.finish` refuses the rest.
"""

from __future__ import annotations

import re
from typing import Any

from cachet.config.enums import (
    Classification,
    KvDtype,
    MatchMode,
    ScrubDevice,
    ScrubMethod,
    TenantScope,
    TlsVersion,
    TransitSecurity,
    VerificationMode,
)
from cachet.config.sections import (
    AiCacheConfig,
    EncryptionConfig,
    ErasureConfig,
    KeyRotationConfig,
    KvScrubConfig,
    TtlConfig,
    VerificationConfig,
)
from cachet.config.values import Table

__all__ = [
    "build_ai_cache",
    "build_encryption",
    "build_erasure",
    "build_key_rotation",
    "build_kvscrub",
    "build_ttl",
    "build_verification",
]


# -- privacy -------------------------------------------------------------------


def build_encryption(table: Table) -> EncryptionConfig:
    base = EncryptionConfig()
    table.fixed(("at_rest",), ("AES-256-GCM",), "values are AES-256-GCM under per-subject keys")
    tls = base.tls_min_version
    got = table.take("tls_min_version")
    if got is not None:
        # TOML reads an unquoted 1.3 as a float; accept it as the version.
        value: Any = str(got[1]) if isinstance(got[1], float) else got[1]
        tls = table.check_enum(got[0], value, TlsVersion)
    config = EncryptionConfig(
        transit=table.enum_(("transit",), TransitSecurity, base.transit),
        tls_min_version=tls,
        ca_file=table.opt_path(("ca_file",)),
        cert_file=table.opt_path(("cert_file",)),
        key_file=table.opt_path(("key_file",)),
    )
    table.finish()
    return config


def build_key_rotation(table: Table) -> KeyRotationConfig:
    base = KeyRotationConfig()
    config = KeyRotationConfig(
        interval_days=table.int_(("interval_days",), base.interval_days, min=1),
        auto_rotate=table.bool_(("auto_rotate",), base.auto_rotate),
        re_sign_on_rotation=table.bool_(("re_sign_on_rotation",), base.re_sign_on_rotation),
    )
    table.finish()
    return config


def build_ai_cache(table: Table) -> AiCacheConfig:
    base = AiCacheConfig()
    table.fixed(("key_construction",), ("SHA3-256",), "cache keys are SHA3-256 fingerprints")
    table.fixed(("bundle_format",), ("CAB",), "the Cache Attestation Bundle is the one format")
    table.must_be_true(("sign_values",), "every value travels in a sealed event")
    config = AiCacheConfig(
        match=table.enum_(("match", "match_mode"), MatchMode, base.match),
        semantic_threshold=table.float_(
            ("semantic_threshold",), base.semantic_threshold, above=0, at_most=1
        ),
        tenant_scope=table.enum_(("tenant_scope", "scope"), TenantScope, base.tenant_scope),
        cross_tenant_sharing=table.bool_(("cross_tenant_sharing",), base.cross_tenant_sharing),
        key_fields=table.str_list(("key_fields",), base.key_fields),
    )
    table.finish()
    return config


def _class_names(c: Classification, suffix: str) -> tuple[str, ...]:
    # The seeds say "general" for non-sensitive content: our "public".
    stems = (c.value, "general") if c is Classification.PUBLIC else (c.value,)
    return tuple(f"{stem}{suffix}" for stem in stems)


def build_verification(table: Table) -> VerificationConfig:
    base = VerificationConfig()
    modes = {
        c: table.enum_(_class_names(c, "_mode"), VerificationMode, base.mode_for(c))
        for c in Classification
    }
    config = VerificationConfig(
        phi=modes[Classification.PHI],
        pii=modes[Classification.PII],
        financial=modes[Classification.FINANCIAL],
        proprietary=modes[Classification.PROPRIETARY],
        public=modes[Classification.PUBLIC],
        probabilistic_rate=table.float_(
            ("probabilistic_rate", "sample_rate"), base.probabilistic_rate, above=0, at_most=1
        ),
    )
    table.finish()
    return config


def build_ttl(table: Table) -> TtlConfig:
    base = TtlConfig()
    ttl: dict[Classification, int] = {}
    for c in Classification:
        names = {n: 1 for n in _class_names(c, "_ms")}
        names.update({n: 1000 for n in _class_names(c, "_seconds")})
        ttl[c] = table.duration_ms(names, base.for_class(c))
    config = TtlConfig(
        phi_ms=ttl[Classification.PHI],
        pii_ms=ttl[Classification.PII],
        financial_ms=ttl[Classification.FINANCIAL],
        proprietary_ms=ttl[Classification.PROPRIETARY],
        public_ms=ttl[Classification.PUBLIC],
    )
    table.finish()
    return config


def build_erasure(table: Table) -> ErasureConfig:
    base = ErasureConfig()
    table.fixed(
        ("mode",), ("immediate", "crypto-shred"), "erasure destroys the subject's data key at once"
    )
    table.fixed(("revocation_state",), ("Revoked",), "erased entries end Revoked")
    table.must_be_true(("generate_transition_proof",), "an erasure must be provable")
    table.must_be_true(("log_erasure_events",), "ErasureRequested/Completed are ledger events")
    config = ErasureConfig(
        completion_timeout_ms=table.duration_ms(
            {"completion_timeout_ms": 1, "completion_timeout": 1}, base.completion_timeout_ms
        ),
        scrub_kv_cache=table.bool_(("scrub_kv_cache",), base.scrub_kv_cache),
        allowed_requesters=_identities(table, "allowed_requesters", base.allowed_requesters),
        processor_identity=_identity(table, "processor_identity", base.processor_identity),
    )
    table.finish()
    return config


def build_kvscrub(table: Table) -> KvScrubConfig:
    base = KvScrubConfig()
    config = KvScrubConfig(
        coverage_threshold=table.float_(
            ("coverage_threshold",), base.coverage_threshold, above=0, at_most=1
        ),
        double_pass=table.bool_(("double_pass",), base.double_pass),
        method=table.enum_(("method",), ScrubMethod, base.method),
        device=table.enum_(("device",), ScrubDevice, base.device),
        block_size=table.int_(("block_size",), base.block_size, min=1),
        layers=table.int_(("layers",), base.layers, min=1),
        heads=table.int_(("heads",), base.heads, min=1),
        head_dim=table.int_(("head_dim",), base.head_dim, min=1),
        num_blocks=table.int_(("num_blocks",), base.num_blocks, min=1),
        dtype=table.enum_(("dtype",), KvDtype, base.dtype),
        allowed_requesters=_identities(table, "allowed_requesters", base.allowed_requesters),
    )
    table.finish()
    return config


# A producer identity, as cachet.ledger.identity accepts it (no "@epoch").
_IDENTITY = r"[A-Za-z0-9._:-]{1,128}"


def _identities(table: Table, name: str, default: tuple[str, ...]) -> tuple[str, ...]:
    identities = table.str_list((name,), default, non_empty=False)
    for identity in identities:
        if re.fullmatch(_IDENTITY, identity) is None:
            raise table.error(
                name, f"{identity!r} is not a producer identity (1-128 of letters, digits, ._:-)"
            )
    return identities


def _identity(table: Table, name: str, default: str) -> str:
    identity = table.str_((name,), default)
    if re.fullmatch(_IDENTITY, identity) is None:
        raise table.error(
            name, f"{identity!r} is not a producer identity (1-128 of letters, digits, ._:-)"
        )
    return identity
