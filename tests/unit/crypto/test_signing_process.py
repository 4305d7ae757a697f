"""Signing in a child process: same signatures, survives the child's death."""

from __future__ import annotations

import os
import signal
from collections.abc import Iterator

import pytest

from cachet.crypto.schemes import SigningError
from cachet.crypto.seal import KeySet, PrivateKeySet, SchemeStatus, check_signatures
from cachet.crypto.signing_process import SigningProcess


@pytest.fixture(scope="module")
def keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture
def signer() -> Iterator[SigningProcess]:
    s = SigningProcess()
    yield s
    s.close()


def _verifies(message: bytes, lines, public: KeySet) -> bool:
    statuses = check_signatures(message, lines, public, tuple(public.public_keys))
    return all(status is SchemeStatus.VALID for status in statuses.values())


def test_signatures_from_the_child_verify_and_were_made_elsewhere(
    signer: SigningProcess, keys: PrivateKeySet
) -> None:
    lines = signer.sign(b"seal header", keys)
    assert signer.pid is not None and signer.pid != os.getpid()
    assert [line.algorithm for line in lines] == [s.value for s in keys.keys]
    assert _verifies(b"seal header", lines, keys.public())
    assert not _verifies(b"another header", lines, keys.public())


def test_a_killed_child_is_replaced_and_signing_goes_on(
    signer: SigningProcess, keys: PrivateKeySet
) -> None:
    signer.sign(b"first", keys)
    first = signer.pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    lines = signer.sign(b"second", keys)
    assert signer.pid not in (None, first)
    assert _verifies(b"second", lines, keys.public())


def test_a_failure_in_the_child_is_a_signing_error(signer: SigningProcess) -> None:
    broken = PrivateKeySet.generate()
    scheme, key = next(iter(broken.keys.items()))
    bad = PrivateKeySet(
        broken.key_set_id, {**broken.keys, scheme: type(key)(scheme, key.backend, key.public, b"x")}
    )
    with pytest.raises(SigningError, match="signing process"):
        signer.sign(b"m", bad)
