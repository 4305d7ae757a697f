"""Both vault backends behind one factory, for the contract tests.

``backend`` is parametrized: ``file`` (SQLite in a temporary directory) and
``postgres`` (a fresh database on the session's throwaway cluster). A
:class:`VaultSite` opens any number of vault instances on the same storage
(another node, another KEK) and reaches the storage underneath, as an
attacker with write access to the vault's file or database would.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from cachet.clock import ManualClock
from cachet.crypto.vault import FileVault, KeyVault
from cachet.crypto.vault.postgres import PostgresVault


@dataclass
class VaultSite:
    """One vault's storage: opens vaults on it and runs raw SQL against it."""

    backend: str
    where: str  # a file path or a DSN
    clock: ManualClock = field(default_factory=ManualClock)
    kek: bytes = field(default_factory=lambda: os.urandom(32))
    opened: list[KeyVault] = field(default_factory=list)

    def open(self, kek: bytes | None = None, **options: Any) -> KeyVault:
        vault: KeyVault
        if self.backend == "file":
            vault = FileVault(Path(self.where), kek or self.kek, clock=self.clock, **options)
        else:
            vault = PostgresVault(self.where, kek or self.kek, clock=self.clock, **options)
        self.opened.append(vault)
        return vault

    def sql(self, statement: str, *params: Any) -> list[tuple[Any, ...]]:
        """Run ``statement`` (``{p}`` marks a parameter) on the storage, committed."""
        if self.backend == "file":
            conn = sqlite3.connect(self.where, isolation_level=None)
            try:
                return conn.execute(statement.replace("{p}", "?"), params).fetchall()
            finally:
                conn.close()
        import psycopg

        with psycopg.connect(self.where, autocommit=True) as pg:
            cur = pg.execute(statement.replace("{p}", "%s"), params)
            return cur.fetchall() if cur.description else []

    def close_all(self) -> None:
        for vault in self.opened:
            vault.close()


@pytest.fixture(params=["file", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[VaultSite]:
    if request.param == "file":
        made = VaultSite("file", str(tmp_path / "vault" / "vault.sqlite"))
    else:
        made = VaultSite("postgres", request.getfixturevalue("postgres_dsn"))
    yield made
    made.close_all()


@pytest.fixture
def pg_site(postgres_dsn: str) -> Iterator[VaultSite]:
    made = VaultSite("postgres", postgres_dsn)
    yield made
    made.close_all()
