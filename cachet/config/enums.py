"""The closed sets a ``cachet.toml`` value may come from.

Each enum's values are our canonical spellings; :func:`parse_enum` also
accepts the seeds' spellings ("AlwaysVerify", "FINRA-XML", "mTLS") by
comparing case- and punctuation-insensitively.

Three of them are also Avro enums (``Role``, ``InvalidationMode``,
``ScrubMethod``): one enum per concept, here because the kernel needs them
and cannot import ``cachet.schemas``. Their member names are the Avro
symbols, and each has the wire's ``UNKNOWN``: what a reader maps a symbol it
does not know to. UNKNOWN is never configured (:func:`parse_enum` refuses it)
and never written.
"""

from __future__ import annotations

import enum
import re
from typing import TypeVar

# One enum for the schemes, shared with the signers: config values compare
# equal to what the crypto layer signs with.
from cachet.crypto.schemes import SignatureScheme

__all__ = [
    "AuditMode",
    "Classification",
    "ExaminationExportFormat",
    "InvalidationMode",
    "KvDtype",
    "MatchMode",
    "RegulatoryClassification",
    "Role",
    "ScrubDevice",
    "ScrubMethod",
    "SignatureScheme",
    "TenantScope",
    "TlsVersion",
    "TransitSecurity",
    "VerificationMode",
    "parse_enum",
    "parse_scheme",
]

E = TypeVar("E", bound=enum.Enum)


def parse_scheme(text: str) -> SignatureScheme:
    """The scheme ``text`` names (our wire id or a known alias).

    Raises ``ValueError`` for anything else: a scheme we cannot verify must
    never be silently dropped from a "required" list.
    """
    found = _SCHEME_ALIASES.get(text.strip().upper().replace("_", "-"))
    if found is None:
        raise ValueError(text)
    return found


# Spellings seen in the seeds and in the literature. "SLH-DSA" alone names a
# family of twelve parameter sets; the seeds use it for SHA2-128f (the one
# they list in full), so that is what it means here. SHAKE and 's' variants
# are different schemes and stay unknown.
_SCHEME_ALIASES: dict[str, SignatureScheme] = {
    "ML-DSA-65": SignatureScheme.ML_DSA_65,
    "MLDSA65": SignatureScheme.ML_DSA_65,
    "ML-DSA65": SignatureScheme.ML_DSA_65,
    "DILITHIUM3": SignatureScheme.ML_DSA_65,
    "FN-DSA-512": SignatureScheme.FN_DSA_512,
    "FNDSA512": SignatureScheme.FN_DSA_512,
    "FALCON-512": SignatureScheme.FN_DSA_512,
    "FALCON512": SignatureScheme.FN_DSA_512,
    "SLH-DSA": SignatureScheme.SLH_DSA_SHA2_128F,
    "SLH-DSA-SHA2-128F": SignatureScheme.SLH_DSA_SHA2_128F,
    "SLH-DSA-SHA2-128F-SIMPLE": SignatureScheme.SLH_DSA_SHA2_128F,
    "SPHINCS+-SHA2-128F-SIMPLE": SignatureScheme.SLH_DSA_SHA2_128F,
    "SPHINCS+-SHA2-128F": SignatureScheme.SLH_DSA_SHA2_128F,
}


class Classification(enum.Enum):
    """Data classification: drives default TTL and verification mode."""

    PHI = "phi"
    PII = "pii"
    FINANCIAL = "financial"
    PROPRIETARY = "proprietary"
    PUBLIC = "public"


class VerificationMode(enum.Enum):
    """How often a read re-verifies the seal covering the value."""

    ALWAYS_VERIFY = "always_verify"
    PROBABILISTIC = "probabilistic"


class InvalidationMode(enum.Enum):
    """How a contract's entries are invalidated when their source changes
    (also the Avro ``InvalidationMode``, by member name)."""

    EAGER = "eager"  # broadcast Invalidated to every node's L1
    VERSIONED = "versioned"  # bump the version inside the fingerprint
    CONTRACTUAL = "contractual"  # source must confirm freshness in the window
    UNKNOWN = "unknown"  # wire only: a mode this reader does not know


class AuditMode(enum.Enum):
    """Whether a read waits for its CacheRead event to be acknowledged."""

    ASYNC = "async"
    SYNC = "sync"


class Role(enum.Enum):
    """Access roles of the query layer (also the Avro ``Role``, by member name;
    CacheRead.reader_role and TransitionAuthority.role carry the value)."""

    OWNER = "owner"
    REGULATOR = "regulator"
    AUDITOR = "auditor"
    UNKNOWN = "unknown"  # wire only: a role this reader does not know; grants nothing
    # May request erasures and legal holds; never reads values or writes.
    # After UNKNOWN: Avro enums only ever append symbols (schema set v3).
    DATA_PROTECTION = "data_protection"


class MatchMode(enum.Enum):
    """LLM cache lookup: exact fingerprint match or embedding similarity."""

    EXACT = "exact"
    SEMANTIC = "semantic"


class TenantScope(enum.Enum):
    """The mandatory filter on every LLM cache lookup."""

    TENANT = "tenant"
    SUBJECT = "subject"


class TransitSecurity(enum.Enum):
    """Transport protection between Cachet processes and Kafka."""

    NONE = "none"
    TLS = "tls"
    MTLS = "mtls"


class TlsVersion(enum.Enum):
    """The lowest TLS version a connection may negotiate."""

    TLS_1_2 = "1.2"
    TLS_1_3 = "1.3"


class RegulatoryClassification(enum.Enum):
    """FINRA data type of a contract's records."""

    QUOTE = "quote"
    ORDER = "order"
    TRADE = "trade"
    POSITION = "position"
    RISK = "risk"


class ExaminationExportFormat(enum.Enum):
    """Formats the examination export can write."""

    FINRA_XML = "finra-xml"
    JSON = "json"
    CSV = "csv"


class ScrubMethod(enum.Enum):
    """How a zeroized KV block is verified: every element, or a keyed sample
    (also the Avro ``ScrubMethod``; values are its symbols, and config
    accepts ``full``/``sampled`` in any case)."""

    FULL = "FULL"
    SAMPLED = "SAMPLED"
    UNKNOWN = "UNKNOWN"  # wire only: a method this reader does not know


class ScrubDevice(enum.Enum):
    """Where the KV block pool lives."""

    AUTO = "auto"
    CPU = "cpu"
    CUDA = "cuda"


class KvDtype(enum.Enum):
    """Element type of the KV block pool (torch dtype names)."""

    FLOAT16 = "float16"
    BFLOAT16 = "bfloat16"
    FLOAT32 = "float32"


# The member a wire reader maps an unknown Avro symbol to.
_WIRE_FALLBACK = "UNKNOWN"


def _squash(text: str) -> str:
    return re.sub(r"[^a-z0-9+.]", "", text.lower())


def parse_enum(cls: type[E], text: str) -> E:
    """The member of ``cls`` whose value or name ``text`` spells.

    Case, ``-``, ``_`` and spaces are ignored, so "AlwaysVerify",
    "always-verify" and "ALWAYS_VERIFY" are one value. Raises ``ValueError``,
    also for ``UNKNOWN``: that member is a wire reader's fallback, never a
    value anyone may choose.
    """
    wanted = _squash(text)
    for member in cls:
        if member.name == _WIRE_FALLBACK:
            continue
        if wanted in (_squash(str(member.value)), _squash(member.name)):
            return member
    raise ValueError(text)
