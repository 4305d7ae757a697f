"""``cachet bench codec``: it measures the codec against fastavro on the
same envelopes, and its report says what was measured."""

from __future__ import annotations

import math

from cachet.ops.bench import codec as bench
from cachet.schemas.codec import EventCodec


def test_every_bench_event_round_trips_and_is_measured_against_fastavro() -> None:
    codec = EventCodec()
    events = bench.bench_events()
    assert [items for _, _, items in events] == [1, 1, 1, bench.BATCH_READS]
    for _, event, _ in events:
        assert codec.decode(codec.encode(event)) == event
        # _measure refuses to time anything fastavro and the codec disagree on.
        row = bench._measure(codec, event, calls=1, rounds=1)
        assert row["bytes"] == len(codec.encode(event))
        for key in ("encode_us", "decode_us", "fastavro_encode_us", "fastavro_decode_us"):
            assert math.isfinite(row[key]) and row[key] >= 0


def test_the_reads_are_a_mix_of_hits_and_misses() -> None:
    reads = bench._reads(300)
    outcomes = {r["outcome"] for r in reads}
    assert outcomes == {"HIT", "MISS"}
    assert all((r["freshness"] is None) == (r["outcome"] == "MISS") for r in reads)
    assert bench._reads(300) == reads  # seeded: every run measures the same batch


def test_the_report_names_the_baseline_the_goals_and_the_per_read_cost() -> None:
    row = {
        "event": "CacheWritten",
        "items": 1,
        "bytes": 348,
        "encode_us": 6.0,
        "decode_us": 5.5,
        "fastavro_encode_us": 90.0,
        "fastavro_decode_us": 25.0,
        "encode_ratio": 15.0,
        "decode_ratio": 25.0 / 5.5,
    }
    result = {
        "quick": True,
        "rounds": 5,
        "events": [row],
        "per_read": {
            "encode_us": 1.3,
            "decode_us": 2.4,
            "fastavro_encode_us": 59.0,
            "fastavro_decode_us": 11.0,
        },
        "encode_us_max": 6.0,
        "decode_us_max": 5.5,
        "encode_goal_us": bench.ENCODE_GOAL_US,
        "decode_goal_us": bench.DECODE_GOAL_US,
        "ratio": 25.0 / 5.5,
    }
    report = bench.format_report(result)
    assert "fastavro" in report and "per read" in report
    assert "encode <= 10 us (worst 6.0: met)" in report
    assert "decode <= 5 us (worst 5.5: NOT met)" in report
