"""The liboqs backend (``liboqs-python``, module ``oqs``).

Import this module only after :func:`cachet.crypto.signing.liboqs_available`
said yes: ``import oqs`` without the shared library makes liboqs-python
download and build liboqs. This module itself imports ``oqs`` lazily, inside
:func:`backend`, never at import time.

Algorithm names by scheme, first match in ``oqs.get_enabled_sig_mechanisms()``:

* ML-DSA-65 -> ``"ML-DSA-65"`` (liboqs >= 0.10). ``"Dilithium3"`` is the
  round-3 scheme, not FIPS 204, and is deliberately not a fallback.
* SLH-DSA-SHA2-128f -> ``"SLH_DSA_PURE_SHA2_128F"`` (liboqs >= 0.13, FIPS 205
  pure, empty context). Older liboqs only has ``"SPHINCS+-SHA2-128f-simple"``
  (round 3.1), whose signatures FIPS 205 verifiers reject, so it is not used.
* FN-DSA-512 -> ``"FN-DSA-512"`` when liboqs ships it, else ``"Falcon-padded-512"``
  (round-3 Falcon, fixed 666-byte signatures; plain "Falcon-512" signatures
  vary in length; FIPS 206 is not final). ``signing.backend_for`` keeps
  py-fn-dsa ahead of this one under "auto" for that reason.

Not testable on a machine without liboqs; the tests check only that it is
never imported there.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachet.crypto.schemes import KeyPair, SignatureScheme, SigningError

__all__ = ["OQS_ALGORITHMS", "OqsBackend", "backend"]

logger = logging.getLogger(__name__)

OQS_ALGORITHMS: dict[SignatureScheme, tuple[str, ...]] = {
    SignatureScheme.ML_DSA_65: ("ML-DSA-65",),
    SignatureScheme.SLH_DSA_SHA2_128F: ("SLH_DSA_PURE_SHA2_128F",),
    SignatureScheme.FN_DSA_512: ("FN-DSA-512", "Falcon-padded-512"),
}


def _import_oqs(library: Path | None) -> Any:
    """Import ``oqs`` with the already-found library, never triggering a build.

    liboqs-python finds its library through ``OQS_INSTALL_PATH`` or the
    system loader. When ours came from an explicit directory, point
    ``OQS_INSTALL_PATH`` at it for the duration of the import only.
    """
    if library is None:
        raise SigningError("liboqs shared library not found; refusing to import oqs")
    previous = os.environ.get("OQS_INSTALL_PATH")
    prefix = library.parent.parent if library.parent.name in ("lib", "lib64") else library.parent
    os.environ["OQS_INSTALL_PATH"] = str(prefix)
    try:
        import oqs  # noqa: PLC0415 - guarded import, see module docstring
    finally:
        if previous is None:
            os.environ.pop("OQS_INSTALL_PATH", None)
        else:
            os.environ["OQS_INSTALL_PATH"] = previous
    return oqs


@dataclass(frozen=True, slots=True)
class OqsBackend:
    """One scheme through liboqs. Private keys are liboqs' expanded encoding."""

    scheme: SignatureScheme
    algorithm: str
    oqs_module: Any = field(repr=False, compare=False)
    name: str = "liboqs"

    def generate(self) -> KeyPair:
        with self.oqs_module.Signature(self.algorithm) as signer:
            public = bytes(signer.generate_keypair())
            private = bytes(signer.export_secret_key())
        return KeyPair(public=public, private=private)

    def sign(self, private: bytes, message: bytes) -> bytes:
        try:
            with self.oqs_module.Signature(self.algorithm, private) as signer:
                return bytes(signer.sign(message))
        except (ValueError, RuntimeError, TypeError) as exc:
            raise SigningError(f"liboqs {self.algorithm} signing failed: {exc}") from exc

    def verify(self, public: bytes, message: bytes, signature: bytes) -> bool:
        if (
            not isinstance(public, bytes)
            or not isinstance(signature, bytes)
            or len(public) != self.scheme.public_key_size
            or len(signature) != self.scheme.signature_size
        ):
            return False
        try:
            with self.oqs_module.Signature(self.algorithm) as verifier:
                return bool(verifier.verify(message, signature, public))
        except (ValueError, RuntimeError, TypeError):
            return False


def backend(scheme: SignatureScheme, library: Path | None) -> OqsBackend | None:
    """The liboqs backend for ``scheme``, or None when this liboqs lacks it."""
    oqs = _import_oqs(library)
    enabled = set(oqs.get_enabled_sig_mechanisms())
    for algorithm in OQS_ALGORITHMS[scheme]:
        if algorithm in enabled:
            return OqsBackend(scheme=scheme, algorithm=algorithm, oqs_module=oqs)
    logger.info("liboqs has no FIPS-compatible algorithm for %s", scheme.value)
    return None
