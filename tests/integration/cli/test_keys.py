"""`cachet keys` against the real broker: what it publishes is accepted by a
registry that trusts only the anchor file it wrote; a wrong KEK opens nothing."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from confluent_kafka import Consumer, TopicPartition

from cachet.cli.main import main
from cachet.crypto.registry import KeyRegistry, KeyStatus
from cachet.crypto.schemes import SignatureScheme
from cachet.kafka.settings import consumer_settings
from cachet.kafka.verifying import _key_set, _lines  # the consumer's own parsing
from cachet.ledger.anchor import load_anchor
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import EventType
from cachet.topics import Topic, TopicNames

pytestmark = pytest.mark.integration


def _control_events(servers: str, names: TopicNames, want: int) -> list:
    c = Consumer(consumer_settings(servers))
    c.assign([TopicPartition(names(Topic.CONTROL), p, 0) for p in range(3)])
    codec, out = EventCodec(), []
    deadline = time.monotonic() + 10
    while len(out) < want and time.monotonic() < deadline:
        out += [codec.decode(m.value()) for m in c.consume(10, 0.3) if m.error() is None]
    c.close()
    return out


def test_keys_lifecycle_publishes_anchor_signed_events(
    tmp_path: Path, bootstrap_servers: str, topics: TopicNames, capsys
) -> None:
    cfg = tmp_path / "cachet.toml"
    cfg.write_text(
        f'[kafka]\ntopic_prefix = "{topics.prefix}"\n'
        f'[keys]\nkeystore_path = "{tmp_path}/keys/keystore.json"\n'
    )
    common = ["--config", str(cfg), "--bootstrap-servers", bootstrap_servers]
    kek = tmp_path / "kek"
    assert (
        main(
            [
                "keys",
                "init",
                *common,
                "--generate-kek",
                str(kek),
                "--identity",
                "svc",
                "--publish",
                "--json",
            ]
        )
        == 0
    )
    init = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert kek.stat().st_mode & 0o777 == 0o600
    assert (
        main(["keys", "rotate", *common, "--kek-file", str(kek), "--identity", "svc", "--json"])
        == 0
    )
    rot = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (
        main(
            [
                "keys",
                "revoke",
                *common,
                "--kek-file",
                str(kek),
                "--identity",
                "svc",
                "--key-set",
                rot["new_key_set_id"],
                "--compromised-at",
                "5000000",
            ]
        )
        == 0
    )

    events = _control_events(bootstrap_servers, topics, 3)
    assert [e.type for e in events] == [
        EventType.SIGNING_KEY_REGISTERED,
        EventType.SIGNING_KEY_ROTATED,
        EventType.SIGNING_KEY_REVOKED,
    ]
    anchor = load_anchor(tmp_path / "keys" / "anchor.json", init["trust_anchor_id"])
    registry = KeyRegistry(anchor, tuple(SignatureScheme))
    reg, rotd, rev = (e.payload for e in events)
    registry.register(
        reg["producer_id"], _key_set(reg, reg["key_set_id"]), reg["valid_from_us"], _lines(reg)
    )
    registry.rotate(
        rotd["producer_id"],
        rotd["old_key_set_id"],
        _key_set(rotd, rotd["new_key_set_id"]),
        rotd["rotated_at_us"],
        _lines(rotd),
    )
    registry.revoke(
        rev["producer_id"], rev["key_set_id"], rev["compromised_at_us"], rev["reason"], _lines(rev)
    )
    assert registry.lookup("svc", init["key_set_id"], 1).status is KeyStatus.VALID
    assert registry.lookup("svc", rot["new_key_set_id"], 6_000_000).status is KeyStatus.REVOKED


def test_wrong_kek_opens_nothing(tmp_path: Path, capsys) -> None:
    cfg = tmp_path / "cachet.toml"
    cfg.write_text(f'[keys]\nkeystore_path = "{tmp_path}/keystore.json"\n')
    assert (
        main(["keys", "init", "--config", str(cfg), "--generate-kek", str(tmp_path / "kek")]) == 0
    )
    other = tmp_path / "other-kek"
    other.write_text("11" * 32)
    assert main(["keys", "list", "--config", str(cfg), "--kek-file", str(other)]) == 2
    err = capsys.readouterr().err
    assert "KEK" in err or "key-encryption" in err
