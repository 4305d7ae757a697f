"""``cachet bench codec``: what encoding and decoding one event costs.

Cachet: :class:`~cachet.schemas.codec.EventCodec`, whose current schema set
has encoders and decoders generated for it (:mod:`cachet.schemas.compiled`):
encode is ``Event`` -> single-object bytes with every value checked against
the schema; decode is bytes -> ``Event`` with every byte checked.

Baseline, measured in the same run on the same envelopes: fastavro, as
strict as the codec (``validation.validate`` with ``raise_errors``, then
``schemaless_writer``; ``schemaless_reader`` of the body into a dict, no
Event built).

Events: the sample CacheWritten, Seal (three leaves, three signature lines)
and WatermarkTick, and one CacheReadBatch of 1,000 CacheRead items as a
node's read audit writes them (70% hits served, misses of three reasons,
three namespaces), whose figures are also given per read.

Timing is CPU time of this process (``time.process_time``), so other work
on the machine counts less than in wall time; each figure is the best of
several rounds, Cachet and fastavro alternating round by round.
"""

from __future__ import annotations

import io
import random
import time
from collections.abc import Callable
from typing import Any

from fastavro import schemaless_reader, schemaless_writer
from fastavro.validation import validate

from cachet.schemas.codec import HEADER_LEN, EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, Event, EventType, SealRef, new_event

# The goals of issue 12: per event, on a 2-core machine.
ENCODE_GOAL_US = 10.0
DECODE_GOAL_US = 5.0
BATCH_READS = 1000
_T0 = 1_790_000_000_000_000  # event time of the bench events, microseconds


def _reads(count: int, seed: int = 12) -> list[dict[str, Any]]:
    """Reads as one node's audit writes them: mostly hits, a few kinds of miss."""
    rng = random.Random(seed)
    sample = SAMPLE_PAYLOADS[EventType.CACHE_READ]
    reads = []
    for i in range(count):
        hit = rng.random() < 0.7
        reads.append(
            {
                **sample,
                "key_hash": rng.randbytes(32),
                "namespace": f"ns-{i % 3}",
                "outcome": "HIT" if hit else "MISS",
                "reason": "served" if hit else rng.choice(["not_found", "stale", "view_stale"]),
                "fingerprint": rng.randbytes(32) if hit else None,
                "version": rng.randrange(1, 5000) if hit else None,
                "freshness": {
                    "age_ms": rng.randrange(0, 1000),
                    "max_staleness_ms": 1000,
                    "headroom_ms": rng.randrange(0, 1000),
                    "view_lag_ms": rng.randrange(0, 200),
                }
                if hit
                else None,
            }
        )
    return reads


def bench_events() -> list[tuple[str, Event, int]]:
    """(label, event, items it carries) for each measured event."""
    events: list[tuple[str, Event, int]] = []
    for seq, event_type in enumerate(
        (EventType.CACHE_WRITTEN, EventType.SEAL, EventType.WATERMARK_TICK)
    ):
        event = new_event(
            event_type,
            dict(SAMPLE_PAYLOADS[event_type]),
            producer_id="quotes-svc@19a2f3c4d5e",
            producer_seq=4200 + seq,
            occurred_at_us=_T0 + seq,
            seal_ref=SealRef(88, seq),
        )
        events.append((event_type.value, event, 1))
    batch = new_event(
        EventType.CACHE_READ_BATCH,
        {"node_id": "node-a", "reads": _reads(BATCH_READS)},
        producer_id="node-a@1f",
        producer_seq=7,
        occurred_at_us=_T0 + 10,
        seal_ref=SealRef(89, 0),
    )
    events.append((f"CacheReadBatch({BATCH_READS})", batch, BATCH_READS))
    return events


def _envelope(codec: EventCodec, event: Event) -> dict[str, Any]:
    """The envelope record of ``event`` as fastavro takes it."""
    ref = event.seal_ref
    return {
        "event_id": event.event_id,
        "type": event.type.value,
        "occurred_at": event.occurred_at_us,
        "producer_id": event.producer_id,
        "producer_seq": event.producer_seq,
        "seal_ref": None
        if ref is None
        else {"seal_seq": ref.seal_seq, "leaf_index": ref.leaf_index},
        "payload": (f"cachet.events.{event.type.value}", event.payload),
    }


def _cpu_us(fn: Callable[[], object], calls: int) -> float:
    """CPU time of one call of ``fn``, averaged over ``calls`` calls, in us."""
    start = time.process_time()
    for _ in range(calls):
        fn()
    return (time.process_time() - start) / calls * 1e6


def _measure(codec: EventCodec, event: Event, calls: int, rounds: int) -> dict[str, float]:
    schema = codec._current.parsed  # noqa: SLF001 - the very schema the codec writes
    record = _envelope(codec, event)
    data = codec.encode(event)
    body = data[HEADER_LEN:]

    def fastavro_encode() -> bytes:
        validate(record, schema, raise_errors=True)
        buf = io.BytesIO()
        schemaless_writer(buf, schema, record)
        return buf.getvalue()

    def fastavro_decode() -> Any:
        return schemaless_reader(
            io.BytesIO(body),
            schema,
            None,
            return_record_name=True,
            return_record_name_override=True,
        )

    # The two write the same bytes and read the same payload, or the
    # comparison means nothing.
    if fastavro_encode() != body or fastavro_decode()["payload"][1] != event.payload:
        raise AssertionError(f"{event.type.value}: fastavro and the codec disagree")
    timed = {
        "encode_us": lambda: codec.encode(event),
        "decode_us": lambda: codec.decode(data),
        "fastavro_encode_us": fastavro_encode,
        "fastavro_decode_us": fastavro_decode,
    }
    best = dict.fromkeys(timed, float("inf"))
    for _ in range(rounds):
        for name, fn in timed.items():
            best[name] = min(best[name], _cpu_us(fn, calls))
    return {"bytes": len(data), **best}


def run(quick: bool = False) -> dict[str, Any]:
    codec = EventCodec()
    rounds = 7 if quick else 15
    rows = []
    for label, event, items in bench_events():
        calls = max(2, (500 if quick else 2000) // items)
        row: dict[str, Any] = {"event": label, "items": items}
        row.update(_measure(codec, event, calls, rounds))
        row["encode_ratio"] = row["fastavro_encode_us"] / row["encode_us"]
        row["decode_ratio"] = row["fastavro_decode_us"] / row["decode_us"]
        rows.append(row)
    single = [r for r in rows if r["items"] == 1]
    batch = next(r for r in rows if r["items"] > 1)
    per_read = {
        key: batch[key] / batch["items"]
        for key in ("encode_us", "decode_us", "fastavro_encode_us", "fastavro_decode_us")
    }
    return {
        "benchmark": "codec",
        "quick": quick,
        "rounds": rounds,
        "events": rows,
        "per_read": per_read,
        "encode_us_max": max(r["encode_us"] for r in single),
        "decode_us_max": max(r["decode_us"] for r in single),
        "encode_goal_us": ENCODE_GOAL_US,
        "decode_goal_us": DECODE_GOAL_US,
        "ratio": min(min(r["encode_ratio"], r["decode_ratio"]) for r in rows),
    }


def format_report(r: dict[str, Any]) -> str:
    lines = [
        "cachet bench codec" + (" (quick)" if r["quick"] else ""),
        "us of CPU per event, best of "
        f"{r['rounds']} rounds; Cachet's EventCodec (checks every value) against fastavro "
        "as strict (validate + schemaless_writer; schemaless_reader)",
        f"{'event':<22} {'bytes':>7} {'encode':>8} {'fastavro':>9} {'x':>5} "
        f"{'decode':>8} {'fastavro':>9} {'x':>5}",
    ]
    for row in r["events"]:
        lines.append(
            f"{row['event']:<22} {row['bytes']:>7} {row['encode_us']:>8.1f} "
            f"{row['fastavro_encode_us']:>9.1f} {row['encode_ratio']:>5.1f} "
            f"{row['decode_us']:>8.1f} {row['fastavro_decode_us']:>9.1f} "
            f"{row['decode_ratio']:>5.1f}"
        )
    per = r["per_read"]
    lines.append(
        f"{'  per read':<22} {'':>7} {per['encode_us']:>8.2f} {per['fastavro_encode_us']:>9.2f} "
        f"{'':>5} {per['decode_us']:>8.2f} {per['fastavro_decode_us']:>9.2f}"
    )

    def verdict(value: float, goal: float) -> str:
        return "met" if value <= goal else "NOT met"

    lines.append(
        f"goals per single event: encode <= {r['encode_goal_us']:.0f} us "
        f"(worst {r['encode_us_max']:.1f}: {verdict(r['encode_us_max'], r['encode_goal_us'])}), "
        f"decode <= {r['decode_goal_us']:.0f} us "
        f"(worst {r['decode_us_max']:.1f}: {verdict(r['decode_us_max'], r['decode_goal_us'])})"
    )
    lines.append(
        f"headline: the codec is at least {r['ratio']:.1f}x faster than fastavro in every row; "
        f"a read in a batch costs {per['encode_us']:.2f} us to encode and "
        f"{per['decode_us']:.2f} us to decode"
    )
    return "\n".join(lines)
