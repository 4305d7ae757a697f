"""The archive consumer against the real broker, as a real process.

A cache node writes; ``cachet archive run`` (a child process) archives every
topic; it is SIGKILLed several times while a segment is open and restarted.
Then ``cachet archive verify`` accepts the archive (chain, every seal and
leaf, anchors, backup set) and every record of every topic is in it exactly
once, byte for byte (compared with a dump of the topics).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, TopicPartition

from cachet.cli.main import main
from cachet.config import load_config
from cachet.crypto.keystore import Keystore, load_kek
from cachet.kafka.settings import consumer_settings
from cachet.materializers.archive import iter_archive, list_segments
from cachet.materializers.archive.report import SegmentStatus
from cachet.materializers.archive.verify import verify_archive
from cachet.ops.broker import free_port
from cachet.producers.cache_client import CacheClient
from cachet.producers.cache_node import CacheNode, NodeKeys
from cachet.schemas.codec import DecodeError, EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames

pytestmark = pytest.mark.integration

WRITER = "writer-1"
ARCHIVER = "archive-1"


@pytest.fixture
def deployment(tmp_path: Path, bootstrap_servers: str, topics: TopicNames) -> Iterator[dict]:
    cfg = tmp_path / "cachet.toml"
    cfg.write_text(
        f'[kafka]\ntopic_prefix = "{topics.prefix}"\n'
        f'[keys]\nkeystore_path = "{tmp_path}/keys/keystore.json"\n'
        "[attestation]\nseal_batch_max_ms = 10\nunsealed_timeout_ms = 3000\n"
        f'[audit]\narchive_dir = "{tmp_path}/archive"\n'
        f'[archive]\nbackup_dir = "{tmp_path}/backup"\nidentity = "{ARCHIVER}"\n'
        f'segment_max_age = "300ms"\nverify_interval = 0\nhealth_port = {free_port()}\n'
        '[contracts.quotes]\nmax_staleness_ms = 30000\ninvalidation = "eager"\n'
    )
    kek = tmp_path / "kek"
    common = ["--config", str(cfg), "--bootstrap-servers", bootstrap_servers]
    assert main(["keys", "init", *common, "--generate-kek", str(kek), "--identity", WRITER, "--publish"]) == 0  # fmt: skip
    assert main(["keys", "register", *common, "--kek-file", str(kek), "--identity", ARCHIVER]) == 0  # fmt: skip
    store = Keystore.open(tmp_path / "keys" / "keystore.json", load_kek(kek, None))
    keys = NodeKeys.from_keystore(store, WRITER)
    node = CacheNode(load_config(cfg), bootstrap_servers, keys, tmp_path / "node", node_id=WRITER)
    yield {"cfg": cfg, "kek": kek, "common": common, "node": node, "root": tmp_path, "names": topics}  # fmt: skip
    node.close()
    keys.vault.close()


def start_archiver(d: dict) -> subprocess.Popen[str]:
    cmd = [sys.executable, "-m", "cachet.cli.main", "archive", "run", *d["common"], "--kek-file", str(d["kek"])]  # fmt: skip
    log = open(d["root"] / "archive.log", "a")  # noqa: SIM115 - the child owns it
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=log, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})  # fmt: skip
    assert proc.stdout is not None
    line = proc.stdout.readline()
    assert line.startswith("archive "), (
        f"archive did not start: {line!r}; see {d['root']}/archive.log"
    )
    return proc


def wait_for(cond, timeout_s: float = 30.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if value := cond():
            return value
        time.sleep(0.02)
    return cond()


def dump(servers: str, names: TopicNames) -> dict[tuple[str, int, int], bytes | None]:
    """Every record of every topic now, by coordinates."""
    c = Consumer(consumer_settings(servers))
    meta = c.list_topics(timeout=10)
    ends = {}
    for name in names.all().values():
        for p in meta.topics[name].partitions:
            low, high = c.get_watermark_offsets(TopicPartition(name, p), timeout=10)
            if high > low:
                ends[(name, p)] = high
    c.assign([TopicPartition(t, p, 0) for t, p in ends])
    out: dict[tuple[str, int, int], bytes | None] = {}
    left = dict(ends)
    deadline = time.monotonic() + 20
    while left and time.monotonic() < deadline:
        for m in c.consume(500, 0.2):
            if m.error() is not None:
                assert m.error().code() == KafkaError._PARTITION_EOF, m.error()
                continue
            out[(m.topic(), m.partition(), m.offset())] = m.value()
            if m.offset() + 1 >= ends[(m.topic(), m.partition())]:
                left.pop((m.topic(), m.partition()), None)
    c.close()
    assert not left, f"not read to the end: {left}"
    return out


def archived_through(d: dict, want: dict[tuple[str, int, int], bytes | None]) -> bool:
    ends: dict[tuple[str, int], int] = {}
    for t, p, o in want:
        ends[(t, p)] = max(ends.get((t, p), 0), o + 1)
    infos = list_segments(d["root"] / "archive", verify_chain=False)
    have = infos[-1].end_offsets if infos else {}
    return all(have.get(part, 0) >= end for part, end in ends.items())


def test_sigkill_mid_segment_leaves_a_verified_archive_with_every_record_once(deployment, bootstrap_servers, capsys) -> None:  # fmt: skip
    d = deployment
    node: CacheNode = d["node"]
    assert node.wait_caught_up(ticks=False)  # writes need no watermark ticks
    client = CacheClient(node)
    archive = d["root"] / "archive"
    written = 0
    for run in range(3):
        proc = start_archiver(d)
        closed = len(list(archive.glob("segment-*.avro")))
        # Write until this run closed a segment of its own and holds another
        # one open (its temporary file exists): then kill it, mid-segment.
        for _ in range(400):
            client.put(f"k{written % 7}", b"v%d" % written, contract="quotes", wait=True)
            written += 1
            if len(list(archive.glob("segment-*.avro"))) > closed and any(archive.glob(".segment-*.tmp")):  # fmt: skip
                break
        else:
            raise AssertionError("the archive never closed a segment and opened the next")
        # The anchor of the segment this run closed is sealed before the
        # kill (a kill before that leaves it to a later run to anchor again,
        # and then the archive may hold no anchor it can verify offline).
        assert wait_for(lambda run=run: sealed_anchors(bootstrap_servers, d["names"]) > run), "no sealed anchor"  # fmt: skip
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)
    for _ in range(5):
        client.put(f"k{written % 7}", b"v%d" % written, contract="quotes", wait=True)
        written += 1
    node.producer.flush(10)
    proc = start_archiver(d)
    want = dump(bootstrap_servers, d["names"])
    assert wait_for(lambda: archived_through(d, want), 30), "the archive did not catch up"
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(30) == 0

    # Every record of the log, exactly once, byte for byte.
    got: dict[tuple[str, int, int], bytes | None] = {}
    for r in iter_archive(archive):
        coords = (r.topic, r.partition, r.offset)
        assert coords not in got, f"archived twice: {coords}"
        got[coords] = r.value
    missing = set(want) - set(got)
    assert not missing, f"not archived: {sorted(missing)[:5]}"
    assert all(got[c] == v for c, v in want.items())
    assert len(list_segments(archive)) >= 4  # at least one closed segment per run

    # The archive verifies: chain, seals, leaves, anchors, backup set.
    store = Keystore.open(d["root"] / "keys" / "keystore.json", load_kek(d["kek"], None))
    report = verify_archive(archive, anchor=store.anchor().public(), names=d["names"], backup_dir=d["root"] / "backup", archive_identity=ARCHIVER)  # fmt: skip
    assert report.ok, report.first and report.first.describe()
    statuses = [s.status for s in report.segments]
    # Every segment is anchored in the ledger, but for the newest ones, whose
    # anchors were produced after the archive last read its own topic.
    anchored = statuses.index(SegmentStatus.UNANCHORED)
    assert statuses == [SegmentStatus.VERIFIED] * anchored + [SegmentStatus.UNANCHORED] * (len(statuses) - anchored)  # fmt: skip
    assert anchored >= 1
    # Every record is verified or waits for a seal beyond the archive's end.
    assert report.records_verified + report.unsealed_pending == len(got)
    assert report.seals_verified > 0

    # With the broker: the newest segments' anchors, verified there.
    capsys.readouterr()
    assert main(["archive", "verify", str(archive), "--config", str(d["cfg"]), "--bootstrap-servers", bootstrap_servers, "--json"]) == 0  # fmt: skip
    out = json.loads(capsys.readouterr().out)
    assert [s["status"] for s in out["segments"]] == ["verified"] * anchored + ["anchored-in-broker"] * (len(statuses) - anchored)  # fmt: skip
    assert main(["archive", "verify", str(archive), "--backup", str(d["root"] / "backup"), "--config", str(d["cfg"])]) == 0  # fmt: skip


def sealed_anchors(servers: str, names: TopicNames) -> int:
    """The archiver's ArchiveSegmentSealed events that a Seal of its own covers."""
    codec = EventCodec()
    anchors: list[tuple[str, int]] = []
    seals: list[dict] = []
    for value in dump(servers, names).values():
        try:
            event = codec.decode(value or b"")
        except DecodeError:
            continue
        if event.type is EventType.ARCHIVE_SEGMENT_SEALED:
            anchors.append((event.producer_id, event.producer_seq))
        elif event.type is EventType.SEAL:
            seals.append(event.payload)
    return sum(
        any(
            s["producer_id"] == pid
            and s["first_producer_seq"] <= seq < s["first_producer_seq"] + s["tree_size"]
            for s in seals
        )
        for pid, seq in anchors
    )


def health(d: dict) -> tuple[int, dict]:
    port = load_config(d["cfg"]).archive.health_port
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())
    except OSError:
        return 0, {}


def archive_alerts(servers: str, names: TopicNames) -> list[dict]:
    codec = EventCodec()
    out = []
    for (topic, _, _), value in dump(servers, names).items():
        if topic != names(Topic.ALERTS):
            continue
        try:
            event = codec.decode(value or b"")
        except DecodeError:
            continue
        if event.type is EventType.INTEGRITY_FAILURE and event.payload["status"].startswith(
            "archive."
        ):
            out.append(event.payload)
    return out


def test_self_verification_fails_health_and_alerts_on_a_tampered_segment(deployment, bootstrap_servers) -> None:  # fmt: skip
    d = deployment
    client = CacheClient(d["node"])
    assert d["node"].wait_caught_up(ticks=False)
    archive = d["root"] / "archive"
    proc = start_archiver(d)
    try:
        for i in range(400):
            client.put(f"k{i % 5}", b"v%d" % i, contract="quotes", wait=True)
            if len(list(archive.glob("segment-*.avro"))) >= 3:
                break
        # On demand (SIGUSR1): a clean archive verifies, health stays 200.
        proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: health(d)[1].get("verifications", 0) >= 1, 30), health(d)
        code, body = health(d)
        assert code == 200, body
        # Someone edits a closed segment in place (one header byte of its first record).
        target = sorted(archive.glob("segment-*.avro"))[0]
        os.chmod(target, 0o644)
        data = bytearray(target.read_bytes())
        data[len(data) // 2] ^= 0x01  # a record, a block frame or a sync marker: all detected
        target.write_bytes(bytes(data))
        proc.send_signal(signal.SIGUSR1)
        assert wait_for(lambda: health(d)[0] == 503, 30), health(d)
        problems = health(d)[1]["problems"]
        assert any(p.startswith("archive_verify_failed") for p in problems), problems
        alerts = wait_for(lambda: archive_alerts(bootstrap_servers, d["names"]), 20)
        assert alerts, "no IntegrityFailure alert in the ledger"
        assert target.name in alerts[0]["detail"]
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(30)
    log = (d["root"] / "archive.log").read_text()
    assert "self-verification FAILED" in log
