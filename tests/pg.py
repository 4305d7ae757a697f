"""A throwaway PostgreSQL cluster for tests: ``initdb`` + ``pg_ctl`` on a loopback port.

Debian's ``postgresql`` package provides the binaries (``.ci/run`` / ``./run
test`` install it when missing). PostgreSQL refuses to run as root, so when
the tests run as root the cluster is created and run as the ``postgres``
system user (which the package creates) through ``runuser``; otherwise as
the current user. The cluster trusts loopback connections: it lives only as
long as the test session, in a private temporary directory.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

__all__ = ["PgCluster", "find_pg_bin", "pg_cluster"]

_SUPERUSER = "cachet"
_DATABASE = "cachet_test"


def find_pg_bin() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` with ``initdb``, or None."""
    found = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass(frozen=True, slots=True)
class PgCluster:
    """A running cluster: its data directory and the DSN of its test database."""

    data_dir: Path
    port: int
    database: str

    def dsn_for(self, database: str, schema: str | None = None) -> str:
        """The DSN of ``database`` on this cluster (as its superuser).

        ``schema``: the connection's ``search_path`` is that schema alone, so
        unqualified table names (the vault's) land there.
        """
        dsn = f"host=127.0.0.1 port={self.port} user={_SUPERUSER} dbname={database}"
        return dsn if schema is None else f"{dsn} options='-c search_path={schema}'"

    @property
    def dsn(self) -> str:
        """The DSN of the test database created with the cluster."""
        return self.dsn_for(self.database)


@contextmanager
def pg_cluster(timeout_s: float = 60.0) -> Iterator[PgCluster]:
    """Start a fresh cluster with one database; stop it (``-m immediate``) and delete it after."""
    bin_dir = find_pg_bin()
    if bin_dir is None:
        raise RuntimeError(
            "PostgreSQL is not installed (no initdb): apt-get install postgresql, "
            "or run ./run test, which installs it"
        )
    as_root = os.geteuid() == 0
    base = Path(tempfile.mkdtemp(prefix="cachet-pg-"))
    prefix: list[str] = []
    if as_root:
        # initdb and postgres refuse root: run them as the package's user.
        shutil.chown(base, "postgres", "postgres")
        prefix = ["runuser", "-u", "postgres", "--"]
    data_dir = base / "data"
    port = _free_port()
    log_file = base / "server.log"

    def run(*cmd: str) -> None:
        done = subprocess.run(
            [*prefix, *cmd], capture_output=True, text=True, timeout=timeout_s, check=False
        )
        if done.returncode != 0:
            log = log_file.read_text(errors="replace") if log_file.exists() else ""
            raise RuntimeError(f"{cmd[0]} failed ({done.returncode}): {done.stderr}{log}")

    started = False
    try:
        run(
            str(bin_dir / "initdb"),
            "-D", str(data_dir), "-U", _SUPERUSER, "--auth=trust", "--no-sync",
            "-E", "UTF8", "--locale=C",
        )  # fmt: skip
        run(
            str(bin_dir / "pg_ctl"),
            "-D", str(data_dir), "-l", str(log_file), "-w", "-t", str(int(timeout_s)),
            "-o", f"-c listen_addresses=127.0.0.1 -p {port} -k {base} -c fsync=off",
            "start",
        )  # fmt: skip
        started = True
        admin = f"host=127.0.0.1 port={port} user={_SUPERUSER} dbname=postgres"
        import psycopg

        deadline = time.monotonic() + timeout_s
        while True:
            try:
                with psycopg.connect(admin, autocommit=True) as conn:
                    conn.execute(f"CREATE DATABASE {_DATABASE}")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        yield PgCluster(data_dir, port, _DATABASE)
    finally:
        if started:
            run(str(bin_dir / "pg_ctl"), "-D", str(data_dir), "-m", "immediate", "stop")
        shutil.rmtree(base, ignore_errors=True)
