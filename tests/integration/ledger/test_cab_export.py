"""Cache Attestation Bundles exported from a running ledger, verified offline.

Events come from a real SealingProducer through the broker; the bundle is
exported with the function ``cachet cab export`` uses (a verifying consumer
plus the control topic's registration), then checked with no broker.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from cachet.cli.cab import CabExportError, export_bundle
from cachet.cli.main import main
from cachet.crypto.seal import KeySet, PrivateKeySet
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.cab import CabCheck, CabError, anchor_fingerprint, verify_bundle
from cachet.ledger.cab_format import decode_bundle, encode_bundle
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import Topic
from tests.integration.ledger_support import PARTITIONS, REQUIRED, Ledger, emit_sample

pytestmark = pytest.mark.integration

N = 8  # events, sealed in batches of 4 -> 2 seals


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    """Overrides the shared "anchor-root" anchor (which the `ledger` fixture
    uses): a bundle's anchor id must be its fingerprint, as `keys init` makes."""
    return PrivateKeySet.generate()


def _produce(ledger: Ledger, keys: PrivateKeySet, identity: str = "svc") -> list:
    ledger.register(identity, keys)
    sp = ledger.sealing_producer(identity, keys, batch=4)
    events = emit_sample(sp, N)
    sp.close()
    return events


def _export(ledger: Ledger, event_id: str, **kw) -> bytes:
    return export_bundle(
        ledger.servers,
        ledger.names,
        ledger.codec,
        ledger.anchor.public(),
        REQUIRED,
        event_id,
        partitions=PARTITIONS,
        timeout_s=kw.pop("timeout_s", 20.0),
        **kw,
    )


def test_exported_bundle_verifies_offline(ledger: Ledger, producer_keys: PrivateKeySet) -> None:
    events = _produce(ledger, producer_keys)
    target = events[5]  # a CacheRead in the second seal
    data = _export(ledger, target.event_id)
    report = verify_bundle(data, pinned_anchor=ledger.anchor.public())
    assert report.ok, report.failures
    assert report.event_id == target.event_id
    assert report.producer_id == target.producer_id
    assert report.producer_seq == target.producer_seq == 5
    assert (report.seal_seq, report.leaf_index) == (1, 1)
    assert ledger.codec.decode(decode_bundle(data).event_bytes).event_id == target.event_id
    # Pinned by fingerprint only: same result. Unpinned: not verified.
    assert verify_bundle(
        data, pinned_anchor=None, pinned_fingerprint=anchor_fingerprint(ledger.anchor.public())
    ).ok
    assert not verify_bundle(data, pinned_anchor=None).ok
    # Pinned by fingerprint, the anchor's id line is bound too: relabelling fails.
    genuine = decode_bundle(data)
    relabel = KeySet("anchor-root", dict(genuine.anchor.public_keys))
    relabelled = encode_bundle(replace(genuine, anchor=relabel))
    fp = verify_bundle(
        relabelled,
        pinned_anchor=None,
        pinned_fingerprint=anchor_fingerprint(ledger.anchor.public()),
    )
    assert {c.check for c in fp.failures} == {CabCheck.ANCHOR_PINNED}


def test_unknown_event_is_an_export_error(ledger: Ledger, producer_keys: PrivateKeySet) -> None:
    _produce(ledger, producer_keys)
    with pytest.raises(CabExportError, match="not found"):
        _export(ledger, "01900000-0000-7000-8000-000000000000", timeout_s=3.0)


@pytest.mark.tamper
def test_exported_bundle_fails_after_a_single_byte_change(
    ledger: Ledger, producer_keys: PrivateKeySet
) -> None:
    events = _produce(ledger, producer_keys)
    data = _export(ledger, events[2].event_id)
    anchor = ledger.anchor.public()
    assert verify_bundle(data, pinned_anchor=anchor).ok
    bundle = decode_bundle(data)
    event_at = data.index(bundle.event_bytes)
    note_at = data.index(bundle.seal_note)
    # The last digit of the signed "at <sealed_at_us>" line: still a canonical note.
    at_digit = data.index(b"\n", data.index(b"\nat ", note_at) + 1) - 1
    for pos, expect in (
        (event_at + len(bundle.event_bytes) // 2, {CabCheck.INCLUSION}),
        (at_digit, {CabCheck.SEAL_SIGNED}),
        (len(data) - 10, {CabCheck.PARSE, CabCheck.ANCHOR_PINNED}),  # the anchor's key text
    ):
        tampered = bytearray(data)
        tampered[pos] ^= 0x01
        report = verify_bundle(bytes(tampered), pinned_anchor=anchor)
        assert not report.ok, pos
        assert expect & {c.check for c in report.failures}, (pos, report.failures)


def test_cli_export_then_verify(
    bootstrap_servers: str, topics, codec, producer_keys, tmp_path, monkeypatch, capsys
) -> None:
    """The commands end to end, with an anchor file as `cachet keys init` writes."""
    anchor = PrivateKeySet.generate()  # derived id: what anchor files hold
    ledger = Ledger(bootstrap_servers, topics, codec, anchor)
    events = _produce(ledger, producer_keys)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    monkeypatch.delenv("CACHET_BOOTSTRAP_SERVERS", raising=False)
    (tmp_path / "cachet.toml").write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap_servers}"\n'
        f'topic_prefix = "{topics.prefix}"\npartitions = {PARTITIONS}\n'
    )
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(anchor.public()))
    out = tmp_path / "e.cab"
    argv = ["cab", "export", "--event-id", events[0].event_id, "--out", str(out)]
    assert main([*argv, "--anchor-file", str(anchor_file), "--topic", Topic.ENTRIES.value]) == 0
    assert anchor_fingerprint(anchor.public()) in capsys.readouterr().out
    assert main(["cab", "verify", str(out), "--anchor-file", str(anchor_file)]) == 0
    assert capsys.readouterr().out.rstrip().endswith("VERIFIED")
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    assert main(["cab", "verify", str(out), "--anchor-file", str(anchor_file)]) == 1
    assert "NOT VERIFIED" in capsys.readouterr().out


@pytest.mark.parametrize("topic", [Topic.CONTROL, Topic.SEALS], ids=lambda t: t.value)
def test_export_from_control_or_seals_is_a_clear_error(
    ledger: Ledger, producer_keys: PrivateKeySet, topic: Topic, tmp_path, monkeypatch, capsys
) -> None:
    """The verifying consumer reads control and seals itself: naming one as a
    data topic assigned its partitions twice, and librdkafka raised an
    uncaught KafkaException ("Failed to set assignment")."""
    events = _produce(ledger, producer_keys)
    with pytest.raises(CabExportError, match=f"topic {topic.value}"):
        _export(ledger, events[0].event_id, data_topics=[topic], timeout_s=3.0)
    # The command says so and exits 2, with no traceback.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    monkeypatch.delenv("CACHET_BOOTSTRAP_SERVERS", raising=False)
    (tmp_path / "cachet.toml").write_text(
        f'[kafka]\nbootstrap_servers = "{ledger.servers}"\n'
        f'topic_prefix = "{ledger.names.prefix}"\npartitions = {PARTITIONS}\n'
    )
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(ledger.anchor.public()))
    out = tmp_path / "e.cab"
    argv = ["cab", "export", "--event-id", events[0].event_id, "--out", str(out)]
    assert main([*argv, "--anchor-file", str(anchor_file), "--topic", topic.value]) == 2
    assert f"topic {topic.value}" in capsys.readouterr().err
    assert not out.exists()


def _produce_batches(ledger: Ledger, keys: PrivateKeySet) -> list:
    """Two CacheReadBatch events (three reads, then two) between writes, as a
    v4 node's read audit writes them (record key: the node id)."""
    ledger.register("svc", keys)
    sp = ledger.sealing_producer("svc", keys, batch=4)
    read = SAMPLE_PAYLOADS[EventType.CACHE_READ]
    events = emit_sample(sp, 1)
    for first, count in ((10, 3), (20, 2)):
        reads = [{**read, "key_hash": (first + i).to_bytes(32, "big")} for i in range(count)]
        payload = {"node_id": read["node_id"], "reads": reads}
        events.append(sp.emit(EventType.CACHE_READ_BATCH, payload, key=b"node-a"))
    events += emit_sample(sp, 1)
    sp.close()
    return events


def test_a_read_bundle_proves_one_read_of_a_batch_offline(
    ledger: Ledger, producer_keys: PrivateKeySet, tmp_path, monkeypatch, capsys
) -> None:
    events = _produce_batches(ledger, producer_keys)
    batch = events[1]
    assert batch.type is EventType.CACHE_READ_BATCH
    anchor = ledger.anchor.public()
    data = _export(ledger, batch.event_id, read_index=2, data_topics=[Topic.READS])
    report = verify_bundle(data, pinned_anchor=anchor)
    assert report.ok, report.failures
    assert (report.event_id, report.read_index) == (batch.event_id, 2)
    assert report.read is not None
    assert report.read["key_hash"] == batch.payload["reads"][2]["key_hash"].hex()
    # Offline, by the command, with the anchor file an auditor is given.
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    (tmp_path / "read.cab").write_bytes(data)
    (tmp_path / "anchor.json").write_text(anchor_to_json(anchor))
    argv = ["cab", "verify", "read.cab", "--anchor-file", "anchor.json"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "read bundle: read 2 of the batch" in out and out.rstrip().endswith("VERIFIED")
    # The same bytes claiming another read of the batch: refused, with the reason.
    bundle = decode_bundle(data)
    assert bundle.read is not None
    wrong = replace(bundle, read=replace(bundle.read, index=0))
    report = verify_bundle(encode_bundle(wrong), pinned_anchor=anchor)
    assert {c.check for c in report.failures} == {CabCheck.READ}
    # No such read, or no batch: clear export errors.
    with pytest.raises(CabError, match="holds 3 reads"):
        _export(ledger, batch.event_id, read_index=3, data_topics=[Topic.READS])
    with pytest.raises(CabExportError, match="not a CacheReadBatch"):
        _export(ledger, events[0].event_id, read_index=0, data_topics=[Topic.ENTRIES])


def test_cli_exports_a_read_bundle(
    bootstrap_servers: str, topics, codec, producer_keys, tmp_path, monkeypatch, capsys
) -> None:
    anchor = PrivateKeySet.generate()
    ledger = Ledger(bootstrap_servers, topics, codec, anchor)
    events = _produce_batches(ledger, producer_keys)
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    monkeypatch.delenv("CACHET_BOOTSTRAP_SERVERS", raising=False)
    (tmp_path / "cachet.toml").write_text(
        f'[kafka]\nbootstrap_servers = "{bootstrap_servers}"\n'
        f'topic_prefix = "{topics.prefix}"\npartitions = {PARTITIONS}\n'
    )
    (tmp_path / "anchor.json").write_text(anchor_to_json(anchor.public()))
    batch = events[2]  # the second batch: two reads
    argv = ["cab", "export", "--event-id", batch.event_id, "--read-index", "1", "--out", "r.cab"]
    assert main([*argv, "--anchor-file", "anchor.json", "--topic", "reads", "--json"]) == 0
    assert '"read_index": 1' in capsys.readouterr().out
    assert main(["cab", "verify", "r.cab", "--anchor-file", "anchor.json", "--json"]) == 0
    out = capsys.readouterr().out
    assert '"ok": true' in out and '"read_index": 1' in out
    assert batch.payload["reads"][1]["key_hash"].hex() in out
