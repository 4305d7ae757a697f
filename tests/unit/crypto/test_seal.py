"""Seal headers: canonical text, signatures, and forged seals."""

from __future__ import annotations

import base64
import dataclasses

import pytest

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.schemes import SignatureScheme, SigningError
from cachet.crypto.seal import (
    GENESIS_PREV_SEAL_HASH,
    KeySet,
    NoteFormatError,
    PrivateKeySet,
    SchemeStatus,
    SealFailure,
    SealHeader,
    SignatureLine,
    leaf_topics_digest,
    note_bytes,
    parse_note,
    require_canonical_lines,
    seal_hash,
    sign_header,
    verify_header,
    verify_seal_batch,
)

ALL = tuple(SignatureScheme)
LEAVES = [leaf_hash(f"event-{i}".encode()) for i in range(7)]


def make_header(**overrides: object) -> SealHeader:
    fields: dict[str, object] = dict(
        producer_id="orders-svc.eu-1",
        seal_seq=42,
        tree_size=len(LEAVES),
        first_producer_seq=1000,
        merkle_root=root_from_leaf_hashes(LEAVES),
        prev_seal_hash=GENESIS_PREV_SEAL_HASH,
        key_set_id="ks-producer-1",
        sealed_at_us=1_790_000_000_000_000,
    )
    fields.update(overrides)
    return SealHeader(**fields)  # type: ignore[arg-type]


@pytest.fixture(scope="module")
def sealed(producer_keys: PrivateKeySet) -> tuple[SealHeader, tuple[SignatureLine, ...]]:
    header = make_header()
    return header, sign_header(header, producer_keys)


def test_canonical_bytes_exact() -> None:
    header = make_header(merkle_root=b"\x01" * 32)
    assert header.canonical_bytes() == (
        b"cachet.seal/v1\norders-svc.eu-1\nseal 42\nsize 7\nfirst 1000\n"
        b"root AQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQEBAQE=\n"
        b"prev AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n"
        b"keyset ks-producer-1\nat 1790000000000000\n"
    )


@pytest.mark.parametrize(
    "overrides",
    [
        {"producer_id": "a b"},
        {"producer_id": "a\nseal 1"},
        {"producer_id": ""},
        {"key_set_id": "ks\n"},
        {"key_set_id": "ks 1"},
        {"seal_seq": -1},
        {"tree_size": 0},
        {"sealed_at_us": 2**63},
        {"merkle_root": b"\x00" * 31},
        {"prev_seal_hash": b"\x00" * 33},
    ],
)
def test_header_rejects_ambiguous_fields(overrides: dict[str, object]) -> None:
    with pytest.raises(NoteFormatError):
        make_header(**overrides)


def test_valid_seal_verifies(sealed, producer_keys: PrivateKeySet) -> None:
    header, sigs = sealed
    assert [s.algorithm for s in sigs] == [s.value for s in ALL]
    verdict = verify_header(header, sigs, producer_keys.public(), ALL)
    assert verdict.ok and verdict.failure is None
    assert dict(verdict.statuses) == {s: SchemeStatus.VALID for s in ALL}
    batch = verify_seal_batch(header, sigs, LEAVES, producer_keys.public(), ALL)
    assert batch.ok


def test_note_round_trip_and_chain_hash(sealed) -> None:
    header, sigs = sealed
    note = note_bytes(header, sigs)
    assert "\n\n\u2014 ml-dsa-65 ".encode() in note
    assert parse_note(note) == (header, sigs)
    link = seal_hash(header, sigs)
    assert len(link) == 32
    assert seal_hash(header, tuple(reversed(sigs))) == link  # order-independent
    assert seal_hash(header, sigs[:2]) != link
    assert seal_hash(dataclasses.replace(header, seal_seq=43), sigs) != link
    make_header(prev_seal_hash=link)  # the next seal links to it


@pytest.mark.tamper
@pytest.mark.parametrize(
    "mutate",
    [
        lambda n: n.replace(b"seal 42", b"seal 43"),
        lambda n: n.replace(b"seal 42", b"seal 042"),
        lambda n: n.replace(b"size 7", b"size 7 "),
        lambda n: n.replace(b"\n\n", b"\n\n\n"),
        lambda n: n.replace(b"=\nprev", b"\nprev"),
        lambda n: n[:-1],
        lambda n: n + b"junk\n",
        lambda n: n.replace(b"cachet.seal/v1", b"cachet.seal/v2"),
    ],
)
def test_parse_refuses_non_canonical_notes(sealed, mutate) -> None:
    header, sigs = sealed
    note = note_bytes(header, sigs)
    mutated = mutate(note)
    assert mutated != note
    try:
        parsed = parse_note(mutated)
    except NoteFormatError:
        return
    # If it parses at all, it must not be the same seal.
    assert parsed != (header, sigs)


def _flip(data: bytes, pos: int) -> bytes:
    out = bytearray(data)
    out[pos] ^= 0x01
    return bytes(out)


@pytest.mark.tamper
def test_flipped_root_bit(sealed, producer_keys: PrivateKeySet) -> None:
    header, sigs = sealed
    forged = dataclasses.replace(header, merkle_root=_flip(header.merkle_root, 5))
    verdict = verify_seal_batch(forged, sigs, LEAVES, producer_keys.public(), ALL)
    assert not verdict.ok
    assert verdict.failure is SealFailure.INVALID_SIGNATURE
    assert SealFailure.ROOT_MISMATCH in verdict.failures
    assert set(verdict.statuses.values()) == {SchemeStatus.INVALID_SIGNATURE}


@pytest.mark.tamper
@pytest.mark.parametrize(
    "field,value",
    [
        ("producer_id", "orders-svc.eu-2"),
        ("seal_seq", 41),
        ("tree_size", 6),
        ("first_producer_seq", 1001),
        ("prev_seal_hash", b"\x01" * 32),
        ("sealed_at_us", 1),
    ],
)
def test_every_header_field_is_signed(sealed, producer_keys, field: str, value: object) -> None:
    header, sigs = sealed
    forged = dataclasses.replace(header, **{field: value})
    verdict = verify_header(forged, sigs, producer_keys.public(), ALL)
    assert verdict.failure is SealFailure.INVALID_SIGNATURE
    assert set(verdict.statuses.values()) == {SchemeStatus.INVALID_SIGNATURE}


@pytest.mark.tamper
@pytest.mark.parametrize("scheme", ALL)
def test_flipped_signature_bit_names_the_scheme(sealed, producer_keys, scheme) -> None:
    header, sigs = sealed
    forged = tuple(
        dataclasses.replace(s, signature=_flip(s.signature, len(s.signature) // 3))
        if s.algorithm == scheme.value
        else s
        for s in sigs
    )
    verdict = verify_header(header, forged, producer_keys.public(), ALL)
    assert verdict.failure is SealFailure.INVALID_SIGNATURE
    assert verdict.statuses[scheme] is SchemeStatus.INVALID_SIGNATURE
    assert all(st is SchemeStatus.VALID for s, st in verdict.statuses.items() if s is not scheme)


@pytest.mark.tamper
def test_missing_required_scheme(sealed, producer_keys) -> None:
    header, sigs = sealed
    without_slh = tuple(s for s in sigs if s.algorithm != "slh-dsa-sha2-128f")
    verdict = verify_header(header, without_slh, producer_keys.public(), ALL)
    assert verdict.failure is SealFailure.MISSING_SIGNATURE
    assert verdict.statuses[SignatureScheme.SLH_DSA_SHA2_128F] is SchemeStatus.MISSING
    # Not required: fine, but a present signature is still checked.
    fast = (SignatureScheme.ML_DSA_65, SignatureScheme.FN_DSA_512)
    assert verify_header(header, without_slh, producer_keys.public(), fast).ok
    with pytest.raises(ValueError):
        verify_header(header, (), producer_keys.public(), ())  # requiring nothing


@pytest.mark.tamper
def test_a_bad_unrequired_signature_still_fails(sealed, producer_keys) -> None:
    header, sigs = sealed
    forged = tuple(
        dataclasses.replace(s, signature=_flip(s.signature, 0))
        if s.algorithm == "slh-dsa-sha2-128f"
        else s
        for s in sigs
    )
    verdict = verify_header(header, forged, producer_keys.public(), [SignatureScheme.ML_DSA_65])
    assert verdict.failure is SealFailure.INVALID_SIGNATURE


@pytest.mark.tamper
def test_duplicate_and_unknown_lines(sealed, producer_keys) -> None:
    header, sigs = sealed
    dup = verify_header(header, (*sigs, sigs[0]), producer_keys.public(), ALL)
    assert dup.statuses[SignatureScheme.ML_DSA_65] is SchemeStatus.DUPLICATE
    assert dup.failure is SealFailure.DUPLICATE_SIGNATURE
    future = SignatureLine("ml-dsa-87", "00" * 16, b"x")
    assert verify_header(header, (*sigs, future), producer_keys.public(), ALL).ok
    wrong_id = tuple(
        dataclasses.replace(s, key_id="ab" * 16) if s.algorithm == "fn-dsa-512" else s for s in sigs
    )
    verdict = verify_header(header, wrong_id, producer_keys.public(), ALL)
    assert verdict.statuses[SignatureScheme.FN_DSA_512] is SchemeStatus.UNKNOWN_KEY_ID


@pytest.mark.tamper
def test_signed_by_a_different_key_set(sealed, producer_keys, other_keys) -> None:
    header, _ = sealed
    rogue_sigs = sign_header(header, other_keys)  # same key set id, other keys
    verdict = verify_header(header, rogue_sigs, producer_keys.public(), ALL)
    assert not verdict.ok
    assert set(verdict.statuses.values()) == {SchemeStatus.UNKNOWN_KEY_ID}
    # Rewriting the key ids to the expected ones does not help.
    relabelled = tuple(
        dataclasses.replace(s, key_id=producer_keys.public().key_id(SignatureScheme(s.algorithm)))
        for s in rogue_sigs
    )
    verdict = verify_header(header, relabelled, producer_keys.public(), ALL)
    assert set(verdict.statuses.values()) == {SchemeStatus.INVALID_SIGNATURE}


@pytest.mark.tamper
def test_header_naming_another_key_set(sealed, producer_keys) -> None:
    header, sigs = sealed
    other = KeySet("ks-other", dict(producer_keys.public().public_keys))
    verdict = verify_header(header, sigs, other, ALL)
    assert verdict.failure is SealFailure.KEY_SET_MISMATCH


def test_sign_header_refuses_wrong_key_set(producer_keys) -> None:
    with pytest.raises(SigningError):
        sign_header(make_header(key_set_id="ks-other"), producer_keys)


@pytest.mark.tamper
def test_batch_checks_size_and_root(sealed, producer_keys) -> None:
    header, sigs = sealed
    keys = producer_keys.public()
    short = verify_seal_batch(header, sigs, LEAVES[:-1], keys, ALL)
    assert short.failures == (SealFailure.SIZE_MISMATCH, SealFailure.ROOT_MISMATCH)
    swapped = [LEAVES[1], LEAVES[0], *LEAVES[2:]]
    assert verify_seal_batch(header, sigs, swapped, keys, ALL).failures == (
        SealFailure.ROOT_MISMATCH,
    )
    forged_leaf = [*LEAVES[:-1], _flip(LEAVES[-1], 31)]
    assert verify_seal_batch(header, sigs, forged_leaf, keys, ALL).failure is (
        SealFailure.ROOT_MISMATCH
    )
    malformed = [*LEAVES[:-1], LEAVES[-1][:31]]
    assert (
        SealFailure.ROOT_MISMATCH in verify_seal_batch(header, sigs, malformed, keys, ALL).failures
    )


@pytest.mark.tamper
@pytest.mark.parametrize(
    "algorithm,kid,sig",
    [
        ("ml-dsa-65\n\u2014", "00", b"x"),
        ("a b", "00", b"x"),
        ("ml-dsa-65", "", b"x"),
        ("ml-dsa-65", "00", b""),
    ],
)
def test_signature_line_fields_are_tokens(algorithm: str, kid: str, sig: bytes) -> None:
    with pytest.raises(NoteFormatError):
        SignatureLine(algorithm, kid, sig)


TOPICS = ["entries", "entries", "reads", "entries", "invalidations", "reads", "entries"]


def test_leaf_topics_digest_is_signed(producer_keys) -> None:
    digest = leaf_topics_digest(TOPICS)
    assert leaf_topics_digest([]) is None
    assert digest != leaf_topics_digest(TOPICS[::-1])
    assert leaf_topics_digest(["ab", "c"]) != leaf_topics_digest(["a", "bc"])
    header = make_header(leaf_topics_digest=digest)
    assert header.canonical_bytes().endswith(
        b"\nat 1790000000000000\ntopics " + base64.b64encode(digest) + b"\n"
    )
    sigs = sign_header(header, producer_keys)
    keys = producer_keys.public()
    assert parse_note(note_bytes(header, sigs)) == (header, sigs)
    assert verify_seal_batch(header, sigs, LEAVES, keys, ALL, leaf_topics=TOPICS).ok
    # Dropping the topics from the header (to hide a dropped event) breaks every signature.
    stripped = dataclasses.replace(header, leaf_topics_digest=None)
    assert verify_header(stripped, sigs, keys, ALL).failure is SealFailure.INVALID_SIGNATURE
    swapped = ["reads", *TOPICS[1:]]
    assert verify_seal_batch(header, sigs, LEAVES, keys, ALL, leaf_topics=swapped).failures == (
        SealFailure.TOPICS_MISMATCH,
    )
    assert not verify_seal_batch(header, sigs, LEAVES, keys, ALL, leaf_topics=[]).ok
    short = leaf_topics_digest(TOPICS[:-1])
    h2 = make_header(leaf_topics_digest=short)
    v = verify_seal_batch(
        h2, sign_header(h2, producer_keys), LEAVES, keys, ALL, leaf_topics=TOPICS[:-1]
    )
    assert v.failures == (SealFailure.TOPICS_MISMATCH,)  # one topic per leaf


@pytest.mark.tamper
@pytest.mark.parametrize("scheme", ALL, ids=lambda s: s.value)
def test_batch_without_one_required_line_is_refused(sealed, producer_keys, scheme) -> None:
    """The whole batch verdict, not only the status map: a seal whose other
    lines all verify is still refused when one required scheme has no line."""
    header, sigs = sealed
    fewer = tuple(s for s in sigs if s.algorithm != scheme.value)
    assert len(fewer) == len(sigs) - 1
    verdict = verify_seal_batch(header, fewer, LEAVES, producer_keys.public(), ALL)
    assert not verdict.ok
    assert verdict.failures == (SealFailure.MISSING_SIGNATURE,)
    assert verdict.statuses[scheme] is SchemeStatus.MISSING
    assert all(st is SchemeStatus.VALID for s, st in verdict.statuses.items() if s is not scheme)


def test_canonical_lines_are_known_unique_and_in_scheme_order(sealed) -> None:
    _, sigs = sealed
    require_canonical_lines("note", sigs)  # what sign_header writes
    require_canonical_lines("note", sigs[1:])  # a subset, still in order
    with pytest.raises(NoteFormatError, match="out of scheme order"):
        require_canonical_lines("note", (sigs[1], sigs[0], sigs[2]))
    with pytest.raises(NoteFormatError, match="duplicate or out of scheme order"):
        require_canonical_lines("note", (sigs[0], sigs[0], *sigs[1:]))
    future = SignatureLine("ml-dsa-87", "00" * 16, b"x")
    with pytest.raises(NoteFormatError, match="unknown algorithm 'ml-dsa-87'"):
        require_canonical_lines("note", (*sigs, future))
