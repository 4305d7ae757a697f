"""Shared fixtures: one real Kafka-protocol broker per test session.

The embedded Tansu broker is started once (or ``CACHET_BOOTSTRAP_SERVERS``
points the whole suite at another broker, e.g. Apache Kafka); every test gets
its own topic prefix, so tests never see each other's records.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator

import pytest

from cachet.kafka.settings import create_topics
from cachet.ops.broker import EmbeddedBroker
from cachet.topics import TopicNames
from tests.pg import PgCluster, pg_cluster


@pytest.fixture(scope="session")
def bootstrap_servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    external = os.environ.get("CACHET_BOOTSTRAP_SERVERS")
    if external:
        yield external
        return
    log_path = tmp_path_factory.mktemp("broker") / "tansu.log"
    with EmbeddedBroker(port=0, log_path=log_path) as broker:
        yield broker.bootstrap_servers


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[PgCluster]:
    """One throwaway PostgreSQL cluster per session (tests/pg.py), started on first use."""
    with pg_cluster() as cluster:
        yield cluster


@pytest.fixture
def postgres_dsn(postgres_cluster: PgCluster) -> str:
    """A DSN of this test's own on the session cluster: a fresh, empty schema is its search path."""
    import psycopg

    schema = f"t_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(postgres_cluster.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    return postgres_cluster.dsn_for(postgres_cluster.database, schema)


@pytest.fixture
def topic_names() -> TopicNames:
    """A topic prefix of this test's own."""
    return TopicNames(prefix=f"t{uuid.uuid4().hex[:12]}.")


@pytest.fixture
def topics(bootstrap_servers: str, topic_names: TopicNames) -> TopicNames:
    """Every Cachet topic, created under this test's prefix (3 partitions each)."""
    create_topics(bootstrap_servers, topic_names, partitions=3)
    return topic_names


@pytest.fixture
def unique() -> Callable[[str], str]:
    """Unique names for groups, producers, topics."""
    return lambda base: f"{base}-{uuid.uuid4().hex[:10]}"
