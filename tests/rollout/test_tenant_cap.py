"""No tenant decides the satisfaction check alone: the cap, its properties, and the check."""

from __future__ import annotations

import math

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st
from pydantic import TypeAdapter

from rollout.analysis import Exposure, Status, judge
from rollout.evidence import Evidence, accumulate
from rollout.machine import start
from rollout.plan import Check, Metric, RolloutPlan
from rollout.record import Rollout
from rollout.tenants import MAX_TENANTS, TenantScores, capped, merge, tenant_cap
from rollout.traffic import Variant
from rollout.windows import VariantWindow, Window

RUNNING = Exposure(shadow=False, weight_bp=1000)
SATISFACTION = Check(name="satisfaction", metric=Metric.SATISFACTION, threshold=5)
EPS = 1e-9


@pytest.mark.parametrize(
    ("counts", "untracked", "share", "cap"),
    [
        ([], 0.0, 0.5, math.inf),  # nobody to cap
        ([300.0], 0.0, 0.5, 0.0),  # one tenant alone: nothing counts
        ([300.0], 300.0, 0.5, math.inf),  # ... unless as much comes from elsewhere
        ([300.0], 100.0, 0.5, 100.0),
        ([100.0, 100.0], 0.0, 0.5, math.inf),  # two equal halves
        ([300.0, 100.0, 50.0], 0.0, 0.5, 150.0),  # 150 of 300
        ([1000.0, 10.0], 0.0, 0.5, 10.0),
        ([1000.0, 10.0], 0.0, 1.0, math.inf),  # a share of 1 lifts the cap
        ([40.0, 30.0, 20.0, 10.0], 0.0, 0.25, 10.0),  # at 20, 20 of 70 would be 29%
        ([50.0, 50.0, 50.0], 0.0, 0.3, 0.0),  # three tenants can never stay under 30% each
    ],
)
def test_the_cap_per_tenant(counts, untracked, share, cap) -> None:
    assert tenant_cap(counts, untracked, share) == pytest.approx(cap)


def test_a_capped_tenant_keeps_its_mean_and_untracked_scores_count_whole() -> None:
    tenants = (TenantScores("big", 300, 30.0), TenantScores("small", 100, 90.0))
    c = capped(500, 170.0, tenants, 0.5)  # 100 untracked scores summing to 50
    # Untracked 100 + small 100 + big capped at 200 (its mean 0.1 kept).
    assert (c.count, c.total, c.tenants, c.cap) == pytest.approx((400, 160.0, 2, 200))


def test_merging_adds_per_tenant_and_keeps_the_largest() -> None:
    a = (TenantScores("acme", 2, 1.0), TenantScores("globex", 1, 1.0))
    b = (TenantScores("acme", 1, 0.5), TenantScores("initech", 3, 0.0))
    assert merge(a, b) == (
        TenantScores("acme", 3, 1.5),
        TenantScores("globex", 1, 1.0),
        TenantScores("initech", 3, 0.0),
    )
    many = [TenantScores(f"t{i:05d}", 1 + i, 0.0) for i in range(MAX_TENANTS + 5)]
    kept = merge(many)
    assert len(kept) == MAX_TENANTS
    assert {t.tenant for t in kept} == {t.tenant for t in many[5:]}  # the 5 smallest go


def test_variant_windows_merge_their_tenants() -> None:
    w = VariantWindow(
        feedback_count=2, feedback_sum=1.0, feedback_tenants=(TenantScores("acme", 2, 1.0),)
    )
    total = w + VariantWindow(prompt_incidents=1) + w
    assert total.feedback_tenants == (TenantScores("acme", 4, 2.0),)
    assert (total.feedback_count, total.prompt_incidents) == (4, 1)


# --- properties -----------------------------------------------------------------------------

counts = st.lists(st.floats(0, 1e6, allow_nan=False), max_size=12)
untracked = st.floats(0, 1e6, allow_nan=False)
shares = st.floats(0.01, 1.0)


def effective(ns: list[float], cap: float) -> list[float]:
    return [min(n, cap) for n in ns]


@given(counts, untracked, shares)
def test_no_tenant_holds_more_than_its_share(ns, rest, share) -> None:
    kept = effective(ns, tenant_cap(ns, rest, share))
    total = rest + sum(kept)
    assert all(k <= share * total + EPS * (1 + total) for k in kept)
    assert all(0 <= k <= n for k, n in zip(kept, ns, strict=True))


@given(counts, untracked, shares)
def test_the_cap_is_as_high_as_the_share_allows(ns, rest, share) -> None:
    """No evidence is discarded needlessly: a higher level would break the share."""
    cap = tenant_cap(ns, rest, share)
    if cap >= max(ns, default=0.0) * (1 - EPS):
        return  # binds no one
    kept = effective(ns, cap * (1 + 1e-6) + 1e-6)
    total = rest + sum(kept)
    assert max(kept) >= share * total - EPS * (1 + total)


@given(counts, untracked, shares, st.integers(0, 11), st.floats(0, 1e6, allow_nan=False))
def test_more_scores_from_one_tenant_never_lower_anyones_count(ns, rest, share, who, more) -> None:
    if not ns:
        return
    who %= len(ns)
    before = effective(ns, tenant_cap(ns, rest, share))
    grown = [n + more if i == who else n for i, n in enumerate(ns)]
    after = effective(grown, tenant_cap(grown, rest, share))
    tolerance = EPS * (1 + max(grown) + rest)
    assert all(a >= b - tolerance for a, b in zip(after, before, strict=True))


@given(st.integers(1, 20), st.floats(1, 1e4), shares)
def test_enough_equal_tenants_are_not_capped(k, n, share) -> None:
    assume(abs(k * share - 1) > 1e-6)  # exactly at the edge floats may round either way
    assert (tenant_cap([n] * k, 0.0, share) >= n) == (k * share > 1)


# --- the satisfaction check -----------------------------------------------------------------


def make_plan(min_samples: int = 100, **plan) -> RolloutPlan:
    return RolloutPlan.model_validate({
        "route": "support",
        "candidate": {"name": "v2", "backend": "local", "model": "v2"},
        "checks": [SATISFACTION.model_dump()],
        "min_samples": min_samples,
        **plan,
    })  # fmt: skip


def scored(*tenants: tuple[str, int, float]) -> VariantWindow:
    """Users' scores: (tenant, count, mean) each."""
    scores = tuple(TenantScores(t, n, n * mean) for t, n, mean in tenants)
    return VariantWindow(
        requests=sum(s.count for s in scores) * 3,
        feedback_count=sum(s.count for s in scores),
        feedback_sum=sum(s.total for s in scores),
        feedback_tenants=merge(scores),
    )


def judged(plan: RolloutPlan, stable: VariantWindow, candidate: VariantWindow, times: int = 3):
    evidence = Evidence()
    for i in range(times):
        evidence = accumulate(evidence, plan, Window(stable, candidate, 10.0 * i, 10.0 * (i + 1)))
    (result,) = judge(plan, evidence, RUNNING).results
    return result


HONEST = scored(("acme", 400, 0.8), ("globex", 300, 0.8), ("initech", 300, 0.8))


@pytest.mark.parametrize("candidate_mean", [0.0, 1.0])
def test_one_tenant_alone_decides_nothing_either_way(candidate_mean) -> None:
    result = judged(make_plan(), HONEST, scored(("mallory", 104, candidate_mean)))
    assert result.status is Status.INCONCLUSIVE
    assert result.candidate_samples == 0
    assert result.reason.startswith(
        "312 candidate scores, but from 1 tenant(s): "
        "no tenant may decide more than 50% of the evidence"
    )


def test_a_tenant_flooding_zeros_is_held_to_its_share() -> None:
    flooded = scored(("mallory", 2000, 0.0), ("acme", 200, 0.8), ("globex", 200, 0.8))
    result = judged(make_plan(), HONEST, flooded)
    # Mallory counts as many scores as the other two together: the mean is 40, not 13.
    assert result.candidate == pytest.approx(40.0)
    assert result.candidate_samples == pytest.approx(2 * 3 * 400)
    assert result.status is Status.FAIL  # 40 is still far below 80: a real regression shows
    uncapped = judged(make_plan(max_tenant_share=1.0), HONEST, flooded)
    assert uncapped.candidate == pytest.approx(100 * 320 / 2400)


def test_honest_tenants_are_counted_whole() -> None:
    plan = make_plan()
    result = judged(plan, HONEST, scored(("acme", 40, 0.8), ("globex", 30, 0.8), ("x", 30, 0.8)))
    assert result.status is Status.PASS
    assert (result.candidate_samples, result.stable_samples) == (300, 3000)


def test_evidence_with_tenants_is_stored_and_read_back() -> None:
    plan = make_plan()
    window = Window(HONEST, scored(("acme", 3, 1.0)), 0.0, 10.0)
    evidence = accumulate(Evidence(), plan, window)
    adapter = TypeAdapter(Evidence)
    assert adapter.validate_json(adapter.dump_json(evidence)) == evidence
    status, _ = start("r1", plan, now=0.0, actor="sre")
    rollout = Rollout(plan, Variant("base", "local", "tiny"), status, 0.0, evidence=evidence)
    assert Rollout.from_json(rollout.to_json()) == rollout
    # A record written before tenants were kept still reads, its scores untracked.
    old = adapter.dump_json(evidence).replace(b'"feedback_tenants"', b'"_gone"')
    assert adapter.validate_json(old).attempt.stable.feedback_tenants == ()
