"""ops/bench/scrub.py runs on the public API and reports sane figures."""

from __future__ import annotations

import pytest

from cachet.ops.bench.scrub import format_report, run
from tests.unit.processors.kvscrub.helpers import DEVICES


@pytest.mark.parametrize("device", DEVICES)
def test_quick_bench_reports_every_size_and_the_memset_ceiling(device: str) -> None:
    result = run(quick=True, device=device)
    assert [s["fraction"] for s in result["sizes"]] == [0.01, 0.10, 0.50]
    for size in result["sizes"]:
        assert size["blocks"] >= 1 and size["gb_per_s"] > 0 and size["device_gb_per_s"] > 0
    assert result["scrub_gb_per_s"] == result["sizes"][-1]["gb_per_s"]
    assert result["ratio"] == pytest.approx(result["scrub_gb_per_s"] / result["memset_gb_per_s"])
    assert result["device"].startswith(device)
    text = format_report(result)
    assert "memset ceiling" in text and "50%" in text
