"""``cachet demo``: the whole story on the embedded broker, in one command.

1. Start the embedded broker and provision every topic.
2. Every event type round-trips through the broker; garbage lands in the
   dead-letter topic with its reason.
3. A trust anchor registers a node's post-quantum key set; the node caches
   a FINRA quote: encrypted, Merkle-batched, triple-signed, materialized.
4. Reads answer with proof (freshness, signatures, fingerprint); a
   Regulator sees the proofs but never the value; a revoke stops serving.
5. A Cache Attestation Bundle of the write is exported from the running
   log and verified offline, then fails after one flipped byte.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

from confluent_kafka import Consumer, Producer, TopicPartition

from cachet.cli.context import CliContext
from cachet.config import parse_config
from cachet.config.enums import Role
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import PrivateKeySet
from cachet.crypto.vault import FileVault
from cachet.kafka.consume import ConsumeLoop, DeadLetters, headers_dict
from cachet.kafka.control import publish_control
from cachet.kafka.settings import consumer_settings, create_topics, producer_settings
from cachet.ledger.cab import verify_bundle
from cachet.ledger.registration import registration_payload
from cachet.ops.broker import EmbeddedBroker
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.producers.sealing import SealingProducer
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, TOPIC_OF_EVENT, Event, EventType, new_event
from cachet.topics import Topic, TopicNames


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "demo",
        parents=[parent],
        help="run the end-to-end demo on the embedded broker",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.set_defaults(handler=run)


@contextlib.contextmanager
def _broker(explicit: str | None) -> Iterator[str]:
    if explicit:
        yield explicit
        return
    with EmbeddedBroker(port=0) as broker:
        print(f"embedded broker on {broker.bootstrap_servers}")
        yield broker.bootstrap_servers


def run(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    explicit = args.bootstrap_servers or (ctx.bootstrap_servers if ctx.config_path else None)
    with _broker(explicit) as servers, tempfile.TemporaryDirectory() as tmp:
        run_id = uuid.uuid4().hex[:8]
        # Two deployments on one broker: the round trip writes unsigned sample
        # events, which the signed cache's verifiers would rightly refuse and
        # alert on, so the cache story gets topics of its own.
        samples = TopicNames(f"demo-{run_id}-samples.")
        names = TopicNames(f"demo-{run_id}.")
        created = {
            **create_topics(servers, samples, partitions=3),
            **create_topics(servers, names, partitions=3),
        }
        print(f"provisioned {len(created)} topics under {samples.prefix!r} and {names.prefix!r}\n")
        _section("every event type through the broker")
        _events_round_trip(servers, samples)
        _section("a signed, contract-checked cache")
        _cache_story(servers, names, Path(tmp))
    print("\ndemo complete")
    return 0


def _section(title: str) -> None:
    print(f"== {title} ==")


def _events_round_trip(servers: str, names: TopicNames) -> None:
    codec = EventCodec()
    producer = Producer(producer_settings(servers))
    sent: list[Event] = []
    for seq, (event_type, payload) in enumerate(SAMPLE_PAYLOADS.items()):
        event = new_event(event_type, payload, producer_id="demo@0", producer_seq=seq)
        producer.produce(names(TOPIC_OF_EVENT[event_type]), value=codec.encode(event))
        sent.append(event)
    producer.produce(names(Topic.ENTRIES), value=b"\xc3\x01 not an event at all")
    producer.flush(10)
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
        fields = ", ".join(f"{k}={_short(v)}" for k, v in list(event.payload.items())[:3])
        print(f"  {event.type.value:22s} {fields}")
    print(f"decoded {len(seen)}/{len(sent)} events (one of every type)")
    dl = Consumer(consumer_settings(servers))
    dl.assign([TopicPartition(names(Topic.DEADLETTER), p, 0) for p in range(3)])
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        msgs = [m for m in dl.consume(10, 0.5) if m.error() is None]
        if msgs:
            h = headers_dict(msgs[0].headers())
            print(
                f"garbage -> deadletter: {h['cachet.dl.failure'].decode()}: "
                f"{h['cachet.dl.reason'].decode()}\n"
            )
            break
    dl.close()
    if len(seen) != len(sent):
        raise SystemExit(f"demo failed: only {len(seen)} of {len(sent)} events came back")


def _cache_story(servers: str, names: TopicNames, tmp: Path) -> None:
    codec = EventCodec()
    anchor, node_keys, ticker_keys = (PrivateKeySet.generate() for _ in range(3))
    control = Producer(producer_settings(servers))
    for identity, keys in (("node-1", node_keys), ("ticker", ticker_keys)):
        publish_control(
            control,
            codec,
            names,
            EventType.SIGNING_KEY_REGISTERED,
            registration_payload(identity, keys.public(), 0, anchor),
        )
    print(
        f"trust anchor {anchor.key_set_id} registered node-1's key set "
        f"({', '.join(s.value for s in SignatureScheme)})"
    )
    config = parse_config(
        {
            "kafka": {"bootstrap_servers": servers, "topic_prefix": names.prefix},
            "attestation": {"seal_batch_max_ms": 20},
            "contracts": {
                "finra_quotes": {
                    "max_staleness_ms": 30_000,
                    "invalidation": "eager",
                    "regulatory_classification": "quote",
                    "supervisory_review": True,
                }
            },
        },
        "demo",
    )
    stop = threading.Event()
    ticker = SealingProducer.from_config(config, servers, "ticker", ticker_keys, codec=codec)
    WatermarkTicker(ticker, 3, ticker_id="ticker", interval_s=0.2).start(stop)
    # The data keys live in a key vault (a file here), wrapped under its KEK:
    # destroying one is how a subject is erased.
    vault = FileVault(tmp / "vault.sqlite", os.urandom(32))
    secrets = NodeKeys("node-1", node_keys, anchor.public(), os.urandom(32), vault)
    try:
        with CacheNode(config, servers, secrets, tmp, node_id="node-1") as node:
            if not node.wait_caught_up(30):
                raise SystemExit("demo failed: the node did not catch up")
            owner = CacheClient(node, Role.OWNER)
            receipt = owner.put("AAPL", b"189.12", contract="finra_quotes", wait=True)
            print(
                f"put AAPL v{receipt.version}: encrypted, sealed, triple-signed "
                f"(fingerprint {receipt.fingerprint.hex()[:16]}...)"
            )
            r = owner.get("AAPL", contract="finra_quotes")
            print(f"owner get: hit={r.hit} value={r.value!r} status={r.status.value}")
            if r.freshness:
                f = r.freshness
                print(
                    f"  freshness proof: age {f.age_ms} ms of {f.max_staleness_ms} ms, "
                    f"headroom {f.headroom_ms} ms, view lag {f.view_lag_ms} ms"
                )
            if r.signatures:
                print(
                    f"  signatures: {', '.join(r.signatures.schemes)} "
                    f"(seal {r.signatures.seal_seq} of {r.signatures.producer_id})"
                )
            reg = CacheClient(node, Role.REGULATOR).get("AAPL", contract="finra_quotes")
            print(
                f"regulator get: hit={reg.hit} value={reg.value!r} (proofs only, never plaintext)"
            )
            owner.revoke("AAPL", reason="vendor correction")
            r = owner.get("AAPL", contract="finra_quotes")
            print(f"after revoke: hit={r.hit} reason={r.reason.value if r.reason else None}")
            node.producer.flush()
            _attest(servers, names, codec, anchor, receipt.event_id)
    finally:
        stop.set()
        ticker.close()
        vault.close()


def _attest(
    servers: str, names: TopicNames, codec: EventCodec, anchor: PrivateKeySet, event_id: str
) -> None:
    from cachet.cli.cab import export_bundle

    bundle = export_bundle(
        servers,
        names,
        codec,
        anchor.public(),
        tuple(SignatureScheme),
        event_id,
        data_topics=(Topic.ENTRIES,),
        timeout_s=30,
    )
    report = verify_bundle(bundle, pinned_anchor=anchor.public())
    print(f"\nattestation bundle for the write: {len(bundle)} bytes, verified offline:")
    for check in report.checks:
        print(f"  [{'ok' if check.passed else 'FAIL'}] {check.check.value}")
    tampered = bytearray(bundle)
    tampered[len(tampered) // 3] ^= 0x01
    bad = verify_bundle(bytes(tampered), pinned_anchor=anchor.public())
    print(
        f"one flipped byte -> ok={bad.ok}: "
        f"{', '.join(c.check.value for c in bad.checks if not c.passed) or 'rejected'}"
    )
    if not report.ok or bad.ok:
        raise SystemExit("demo failed: attestation bundle check")


def _short(value: object) -> str:
    if isinstance(value, bytes):
        return value[:6].hex() + ("..." if len(value) > 6 else "")
    text = str(value)
    return text if len(text) <= 24 else text[:23] + "..."
