"""Post-quantum signing in a child process, so no thread here waits on it.

The signature backends are native code that holds the GIL while it signs:
one SLH-DSA-SHA2-128f signature is milliseconds of CPU during which every
other thread of the process (callers of ``put``, the view's poll loop, the
read-audit flusher) stands still. A :class:`SigningProcess` hands the
message and the key set to a child process over a pipe; the thread that
asked blocks in ``recv`` (which releases the GIL) and the rest of the
process runs on.

One child serves every sealing producer of a process (:func:`shared_signer`):
seals of one producer are sequential anyway (each names the hash of the
previous one, signatures included), and several producers in one process
share the CPU either way. If the child cannot be started or dies, signing
falls back to this process, with a warning: a slower seal beats no seal.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import threading
from multiprocessing.connection import Connection
from typing import Any

from cachet.crypto.schemes import SignatureScheme, SigningError
from cachet.crypto.seal import PrivateKey, PrivateKeySet, SignatureLine, sign_message

__all__ = ["SigningProcess", "shared_signer"]

log = logging.getLogger(__name__)

_KeyTuple = tuple[str, tuple[tuple[str, str, bytes, bytes], ...]]


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


def _serve(conn: Connection) -> None:
    """The child: sign what arrives until the pipe closes."""
    cache: dict[_KeyTuple, PrivateKeySet] = {}
    while True:
        try:
            packed, message = conn.recv()
        except EOFError:
            return
        try:
            keys = cache.get(packed)
            if keys is None:
                if len(cache) > 16:
                    cache.clear()
                keys = cache[packed] = _unpack(packed)
            lines = sign_message(message, keys)
            conn.send(("ok", [(x.algorithm, x.key_id, x.signature) for x in lines]))
        except Exception as exc:  # noqa: BLE001 - reported to the parent, which raises it
            conn.send(("error", f"{type(exc).__name__}: {exc}"))


class SigningProcess:
    """A child process that signs; :meth:`sign` is thread-safe (one at a time)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._conn: Connection | None = None
        self._process: Any = None
        self._pid = os.getpid()
        self._failed = False

    @property
    def pid(self) -> int | None:
        """The child's process id; None when none runs (not yet, or in-process)."""
        return None if self._process is None else int(self._process.pid)

    def start(self) -> None:
        """Starts the child now (it otherwise starts at the first :meth:`sign`)."""
        with self._lock:
            self._ensure()

    def _ensure(self) -> Connection | None:
        if self._pid != os.getpid():
            # Forked: the pipe belongs to the parent's child. Start our own.
            self._conn, self._process, self._pid = None, None, os.getpid()
        if self._conn is not None or self._failed:
            return self._conn
        try:
            # spawn, not fork: the parent has threads (librdkafka's among them).
            ctx = multiprocessing.get_context("spawn")
            parent, child = ctx.Pipe()
            process = ctx.Process(target=_serve, args=(child,), name="cachet-signer", daemon=True)
            process.start()
            child.close()
        except (OSError, RuntimeError) as exc:
            log.warning("signing process not started (%s): signing in-process", exc)
            self._failed = True
            return None
        self._conn, self._process = parent, process
        return parent

    def sign(self, message: bytes, keys: PrivateKeySet) -> tuple[SignatureLine, ...]:
        """``sign_message(message, keys)``, computed in the child."""
        with self._lock:
            conn = self._ensure()
            if conn is None:
                return sign_message(message, keys)
            try:
                conn.send((_pack(keys), message))
                status, result = conn.recv()
            except (EOFError, OSError, BrokenPipeError) as exc:
                log.warning("signing process lost (%s): restarting it", exc)
                self._conn = None
                conn = self._ensure()
                if conn is None:
                    return sign_message(message, keys)
                conn.send((_pack(keys), message))
                status, result = conn.recv()
        if status != "ok":
            raise SigningError(f"signing process: {result}")
        return tuple(SignatureLine(a, k, s) for a, k, s in result)

    def close(self) -> None:
        with self._lock:
            if self._conn is not None and self._pid == os.getpid():
                self._conn.close()
                if self._process is not None:
                    self._process.join(timeout=2)
            self._conn = None


_SHARED = SigningProcess()


def shared_signer() -> SigningProcess:
    """The signing process every sealing producer of this process uses."""
    return _SHARED
