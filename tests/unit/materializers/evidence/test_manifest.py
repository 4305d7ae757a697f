"""The signed manifest: verifies offline; every check fails on its own attack."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cachet.crypto.registry import registration_statement, sign_statement
from cachet.crypto.seal import sign_message
from cachet.ledger.cab import anchor_fingerprint
from cachet.ledger.cab_format import encode_signature_lines
from cachet.materializers.evidence import ExportSigner, ManifestCheck, SignerError, verify_export
from cachet.materializers.evidence.manifest import MANIFEST, SIGNATURE, SIGNING_DOMAIN, sign_export
from tests.unit.materializers.evidence.conftest import EXPORTER, T0


def _failed(report) -> set[ManifestCheck]:
    return {c.check for c in report.failures()}


def _signer(anchor_keys, keys, *, identity=EXPORTER, signing_anchor=None, valid_from=0):
    statement = registration_statement(identity, keys.public(), valid_from)
    return ExportSigner(
        EXPORTER,
        keys,
        statement,
        sign_statement(statement, signing_anchor or anchor_keys),
        anchor_keys.public(),
        0,
    )


def _export(tmp_path: Path, signer: ExportSigner, name: str = "x") -> Path:
    directory = tmp_path / name
    (directory / "tables").mkdir(parents=True)
    (directory / "tables" / "reads.csv").write_bytes(b"outcome,reason\r\nHIT,served\r\n")
    (directory / "report.html").write_text("<html></html>")
    sign_export(directory, kind="examination", parameters={"p": 1}, signer=signer, created_at_us=T0)
    return directory


def test_a_genuine_export_verifies_by_key_set_or_fingerprint(make_export, anchor_keys) -> None:
    directory = make_export().directory
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert report.ok, report.failures()
    by_print = verify_export(
        directory, pinned_anchor=None, pinned_fingerprint=anchor_fingerprint(anchor_keys.public())
    )
    assert by_print.ok
    listed = {f["path"] for f in report.manifest["files"]}
    assert {"report.html", "tables/reads.avro", "signer/registration.txt"} <= listed


def _all_files(directory: Path) -> list[str]:
    return sorted(p.relative_to(directory).as_posix() for p in directory.rglob("*") if p.is_file())


@pytest.mark.tamper
def test_one_flipped_byte_in_any_file_fails(make_export, anchor_keys) -> None:
    directory = make_export().directory
    names = _all_files(directory)
    assert MANIFEST in names and SIGNATURE in names and "report.html" in names
    for name in names:
        path = directory / name
        original = path.read_bytes()
        for position in (0, len(original) // 2, len(original) - 1):
            flipped = bytearray(original)
            flipped[position] ^= 0x01
            path.write_bytes(bytes(flipped))
            report = verify_export(directory, pinned_anchor=anchor_keys.public())
            assert not report.ok, f"{name} byte {position} flipped, still verified"
        path.write_bytes(original)
    assert verify_export(directory, pinned_anchor=anchor_keys.public()).ok


@pytest.mark.tamper
def test_a_changed_table_fails_only_the_file_check(make_export, anchor_keys) -> None:
    directory = make_export().directory
    path = directory / "tables" / "violations.csv"
    path.write_bytes(path.read_bytes().replace(b"stale", b"fresh"))
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.FILES}
    assert "tables/violations.csv: SHA3-256" in report.failures()[0].detail


@pytest.mark.tamper
def test_added_and_removed_files_fail(make_export, anchor_keys) -> None:
    directory = make_export().directory
    (directory / "tables" / "extra.csv").write_text("smuggled\n")
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.FILES}
    assert "tables/extra.csv: not listed" in report.failures()[0].detail
    (directory / "tables" / "extra.csv").unlink()
    (directory / "tables" / "reads.avro").unlink()
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert "tables/reads.avro: listed but missing" in report.failures()[0].detail


@pytest.mark.tamper
def test_unpinned_or_wrongly_pinned_anchor_fails(
    make_export, anchor_keys, rogue_anchor_keys
) -> None:
    directory = make_export().directory
    assert _failed(verify_export(directory, pinned_anchor=None)) == {ManifestCheck.ANCHOR_PINNED}
    wrong = anchor_fingerprint(rogue_anchor_keys.public())
    report = verify_export(directory, pinned_anchor=None, pinned_fingerprint=wrong)
    assert _failed(report) == {ManifestCheck.ANCHOR_PINNED}
    # Pinned by key set, the registration is checked under the pinned keys.
    report = verify_export(directory, pinned_anchor=rogue_anchor_keys.public())
    assert _failed(report) == {ManifestCheck.ANCHOR_PINNED, ManifestCheck.REGISTRATION_SIGNED}


@pytest.mark.tamper
def test_registration_by_another_anchor_fails(
    tmp_path, anchor_keys, rogue_anchor_keys, other_keys
) -> None:
    # A forger's own key set, "registered" by a rogue anchor, beside the real anchor's file.
    signer = _signer(anchor_keys, other_keys, signing_anchor=rogue_anchor_keys)
    report = verify_export(_export(tmp_path, signer), pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.REGISTRATION_SIGNED}


@pytest.mark.tamper
def test_registration_of_another_identity_fails(tmp_path, anchor_keys, exporter_keys) -> None:
    signer = _signer(anchor_keys, exporter_keys, identity="someone-else")
    report = verify_export(_export(tmp_path, signer), pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.REGISTRATION_MATCHES}
    assert "is not someone-else" in report.failures()[0].detail


@pytest.mark.tamper
def test_manifest_signed_by_another_key_set_fails(make_export, anchor_keys, other_keys) -> None:
    directory = make_export().directory
    forged = sign_message(SIGNING_DOMAIN + (directory / MANIFEST).read_bytes(), other_keys)
    (directory / SIGNATURE).write_bytes(encode_signature_lines(forged))
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.MANIFEST_SIGNED}


@pytest.mark.tamper
def test_a_re_signed_manifest_cannot_reach_outside_the_export(
    tmp_path, anchor_keys, exporter_keys
) -> None:
    # Even the genuine signer cannot make a manifest that vouches for ../ paths.
    directory = _export(tmp_path, _signer(anchor_keys, exporter_keys))
    (tmp_path / "outside.txt").write_text("x")
    doc = json.loads((directory / MANIFEST).read_text())
    doc["files"].append({"path": "../outside.txt", "bytes": 2, "sha3_256": "00"})
    manifest = (json.dumps(doc, indent=2, sort_keys=True) + "\n").encode()
    (directory / MANIFEST).write_bytes(manifest)
    lines = sign_message(SIGNING_DOMAIN + manifest, exporter_keys)
    (directory / SIGNATURE).write_bytes(encode_signature_lines(lines))
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.FILES}
    assert "../outside.txt: not a path inside the export" in report.failures()[0].detail


@pytest.mark.tamper
def test_key_not_yet_valid_at_signing_fails(tmp_path, anchor_keys, exporter_keys) -> None:
    signer = _signer(anchor_keys, exporter_keys, valid_from=T0 + 1)
    report = verify_export(_export(tmp_path, signer), pinned_anchor=anchor_keys.public())
    assert _failed(report) == {ManifestCheck.KEY_VALID_AT_SIGNING}


def test_signing_before_the_key_is_valid_is_refused(tmp_path, anchor_keys, exporter_keys) -> None:
    statement = registration_statement(EXPORTER, exporter_keys.public(), T0 + 1)
    signer = ExportSigner(
        EXPORTER,
        exporter_keys,
        statement,
        sign_statement(statement, anchor_keys),
        anchor_keys.public(),
        T0 + 1,
    )
    with pytest.raises(SignerError, match="after the signing time"):
        _export(tmp_path, signer)


@pytest.mark.tamper
def test_unparseable_manifest_fails_parse(make_export, anchor_keys) -> None:
    directory = make_export().directory
    (directory / MANIFEST).write_text("[]")
    assert _failed(verify_export(directory, pinned_anchor=anchor_keys.public())) == {
        ManifestCheck.PARSE
    }
    (directory / MANIFEST).unlink()
    report = verify_export(directory, pinned_anchor=anchor_keys.public())
    assert not report.ok and "cannot be read" in report.failures()[0].detail


def test_a_partial_report_is_never_ok() -> None:
    from cachet.materializers.evidence.manifest import CheckResult, ManifestReport

    only = ManifestReport((CheckResult(ManifestCheck.PARSE, True, ""),))
    assert not only.ok


def test_a_registration_of_other_keys_under_the_same_id_is_refused(
    anchor_keys, exporter_keys, other_keys
) -> None:
    from cachet.ledger.registration import registration_payload

    payload = registration_payload(EXPORTER, other_keys.public(), 0, anchor_keys)
    payload["key_set_id"] = exporter_keys.key_set_id
    with pytest.raises(SignerError, match="names other public keys"):
        ExportSigner.from_registration(EXPORTER, exporter_keys, anchor_keys.public(), payload)
