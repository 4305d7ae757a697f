"""Post-quantum signing in a child process, so no thread here waits on it.

The signature backends are native code that holds the GIL while it signs:
one SLH-DSA-SHA2-128f signature is milliseconds of CPU during which every
other thread of the process (callers of ``put``, the view's poll loop, the
read-audit flusher) stands still. A :class:`SigningProcess` hands the
message and the key set to a child process over a pipe; the thread that
asked blocks reading the answer (which releases the GIL) and the rest of the
process runs on.

The child is ``python -m cachet.crypto.signing_process`` started with
:mod:`subprocess`, not :mod:`multiprocessing`: a spawned multiprocessing
child re-imports the parent's ``__main__``, which fails for ``python -``,
``python -c`` and some embedding hosts. Requests and answers are
length-prefixed pickles on the child's stdin and stdout (a private pipe
between two processes of the same user).

One child serves every sealing producer of a process (:func:`shared_signer`):
seals of one producer are sequential anyway (each names the hash of the
previous one, signatures included), and several producers in one process
share the CPU either way. A child that dies is started again once; if that
fails too, signing falls back to this process, with a warning: a slower seal
beats no seal.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import pickle
import struct
import subprocess
import sys
import threading
from typing import IO, Any

from cachet.crypto.schemes import SignatureScheme, SigningError
from cachet.crypto.seal import PrivateKey, PrivateKeySet, SignatureLine, sign_message

__all__ = ["SigningProcess", "shared_signer"]

log = logging.getLogger(__name__)

_KeyTuple = tuple[str, tuple[tuple[str, str, bytes, bytes], ...]]
_LENGTH = struct.Struct(">I")


def _pack(keys: PrivateKeySet) -> _KeyTuple:
    return (
        keys.key_set_id,
        tuple((s.value, k.backend, k.public, k.private) for s, k in keys.keys.items()),
    )


def _unpack(packed: _KeyTuple) -> PrivateKeySet:
    key_set_id, keys = packed
    return PrivateKeySet(
        key_set_id,
        {
            SignatureScheme(s): PrivateKey(SignatureScheme(s), backend, public, private)
            for s, backend, public, private in keys
        },
    )


def _write_frame(out: IO[bytes], obj: Any) -> None:
    data = pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
    out.write(_LENGTH.pack(len(data)) + data)
    out.flush()


def _read_frame(inp: IO[bytes]) -> Any:
    header = inp.read(_LENGTH.size)
    if len(header) < _LENGTH.size:
        raise EOFError("signing pipe closed")
    (size,) = _LENGTH.unpack(header)
    data = inp.read(size)
    if len(data) < size:
        raise EOFError("signing pipe closed mid-frame")
    return pickle.loads(data)  # noqa: S301 - our own child on a private pipe


def _serve(inp: IO[bytes], out: IO[bytes]) -> None:
    """The child: sign what arrives until the pipe closes."""
    cache: dict[_KeyTuple, PrivateKeySet] = {}
    while True:
        try:
            packed, message = _read_frame(inp)
        except EOFError:
            return
        try:
            keys = cache.get(packed)
            if keys is None:
                if len(cache) > 16:
                    cache.clear()
                keys = cache[packed] = _unpack(packed)
            lines = sign_message(message, keys)
            answer: Any = ("ok", [(x.algorithm, x.key_id, x.signature) for x in lines])
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            answer = ("error", f"{type(exc).__name__}: {exc}")
        _write_frame(out, answer)


class SigningProcess:
    """A child process that signs; :meth:`sign` is thread-safe (one at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._pid = os.getpid()
        self._in_process = False

    @property
    def pid(self) -> int | None:
        """The child's process id; None when none runs (not yet, or in-process)."""
        return None if self._process is None else self._process.pid

    def start(self) -> None:
        """Starts the child now (it otherwise starts at the first :meth:`sign`)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> subprocess.Popen[bytes] | None:
        if self._pid != os.getpid():
            # Forked: the pipes belong to the parent's child. Start our own.
            self._process, self._pid = None, os.getpid()
        if self._process is not None or self._in_process:
            return self._process
        try:
            self._process = subprocess.Popen(
                [sys.executable, "-m", "cachet.crypto.signing_process"],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                close_fds=True,
            )
        except OSError as exc:
            log.warning("signing process not started (%s): signing in-process", exc)
            self._in_process = True
        return self._process

    def _ask(self, process: subprocess.Popen[bytes], request: Any) -> Any:
        assert process.stdin is not None and process.stdout is not None
        _write_frame(process.stdin, request)
        return _read_frame(process.stdout)

    def sign(self, message: bytes, keys: PrivateKeySet) -> tuple[SignatureLine, ...]:
        """``sign_message(message, keys)``, computed in the child."""
        request = (_pack(keys), message)
        with self._lock:
            answer = None
            for attempt in range(2):
                process = self._ensure()
                if process is None:
                    break
                try:
                    answer = self._ask(process, request)
                    break
                except (EOFError, OSError, pickle.UnpicklingError) as exc:
                    self._stop(process)
                    if attempt == 0:
                        log.warning("signing process lost (%s): starting it again", exc)
                    else:
                        log.warning("signing process lost again (%s): signing in-process", exc)
                        self._in_process = True
        if answer is None:
            return sign_message(message, keys)
        status, result = answer
        if status != "ok":
            raise SigningError(f"signing process: {result}")
        return tuple(SignatureLine(a, k, s) for a, k, s in result)

    def _stop(self, process: subprocess.Popen[bytes]) -> None:
        self._process = None
        for pipe in (process.stdin, process.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):  # a pipe to a dead child
                    pipe.close()
        if process.poll() is None:
            process.kill()
        process.wait(timeout=5)

    def close(self) -> None:
        with self._lock:
            if self._process is not None and self._pid == os.getpid():
                self._stop(self._process)
            self._process = None


_SHARED = SigningProcess()
# The child also ends by itself when our end of its stdin closes (a crash, a
# SIGKILL); this only makes a normal exit reap it.
atexit.register(_SHARED.close)


def shared_signer() -> SigningProcess:
    """The signing process every sealing producer of this process uses."""
    return _SHARED


if __name__ == "__main__":
    _serve(sys.stdin.buffer, sys.stdout.buffer)
