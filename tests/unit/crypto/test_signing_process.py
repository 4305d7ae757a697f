"""Signing in a child process: same signatures, survives the child's death."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
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


def test_a_host_whose_main_cannot_be_imported_again_still_signs(tmp_path) -> None:
    # `python -` (and `python -c`, some embedding hosts) has no main module a
    # multiprocessing child could re-import; the child is its own program.
    script = (
        "from cachet.crypto.seal import PrivateKeySet\n"
        "from cachet.crypto.signing_process import SigningProcess\n"
        "s = SigningProcess()\n"
        "lines = s.sign(b'm', PrivateKeySet.generate())\n"
        "print(len(lines), s.pid is not None)\n"
    )
    done = subprocess.run(
        [sys.executable, "-"], input=script, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["3", "True"]


def test_a_child_that_cannot_start_means_signing_here(
    keys: PrivateKeySet, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setattr(sys, "executable", "/nonexistent/python")
    signer = SigningProcess()
    lines = signer.sign(b"still sealed", keys)
    assert signer.pid is None
    assert _verifies(b"still sealed", lines, keys.public())
    assert "signing in-process" in caplog.text


def test_a_child_lost_twice_means_signing_here(
    signer: SigningProcess, keys: PrivateKeySet, monkeypatch: pytest.MonkeyPatch
) -> None:
    def lost(*_: object) -> object:
        raise EOFError("signing pipe closed")

    monkeypatch.setattr(signer, "_ask", lost)
    lines = signer.sign(b"m", keys)
    assert _verifies(b"m", lines, keys.public())
    assert signer.pid is None  # no child left running
