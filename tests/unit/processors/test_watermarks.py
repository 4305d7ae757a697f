"""How often the ticker ticks: often enough for the tightest contract, no more."""

from __future__ import annotations

import tomllib
from dataclasses import replace

from cachet.config import default_config, parse_config
from cachet.processors.watermarks import tick_interval_ms


def _contracts(doc: str):
    return parse_config(tomllib.loads(doc)).contracts.values()


def test_a_tenth_of_the_tightest_strict_window() -> None:
    contracts = _contracts(
        '[contracts.quotes]\ncomputation_type = "q"\nmax_staleness = "20s"\n'
        '[contracts.slow]\ncomputation_type = "s"\nmax_staleness = "10m"\n'
    )
    assert tick_interval_ms(contracts, 30_000) == 2_000


def test_a_contract_that_is_not_strict_does_not_need_ticks() -> None:
    (quotes,) = _contracts('[contracts.quotes]\ncomputation_type = "q"\nmax_staleness = "2s"\n')
    assert tick_interval_ms([replace(quotes, strict=False)], 30_000) == 3_000


def test_bounded_both_ways() -> None:
    (fast,) = _contracts('[contracts.fast]\ncomputation_type = "f"\nmax_staleness = "500ms"\n')
    assert tick_interval_ms([fast], 30_000) == 200
    assert tick_interval_ms([], 600_000) == 5_000
    assert tick_interval_ms([], default_config().contract_defaults.max_staleness_ms) == 3_000
