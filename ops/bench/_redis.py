"""A private redis-server for the benchmarks' baselines.

Each run starts its own ``redis-server`` on a free loopback port with
persistence off (``--save "" --appendonly no``: the baseline is Redis as a
cache, not as a store) and stops it on the way out, error or not. Nothing is
shared with a redis-server the machine may already run.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cachet.errors import CachetError
from cachet.ops.broker import free_port

__all__ = [
    "RedisServer",
    "RedisUnavailable",
    "redis_server",
    "redis_server_binary",
    "require_redis",
]

log = logging.getLogger(__name__)

INSTALL_HINT = "apt-get install redis-server"


class RedisUnavailable(CachetError):
    """The Redis baseline cannot run: no redis-server binary, no redis-py, or
    the server did not answer PING. A CachetError, so the CLI prints the
    message (with the install hint) instead of a traceback."""


@dataclass(frozen=True, slots=True)
class RedisServer:
    """A running private redis-server."""

    host: str
    port: int
    process: subprocess.Popen[bytes]

    def client(self) -> Any:  # a redis.Redis; redis-py is an optional (dev) dependency
        import redis

        return redis.Redis(host=self.host, port=self.port)


def redis_server_binary() -> str | None:
    """The redis-server executable on PATH (or Debian's location), else None."""
    found = shutil.which("redis-server")
    if found:
        return found
    debian = Path("/usr/bin/redis-server")
    return str(debian) if debian.is_file() else None


def require_redis(benchmark: str) -> str:
    """The redis-server path; raises RedisUnavailable with the fix when absent.

    Benchmarks call this before they start a broker, so a machine without
    Redis fails in a second with a message, not after minutes of setup.
    """
    binary = redis_server_binary()
    if binary is None:
        raise RedisUnavailable(
            f"cachet bench {benchmark} measures Redis as its baseline, and redis-server "
            f"is not installed: {INSTALL_HINT}"
        )
    try:
        import redis  # noqa: F401
    except ImportError:
        raise RedisUnavailable(
            f"cachet bench {benchmark} needs redis-py for its baseline: "
            "pip install 'cachet-ledger[dev]' (or pip install redis)"
        ) from None
    return binary


def _ping(host: str, port: int) -> bool:
    import redis

    try:
        return bool(redis.Redis(host=host, port=port, socket_timeout=0.5).ping())
    except (redis.ConnectionError, redis.TimeoutError, OSError):
        return False


def _stop(process: subprocess.Popen[bytes], timeout_s: float = 5.0) -> None:
    if process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout_s)


@contextlib.contextmanager
def redis_server(
    *, binary: str | None = None, host: str = "127.0.0.1", start_timeout_s: float = 10.0
) -> Iterator[RedisServer]:
    """Start a private redis-server, wait until it answers PING, yield it,
    and always stop it (terminate, then kill) when the block exits."""
    binary = binary or require_redis("redis baseline")
    with tempfile.TemporaryDirectory(prefix="cachet-bench-redis-") as workdir:
        logfile = Path(workdir) / "redis.log"
        # The free port can be taken between free_port() and the bind: retry.
        for attempt in range(3):
            port = free_port(host)
            process = subprocess.Popen(
                [
                    binary,
                    "--port", str(port),
                    "--bind", host,  # loopback only: this server has no password
                    "--save", "",  # no RDB snapshots
                    "--appendonly", "no",  # no AOF: Redis as a cache
                    "--dir", workdir,
                    "--logfile", str(logfile),
                    "--daemonize", "no",  # we own the process, so we can stop it
                ],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                deadline = time.monotonic() + start_timeout_s
                while process.poll() is None and time.monotonic() < deadline:
                    if _ping(host, port):
                        break
                    time.sleep(0.02)
                else:
                    tail = logfile.read_text(errors="replace")[-500:] if logfile.exists() else ""
                    if process.poll() is not None and attempt < 2:
                        log.warning("redis-server exited at start (port %d), retrying", port)
                        continue
                    raise RedisUnavailable(
                        f"redis-server on {host}:{port} did not answer PING within "
                        f"{start_timeout_s}s: {tail.strip() or 'no log output'}"
                    )
                yield RedisServer(host, port, process)
                return
            finally:
                _stop(process)
