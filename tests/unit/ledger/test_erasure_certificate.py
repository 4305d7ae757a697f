"""Erasure certificates: built from real sealed events, verified offline, and
refused after any one-byte change or any forgery. The attacker can rewrite
any byte of a certificate and seal events with keys of their own, but holds
neither the trust anchor's keys nor the genuine producers' keys.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import registration_statement, sign_statement
from cachet.crypto.seal import PrivateKeySet, SealHeader, note_bytes, seal_hash, sign_header
from cachet.ledger.cab import CheckOutcome, anchor_fingerprint, build_bundle
from cachet.ledger.erasure_certificate import (
    CertificateCheck,
    CertificateError,
    CertificateReport,
    build_certificate,
    verify_certificate,
)
from cachet.ledger.erasure_certificate_format import (
    CERTIFICATE_MAGIC,
    Certificate,
    CertificateFormatError,
    ErasureStatus,
    decode_certificate,
    encode_certificate,
    render_statement,
)
from cachet.ledger.record import RecordOrigin
from cachet.ledger.verifier import Applied, VerifiedSeal
from cachet.schemas.codec import EventCodec
from cachet.schemas.events import Event, EventType, SealRef, new_event

REQUESTER = "dpo-desk"
PROCESSOR = "erasure-processor"
SUBJECT = bytes(range(32))
T0 = 1_790_000_000_000_000
RETENTION_END = 1_979_388_800_000_000
HELD = {
    "key_hash": b"\x07" * 32,
    "namespace": "trades",
    "contract": "finra_trades",
    "ground": "FINRA 4511 / SEC 17a-4(f)",
    "held_until_us": RETENTION_END,
}
HOLD = {
    "key_hash": b"\x09" * 32,
    "namespace": "quotes",
    "contract": "quotes",
    "ground": 'legal hold lh-1: "Smith v. Acme"\nline two',
    "held_until_us": None,
}


@pytest.fixture(scope="module")
def codec() -> EventCodec:
    return EventCodec()


@pytest.fixture(scope="module")
def anchor() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def requester_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


@pytest.fixture(scope="module")
def processor_keys() -> PrivateKeySet:
    return PrivateKeySet.generate()


def request_payload(request_id: str = "er-1", **kw: Any) -> dict[str, Any]:
    return {
        "request_id": request_id,
        "subject_hash": SUBJECT,
        "scope": "SUBJECT",
        "requested_by": "dpo@example.com",  # a label for a person, not the authority
        "legal_basis": "GDPR Art. 17(1)(a)",
        "namespace": None,
    } | kw


def completion_payload(request_id: str = "er-1", stage: str = "immediate", **kw: Any) -> dict:
    return {
        "request_id": request_id,
        "subject_hash": SUBJECT,
        "entries_revoked": 5,
        "data_keys_destroyed": 2,
        "l1_evictions": 4,
        "kv_blocks_scrubbed": 3,
        "proof_hash": b"\x11" * 32,
        "namespace": None,
        "stage": stage,
        "destroyed_key_ids": ["dk-subject-a", "dk-subject-b"],
        "steps": [
            {"name": "revoke", "started_at_us": T0 + 10, "finished_at_us": T0 + 20, "count": 5},
            {
                "name": "destroy_keys",
                "started_at_us": T0 + 20,
                "finished_at_us": T0 + 25,
                "count": 2,
            },
        ],
        "failures": [],
        "held": [HELD, HOLD] if stage == "immediate" else [HOLD],
    } | kw


@dataclass(frozen=True)
class Sealer:
    """Seals batches of events as one producer identity and bundles them."""

    codec: EventCodec
    anchor: PrivateKeySet  # the anchor that signs this identity's registration
    keys: PrivateKeySet
    identity: str
    trusted: PrivateKeySet  # the anchor the verifier pins

    def seal(self, items: Sequence[tuple[EventType, dict, int]], seal_seq: int = 0) -> list[bytes]:
        """A real batch sealed and signed; the bundle of every event in it."""
        producer_id = f"{self.identity}@0a1b"
        first = 10 * seal_seq
        events: list[Event] = [
            new_event(
                t,
                p,
                producer_id=producer_id,
                producer_seq=first + i,
                seal_ref=SealRef(seal_seq, i),
                occurred_at_us=at,
            )
            for i, (t, p, at) in enumerate(items)
        ]
        raws = [self.codec.encode(e) for e in events]
        leaves = [leaf_hash(r) for r in raws]
        header = SealHeader(
            producer_id=producer_id,
            seal_seq=seal_seq,
            tree_size=len(raws),
            first_producer_seq=first,
            merkle_root=root_from_leaf_hashes(leaves),
            prev_seal_hash=bytes(32),
            key_set_id=self.keys.key_set_id,
            sealed_at_us=T0 + 1_000_000 * (seal_seq + 1),
            leaf_topics_digest=None,
        )
        sigs = sign_header(header, self.keys)
        seal_event = new_event(
            EventType.SEAL,
            {
                "signatures": [
                    {"algorithm": s.algorithm, "key_id": s.key_id, "signature": s.signature}
                    for s in sigs
                ]
            },
            producer_id=producer_id,
            producer_seq=0,
        )
        assert note_bytes(header, sigs)
        verified = VerifiedSeal(
            header, tuple(leaves), (), seal_hash(header, sigs), seal_event, None
        )
        statement = registration_statement(self.identity, self.keys.public(), 0)
        lines = sign_statement(statement, self.anchor)
        return [
            build_bundle(
                Applied(e, RecordOrigin("t.erasure", 0, i, None, 0, (), raw), verified),
                statement,
                lines,
                self.anchor.public(),
            )
            for i, (e, raw) in enumerate(zip(events, raws, strict=True))
        ]


PINS = {"allowed_requesters": [REQUESTER], "processor_identity": PROCESSOR}


@dataclass(frozen=True)
class Made:
    data: bytes
    request: bytes
    immediate: bytes
    retention: bytes
    other_request_completion: bytes


@pytest.fixture(scope="module")
def requester(codec, anchor, requester_keys) -> Sealer:
    return Sealer(codec, anchor, requester_keys, REQUESTER, anchor)


@pytest.fixture(scope="module")
def processor(codec, anchor, processor_keys) -> Sealer:
    return Sealer(codec, anchor, processor_keys, PROCESSOR, anchor)


@pytest.fixture(scope="module")
def made(requester: Sealer, processor: Sealer, anchor: PrivateKeySet) -> Made:
    (request,) = requester.seal([(EventType.ERASURE_REQUESTED, request_payload(), T0)])
    immediate, other, retention = processor.seal(
        [
            (EventType.ERASURE_COMPLETED, completion_payload(), T0 + 100),
            (EventType.ERASURE_COMPLETED, completion_payload("er-2"), T0 + 150),
            (EventType.ERASURE_COMPLETED, completion_payload(stage="retention_end"), T0 + 200),
        ]
    )
    # Given out of order: the builder puts completions in canonical order.
    data = build_certificate(request, [retention, immediate], anchor=anchor.public(), **PINS)
    return Made(data, request, immediate, retention, other)


def _verify(data: bytes, anchor: PrivateKeySet, **kw: Any) -> CertificateReport:
    return verify_certificate(data, pinned_anchor=anchor.public(), **(PINS | kw))


def _failed(report: CertificateReport) -> set[CertificateCheck]:
    return {c.check for c in report.failures}


def _forge(made: Made, statement: bytes, bundles: Sequence[bytes]) -> bytes:
    return encode_certificate(Certificate(statement, tuple(bundles)))


def _events(codec: EventCodec, bundles: Sequence[bytes]) -> list[Event]:
    from cachet.ledger.cab_format import decode_bundle

    return [codec.decode(decode_bundle(b).event_bytes) for b in bundles]


# --- the genuine certificate -----------------------------------------------------


def test_certificate_verifies_and_states_what_was_erased_and_held(
    made: Made, anchor: PrivateKeySet
) -> None:
    report = _verify(made.data, anchor)
    assert report.ok, report.failures
    assert report.request_id == "er-1"
    assert report.status is ErasureStatus.HELD  # the legal hold still holds one entry
    assert len(report.bundles) == 3 and all(b.ok for b in report.bundles)
    text = report.statement or ""
    assert text.startswith('cachet.erasure-certificate/v1\nrequest "er-1"\n')
    assert f"subject-hash {SUBJECT.hex()}\n" in text
    assert 'requested-by "dpo@example.com"\nrequested ' in text
    assert "\nsealed-by dpo-desk@0a1b seq 0 seal 0 leaf 0\n" in text
    assert "status held\nstill-held 1 until legal-hold-lifted\n" in text
    assert '  destroyed-key "dk-subject-a"\n' in text
    assert "  entries-revoked 5\n" in text
    assert f"until {RETENTION_END} 2032-09-21T14:13:20.000000Z" in text
    # Free text is one JSON string: a newline in a ground cannot forge a line.
    assert r'ground "legal hold lh-1: \"Smith v. Acme\"\nline two"' in text
    # Completions in canonical order: immediate (T0+100) before retention_end.
    assert text.index('completion "immediate"') < text.index('completion "retention_end"')
    assert text.endswith("end\n")
    # Pinned by fingerprint alone: the same verdict.
    assert verify_certificate(
        made.data, pinned_anchor=None, pinned_fingerprint=anchor_fingerprint(anchor.public())
    ).ok


def test_unpinned_certificate_is_not_verified(made: Made) -> None:
    report = verify_certificate(made.data, pinned_anchor=None)
    assert not report.ok
    assert _failed(report) == {CertificateCheck.BUNDLES}
    assert "anchor-pinned" in report.failures[0].detail


def test_status_follows_the_latest_completion(
    requester: Sealer, processor: Sealer, anchor: PrivateKeySet
) -> None:
    (request,) = requester.seal([(EventType.ERASURE_REQUESTED, request_payload("er-9"), T0)])
    alone = build_certificate(request, [], anchor=anchor.public())
    assert _verify(alone, anchor).status is ErasureStatus.REQUESTED
    done, failed = processor.seal(
        [
            (EventType.ERASURE_COMPLETED, completion_payload("er-9", held=[]), T0 + 5),
            (
                EventType.ERASURE_COMPLETED,
                completion_payload("er-9", "hold_lifted", held=[], failures=["node n2 silent"]),
                T0 + 9,
            ),
        ],
        seal_seq=4,
    )
    assert _verify(build_certificate(request, [done], anchor=anchor.public()), anchor).status is (
        ErasureStatus.COMPLETED
    )
    both = _verify(build_certificate(request, [done, failed], anchor=anchor.public()), anchor)
    assert both.status is ErasureStatus.INCOMPLETE
    assert '  failure "node n2 silent"\n' in (both.statement or "")


# --- one-byte changes anywhere --------------------------------------------------------


def _cab_positions(bundle: bytes, base: int) -> list[int]:
    """In one bundle: its magic and version, each section's tag and length,
    and 8 positions spread over each section's value (first and last included)."""
    out = list(range(11))
    pos = 11
    while pos < len(bundle):
        length = int.from_bytes(bundle[pos + 1 : pos + 5], "big")
        out += range(pos, pos + 5)
        out += {pos + 5 + (length - 1) * k // 7 for k in range(8)}
        pos += 5 + length
    return [base + p for p in sorted(out)]


def _positions(data: bytes) -> list[tuple[str, int]]:
    """Every byte of the certificate's framing; in the statement, the first,
    a middle and the last byte of every line and its newline; in every
    bundle, every byte of its framing and 8 positions in each CAB section."""
    cert = decode_certificate(data)
    out: list[tuple[str, int]] = [("header", i) for i in range(len(CERTIFICATE_MAGIC) + 2)]
    pos = len(CERTIFICATE_MAGIC) + 2
    for n, value in enumerate((cert.statement, *cert.bundles)):
        name = "statement" if n == 0 else f"bundle {n - 1}"
        out += [(f"{name} framing", pos + i) for i in range(5)]
        start = pos + 5
        if n == 0:
            line_start = 0
            for line in value.split(b"\n")[:-1]:
                end = line_start + len(line)  # the newline
                picks = {line_start, line_start + len(line) // 2, max(line_start, end - 1), end}
                out += [(name, start + p) for p in sorted(picks)]
                line_start = end + 1
        else:
            out += [(name, p) for p in _cab_positions(value, start)]
        pos = start + len(value)
    assert pos == len(data)
    return out


@pytest.mark.tamper
@pytest.mark.slow
def test_every_one_byte_change_fails_naming_what_failed(
    made: Made, anchor: PrivateKeySet, codec: EventCodec
) -> None:
    positions = _positions(made.data)
    assert len(positions) > 350
    for where, pos in positions:
        tampered = bytearray(made.data)
        tampered[pos] ^= 0x01
        report = _verify(bytes(tampered), anchor, codec=codec)
        assert not report.ok, (where, pos)
        assert report.failures and all(f.detail for f in report.failures), (where, pos)
        if where == "statement":  # non-ASCII is a parse failure, the rest a mismatch
            assert _failed(report) & {CertificateCheck.STATEMENT, CertificateCheck.PARSE}, (
                where,
                pos,
                report.failures,
            )
        elif where.startswith("bundle") and "framing" not in where:
            assert CertificateCheck.BUNDLES in _failed(report), (where, pos, report.failures)


# --- one attack per check: each goes red when that one check is removed ---------------


def test_bad_magic_is_a_parse_failure(made: Made, anchor: PrivateKeySet) -> None:
    report = _verify(b"CACHETERASURX" + made.data[13:], anchor)
    assert _failed(report) == {CertificateCheck.PARSE}
    assert "bad magic" in report.failures[0].detail
    assert all(c.outcome is CheckOutcome.NOT_RUN for c in report.checks[1:])
    with pytest.raises(CertificateFormatError, match="truncated section header"):
        decode_certificate(made.data + b"\x02")
    with pytest.raises(CertificateFormatError, match="section tag 0x01 .* expected BUNDLE"):
        decode_certificate(made.data + b"\x01\x00\x00\x00\x01x")


@pytest.mark.tamper
def test_swapped_completion_from_another_request(
    made: Made, anchor: PrivateKeySet, codec: EventCodec
) -> None:
    """A genuine, sealed completion of request er-2 put in er-1's certificate,
    with a statement rendered to match: only the request binding catches it."""
    bundles = [made.request, made.other_request_completion]
    request, other = _events(codec, bundles)
    forged = _forge(made, render_statement(request, [other]), bundles)
    report = _verify(forged, anchor)
    assert _failed(report) == {CertificateCheck.COMPLETIONS}
    assert "completes request 'er-2', not 'er-1'" in report.failures[0].detail


@pytest.mark.tamper
def test_dropped_held_entry_from_the_statement(made: Made, anchor: PrivateKeySet) -> None:
    cert = decode_certificate(made.data)
    lines = cert.statement.decode().split("\n")
    dropped = next(i for i, line in enumerate(lines) if line.startswith("  held 0707"))
    statement = "\n".join(lines[:dropped] + lines[dropped + 1 :]).encode()
    report = _verify(_forge(made, statement, cert.bundles), anchor)
    assert _failed(report) == {CertificateCheck.STATEMENT}
    assert "the events say '  held 0707" in report.failures[0].detail


@pytest.mark.tamper
def test_forged_seal_by_unregistered_keys(
    made: Made, codec: EventCodec, anchor: PrivateKeySet
) -> None:
    """A completion sealed by keys registered under a self-made anchor."""
    rogue_anchor = PrivateKeySet.generate()
    forger = Sealer(codec, rogue_anchor, PrivateKeySet.generate(), PROCESSOR, anchor)
    (fake,) = forger.seal([(EventType.ERASURE_COMPLETED, completion_payload(held=[]), T0 + 100)])
    request, completion = _events(codec, [made.request, fake])
    report = _verify(
        _forge(made, render_statement(request, [completion]), [made.request, fake]), anchor
    )
    assert _failed(report) == {CertificateCheck.BUNDLES}
    detail = report.failures[0].detail
    assert "bundle 1 (completion): anchor-pinned" in detail
    assert "registration-signed-by-anchor" in detail


@pytest.mark.tamper
def test_key_not_proven_by_anchor(
    made: Made, codec: EventCodec, processor_keys: PrivateKeySet, anchor: PrivateKeySet
) -> None:
    """The genuine processor keys, their registration signed by another anchor
    that the bundle also carries: the pinned anchor refuses it."""
    rogue_anchor = PrivateKeySet.generate()
    sealer = Sealer(codec, rogue_anchor, processor_keys, PROCESSOR, anchor)
    (bundle,) = sealer.seal([(EventType.ERASURE_COMPLETED, completion_payload(), T0 + 100)])
    request, completion = _events(codec, [made.request, bundle])
    forged = _forge(made, render_statement(request, [completion]), [made.request, bundle])
    report = _verify(forged, anchor)
    assert _failed(report) == {CertificateCheck.BUNDLES}
    # Pinned by fingerprint only, the rogue anchor's own copy is not trusted either.
    by_fp = verify_certificate(
        forged, pinned_anchor=None, pinned_fingerprint=anchor_fingerprint(anchor.public())
    )
    assert _failed(by_fp) == {CertificateCheck.BUNDLES}


@pytest.mark.tamper
def test_request_sealed_by_an_identity_not_allowed_to_erase(
    processor: Sealer, made: Made, codec: EventCodec, anchor: PrivateKeySet
) -> None:
    """The processor's genuine keys seal a request: every seal verifies, but
    its authority (the sealing identity) is not an allowed requester."""
    (request_bundle,) = processor.seal(
        [(EventType.ERASURE_REQUESTED, request_payload(), T0)], seal_seq=7
    )
    bundles = [request_bundle, made.immediate]
    request, completion = _events(codec, bundles)
    forged = _forge(made, render_statement(request, [completion]), bundles)
    report = _verify(forged, anchor)
    assert _failed(report) == {CertificateCheck.REQUEST}
    assert "sealed by 'erasure-processor', not one of the allowed requesters ['dpo-desk']" in (
        report.failures[0].detail
    )
    # Unpinned, the statement still names who sealed it, for a person to judge.
    unpinned = _verify(forged, anchor, allowed_requesters=None)
    assert unpinned.ok and "\nsealed-by erasure-processor@0a1b" in (unpinned.statement or "")
    with pytest.raises(CertificateError, match="request-sealed-by-requester"):
        build_certificate(
            request_bundle, [made.immediate], anchor=anchor.public(), allowed_requesters=["x"]
        )


@pytest.mark.tamper
def test_completion_sealed_by_the_requester_not_the_processor(
    requester: Sealer, made: Made, codec: EventCodec, anchor: PrivateKeySet
) -> None:
    (fake,) = requester.seal(
        [(EventType.ERASURE_COMPLETED, completion_payload(), T0 + 100)], seal_seq=8
    )
    bundles = [made.request, fake]
    request, completion = _events(codec, bundles)
    report = _verify(_forge(made, render_statement(request, [completion]), bundles), anchor)
    assert _failed(report) == {CertificateCheck.COMPLETIONS}
    assert "sealed by 'dpo-desk', not the processor 'erasure-processor'" in (
        report.failures[0].detail
    )


@pytest.mark.tamper
@pytest.mark.parametrize(
    ("change", "at", "message"),
    [
        ({"subject_hash": b"\x01" * 32}, T0 + 100, "is for subject hash 0101"),
        ({"namespace": "quotes"}, T0 + 100, "namespace 'quotes' != request's None"),
        ({"stage": "someday"}, T0 + 100, "unknown stage 'someday'"),
        ({}, T0 - 1, f"occurred at {T0 - 1}, before the request"),
    ],
)
def test_completion_that_does_not_match_the_request(
    processor: Sealer,
    made: Made,
    codec: EventCodec,
    anchor: PrivateKeySet,
    change: dict,
    at: int,
    message: str,
) -> None:
    (bundle,) = processor.seal(
        [(EventType.ERASURE_COMPLETED, completion_payload(**change), at)], seal_seq=9
    )
    bundles = [made.request, bundle]
    request, completion = _events(codec, bundles)
    report = _verify(_forge(made, render_statement(request, [completion]), bundles), anchor)
    assert _failed(report) == {CertificateCheck.COMPLETIONS}
    assert message in report.failures[0].detail


@pytest.mark.tamper
def test_completion_in_place_of_the_request(made: Made, codec: EventCodec, anchor) -> None:
    bundles = [made.immediate, made.retention]
    report = _verify(_forge(made, b"x\n", bundles), anchor)
    assert CertificateCheck.REQUEST in _failed(report)
    assert "holds a ErasureCompleted, not an ErasureRequested" in report.checks[2].detail


@pytest.mark.tamper
def test_repeated_or_reordered_completions(made: Made, codec: EventCodec, anchor) -> None:
    for bundles in (
        [made.request, made.immediate, made.immediate],
        [made.request, made.retention, made.immediate],
    ):
        request, *completions = _events(codec, bundles)
        # The statement is rendered from these same events: only the order
        # and uniqueness rules can catch the repetition and the reordering.
        forged = _forge(made, render_statement(request, completions), bundles)
        report = _verify(forged, anchor)
        assert _failed(report) == {CertificateCheck.COMPLETIONS}, report.failures


@pytest.mark.tamper
def test_request_of_unknown_scope(
    requester: Sealer, made: Made, codec: EventCodec, anchor: PrivateKeySet
) -> None:
    (bundle,) = requester.seal(
        [(EventType.ERASURE_REQUESTED, request_payload(scope="UNKNOWN"), T0)], seal_seq=11
    )
    bundles = [bundle, made.immediate]
    request, completion = _events(codec, bundles)
    report = _verify(_forge(made, render_statement(request, [completion]), bundles), anchor)
    assert _failed(report) == {CertificateCheck.REQUEST}
    assert "scope is UNKNOWN" in report.failures[0].detail


def test_statement_free_text_vectors(requester: Sealer, codec: EventCodec) -> None:
    """The documented rendering of free text and times (docs/erasure-certificate.md)."""
    (bundle,) = requester.seal(
        [
            (
                EventType.ERASURE_REQUESTED,
                request_payload('a/b\x7f\x01\u00e9\U0001f600"\\', namespace="eu"),
                1_700_000_000_000_000,
            )
        ],
        seal_seq=12,
    )
    (request,) = _events(codec, [bundle])
    text = render_statement(request, []).decode("ascii")
    assert text.split("\n")[1] == r'request "a/b\u007f\u0001\u00e9\ud83d\ude00\"\\"'
    assert '\nnamespace "eu"\n' in text
    assert (
        f"\nrequested {request.event_id} at 1700000000000000 2023-11-14T22:13:20.000000Z\n" in text
    )
    assert "\nstatus requested\nend\n" in text


def test_cli_verify_offline(
    made: Made, anchor: PrivateKeySet, tmp_path, monkeypatch, capsys
) -> None:
    """``cachet erase verify FILE --anchor A``: no broker, no configuration."""
    from cachet.cli.main import main
    from cachet.ledger.anchor import anchor_to_json

    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("CACHET_CONFIG", raising=False)
    anchor_file, cert = tmp_path / "anchor.json", tmp_path / "erasure.cert"
    anchor_file.write_text(anchor_to_json(anchor.public()))
    cert.write_bytes(made.data)
    argv = ["erase", "verify", str(cert), "--anchor", str(anchor_file)]
    pins = ["--requester", REQUESTER, "--processor", PROCESSOR]
    assert main([*argv, *pins]) == 0
    out = capsys.readouterr().out
    assert "still-held 1 until legal-hold-lifted" in out
    assert out.rstrip().endswith("VERIFIED (held)")
    # Pinned to another processor: refused, naming the check.
    assert main([*argv, "--requester", REQUESTER, "--processor", "someone"]) == 1
    out = capsys.readouterr().out
    assert "FAIL  completions-belong-to-request" in out and out.rstrip().endswith("NOT VERIFIED")
    # Unpinned anchor: refused, and told how to pin it.
    assert main(["erase", "verify", str(cert), *pins]) == 1
    assert "no anchor pinned" in capsys.readouterr().out
