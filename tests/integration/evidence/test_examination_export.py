"""Done when: the examination export of a test contract opens in a headless
browser and its manifest signature verifies offline.

Everything is real: the session's embedded broker, a cache node (RocksDB
view, sealing producer with ML-DSA, FN-DSA and SLH-DSA seals), the watermark
ticker, reads that hit, miss and go stale (a ContractViolation), a revoke
through the node, anchor-signed key registrations and a key revocation; the
export reads the log back through the verified replay, signs its manifest,
and Chromium renders the report. The same examination from the archive
(archive consumer segments, through the command line with an encrypted
keystore) holds the same tables byte for byte; the SOC 2 export runs through
the command line too.
"""

from __future__ import annotations

import os
import re
import shutil
import struct
import subprocess
import threading
import time
import zlib
from collections import Counter
from pathlib import Path

import fastavro
import pytest
from confluent_kafka import Producer

from cachet.cli.main import main
from cachet.config.enums import Role
from cachet.crypto.keystore import Keystore
from cachet.crypto.schemes import SignatureScheme
from cachet.kafka.control import publish_control
from cachet.kafka.settings import producer_settings
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.registration import revocation_payload
from cachet.materializers.archive.archiver import Archiver, ArchiveSettings
from cachet.materializers.evidence import Window, export_examination, verify_export
from cachet.materializers.evidence.replay_source import ReplayEvidenceSource
from cachet.materializers.replay import BrokerSource, PartitionEnd, ReplayTrust
from cachet.processors.watermarks import WatermarkTicker
from cachet.producers.cache_client import CacheClient
from cachet.schemas.events import EventType
from cachet.verdict import MissReason
from tests.integration.cache.nodeproc import wait_for

pytestmark = pytest.mark.integration

CONTRACT = {
    "max_staleness_ms": 1500,
    "invalidation": "eager",
    "regulatory_classification": "quote",
    "books_and_records_category": "4511(c)",
    "supervisory_review": True,
}
EXPORTER = "examiner-export"


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found is None:
        pytest.skip("chromium is not installed (./run test installs it)")
    return found


def _png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the unfiltered scanlines of an 8-bit RGB(A) PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    pos, idat, header = 8, b"", b""
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        header = body if kind == b"IHDR" else header
        idat += body if kind == b"IDAT" else b""
        pos += 12 + length
    width, height, depth, colour = struct.unpack(">IIBB", header[:10])
    assert depth == 8 and colour in (2, 6)
    bpp = 3 if colour == 2 else 4
    raw, stride, rows, prev = zlib.decompress(idat), width * bpp, [], bytearray(width * bpp)
    for y in range(height):
        kind, line = (
            raw[y * (stride + 1)],
            bytearray(raw[y * (stride + 1) + 1 : (y + 1) * (stride + 1)]),
        )
        for i in range(stride):
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + b) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 0xFF
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 0xFF
        rows.append(bytes(line))
        prev = line
    return (
        width,
        height,
        [bytes(r[i : i + 3]) for r in rows[::4] for i in range(0, len(r), bpp * 4)],
    )


def test_examination_export_opens_in_chromium_and_verifies_offline(
    make_config,
    make_node,
    make_keys,
    ledger,
    anchor,
    producer_keys,
    other_keys,
    bootstrap_servers,
    topics,
    tmp_path,
) -> None:
    chromium = _chromium()
    t1 = time.time_ns() // 1000 - 1_000_000
    # A ticker of the test's own: stopped (and its last ticks sealed) before the
    # export reads the log, so the whole log verifies with nothing left unsealed.
    make_keys("ticker")
    ticker_producer = ledger.sealing_producer("ticker", producer_keys, batch=64)
    stop = threading.Event()
    ticking = WatermarkTicker(ticker_producer, 3, ticker_id="ticker", interval_s=0.1).start(stop)
    node = make_node(config=make_config(contracts={"exam": CONTRACT}))
    assert node.wait_caught_up()
    owner, regulator = CacheClient(node), CacheClient(node, Role.REGULATOR)
    owner.put("AAPL", b"189.12", contract="exam", wait=True)
    owner.put("MSFT", b"410.50", contract="exam", wait=True)
    assert wait_for(lambda: owner.get("AAPL", contract="exam").hit)
    assert regulator.get("MSFT", contract="exam").hit
    assert owner.get("NOPE", contract="exam").reason is MissReason.NOT_FOUND
    # Nobody refreshes MSFT: past 1.5 s its reads miss as stale (a violation).
    assert wait_for(lambda: owner.get("MSFT", contract="exam").reason is MissReason.STALE, 8)
    assert owner.revoke("AAPL", reason="source correction")
    assert wait_for(lambda: owner.get("AAPL", contract="exam").reason is MissReason.REVOKED, 5)
    # Key events: the exporter's registration, and a revoked key set.
    exporter = make_keys(EXPORTER)
    ledger.register("retired-node", other_keys)
    publish_control(
        Producer(producer_settings(bootstrap_servers)),
        ledger.codec,
        topics,
        EventType.SIGNING_KEY_REVOKED,
        revocation_payload("retired-node", other_keys.key_set_id, t1, "key-compromise", anchor),
    )
    node.close()  # flushes the read audit
    audited = node.audit.acknowledged  # reads (not events) the broker acknowledged
    assert audited >= 6 and node.audit.failed == 0
    stop.set()
    ticking.join(5)
    ticker_producer.close()
    t2 = time.time_ns() // 1000 + 1_000_000

    required = frozenset(SignatureScheme)
    source = ReplayEvidenceSource(
        BrokerSource(bootstrap_servers, topics), ReplayTrust(anchor.public(), required)
    )
    out = tmp_path / "exam"
    result = export_examination(
        source,
        contract="exam",
        window=Window(t1, t2),
        out=out,
        identity=EXPORTER,
        keys=exporter.signing,
        anchor=anchor.public(),
        clock=lambda: time.time_ns() // 1000,
    )
    assert source.summary.ok, source.summary.refused_by_status()
    rows = result.rows
    # Every read is a row (the node logs them many to a CacheReadBatch), each
    # once, named by its batch event and its index there.
    assert rows["reads"] == audited
    with (out / "tables" / "reads.avro").open("rb") as f:
        places = [(r["event_id"], r["read_index"]) for r in fastavro.reader(f)]
    assert len(set(places)) == len(places) == audited
    assert all(index is not None for _, index in places)
    assert len({event for event, _ in places}) < audited, "reads share batch events"
    assert rows["violations"] >= 1 and rows["supervisory_review"] == rows["violations"]
    assert rows["key_events"] >= 3  # node-1, the exporter, retired-node registered; one revoked
    profile = result.manifest["parameters"]["contract"]
    assert profile["contract_source"] == "log" and profile["regulatory_classification"] == "quote"

    # Offline: no broker is needed to verify, by library and by CLI.
    report = verify_export(out, pinned_anchor=anchor.public(), required=required)
    assert report.ok, report.failures()
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(anchor.public()))
    empty = tmp_path / "empty.toml"
    empty.write_text("")  # every default: the verifier needs no broker and no keystore
    verify = ["export", "verify", "--anchor", str(anchor_file), "--config", str(empty)]
    assert main([*verify, str(out)]) == 0

    # The same examination from the archive, through the command line (config,
    # encrypted keystore, anchor file): the same tables, byte for byte.
    config = _deployment(tmp_path, bootstrap_servers, topics, anchor, exporter.signing)
    archive = _archive(tmp_path / "archive", bootstrap_servers, topics)
    window = ["--from", str(t1), "--to", str(t2)]
    from_archive = tmp_path / "exam-archive"
    command = ["export", "examination", "--contract", "exam", "--archive", str(archive)]
    assert main([*command, *window, "--out", str(from_archive), "--config", str(config)]) == 0
    assert main([*verify, str(from_archive)]) == 0
    for table in sorted((out / "tables").iterdir()):
        assert table.read_bytes() == (from_archive / "tables" / table.name).read_bytes(), table.name

    # The SOC 2 export, through the command line, from the broker.
    soc2 = tmp_path / "soc2"
    assert main(["export", "soc2", *window, "--out", str(soc2), "--config", str(config)]) == 0
    assert main([*verify, str(soc2)]) == 0
    aggregates = (soc2 / "C5-integrity-verification" / "freshness_aggregates.csv").read_text()
    assert aggregates.splitlines()[1].startswith("exam,")
    assert (
        "signature_invalid" not in (soc2 / "C6-availability-monitoring" / "alerts.csv").read_text()
    )

    # The report as a browser shows it.
    url = (out / "report.html").as_uri()
    dom = subprocess.run(
        [chromium, "--headless", "--disable-gpu", "--no-sandbox", "--dump-dom", url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    ).stdout
    assert re.search(r'<span id="contract-name">exam</span>', dom)

    def table(name):
        return re.search(rf'<table id="{name}" data-rows="(\d+)">(.*?)</table>', dom, re.S)

    violations, reads = table("violations"), table("reads")
    assert int(violations.group(1)) == rows["violations"] == violations.group(2).count("<tr>") - 1
    assert int(reads.group(1)) == rows["reads"] == reads.group(2).count("<tr>") - 1
    reasons = Counter(re.findall(r"<td[^>]*>(served|not_found|stale|revoked)</td>", reads.group(2)))
    assert reasons["served"] >= 2 and reasons["not_found"] == 1 and reasons["stale"] >= 1
    assert reasons["revoked"] >= 1
    series = set(re.findall(r'<g class="series" data-key="([0-9a-f]{64})"', dom))
    assert len(series) == 2  # AAPL and MSFT were served with freshness proofs; NOPE never
    assert "regulator" in reads.group(2)

    shot = tmp_path / "shot.png"
    subprocess.run(
        [
            chromium,
            "--headless",
            "--disable-gpu",
            "--no-sandbox",
            "--window-size=1280,1600",
            f"--screenshot={shot}",
            url,
        ],
        capture_output=True,
        timeout=60,
        check=True,
    )
    width, height, pixels = _png_pixels(shot.read_bytes())
    assert (width, height) == (1280, 1600)
    colours = Counter(pixels)
    background = colours.most_common(1)[0][1]
    assert len(colours) > 20 and background < 0.95 * len(pixels), "the screenshot is blank"


def _deployment(tmp_path: Path, servers: str, topics, anchor, exporter_keys) -> Path:
    """A cachet.toml, an encrypted keystore holding the exporter's keys and the
    anchor file: what `cachet export` reads."""
    kek = os.urandom(32)
    (tmp_path / "kek").write_text(kek.hex())
    (tmp_path / "kek").chmod(0o600)
    (tmp_path / "keys").mkdir()
    keystore = Keystore.create(tmp_path / "keys" / "keystore.json", kek)
    keystore.add_key_set(EXPORTER, exporter_keys)
    (tmp_path / "keys" / "anchor.json").write_text(anchor_to_json(anchor.public()))
    config = tmp_path / "cachet.toml"
    config.write_text(
        f'[kafka]\nbootstrap_servers = "{servers}"\ntopic_prefix = "{topics.prefix}"\n'
        f'[node]\nnode_id = "{EXPORTER}"\n'
        f'[keys]\nkeystore_path = "{tmp_path / "keys" / "keystore.json"}"\n'
        f'kek_file = "{tmp_path / "kek"}"\n'
        f'trust_anchor_id = "{anchor.public().key_set_id}"\n'
    )
    return config


def _archive(directory: Path, servers: str, topics) -> Path:
    """Every record of the (now quiet) log in archive segments."""
    ends = {
        (item.topic, item.partition): item.next_offset
        for item in BrokerSource(servers, topics).read()
        if isinstance(item, PartitionEnd)
    }
    archiver = Archiver(servers, topics, ArchiveSettings(directory=directory))
    try:
        assert wait_for(
            lambda: (
                archiver.poll(0.2) >= 0
                and all(archiver.positions.get(k, 0) >= end for k, end in ends.items())
            ),
            30,
        ), "the archive did not catch up"
    finally:
        archiver.close()  # closes the open segment
    return directory
