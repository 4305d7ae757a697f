"""The benchmarks' helpers: nearest-rank percentiles and the private
redis-server's lifecycle (started, answering, always stopped)."""

from __future__ import annotations

import pytest

from cachet.ops.bench import _redis
from cachet.ops.bench._redis import (
    RedisUnavailable,
    redis_server,
    redis_server_binary,
    require_redis,
)
from cachet.ops.bench._support import percentile

needs_redis = pytest.mark.skipif(
    redis_server_binary() is None,
    reason="redis-server is not installed (apt-get install redis-server)",
)


def test_percentile_nearest_rank() -> None:
    values = [float(v) for v in range(1, 101)]  # 1..100
    assert percentile(values, 50) == 50.0
    assert percentile(values, 90) == 90.0
    assert percentile(values, 100) == 100.0
    assert percentile(values, 0) == 1.0


def test_percentile_nearest_rank_when_the_rank_is_exact() -> None:
    values = [float(v) for v in range(1, 101)]
    assert percentile(values, 99) == 99.0
    assert percentile(values, 95) == 95.0
    assert percentile([float(v) for v in range(1, 11)], 50) == 5.0


def test_percentile_unsorted_single_and_empty() -> None:
    assert percentile([5.0, 1.0, 3.0], 50) == 3.0
    assert percentile([7.0], 99) == 7.0
    assert percentile([], 50) == 0.0


def test_missing_redis_server_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_redis, "redis_server_binary", lambda: None)
    with pytest.raises(RedisUnavailable, match="apt-get install redis-server"):
        require_redis("reads")


@needs_redis
def test_redis_server_starts_answers_and_stops() -> None:
    pytest.importorskip("redis")
    with redis_server() as server:
        process = server.process
        client = server.client()
        assert client.ping()
        client.set("k", b"v")
        assert client.get("k") == b"v"
        # Persistence is off: the baseline is Redis as a cache.
        assert client.config_get("save")["save"] == ""
        assert client.config_get("appendonly")["appendonly"] == "no"
        client.close()
    assert process.poll() is not None, "redis-server must be stopped when the block exits"


@needs_redis
def test_redis_server_is_stopped_on_error() -> None:
    pytest.importorskip("redis")
    seen = []
    with pytest.raises(RuntimeError, match="boom"), redis_server() as server:
        seen.append(server.process)
        raise RuntimeError("boom")
    assert seen and seen[0].poll() is not None


@needs_redis
def test_two_servers_get_their_own_ports() -> None:
    pytest.importorskip("redis")
    with redis_server() as a, redis_server() as b:
        assert a.port != b.port
        a.client().set("only-in-a", b"1")
        assert b.client().get("only-in-a") is None
