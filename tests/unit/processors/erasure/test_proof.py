"""``ErasureCompleted.proof_hash``: every part of the statement changes it."""

from __future__ import annotations

from cachet.processors.erasure.proof import proof_hash
from cachet.schemas.payloads import HeldEntry

HELD = HeldEntry(key_hash=b"k" * 32, namespace="eu", contract="t", ground="g", held_until_us=5)
BASE = dict(
    request_id="r1",
    stage="immediate",
    subject_hash=b"s" * 32,
    namespace=None,
    revoked=[(b"a" * 32, 1), (b"b" * 32, 2)],
    destroyed_key_ids=["k#1"],
    held=[HELD],
)


def test_order_of_the_lists_does_not_matter() -> None:
    swapped = {**BASE, "revoked": list(reversed(BASE["revoked"]))}
    assert proof_hash(**BASE) == proof_hash(**swapped)


def test_every_field_is_bound() -> None:
    base = proof_hash(**BASE)
    changes = [
        {"request_id": "r2"},
        {"stage": "retention_end"},
        {"subject_hash": b"t" * 32},
        {"namespace": "eu"},
        {"revoked": [(b"a" * 32, 1)]},
        {"revoked": [(b"a" * 32, 1), (b"b" * 32, 3)]},
        {"destroyed_key_ids": []},
        {"held": []},
        {"held": [HeldEntry(key_hash=b"k" * 32, namespace="eu", contract="t", ground="g")]},
    ]
    for change in changes:
        assert proof_hash(**{**BASE, **change}) != base, change


def test_a_part_cannot_move_between_lists() -> None:
    a = proof_hash(**{**BASE, "destroyed_key_ids": [], "held": []})
    b = proof_hash(**{**BASE, "destroyed_key_ids": [], "held": [], "revoked": []})
    assert a != b
