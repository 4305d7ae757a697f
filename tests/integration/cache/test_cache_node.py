"""One cache node on the real broker: contracts evaluated on every read."""

from __future__ import annotations

import pytest

from cachet.config.enums import Role
from cachet.producers.cache_client import CacheClient
from cachet.producers.fingerprint import Computation
from cachet.verdict import MissReason, VerificationStatus

from .nodeproc import wait_for

pytestmark = pytest.mark.integration


def test_put_then_get_serves_the_value_with_proofs(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    client = CacheClient(node)
    receipt = client.put("AAPL", b"189.12", contract="quotes", wait=True)
    r = wait_for(lambda: (x := client.get("AAPL", contract="quotes")).hit and x)
    assert r.hit and r.value == b"189.12"
    assert r.status is VerificationStatus.VERIFIED
    assert r.version == receipt.version == 1
    assert r.fingerprint == receipt.fingerprint
    assert 0 <= r.freshness.age_ms <= r.freshness.max_staleness_ms == 30_000
    assert r.freshness.headroom_ms > 0
    assert set(r.signatures.schemes) == {"ml-dsa-65", "fn-dsa-512", "slh-dsa-sha2-128f"}


def test_miss_reasons(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    c = CacheClient(node)
    assert c.get("nope", contract="quotes").reason is MissReason.NOT_FOUND
    comp = Computation(input="MSFT", computation="mid-price", parameters={"venue": "X"})
    c.put("MSFT", b"410.5", contract="quotes", computation=comp, wait=True)
    other = Computation(input="MSFT", computation="mid-price", parameters={"venue": "Y"})
    assert wait_for(lambda: c.get("MSFT", contract="quotes", computation=comp).hit)
    assert (
        c.get("MSFT", contract="quotes", computation=other).reason
        is MissReason.FINGERPRINT_MISMATCH
    )
    c.put("Q", b"1", contract="fast", wait=True)
    assert wait_for(lambda: c.get("Q", contract="fast").reason is MissReason.STALE, 5)


def test_revoke_supersede_and_get_or_compute(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    c = CacheClient(node)
    c.put("K", b"v1", contract="quotes", wait=True)
    c.put("K", b"v2", contract="quotes", wait=True)
    r = wait_for(lambda: (x := c.get("K", contract="quotes")).hit and x)
    assert r.value == b"v2" and r.version == 2
    assert c.revoke("K", reason="source correction")
    assert c.get("K", contract="quotes").reason is MissReason.REVOKED
    calls = []
    r = c.get_or_compute("K", lambda: calls.append(1) or b"v3", contract="quotes")
    assert r.computed and r.value == b"v3" and r.reason is MissReason.REVOKED and calls == [1]
    r = wait_for(lambda: (x := c.get("K", contract="quotes")).hit and x)
    assert r.value == b"v3" and r.version == 3


def test_role_matrix_and_scope(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    owner = CacheClient(node, Role.OWNER, scope="tenant-a")
    owner.put("prompt-1", b"secret answer", contract="quotes", wait=True)
    assert wait_for(lambda: owner.get("prompt-1", contract="quotes").hit)
    regulator = CacheClient(node, Role.REGULATOR, scope="tenant-a")
    auditor = CacheClient(node, Role.AUDITOR, scope="tenant-a")
    for reader in (regulator, auditor):
        r = reader.get("prompt-1", contract="quotes")
        assert r.hit and r.value is None, f"{reader.role} must never see plaintext"
        assert r.freshness is not None and r.commitment is not None
    for reader in (regulator, auditor):
        with pytest.raises(Exception, match="only the owner"):
            reader.put("x", b"y", contract="quotes")
        with pytest.raises(Exception, match="only the owner"):
            reader.revoke("prompt-1")
    other_tenant = CacheClient(node, Role.OWNER, scope="tenant-b")
    assert other_tenant.get("prompt-1", contract="quotes").reason is MissReason.SCOPE_MISMATCH


def test_contractual_mode_needs_confirmation(make_node, ticker) -> None:
    node = make_node()
    assert node.wait_caught_up()
    c = CacheClient(node)
    c.put("rate", b"5.25", contract="confirmed", wait=True)
    assert wait_for(
        lambda: c.get("rate", contract="confirmed").reason is MissReason.FRESHNESS_UNCONFIRMED, 5
    )
    assert c.confirm_freshness("rate")
    assert wait_for(lambda: c.get("rate", contract="confirmed").hit, 5)


def test_without_ticks_the_view_fails_closed(make_node) -> None:
    node = make_node()
    assert node.wait_caught_up(ticks=False)
    c = CacheClient(node)
    c.put("A", b"1", contract="quotes", wait=True)
    assert c.get("A", contract="quotes").reason is MissReason.VIEW_STALE
