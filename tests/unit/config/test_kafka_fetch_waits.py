"""[kafka] view_fetch_wait_ms and invalidation_fetch_wait_ms: defaults, and
errors that name the key."""

from __future__ import annotations

from typing import Any

import pytest

from cachet.config import ConfigError, parse_config
from cachet.config.sections import (
    DEFAULT_INVALIDATION_FETCH_WAIT_MS,
    DEFAULT_VIEW_FETCH_WAIT_MS,
)
from cachet.kafka.settings import LISTENER_FETCH_WAIT_MS, VIEW_FETCH_WAIT_MS


def test_defaults_are_the_measured_ones() -> None:
    kafka = parse_config({}, "<test>").kafka
    assert kafka.view_fetch_wait_ms == DEFAULT_VIEW_FETCH_WAIT_MS == VIEW_FETCH_WAIT_MS == 100
    assert (
        kafka.invalidation_fetch_wait_ms
        == DEFAULT_INVALIDATION_FETCH_WAIT_MS
        == LISTENER_FETCH_WAIT_MS
        == 10
    )


def test_both_are_read() -> None:
    kafka = parse_config(
        {"kafka": {"view_fetch_wait_ms": 240, "invalidation_fetch_wait_ms": 20}}, "<test>"
    ).kafka
    assert (kafka.view_fetch_wait_ms, kafka.invalidation_fetch_wait_ms) == (240, 20)


@pytest.mark.parametrize(
    ("table", "key", "why"),
    [
        ({"view_fetch_wait_ms": 0}, "kafka.view_fetch_wait_ms", "positive integer"),
        ({"view_fetch_wait_ms": "fast"}, "kafka.view_fetch_wait_ms", "positive integer"),
        ({"view_fetch_wait_ms": True}, "kafka.view_fetch_wait_ms", "positive integer"),
        ({"view_fetch_wait_ms": 5000}, "kafka.view_fetch_wait_ms", "<= 1000"),
        ({"invalidation_fetch_wait_ms": -1}, "kafka.invalidation_fetch_wait_ms", "positive"),
        ({"invalidation_fetch_wait_ms": 2000}, "kafka.invalidation_fetch_wait_ms", "<= 1000"),
        (
            {"invalidation_fetch_wait_ms": 60, "view_fetch_wait_ms": 50},
            "kafka.invalidation_fetch_wait_ms",
            "must not exceed view_fetch_wait_ms (50)",
        ),
    ],
)
def test_bad_values_name_the_key(table: dict[str, Any], key: str, why: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_config({"kafka": table}, "cachet.toml")
    assert key in str(err.value)
    assert why in str(err.value)
