"""``node.l1_max_entries``: the bound of a node's L1, checked like any setting."""

from __future__ import annotations

from typing import Any

import pytest

from cachet.config import ConfigError, default_config, parse_config


def test_the_l1_is_bounded_by_default() -> None:
    assert default_config().node.l1_max_entries == 100_000


def test_the_bound_is_read_from_the_node_section() -> None:
    config = parse_config({"node": {"l1_max_entries": 512}})
    assert config.node.l1_max_entries == 512


@pytest.mark.parametrize("value", [0, -1, True, 1.5, "1000"])
def test_a_bound_that_is_not_a_positive_integer_is_refused(value: Any) -> None:
    with pytest.raises(ConfigError) as info:
        parse_config({"node": {"l1_max_entries": value}}, "cachet.toml")
    assert info.value.key == "node.l1_max_entries"
    assert "positive integer" in str(info.value)
