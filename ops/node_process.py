"""A cache node in a process of its own: ``cachet node run`` as a child, over HTTP.

What a benchmark or a test needs to run nodes the way a deployment does
(each its own interpreter, GIL and broker clients), not as several
CacheNode instances sharing one process: start the child on a config file,
a KEK file and a data directory; learn its HTTP port from the one line it
prints once it serves; call its JSON API with a bearer token; stop it
cleanly (SIGTERM: it flushes, seals and commits) or not (SIGKILL).

The child's stderr goes to ``<log_dir>/<name>.log`` (appended, so a
restarted node keeps one log). :func:`owner_token_toml` is the ``[http]``
table that lets a token act as Owner on the nodes of that config.
"""

from __future__ import annotations

import http.client
import json
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cachet.errors import CachetError
from cachet.producers.http.credentials import token_digest

__all__ = [
    "NodeHttp",
    "NodeProcess",
    "NodeProcessError",
    "node_run_command",
    "owner_token_toml",
    "start_node_process",
]


class NodeProcessError(CachetError):
    """A node process did not start, or did not answer as a node does."""


def owner_token_toml(token: str, label: str = "owner") -> str:
    """The ``[http.tokens.LABEL]`` table granting ``token`` the Owner role
    (only its SHA-256 is written)."""
    return f'[http.tokens.{label}]\ntoken_sha256 = "{token_digest(token).hex()}"\nrole = "owner"\n'


class NodeHttp:
    """A node's JSON API on 127.0.0.1:``port``, as Owner ``token``, over one
    kept-alive connection (not thread-safe: one per thread)."""

    def __init__(self, port: int, token: str, name: str = "node") -> None:
        self.port = port
        self.name = name
        self._token = token
        self._conn: http.client.HTTPConnection | None = None

    def call(
        self, path: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        """One request (POST with a JSON body, GET without); (HTTP status, JSON answer)."""
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Authorization": f"Bearer {self._token}", "Content-Type": "application/json"}
        for attempt in (1, 2):
            if self._conn is None:
                self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout_s)
            try:
                self._conn.request("POST" if data is not None else "GET", path, data, headers)
                resp = self._conn.getresponse()
                return resp.status, json.loads(resp.read())
            except (http.client.HTTPException, ConnectionError) as exc:
                # The server closed an idle kept-alive connection: one retry
                # on a fresh one (every call of ours is idempotent or refused).
                self.close()
                if attempt == 2:
                    raise NodeProcessError(f"node {self.name}: {path}: {exc}") from exc
        raise AssertionError("unreachable")

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


@dataclass
class NodeProcess:
    """A running ``cachet node run`` child and its HTTP front on 127.0.0.1."""

    name: str
    proc: subprocess.Popen[str]
    port: int
    token: str = field(repr=False)
    data_dir: Path | None = None
    log_path: Path | None = None
    http: NodeHttp = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.http = NodeHttp(self.port, self.token, self.name)

    def call(
        self, path: str, body: dict[str, Any] | None = None, timeout_s: float = 10.0
    ) -> tuple[int, dict[str, Any]]:
        """See :meth:`NodeHttp.call` (this thread's use only)."""
        return self.http.call(path, body, timeout_s)

    def health(self) -> tuple[int, dict[str, Any]]:
        return self.call("/health")

    def wait_ready(self, timeout_s: float = 120.0) -> None:
        """Until /health says ready (caught up, ticks seen); NodeProcessError after ``timeout_s``."""
        deadline = time.monotonic() + timeout_s
        while True:
            if self.proc.poll() is not None:
                raise NodeProcessError(
                    f"node {self.name} exited {self.proc.returncode}; see {self.log_path}"
                )
            code, body = self.health()
            if code == 200:
                return
            if time.monotonic() > deadline:
                raise NodeProcessError(
                    f"node {self.name} not ready within {timeout_s:g}s: {body.get('problems')}"
                )
            time.sleep(0.05)

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self._close_conn()
        self.proc.send_signal(sig)
        self.proc.wait(10)

    def terminate(self, timeout_s: float = 30.0) -> int:
        """A clean stop (SIGTERM: the node flushes, seals and commits); its exit status."""
        self._close_conn()
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout_s)

    def stop(self) -> None:
        """Stop it whatever its state (clean first, then SIGKILL)."""
        self._close_conn()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def _close_conn(self) -> None:
        self.http.close()


def node_run_command(name: str, config: Path, servers: str, kek: Path, data_dir: Path) -> list[str]:
    """The command line of ``cachet node run`` as ``name`` (its identity and
    node id) on any free HTTP port, in this interpreter."""
    return [
        sys.executable,
        "-m",
        "cachet.cli.main",
        "node",
        "run",
        "--config",
        str(config),
        "--bootstrap-servers",
        servers,
        "--kek-file",
        str(kek),
        "--node-id",
        name,
        "--http-port",
        "0",
        "--data-dir",
        str(data_dir),
    ]


def start_node_process(
    name: str,
    config: Path,
    servers: str,
    kek: Path,
    data_dir: Path,
    log_dir: Path,
    token: str,
    *,
    start_timeout_s: float = 60.0,
) -> NodeProcess:
    """Start ``cachet node run`` as ``name`` (its identity and node id) on any
    free HTTP port; returns once it serves HTTP (not necessarily ready:
    :meth:`NodeProcess.wait_ready`)."""
    cmd = node_run_command(name, config, servers, kek, data_dir)
    log_path = log_dir / f"{name}.log"
    with open(log_path, "a") as log:  # the child keeps its own descriptor
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
    assert proc.stdout is not None
    line = _first_line(proc, start_timeout_s)
    if not line.startswith(f"node {name} http://"):
        proc.kill()
        proc.wait()
        raise NodeProcessError(f"node {name} did not start: {line!r}; see {log_path}")
    return NodeProcess(name, proc, int(line.rsplit(":", 1)[1]), token, data_dir, log_path)


def _first_line(proc: subprocess.Popen[str], timeout_s: float) -> str:
    """The child's first stdout line, or "" when none came within ``timeout_s``."""
    assert proc.stdout is not None
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stdout, selectors.EVENT_READ)
        if not sel.select(timeout_s):
            return ""
    return proc.stdout.readline()
