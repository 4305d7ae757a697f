"""The signing budget: how batches grow under load instead of seals multiplying."""

from __future__ import annotations

from cachet.producers.sealing import _SignBudget


def test_a_burst_of_signing_is_allowed_then_the_budget_refills_at_its_rate() -> None:
    budget = _SignBudget(0.10, now=0.0, burst_s=0.5)
    assert budget.allows(0.0)
    budget.spend(0.6, now=0.0)  # more than the burst: in debt by 0.1 s
    assert not budget.allows(0.5)  # 0.05 s refilled, still 0.05 s short
    assert budget.allows(1.01)  # 0.101 s refilled: out of debt


def test_the_budget_never_holds_more_than_its_burst() -> None:
    budget = _SignBudget(0.10, now=0.0, burst_s=0.5)
    budget.spend(0.0, now=3600.0)  # an hour idle
    budget.spend(0.5, now=3600.0)  # the whole burst
    assert not budget.allows(3600.0)


def test_sustained_signing_is_held_to_the_fraction() -> None:
    # A producer that seals whenever allowed, each seal costing 13 ms, gets
    # at most fraction * elapsed + burst of signing time.
    budget = _SignBudget(0.10, now=0.0, burst_s=0.5)
    spent, t = 0.0, 0.0
    while t < 60.0:
        if budget.allows(t):
            budget.spend(0.013, now=t)
            spent += 0.013
        t += 0.05  # the batch window
    assert spent <= 0.10 * 60.0 + 0.5 + 0.013
    assert spent >= 0.10 * 60.0 - 0.013
