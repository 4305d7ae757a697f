"""``cachet demo``: the whole story on the embedded broker, in one command.

Starts the embedded broker (unless ``--bootstrap-servers`` names one),
provisions every topic, produces one event of every type, consumes them back
through the shared consume loop and prints them decoded; garbage produced on
purpose shows up in the dead-letter topic with its reason.
"""

from __future__ import annotations

import argparse
import contextlib
import time
import uuid
from collections.abc import Iterator

from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.cli.context import CliContext
from cachet.consume import ConsumeLoop, DeadLetters, RecordOrigin, headers_dict
from cachet.kafka import consumer_settings, create_topics, producer_settings
from cachet.topics import TOPIC_OF_EVENT, Topic, TopicNames
from ops.broker import EmbeddedBroker
from schemas.codec import EventCodec
from schemas.events import SAMPLE_PAYLOADS, Event, new_event


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[parent],
        help="run the end-to-end demo on the embedded broker",
        description=__doc__,
    )
    p.set_defaults(handler=run)


@contextlib.contextmanager
def _broker(ctx: CliContext, explicit: bool) -> Iterator[str]:
    if explicit:
        yield ctx.bootstrap_servers
        return
    with EmbeddedBroker(port=0) as broker:
        print(f"embedded broker on {broker.bootstrap_servers}")
        yield broker.bootstrap_servers


def run(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    explicit = bool(args.bootstrap_servers) or ctx.config_path is not None
    with _broker(ctx, explicit and args.bootstrap_servers is not None) as servers:
        names = TopicNames(f"demo-{uuid.uuid4().hex[:8]}.")
        created = create_topics(servers, names, partitions=3)
        print(f"provisioned {len(created)} topics under prefix {names.prefix!r}")
        _events_round_trip(servers, names)
    return 0


def _events_round_trip(servers: str, names: TopicNames) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(servers))
    sent: list[Event] = []
    for seq, (event_type, payload) in enumerate(SAMPLE_PAYLOADS.items()):
        event = new_event(event_type, payload, producer_id="demo", producer_seq=seq)
        producer.produce(names(TOPIC_OF_EVENT[event_type]), value=codec.encode(event))
        sent.append(event)
    producer.produce(names(Topic.ENTRIES), value=b"\xc3\x01 not an event at all")
    producer.flush(10)
    print(f"produced {len(sent)} events (one of every type) and 1 garbage record")

    seen: list[Event] = []
    consumer = Consumer(consumer_settings(servers))
    consumer.assign(
        [
            TopicPartition(names(t), p, 0)
            for t in Topic
            if t is not Topic.DEADLETTER
            for p in range(3)
        ]
    )
    loop = ConsumeLoop(
        consumer,
        codec,
        DeadLetters(producer, names(Topic.DEADLETTER)),
        fallback=lambda event, origin: seen.append(event),
        name="demo",
    )
    deadline = time.monotonic() + 20
    while len(seen) < len(sent) and time.monotonic() < deadline:
        loop.poll(0.5)
    consumer.close()
    producer.flush(10)
    for event in sorted(seen, key=lambda e: e.producer_seq):
        fields = ", ".join(f"{k}={_short(v)}" for k, v in list(event.payload.items())[:4])
        print(f"  {event.type.value:22s} seq={event.producer_seq:<3d} {fields}")
    print(f"consumed and decoded {len(seen)}/{len(sent)} events")

    dl = Consumer(consumer_settings(servers))
    dl.assign([TopicPartition(names(Topic.DEADLETTER), p, 0) for p in range(3)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msgs = [m for m in dl.consume(10, 0.5) if m.error() is None]
        if msgs:
            h = headers_dict(msgs[0].headers())
            print(
                f"dead-letter: {h['cachet.dl.failure'].decode()}: {h['cachet.dl.reason'].decode()}"
            )
            break
    dl.close()
    if len(seen) != len(sent):
        raise SystemExit(f"demo failed: only {len(seen)} of {len(sent)} events came back")


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return value[:6].hex() + ("…" if len(value) > 6 else "")
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "…"


_ = RecordOrigin  # re-exported type used by handlers' signatures
