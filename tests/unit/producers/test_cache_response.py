"""CacheResponse: a hit's response is built through the slots' setters; it
must be exactly the frozen dataclass its constructor makes."""

from __future__ import annotations

import dataclasses

import pytest

from cachet.freshness import freshness_proof
from cachet.producers.cache_client import CacheResponse, _served
from cachet.verdict import VerificationStatus
from tests.unit.producers.test_l1_race import cached_version


def test_a_hit_is_the_response_the_constructor_makes() -> None:
    cached = cached_version(3)
    entry, facts = cached.entry, cached.facts
    proof = freshness_proof(written_at_us=0, now_us=2500, max_staleness_ms=10, view_lag_ms=1)
    built = _served(b"v3", proof, facts.verified_summary, entry)
    expected = CacheResponse(
        hit=True,
        value=b"v3",
        reason=None,
        status=VerificationStatus.VERIFIED,
        freshness=proof,
        signatures=facts.verified_summary,
        fingerprint=entry.fingerprint,
        version=3,
        commitment=entry.commitment,
        detail="served version 3 with 6 ms headroom",
        computed=False,
    )
    assert built == expected and repr(built) == repr(expected)
    # Every field set, none left to a default the builder skipped.
    assert dataclasses.astuple(built) == dataclasses.astuple(expected)
    with pytest.raises(dataclasses.FrozenInstanceError):
        built.value = b"other"  # type: ignore[misc]
    assert _served(None, proof, facts.verified_summary, entry).value is None
