"""Signing backends: round trips, forgeries, malformed input, interop."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from cachet.crypto.backends import wheels
from cachet.crypto.schemes import KeyPair, SignatureScheme, SigningBackend, SigningError
from cachet.crypto.signing import (
    BackendUnavailable,
    available_backends,
    backend_for,
    key_id,
    liboqs_available,
    liboqs_library_path,
)

MESSAGE = b"cachet.seal/v1\nproducer\n"

ALL_BACKENDS: list[SigningBackend] = [b for s in SignatureScheme for b in wheels.backends(s)]
IDS = [f"{b.scheme.value}-{b.name}" for b in ALL_BACKENDS]


@pytest.fixture(scope="module")
def signed() -> dict[str, tuple[SigningBackend, KeyPair, KeyPair, bytes]]:
    """Per backend: (backend, keypair, second keypair, signature over MESSAGE)."""
    out = {}
    for ident, backend in zip(IDS, ALL_BACKENDS, strict=True):
        pair, other = backend.generate(), backend.generate()
        out[ident] = (backend, pair, other, backend.sign(pair.private, MESSAGE))
    return out


@pytest.mark.parametrize("ident", IDS)
def test_round_trip_and_sizes(signed, ident: str) -> None:
    backend, pair, _, sig = signed[ident]
    assert isinstance(backend, SigningBackend)
    assert len(pair.public) == backend.scheme.public_key_size
    assert len(sig) == backend.scheme.signature_size
    assert backend.verify(pair.public, MESSAGE, sig) is True


@pytest.mark.tamper
@pytest.mark.parametrize("ident", IDS)
def test_forgeries_fail(signed, ident: str) -> None:
    backend, pair, other, sig = signed[ident]
    assert backend.verify(other.public, MESSAGE, sig) is False  # wrong key
    assert backend.verify(pair.public, MESSAGE + b"x", sig) is False  # wrong message
    assert backend.verify(pair.public, MESSAGE[:-1], sig) is False
    assert backend.verify(pair.public, MESSAGE, sig[:-1]) is False  # truncated
    assert backend.verify(pair.public, MESSAGE, sig + b"\x00") is False  # padded
    assert backend.verify(pair.public, MESSAGE, b"") is False
    assert backend.verify(pair.public[:-1], MESSAGE, sig) is False  # truncated key
    assert backend.verify(b"", MESSAGE, sig) is False
    for pos in (0, len(sig) // 2, len(sig) - 1):
        flipped = bytearray(sig)
        flipped[pos] ^= 0x01
        assert backend.verify(pair.public, MESSAGE, bytes(flipped)) is False, pos
    flipped_key = bytearray(pair.public)
    flipped_key[len(flipped_key) // 2] ^= 0x80
    assert backend.verify(bytes(flipped_key), MESSAGE, sig) is False
    garbage = bytes(range(256)) * (len(sig) // 256 + 1)
    assert backend.verify(pair.public, MESSAGE, garbage[: len(sig)]) is False


@pytest.mark.parametrize("ident", IDS)
def test_sign_rejects_malformed_private_key(signed, ident: str) -> None:
    backend, pair, _, _ = signed[ident]
    with pytest.raises(SigningError):
        backend.sign(pair.private[:-1], MESSAGE)


def test_ml_dsa_cross_backend_interop() -> None:
    """FIPS 204 both ways: public keys and signatures are interchangeable.
    Private keys are not (32-byte seed vs 4032-byte expanded key)."""
    ossl, pq = wheels.CryptographyMlDsa65(), wheels.PqcryptoMlDsa65()
    a, b = ossl.generate(), pq.generate()
    assert len(a.private) == 32 and len(b.private) == 4032
    assert pq.verify(a.public, MESSAGE, ossl.sign(a.private, MESSAGE))
    assert ossl.verify(b.public, MESSAGE, pq.sign(b.private, MESSAGE))
    assert not pq.verify(a.public, MESSAGE + b"!", ossl.sign(a.private, MESSAGE))
    with pytest.raises(SigningError):
        ossl.sign(b.private, MESSAGE)


def test_key_id_is_scheme_bound() -> None:
    pk = bytes(32)
    assert len(key_id(SignatureScheme.SLH_DSA_SHA2_128F, pk)) == 32
    assert key_id(SignatureScheme.SLH_DSA_SHA2_128F, pk) != key_id(SignatureScheme.ML_DSA_65, pk)
    assert key_id(SignatureScheme.ML_DSA_65, pk) == key_id(SignatureScheme.ML_DSA_65, pk)


def test_backend_selection_without_liboqs(tmp_path: Path) -> None:
    assert liboqs_available() is False
    assert liboqs_available([tmp_path]) is False
    assert liboqs_library_path([tmp_path]) is None
    assert backend_for(SignatureScheme.ML_DSA_65).name == "cryptography"
    assert backend_for(SignatureScheme.ML_DSA_65, "pqcrypto").name == "pqcrypto"
    assert backend_for(SignatureScheme.SLH_DSA_SHA2_128F).name == "pqcrypto"
    assert backend_for(SignatureScheme.FN_DSA_512).name == "py-fn-dsa"
    assert [b.name for b in available_backends(SignatureScheme.ML_DSA_65)] == [
        "cryptography",
        "pqcrypto",
    ]
    with pytest.raises(BackendUnavailable):
        backend_for(SignatureScheme.ML_DSA_65, "liboqs")
    with pytest.raises(BackendUnavailable):
        backend_for(SignatureScheme.FN_DSA_512, "cryptography")
    assert "oqs" not in sys.modules


def test_a_directory_with_a_fake_liboqs_is_found_but_oqs_not_imported(tmp_path: Path) -> None:
    lib = tmp_path / "lib"
    lib.mkdir()
    (lib / "liboqs.so").write_bytes(b"")
    assert liboqs_library_path([tmp_path]) == lib / "liboqs.so"
    # The oqs package is absent here, so the library alone is not enough.
    assert liboqs_available([tmp_path]) is False
    assert "oqs" not in sys.modules


def test_fresh_interpreter_never_imports_oqs() -> None:
    code = (
        "import sys\n"
        "from cachet.crypto.schemes import SignatureScheme\n"
        "from cachet.crypto.signing import backend_for, available_backends\n"
        "from cachet.crypto.seal import PrivateKeySet\n"
        "import cachet.crypto.backends.wheels\n"
        "for s in SignatureScheme:\n"
        "    backend_for(s); available_backends(s)\n"
        "assert 'oqs' not in sys.modules, 'oqs imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)
