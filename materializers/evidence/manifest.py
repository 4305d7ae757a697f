"""The signed manifest of an export, and its offline verification.

An export directory holds, besides its tables and report::

    manifest.json              every other file: path, size, SHA3-256; the parameters
    manifest.sig               signature lines over the manifest (one per scheme)
    signer/registration.txt    the anchor-signed registration of the signing key set
    signer/registration.sig    the trust anchor's signature lines over it
    signer/anchor.json         the trust anchor's public key set (to pin, not to trust)

``manifest.sig`` holds one line per scheme, in scheme order, in the signed
note form (``\\u2014 <scheme> <key id> <base64 signature>``), each over
``cachet/evidence-manifest/v1`` + 0x00 + the exact bytes of
``manifest.json``. The registration is the statement the key registry
verifies (``cachet.key-registration/v1``), byte for byte, so an offline
verifier proves the signing key the same way a CAB does: pin the anchor,
check the registration under it, check the manifest under the registered
keys, then every file's size and hash. Every file but ``manifest.json`` and
``manifest.sig`` is listed, ``signer/`` included, and a file that is not
listed is refused: nothing can be added, removed or changed unseen.

What it cannot prove offline: that the key set was not revoked after the
export was signed (revocations are in the log, and in ``key_events``).
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import json
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from cachet.crypto.registry import registration_statement
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    PrivateKeySet,
    SchemeStatus,
    SignatureLine,
    check_signatures,
    derive_key_set_id,
    sign_message,
)
from cachet.ledger.anchor import AnchorError, anchor_from_json, anchor_to_json
from cachet.ledger.cab import anchor_fingerprint
from cachet.ledger.cab_format import (
    CabFormatError,
    Registration,
    encode_signature_lines,
    parse_registration,
    parse_signature_lines,
)
from cachet.materializers.evidence.errors import ManifestError, SignerError

__all__ = [
    "MANIFEST",
    "MANIFEST_FORMAT",
    "SIGNATURE",
    "ExportSigner",
    "ManifestCheck",
    "ManifestReport",
    "sign_export",
    "verify_export",
]

MANIFEST = "manifest.json"
SIGNATURE = "manifest.sig"
REGISTRATION = "signer/registration.txt"
REGISTRATION_SIG = "signer/registration.sig"
ANCHOR = "signer/anchor.json"
MANIFEST_FORMAT = "cachet.evidence-manifest/v1"
SIGNING_DOMAIN = b"cachet/evidence-manifest/v1\x00"
_UNLISTED = frozenset({MANIFEST, SIGNATURE})


@dataclass(frozen=True, slots=True)
class ExportSigner:
    """Who signs an export: an identity's private key set and the
    anchor-signed registration that proves it (from the verified log)."""

    identity: str
    keys: PrivateKeySet
    registration: bytes
    registration_signatures: tuple[SignatureLine, ...]
    anchor: KeySet
    valid_from_us: int

    @classmethod
    def from_registration(
        cls,
        identity: str,
        keys: PrivateKeySet,
        anchor: KeySet,
        payload: dict[str, Any],
    ) -> ExportSigner:
        """From a verified SigningKeyRegistered payload of ``keys``' key set."""
        public = keys.public()
        if payload["producer_id"] != identity or payload["key_set_id"] != public.key_set_id:
            raise SignerError(
                f"registration is of {payload['key_set_id']} for {payload['producer_id']}, "
                f"not {public.key_set_id} for {identity}"
            )
        registered = {SignatureScheme(k["algorithm"]): k["public_key"] for k in payload["keys"]}
        if registered != dict(public.public_keys):
            raise SignerError(
                f"the registration of {public.key_set_id} for {identity} names other public keys "
                "than the keystore's key set of that id"
            )
        statement = registration_statement(identity, public, payload["valid_from_us"])
        lines = tuple(
            SignatureLine(s["algorithm"], s["key_id"], s["signature"])
            for s in payload["anchor_signatures"]
        )
        return cls(identity, keys, statement, lines, anchor, payload["valid_from_us"])


def _sha3(data: bytes) -> str:
    return hashlib.sha3_256(data).hexdigest()


def _files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


def sign_export(
    directory: Path,
    *,
    kind: str,
    parameters: dict[str, Any],
    signer: ExportSigner,
    created_at_us: int,
) -> dict[str, Any]:
    """Write ``signer/``, ``manifest.json`` and ``manifest.sig`` for every
    file now in ``directory``; returns the manifest document."""
    if created_at_us < signer.valid_from_us:
        raise SignerError(
            f"key set {signer.keys.key_set_id} is valid from {signer.valid_from_us}, "
            f"after the signing time {created_at_us}"
        )
    (directory / "signer").mkdir(exist_ok=True)
    (directory / REGISTRATION).write_bytes(signer.registration)
    (directory / REGISTRATION_SIG).write_bytes(
        encode_signature_lines(signer.registration_signatures)
    )
    (directory / ANCHOR).write_text(anchor_to_json(signer.anchor), "utf-8")
    files = []
    for name in _files(directory):
        if name in _UNLISTED:
            continue
        data = (directory / name).read_bytes()
        files.append({"path": name, "bytes": len(data), "sha3_256": _sha3(data)})
    doc = {
        "format": MANIFEST_FORMAT,
        "kind": kind,
        "created_at_us": created_at_us,
        "parameters": parameters,
        "signer": {
            "identity": signer.identity,
            "key_set_id": signer.keys.key_set_id,
            "anchor_fingerprint": anchor_fingerprint(signer.anchor),
        },
        "files": files,
    }
    manifest = (json.dumps(doc, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode()
    (directory / MANIFEST).write_bytes(manifest)
    lines = sign_message(SIGNING_DOMAIN + manifest, signer.keys)
    (directory / SIGNATURE).write_bytes(encode_signature_lines(lines))
    return doc


# --- verification -----------------------------------------------------------


class ManifestCheck(enum.StrEnum):
    """Every verification step, in the order they run and are reported."""

    PARSE = "parse"
    ANCHOR_PINNED = "anchor-pinned"
    REGISTRATION_SIGNED = "registration-signed-by-anchor"
    REGISTRATION_MATCHES = "registration-matches-signer"
    MANIFEST_SIGNED = "manifest-signed"
    KEY_VALID_AT_SIGNING = "key-valid-at-signing"
    FILES = "files"


@dataclass(frozen=True, slots=True)
class CheckResult:
    check: ManifestCheck
    passed: bool
    detail: str


@dataclass(frozen=True, slots=True)
class ManifestReport:
    """Every check's result; ``ok`` only when all ran and passed."""

    checks: tuple[CheckResult, ...]
    manifest: dict[str, Any] | None = None

    @property
    def ok(self) -> bool:
        ran = {c.check for c in self.checks}
        return ran == set(ManifestCheck) and all(c.passed for c in self.checks)

    def failures(self) -> list[CheckResult]:
        return [c for c in self.checks if not c.passed]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "checks": [
                {"check": c.check.value, "passed": c.passed, "detail": c.detail}
                for c in self.checks
            ],
        }


@dataclass(frozen=True, slots=True)
class _Parsed:
    manifest_bytes: bytes
    manifest: dict[str, Any]
    signatures: tuple[SignatureLine, ...]
    registration: Registration
    registration_bytes: bytes
    registration_signatures: tuple[SignatureLine, ...]
    anchor: KeySet


def _read(directory: Path, name: str) -> bytes:
    try:
        return (directory / name).read_bytes()
    except OSError as exc:
        raise ManifestError(f"{name}: cannot be read: {exc}") from exc


def _parse(directory: Path) -> _Parsed:
    manifest_bytes = _read(directory, MANIFEST)
    try:
        manifest = json.loads(manifest_bytes.decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as exc:
        raise ManifestError(f"{MANIFEST}: not JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != MANIFEST_FORMAT:
        raise ManifestError(f"{MANIFEST}: not a {MANIFEST_FORMAT} document")
    for key, kind in (("files", list), ("signer", dict), ("created_at_us", int)):
        if not isinstance(manifest.get(key), kind):
            raise ManifestError(f"{MANIFEST}: {key!r} missing or not a {kind.__name__}")
    registration_bytes = _read(directory, REGISTRATION)
    try:
        signatures = parse_signature_lines(_read(directory, SIGNATURE))
        registration = parse_registration(registration_bytes)
        registration_signatures = parse_signature_lines(_read(directory, REGISTRATION_SIG))
        anchor = anchor_from_json(_read(directory, ANCHOR).decode("utf-8"), ANCHOR)
    except (CabFormatError, AnchorError, UnicodeDecodeError) as exc:
        raise ManifestError(str(exc)) from exc
    return _Parsed(
        manifest_bytes,
        manifest,
        signatures,
        registration,
        registration_bytes,
        registration_signatures,
        anchor,
    )


def _signed(
    message: bytes,
    lines: tuple[SignatureLine, ...],
    keys: KeySet,
    required: Collection[SignatureScheme],
) -> dict[str, str]:
    """Schemes whose signature is not valid (empty: every required one verified)."""
    statuses = check_signatures(message, lines, keys, required)
    bad = {s.value: st.value for s, st in statuses.items() if st is not SchemeStatus.VALID}
    return bad


def _check_pin(anchor: KeySet, pinned: KeySet | None, fingerprint: str | None) -> CheckResult:
    own = anchor_fingerprint(anchor)
    if pinned is None and fingerprint is None:
        return CheckResult(
            ManifestCheck.ANCHOR_PINNED,
            False,
            f"no anchor pinned: the export's own anchor ({own}) proves nothing until pinned",
        )
    problems = []
    if pinned is not None and anchor_fingerprint(pinned) != own:
        problems.append(
            f"export anchor {own} is not the pinned anchor {anchor_fingerprint(pinned)}"
        )
    if fingerprint is not None and not hmac.compare_digest(own, fingerprint):
        problems.append(f"export anchor {own} is not the pinned fingerprint {fingerprint}")
    return CheckResult(ManifestCheck.ANCHOR_PINNED, not problems, "; ".join(problems) or own)


def _check_files(directory: Path, manifest: dict[str, Any]) -> CheckResult:
    problems: list[str] = []
    listed: set[str] = set()
    for entry in manifest["files"]:
        try:
            name, size, digest = entry["path"], entry["bytes"], entry["sha3_256"]
        except (KeyError, TypeError):
            problems.append(f"malformed file entry {entry!r}"[:120])
            continue
        path = PurePosixPath(str(name))
        # A listed path must stay inside the export: no absolute paths, no "..".
        if path.is_absolute() or ".." in path.parts or name in _UNLISTED:
            problems.append(f"{name}: not a path inside the export")
            continue
        listed.add(str(name))
        try:
            data = (directory / str(name)).read_bytes()
        except OSError:
            problems.append(f"{name}: listed but missing")
            continue
        if len(data) != size:
            problems.append(f"{name}: {len(data)} bytes, manifest says {size}")
        if not hmac.compare_digest(_sha3(data), str(digest)):
            problems.append(f"{name}: SHA3-256 {_sha3(data)} != manifest {digest}")
    extra = [f for f in _files(directory) if f not in listed and f not in _UNLISTED]
    problems.extend(f"{name}: not listed in the manifest" for name in extra)
    detail = "; ".join(problems) or f"{len(listed)} files, sizes and SHA3-256 match"
    return CheckResult(ManifestCheck.FILES, not problems, detail)


def verify_export(
    directory: Path,
    *,
    pinned_anchor: KeySet | None,
    pinned_fingerprint: str | None = None,
    required: Collection[SignatureScheme] = tuple(SignatureScheme),
) -> ManifestReport:
    """Run every check on an export directory, offline; never raises on bad bytes.

    The anchor must be pinned (its public key set, or its fingerprint):
    the registration is verified under the pinned key set, never under the
    export's copy unless pinned by fingerprint. Every check runs even after
    one fails, so the report lists every problem.
    """
    if not required:
        raise ValueError("at least one signature scheme must be required")
    try:
        parsed = _parse(directory)
    except ManifestError as exc:
        return ManifestReport((CheckResult(ManifestCheck.PARSE, False, str(exc)),))
    checks = [CheckResult(ManifestCheck.PARSE, True, f"{MANIFEST} and signer files parse")]
    checks.append(_check_pin(parsed.anchor, pinned_anchor, pinned_fingerprint))
    trusted = pinned_anchor if pinned_anchor is not None else parsed.anchor
    bad = _signed(parsed.registration_bytes, parsed.registration_signatures, trusted, required)
    checks.append(
        CheckResult(
            ManifestCheck.REGISTRATION_SIGNED,
            not bad,
            f"under anchor {trusted.key_set_id}: {bad}"
            if bad
            else f"valid under {trusted.key_set_id}",
        )
    )
    reg, signer = parsed.registration, parsed.manifest["signer"]
    problems = []
    if signer.get("identity") != reg.producer_identity:
        problems.append(f"manifest signer {signer.get('identity')} is not {reg.producer_identity}")
    if signer.get("key_set_id") != reg.key_set.key_set_id:
        problems.append(
            f"manifest key set {signer.get('key_set_id')} is not {reg.key_set.key_set_id}"
        )
    if derive_key_set_id(dict(reg.key_set.public_keys)) != reg.key_set.key_set_id:
        problems.append(f"key set id {reg.key_set.key_set_id} is not derived from its keys")
    checks.append(
        CheckResult(
            ManifestCheck.REGISTRATION_MATCHES,
            not problems,
            "; ".join(problems)
            or f"{reg.key_set.key_set_id} registered for {reg.producer_identity}",
        )
    )
    # Checked under the *registered* keys: a manifest signed by any other key
    # set (say, one the forger made) cannot pass.
    bad = _signed(SIGNING_DOMAIN + parsed.manifest_bytes, parsed.signatures, reg.key_set, required)
    checks.append(
        CheckResult(
            ManifestCheck.MANIFEST_SIGNED,
            not bad,
            f"{bad}"
            if bad
            else f"{len(parsed.signatures)} signatures valid under {reg.key_set.key_set_id}",
        )
    )
    created = parsed.manifest["created_at_us"]
    checks.append(
        CheckResult(
            ManifestCheck.KEY_VALID_AT_SIGNING,
            reg.valid_from_us <= created,
            f"valid from {reg.valid_from_us}, signed at {created}",
        )
    )
    checks.append(_check_files(directory, parsed.manifest))
    return ManifestReport(tuple(checks), parsed.manifest)
