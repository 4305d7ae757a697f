"""Erasure certificates built from the live log, verified offline.

A real ``request_erasure`` seals the request as the data-protection identity;
a real SealingProducer seals the processor's completions (the erasure
processor's own output is exercised end to end in test_erasure_sweep.py).
The certificate is built with the function ``cachet erase status`` uses (a
verifying consumer plus the control topic's registrations), then checked
with no broker, through the library and through the commands.
"""

from __future__ import annotations

import os
import uuid
from dataclasses import dataclass
from typing import Any

import pytest

from cachet.cli.erase_certificate import CertificateExportError, export_certificate
from cachet.crypto.identifiers import IdentifierHasher
from cachet.crypto.seal import PrivateKeySet
from cachet.kafka.settings import create_topics
from cachet.ledger.anchor import anchor_to_json
from cachet.ledger.erasure_certificate import CertificateCheck, CertificateError, verify_certificate
from cachet.ledger.erasure_certificate_format import ErasureStatus, decode_certificate
from cachet.producers.erasure_request import ErasureTicket, request_erasure
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import SAMPLE_PAYLOADS, EventType
from cachet.topics import TopicNames
from tests.integration.ledger_support import PARTITIONS, REQUIRED, Ledger

pytestmark = pytest.mark.integration

REQUESTER = "dpo"
PROCESSOR = "erasure"
PINS = {"allowed_requesters": (REQUESTER,), "processor_identity": PROCESSOR}


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    """A bundle's anchor id must be its fingerprint, as `keys init` makes."""
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def requester_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def processor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


def _completion(ticket: Any, stage: str, held: list[dict]) -> dict[str, Any]:
    payload = dict(SAMPLE_PAYLOADS[EventType.ERASURE_COMPLETED])
    return payload | {
        "request_id": ticket.request_id,
        "subject_hash": ticket.subject_hash,
        "namespace": ticket.namespace,
        "stage": stage,
        "held": held,
    }


@dataclass(frozen=True)
class Scenario:
    ledger: Ledger
    ticket: ErasureTicket


@pytest.fixture(scope="module")
def scenario(
    bootstrap_servers: str,
    codec: EventCodec,
    anchor: PrivateKeySet,
    requester_keys: PrivateKeySet,
    processor_keys: PrivateKeySet,
) -> Scenario:
    """One log for the module's tests (they only read it)."""
    names = TopicNames(f"c{uuid.uuid4().hex[:10]}.")
    create_topics(bootstrap_servers, names, partitions=PARTITIONS)
    ledger = Ledger(bootstrap_servers, names, codec, anchor)
    return Scenario(ledger, _erase(ledger, requester_keys, processor_keys))


def _erase(
    ledger: Ledger, requester_keys: PrivateKeySet, processor_keys: PrivateKeySet
) -> ErasureTicket:
    """A request, its two stages, and noise: another request's completion and
    a completion sealed by keys the anchor never registered."""
    ledger.register(REQUESTER, requester_keys)
    ledger.register(PROCESSOR, processor_keys)
    hasher = IdentifierHasher(os.urandom(32))
    dpo = ledger.sealing_producer(REQUESTER, requester_keys, batch=1)
    ticket = request_erasure(dpo, hasher, "alice", requested_by="dpo@example.com")
    other = request_erasure(dpo, hasher, "bob", namespace="quotes", requested_by="dpo@example.com")
    dpo.close()
    held = dict(SAMPLE_PAYLOADS[EventType.ERASURE_COMPLETED])["held"]
    processor = ledger.sealing_producer(PROCESSOR, processor_keys, batch=2)
    processor.emit(
        EventType.ERASURE_COMPLETED, _completion(ticket, "immediate", held), key=ticket.subject_hash
    )
    processor.emit(
        EventType.ERASURE_COMPLETED, _completion(other, "immediate", []), key=other.subject_hash
    )
    processor.emit(
        EventType.ERASURE_COMPLETED,
        _completion(ticket, "retention_end", []),
        key=ticket.subject_hash,
    )
    processor.close()
    forger = ledger.sealing_producer(PROCESSOR, PrivateKeySet.generate(), batch=1)
    forger.emit(
        EventType.ERASURE_COMPLETED, _completion(ticket, "hold_lifted", []), key=ticket.subject_hash
    )
    forger.close()
    return ticket


def _export(ledger: Ledger, request_id: str, **kw: Any) -> bytes:
    return export_certificate(
        ledger.servers,
        ledger.names,
        ledger.codec,
        ledger.anchor.public(),
        REQUIRED,
        request_id,
        partitions=PARTITIONS,
        timeout_s=kw.pop("timeout_s", 30.0),
        unsealed_timeout_s=1.0,
        **(PINS | kw),
    )


def test_certificate_from_the_log_verifies_offline(scenario: Scenario) -> None:
    ledger, ticket = scenario.ledger, scenario.ticket
    data = _export(ledger, ticket.request_id)
    report = verify_certificate(data, pinned_anchor=ledger.anchor.public(), **PINS)
    assert report.ok, report.failures
    assert report.request_id == ticket.request_id
    # The retention_end stage held nothing more: completed. The forged
    # hold_lifted completion (unregistered keys) was refused and left out,
    # and the other request's completion is not in this certificate.
    assert report.status is ErasureStatus.COMPLETED
    assert [b.event_type for b in report.bundles] == [
        "ErasureRequested",
        "ErasureCompleted",
        "ErasureCompleted",
    ]
    text = report.statement or ""
    assert f"subject-hash {ticket.subject_hash.hex()}\n" in text
    assert 'completion "immediate"' in text and 'completion "retention_end"' in text
    assert "hold_lifted" not in text
    assert f"\nsealed-by {ticket.producer_id} seq {ticket.producer_seq} " in text
    assert 'ground "FINRA 4511 / SEC 17a-4(f)"' in text
    assert len(decode_certificate(data).bundles) == 3


def test_unknown_request_is_an_export_error(scenario: Scenario) -> None:
    with pytest.raises(CertificateExportError, match="no ErasureRequested with request id"):
        _export(scenario.ledger, "01900000-0000-7000-8000-000000000000", timeout_s=10.0)


def test_a_request_from_an_identity_not_allowed_is_not_certified(scenario: Scenario) -> None:
    with pytest.raises(CertificateError, match="not one of the allowed requesters"):
        _export(scenario.ledger, scenario.ticket.request_id, allowed_requesters=("someone-else",))


def test_cli_status_then_verify(scenario: Scenario, tmp_path, monkeypatch, capsys) -> None:
    """``cachet erase status ID --out F`` then ``cachet erase verify F --anchor A``."""
    from cachet.cli.main import main

    ledger, ticket = scenario.ledger, scenario.ticket
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    monkeypatch.delenv("CACHET_BOOTSTRAP_SERVERS", raising=False)
    (tmp_path / "cachet.toml").write_text(
        f'[kafka]\nbootstrap_servers = "{ledger.servers}"\n'
        f'topic_prefix = "{ledger.names.prefix}"\npartitions = {PARTITIONS}\n'
        f'[erasure]\nallowed_requesters = ["{REQUESTER}"]\n'
        f'processor_identity = "{PROCESSOR}"\n'
    )
    anchor_file = tmp_path / "anchor.json"
    anchor_file.write_text(anchor_to_json(ledger.anchor.public()))
    out = tmp_path / "erasure.cert"
    argv = ["erase", "status", ticket.request_id, "--out", str(out), "--unsealed-timeout", "1"]
    assert main([*argv, "--anchor-file", str(anchor_file)]) == 0
    printed = capsys.readouterr().out
    assert "status completed\n" in printed and "STATUS completed" in printed
    assert main(["erase", "verify", str(out), "--anchor", str(anchor_file)]) == 0
    printed = capsys.readouterr().out
    assert printed.rstrip().endswith("VERIFIED (completed)")
    assert f"request {ticket.request_id!r}" in printed or ticket.request_id in printed
    # Another requester pinned on the command line: refused.
    assert (
        main(["erase", "verify", str(out), "--anchor", str(anchor_file), "--requester", "x"]) == 1
    )
    assert f"FAIL  {CertificateCheck.REQUEST.value}" in capsys.readouterr().out
    # One flipped byte: refused, naming the check.
    data = bytearray(out.read_bytes())
    data[len(data) // 2] ^= 0x01
    out.write_bytes(bytes(data))
    assert main(["erase", "verify", str(out), "--anchor", str(anchor_file), "--json"]) == 1
    assert '"ok": false' in capsys.readouterr().out
