"""Choosing the backend that implements a post-quantum signature scheme.

The schemes themselves, the key pair and the backend protocol are in
:mod:`cachet.crypto.schemes`. Three schemes (DESIGN.md, "Integrity"): ML-DSA-65 (FIPS 204), FN-DSA-512
(Falcon, FIPS 206 draft) and SLH-DSA-SHA2-128f (FIPS 205). Each has one or
more backends:

* ``liboqs`` (the ``oqs`` module), used only when the liboqs shared library
  is found *before* anything imports ``oqs``: importing it without the
  library makes liboqs-python download and build liboqs at import time.
* the wheels that bundle their own native code: ``cryptography`` (ML-DSA),
  ``pqcrypto`` (ML-DSA and SLH-DSA) and ``py-fn-dsa`` (FN-DSA).

Public keys and signatures of one scheme are interchangeable between
backends (ML-DSA-65 from ``cryptography`` verifies under ``pqcrypto`` and
back; tests check it). Private keys are *not*: ``cryptography`` stores the
32-byte FIPS 204 seed, ``pqcrypto`` the 4032-byte expanded key. A private key
therefore records the backend that made it (see ``seal.PrivateKey``).

Messages are signed exactly as given, with the empty FIPS context; callers
domain-separate (every signed Cachet text starts with its own format line).
"""

from __future__ import annotations

import ctypes.util
import functools
import hashlib
import logging
from collections.abc import Sequence
from pathlib import Path

from cachet.crypto.schemes import SignatureScheme, SigningBackend, SigningError

__all__ = [
    "BACKEND_AUTO",
    "BackendUnavailable",
    "available_backends",
    "backend_for",
    "key_id",
    "liboqs_available",
    "liboqs_library_path",
]

logger = logging.getLogger(__name__)

BACKEND_AUTO = "auto"
KEY_ID_DOMAIN = b"cachet/key-id/v1"


class BackendUnavailable(SigningError):
    """No backend of the requested name implements the requested scheme."""


def key_id(scheme: SignatureScheme, public: bytes) -> str:
    """The key id in signature lines: hex of the first 16 bytes of
    SHA3-256(b"cachet/key-id/v1" || scheme id || public key).

    Plain concatenation is unambiguous here: the domain is fixed and every
    scheme id is a fixed string none of which is a prefix of another.
    """
    digest = hashlib.sha3_256(KEY_ID_DOMAIN + scheme.value.encode("ascii") + public).digest()
    return digest[:16].hex()


def liboqs_library_path(search_dirs: Sequence[Path] = ()) -> Path | None:
    """Where the liboqs shared library is, or None. Imports nothing.

    Looks in ``search_dirs`` (each an install prefix like OQS_INSTALL_PATH,
    or a lib directory) and then on the system loader path.
    """
    for base in search_dirs:
        for lib_dir in (base, base / "lib", base / "lib64"):
            if not lib_dir.is_dir():
                continue
            for candidate in sorted(lib_dir.glob("liboqs.so*")) + sorted(
                lib_dir.glob("liboqs.dylib")
            ):
                if candidate.is_file():
                    return candidate
    return _system_liboqs()


@functools.lru_cache(maxsize=1)
def _system_liboqs() -> Path | None:
    # find_library may run ldconfig or a compiler: do it once per process.
    found = ctypes.util.find_library("oqs")
    return Path(found) if found else None


def liboqs_available(search_dirs: Sequence[Path] = ()) -> bool:
    """True when the liboqs shared library *and* the ``oqs`` package are present.

    Never imports ``oqs`` (importing it without the library would start a
    download and build of liboqs).
    """
    import importlib.util

    if liboqs_library_path(search_dirs) is None:
        return False
    return importlib.util.find_spec("oqs") is not None


def available_backends(
    scheme: SignatureScheme, *, oqs_search_dirs: Sequence[Path] = ()
) -> list[SigningBackend]:
    """Every backend usable here for ``scheme``, most preferred first."""
    from cachet.crypto.backends import wheels

    found: list[SigningBackend] = []
    if liboqs_available(oqs_search_dirs):
        from cachet.crypto.backends import oqs as oqs_backend

        backend = oqs_backend.backend(scheme, liboqs_library_path(oqs_search_dirs))
        if backend is not None:
            found.append(backend)
    wheel_backends = wheels.backends(scheme)
    if scheme is SignatureScheme.FN_DSA_512:
        # liboqs "Falcon-512" is round-3 Falcon, not FN-DSA: py-fn-dsa stays
        # first so that "auto" keeps producing FN-DSA signatures.
        found = wheel_backends + found
    else:
        found.extend(wheel_backends)
    return found


def backend_for(
    scheme: SignatureScheme,
    prefer: str = BACKEND_AUTO,
    *,
    oqs_search_dirs: Sequence[Path] = (),
) -> SigningBackend:
    """The backend to use for ``scheme``.

    ``prefer`` is ``"auto"`` (liboqs when present, else the wheels) or a
    backend name: ``"liboqs"``, ``"cryptography"``, ``"pqcrypto"``,
    ``"py-fn-dsa"``. A named backend that is not available raises
    :class:`BackendUnavailable`; there is no silent fallback, because a
    private key only works with the backend that made it.
    """
    candidates = available_backends(scheme, oqs_search_dirs=oqs_search_dirs)
    if prefer == BACKEND_AUTO:
        if not candidates:
            raise BackendUnavailable(f"no backend available for {scheme.value}")
        return candidates[0]
    for backend in candidates:
        if backend.name == prefer:
            return backend
    names = ", ".join(b.name for b in candidates) or "none"
    raise BackendUnavailable(
        f"backend {prefer!r} is not available for {scheme.value} (available: {names})"
    )
