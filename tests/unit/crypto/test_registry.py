"""The key registry: anchor-signed registration, revocation and rotation."""

from __future__ import annotations

import pytest

from cachet.crypto.merkle import leaf_hash, root_from_leaf_hashes
from cachet.crypto.registry import (
    KeyRegistry,
    KeyStatus,
    RegistrationRejected,
    RejectionReason,
    RevocationReason,
    registration_statement,
    revocation_statement,
    rotation_statement,
    sign_statement,
)
from cachet.crypto.schemes import SignatureScheme
from cachet.crypto.seal import (
    KeySet,
    NoteFormatError,
    PrivateKeySet,
    SealFailure,
    SealHeader,
    sign_header,
    verify_header,
)

ALL = tuple(SignatureScheme)
T0 = 1_000_000
COMPROMISE = 5_000_000


@pytest.fixture(scope="module")
def registration_sigs(anchor_keys, producer_keys):
    stmt = registration_statement("orders", producer_keys.public(), T0)
    return sign_statement(stmt, anchor_keys)


@pytest.fixture()
def registry(anchor_keys, producer_keys, registration_sigs) -> KeyRegistry:
    reg = KeyRegistry(anchor_keys.public(), ALL)
    reg.register("orders", producer_keys.public(), T0, registration_sigs)
    return reg


def test_lookup_and_seal_verification(registry: KeyRegistry, producer_keys) -> None:
    found = registry.lookup("orders", producer_keys.key_set_id, T0 + 1)
    assert found.status is KeyStatus.VALID and found.key_set == producer_keys.public()
    header = SealHeader("orders", 0, 1, 0, b"r" * 32, bytes(32), producer_keys.key_set_id, T0 + 1)
    assert verify_header(header, sign_header(header, producer_keys), found.key_set, ALL).ok
    assert registry.lookup("orders", producer_keys.key_set_id, T0 - 1).status is (
        KeyStatus.NOT_YET_VALID
    )
    assert registry.lookup("payments", producer_keys.key_set_id, T0).status is (
        KeyStatus.UNKNOWN_PRODUCER
    )
    assert registry.lookup("orders", "ks-nope", T0).status is KeyStatus.UNKNOWN_KEY_SET
    assert registry.lookup("orders", "ks-nope", T0).key_set is None


@pytest.mark.tamper
def test_forged_registration_by_a_non_anchor(anchor_keys, rogue_anchor_keys, other_keys) -> None:
    reg = KeyRegistry(anchor_keys.public(), ALL)
    stmt = registration_statement("orders", other_keys.public(), T0)
    forged = sign_statement(stmt, rogue_anchor_keys)  # same anchor id, other keys
    with pytest.raises(RegistrationRejected) as info:
        reg.register("orders", other_keys.public(), T0, forged)
    assert info.value.reason is RejectionReason.BAD_ANCHOR_SIGNATURE
    assert reg.lookup("orders", other_keys.key_set_id, T0).status is KeyStatus.UNKNOWN_PRODUCER


@pytest.mark.tamper
def test_signatures_do_not_transfer(registry, registration_sigs, producer_keys, other_keys) -> None:
    # A genuine registration cannot be replayed for another producer, key set or time.
    with pytest.raises(RegistrationRejected):
        registry.register("payments", producer_keys.public(), T0, registration_sigs)
    with pytest.raises(RegistrationRejected):
        registry.register("orders", other_keys.public(), T0, registration_sigs)
    with pytest.raises(RegistrationRejected):
        registry.register("orders", producer_keys.public(), T0 - 1, registration_sigs)
    # Nor as a revocation.
    with pytest.raises(RegistrationRejected):
        registry.revoke(
            "orders",
            producer_keys.key_set_id,
            0,
            RevocationReason.KEY_COMPROMISE,
            registration_sigs,
        )
    # Missing one anchor signature is a rejection too.
    with pytest.raises(RegistrationRejected):
        registry.register("orders", producer_keys.public(), T0, registration_sigs[:2])
    # Replaying the genuine one is harmless.
    registry.register("orders", producer_keys.public(), T0, registration_sigs)


def test_conflicting_and_incomplete_key_sets(anchor_keys, other_keys) -> None:
    reg = KeyRegistry(anchor_keys.public(), ALL)
    partial = PrivateKeySet(
        "ks-partial", {SignatureScheme.ML_DSA_65: other_keys.keys[SignatureScheme.ML_DSA_65]}
    ).public()
    sigs = sign_statement(registration_statement("orders", partial, T0), anchor_keys)
    with pytest.raises(RegistrationRejected) as info:
        reg.register("orders", partial, T0, sigs)
    assert info.value.reason is RejectionReason.INCOMPLETE_KEY_SET


def test_revoked_after_compromise(registry: KeyRegistry, anchor_keys, producer_keys) -> None:
    ks_id = producer_keys.key_set_id
    reason = RevocationReason.KEY_COMPROMISE
    sigs = sign_statement(revocation_statement("orders", ks_id, COMPROMISE, reason), anchor_keys)
    registry.revoke("orders", ks_id, COMPROMISE, reason, sigs)
    assert registry.lookup("orders", ks_id, COMPROMISE - 1).status is KeyStatus.VALID
    assert registry.lookup("orders", ks_id, COMPROMISE).status is KeyStatus.REVOKED
    assert registry.lookup("orders", ks_id, COMPROMISE + 10**9).status is KeyStatus.REVOKED
    assert registry.lookup("orders", ks_id, COMPROMISE).key_set is None
    # A later revocation cannot narrow it.
    later = COMPROMISE + 100
    registry.revoke(
        "orders",
        ks_id,
        later,
        reason,
        sign_statement(revocation_statement("orders", ks_id, later, reason), anchor_keys),
    )
    assert registry.lookup("orders", ks_id, COMPROMISE + 1).status is KeyStatus.REVOKED


@pytest.mark.tamper
def test_forged_revocation_and_unknown_targets(
    registry, rogue_anchor_keys, anchor_keys, producer_keys
) -> None:
    ks_id = producer_keys.key_set_id
    reason = RevocationReason.KEY_COMPROMISE
    stmt = revocation_statement("orders", ks_id, T0, reason)
    with pytest.raises(RegistrationRejected):
        registry.revoke("orders", ks_id, T0, reason, sign_statement(stmt, rogue_anchor_keys))
    assert registry.lookup("orders", ks_id, T0 + 1).status is KeyStatus.VALID
    stmt = revocation_statement("payments", ks_id, T0, reason)
    with pytest.raises(RegistrationRejected) as info:
        registry.revoke("payments", ks_id, T0, reason, sign_statement(stmt, anchor_keys))
    assert info.value.reason is RejectionReason.UNKNOWN_PRODUCER


def test_rotation(registry: KeyRegistry, anchor_keys, producer_keys, other_keys) -> None:
    new = PrivateKeySet("ks-producer-2", dict(other_keys.keys)).public()
    old_id = producer_keys.key_set_id
    at = 4_000_000
    sigs = sign_statement(rotation_statement("orders", old_id, new, at), anchor_keys)
    registry.rotate("orders", old_id, new, at, sigs)
    registry.rotate("orders", old_id, new, at, sigs)  # replay: harmless
    assert registry.lookup("orders", old_id, at - 1).status is KeyStatus.VALID
    assert registry.lookup("orders", old_id, at).status is KeyStatus.RETIRED
    assert registry.lookup("orders", new.key_set_id, at - 1).status is KeyStatus.NOT_YET_VALID
    found = registry.lookup("orders", new.key_set_id, at)
    assert found.status is KeyStatus.VALID and found.key_set == new
    with pytest.raises(RegistrationRejected):  # signature does not cover another time
        registry.rotate("orders", old_id, new, 1, sigs)


@pytest.mark.tamper
def test_rotation_cannot_swap_in_other_keys(
    registry, anchor_keys, producer_keys, other_keys, rogue_anchor_keys
) -> None:
    at = 7_000_000
    new = PrivateKeySet("ks-producer-2", dict(other_keys.keys)).public()
    old_id = producer_keys.key_set_id
    sigs = sign_statement(rotation_statement("orders", old_id, new, at), anchor_keys)
    swapped = KeySet("ks-producer-2", dict(producer_keys.public().public_keys))
    with pytest.raises(RegistrationRejected) as info:
        registry.rotate("orders", old_id, swapped, at, sigs)
    assert info.value.reason is RejectionReason.BAD_ANCHOR_SIGNATURE
    rogue = sign_statement(rotation_statement("orders", old_id, new, at), rogue_anchor_keys)
    with pytest.raises(RegistrationRejected):
        registry.rotate("orders", old_id, new, at, rogue)
    assert registry.lookup("orders", old_id, at + 1).status is KeyStatus.VALID
    # A signed rotation onto an id that already names other keys is refused.
    clash = KeySet(old_id, dict(other_keys.public().public_keys))
    stmt = rotation_statement("orders", "ks-producer-1", clash, at)
    with pytest.raises(RegistrationRejected):
        registry.rotate("orders", "ks-producer-1", clash, at, sign_statement(stmt, anchor_keys))


def test_revocation_reason_as_wire_string(registry, anchor_keys, producer_keys) -> None:
    ks_id = producer_keys.key_set_id
    stmt = revocation_statement("orders", ks_id, 9, "key-compromise")
    registry.revoke("orders", ks_id, 9, "key-compromise", sign_statement(stmt, anchor_keys))
    assert registry.lookup("orders", ks_id, 9).status is KeyStatus.REVOKED
    with pytest.raises(ValueError):
        revocation_statement("orders", ks_id, 9, "because")


def test_statements_are_domain_separated(producer_keys) -> None:
    reg = registration_statement("orders", producer_keys.public(), T0)
    assert reg.startswith(b"cachet.key-registration/v1\nproducer orders\n")
    assert revocation_statement("o", "k", 1, RevocationReason.SUPERSEDED).startswith(
        b"cachet.key-revocation/v1\n"
    )
    rot = rotation_statement("o", "a", producer_keys.public(), 1)
    assert rot.startswith(b"cachet.key-rotation/v1\nproducer o\nfrom a\nto ks-producer-1\nkey ")
    assert rot.endswith(b"\nrotated-at 1\n")
    with pytest.raises(NoteFormatError):
        rotation_statement("o\nx", "a", producer_keys.public(), 1)


@pytest.mark.tamper
def test_verify_seal_end_to_end(registry: KeyRegistry, anchor_keys, producer_keys) -> None:
    ks_id = producer_keys.key_set_id
    leaves = [leaf_hash(b"e1"), leaf_hash(b"e2")]
    root = root_from_leaf_hashes(leaves)

    def seal(at: int) -> tuple[SealHeader, tuple]:
        header = SealHeader("orders", 1, 2, 10, root, bytes(32), ks_id, at)
        return header, sign_header(header, producer_keys)

    before, after = seal(COMPROMISE - 1), seal(COMPROMISE)
    assert registry.verify_seal(*before, leaves).ok
    assert not registry.verify_seal(before[0], before[1], leaves[:1]).ok
    assert registry.verify_seal(before[0], before[1], leaves[::-1]).verdict.failure is (
        SealFailure.ROOT_MISMATCH
    )
    reason = RevocationReason.KEY_COMPROMISE
    sigs = sign_statement(revocation_statement("orders", ks_id, COMPROMISE, reason), anchor_keys)
    registry.revoke("orders", ks_id, COMPROMISE, reason, sigs)
    assert registry.verify_seal(*before, leaves).ok  # sealed before the compromise
    check = registry.verify_seal(*after, leaves)
    assert not check.ok and check.lookup.status is KeyStatus.REVOKED and check.verdict is None
    stranger = SealHeader("payments", 1, 2, 10, root, bytes(32), ks_id, 1)
    check = registry.verify_seal(stranger, sign_header(stranger, producer_keys), leaves)
    assert check.lookup.status is KeyStatus.UNKNOWN_PRODUCER and not check.ok
