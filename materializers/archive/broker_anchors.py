"""The anchors of the newest segments, read (and verified) from the broker.

The anchor of the newest segment is produced after it closed, so it is in
the broker before it is in any segment. ``cachet archive verify
--bootstrap-servers`` reads the ``archive`` topic through a
:class:`~cachet.kafka.verifying.VerifyingConsumer` (the live verifier: the
anchor counts only under a verified seal of a registered key) and hands the
anchors it applied to :func:`~cachet.materializers.archive.verify.verify_archive`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Collection, Mapping
from typing import Any

from confluent_kafka import Producer

from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import KeySet
from cachet.kafka.settings import producer_settings
from cachet.kafka.verifying import VerifyingConsumer
from cachet.ledger.identity import ProducerIdError, identity_of
from cachet.ledger.verifier import Applied
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.schemas.payloads import ArchiveSegmentSealed
from cachet.topics import Topic, TopicNames

__all__ = ["BrokerAnchor", "anchored_segments", "read_broker_anchors"]

log = logging.getLogger(__name__)

# A verified anchor from the broker and the producer id that sealed it.
BrokerAnchor = tuple[ArchiveSegmentSealed, str]


def read_broker_anchors(
    servers: str,
    names: TopicNames,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    *,
    partitions: Mapping[Topic, int] | int = 3,
    timeout_s: float = 30.0,
    codec: EventCodec | None = None,
) -> list[BrokerAnchor]:
    """Every ArchiveSegmentSealed on the broker that verified, once the
    ``archive`` topic and ``seals`` were read to their end (or the timeout)."""
    found: list[BrokerAnchor] = []

    def apply(applied: Applied) -> None:
        if applied.event.type is EventType.ARCHIVE_SEGMENT_SEALED:
            found.append(
                (ArchiveSegmentSealed.from_avro(applied.event.payload), applied.event.producer_id)
            )

    def alert(event_type: EventType, payload: dict[str, Any]) -> None:
        # Verify only reads: the running verifiers raise the alerts on the log.
        log.warning("reading anchors from the broker: %s %s", event_type.value, payload)

    vc = VerifyingConsumer(
        servers,
        names,
        codec or EventCodec(),
        anchor,
        required,
        [Topic.ARCHIVE],
        apply,
        alert,
        Producer(producer_settings(servers)),
        partitions=partitions,
        name="archive-verify",
    )
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            vc.poll(0.2)
            done = (
                vc.registry_caught_up
                and all(part in vc.eof for part in vc.assignment)
                and vc.verifier.waiting_count == 0
            )
            if done:
                break
        else:
            log.warning("archive topic not read to its end within %.0fs", timeout_s)
    finally:
        vc.close()
    return found


def anchored_segments(
    servers: str,
    names: TopicNames,
    anchor: KeySet,
    required: Collection[SignatureScheme],
    *,
    archive_id: str,
    identity: str,
    partitions: Mapping[Topic, int] | int = 3,
    timeout_s: float = 30.0,
    codec: EventCodec | None = None,
) -> set[int]:
    """Segment numbers of ``archive_id`` anchored in the ledger under a
    verified seal of ``identity``: what an archiver restarting needs not
    anchor again. An anchor whose seal a crash lost (SIGKILL between the
    anchor and its seal), or one an attacker wrote under another key, does
    not count, so the archiver anchors that segment again."""
    found: set[int] = set()
    for a, producer_id in read_broker_anchors(
        servers, names, anchor, required, partitions=partitions, timeout_s=timeout_s, codec=codec
    ):
        try:
            ours = identity_of(producer_id) == identity
        except ProducerIdError:
            ours = False
        if ours and a.archive_id == archive_id:
            found.add(a.segment_seq)
    return found
