"""``cachet schemas``: the wire schema sets; ``publish`` announces one on ``control``.

A consumer must know a schema set before producers write with it. ``cachet
schemas publish`` produces a SchemaSetPublished event for the current set
(or ``--release``), signed by the keystore's trust anchor, and returns once
the broker acknowledged it; roll producers onto the set only after that.
Verifying consumers learn the set from it (docs/wire.md, "Evolution").
"""

from __future__ import annotations

import argparse
from pathlib import Path

from confluent_kafka import Producer

from cachet.cli.context import CliContext, emit_json
from cachet.cli.keys import open_keystore
from cachet.kafka.settings import KafkaSetupError, producer_settings
from cachet.schemas.announcement import (
    announcing_fingerprint,
    release_of,
    schema_set_announcement,
)
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType, new_event
from cachet.schemas.loader import SCHEMA_DIR, SchemaLoadError, load_schema_set
from cachet.topics import Topic

# Like `cachet keys`: anchor-signed control events carry no seal.
ADMIN_PRODUCER_ID = "keys-admin@0"


def register(sub: argparse._SubParsersAction, parent: argparse.ArgumentParser) -> None:
    p = sub.add_parser(
        "schemas", parents=[parent], help="the wire schema sets", description=__doc__
    )
    ss = p.add_subparsers(dest="schemas_command", metavar="ACTION", required=True)
    pub = ss.add_parser(
        "publish",
        parents=[parent],
        help="announce a schema set on the control topic, signed by the trust anchor",
    )
    pub.add_argument(
        "--release",
        default=None,
        help="release to announce, a folder of schemas/history/ (default: the current set's)",
    )
    pub.add_argument(
        "--kek-file",
        type=Path,
        default=None,
        help="key-encryption key file (default keys.kek_file, else $CACHET_KEK)",
    )
    pub.add_argument("--json", action="store_true", help="print the outcome as JSON")
    pub.set_defaults(handler=run_publish)


def run_publish(args: argparse.Namespace) -> int:
    ctx = CliContext.from_args(args)
    if args.release is None:
        schema_set = load_schema_set(SCHEMA_DIR)
        release = release_of(schema_set, SCHEMA_DIR)
    else:
        directory = SCHEMA_DIR / "history" / args.release
        if not directory.is_dir():
            raise SchemaLoadError(f"no release {args.release!r} in {SCHEMA_DIR / 'history'}")
        schema_set, release = load_schema_set(directory), args.release
    store = open_keystore(ctx, args)
    announcement = schema_set_announcement(schema_set, release, store.anchor())
    event = new_event(
        EventType.SCHEMA_SET_PUBLISHED,
        announcement.to_avro(),
        producer_id=ADMIN_PRODUCER_ID,
        producer_seq=0,
    )
    # Written with the set every learning reader knows, not with the set it
    # announces: a reader that lacks that set could not read its announcement.
    value = EventCodec().encode_with(event, announcing_fingerprint(SCHEMA_DIR))
    producer = Producer(producer_settings(ctx.bootstrap_servers, {"message.timeout.ms": 10000}))
    producer.produce(ctx.topic_names(Topic.CONTROL), key=schema_set.fingerprint, value=value)
    if producer.flush(10) != 0:
        raise KafkaSetupError("SchemaSetPublished not acknowledged by the broker")
    out = {
        "release": release,
        "fingerprint": schema_set.fingerprint.hex(),
        "trust_anchor_id": store.anchor().key_set_id,
        "topic": ctx.topic_names(Topic.CONTROL),
    }
    if args.json:
        emit_json(out)
    else:
        print("  ".join(f"{k}={v}" for k, v in out.items()))
    return 0
