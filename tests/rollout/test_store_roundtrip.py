"""Whatever a store accepts it reads back equal: any valid plan, any status, any evidence."""

from __future__ import annotations

import json
import math
from dataclasses import replace

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.analysis import CheckResult, Status, Verdict
from rollout.error_evidence import COMPONENTS, ErrorEvidence
from rollout.errors import Unstorable
from rollout.evidence import Evidence
from rollout.machine import Hold, Phase, start
from rollout.plan import (
    LATENCY_METRICS,
    MAX_ADAPTER_CHARS,
    MAX_CHECKS,
    MAX_MODEL_CHARS,
    MAX_QUERY_CHARS,
    MAX_REASON_CHARS,
    MAX_STEPS,
    NAME,
    Check,
    Metric,
    PauseStep,
    RolloutPlan,
    ShadowStep,
    WeightStep,
)
from rollout.record import Rollout
from rollout.tail_evidence import TailEvidence
from rollout.traffic import Variant
from rollout.windows import Histogram, VariantWindow, Window
from tests.rollout.conftest import Store

pytestmark = pytest.mark.anyio

names = st.from_regex(NAME, fullmatch=True)
texts = st.text(max_size=40) | st.text(max_size=MAX_REASON_CHARS)  # any unicode but surrogates
numbers = st.floats(allow_nan=False, allow_infinity=False)  # edges: ±0, subnormals, ±1.8e308
non_negative = st.floats(min_value=0, allow_nan=False, allow_infinity=False)
positive = st.floats(min_value=0, exclude_min=True, allow_nan=False, allow_infinity=False)


def maybe(values: st.SearchStrategy) -> st.SearchStrategy:
    return st.none() | values


@st.composite
def step_lists(draw) -> list:
    shadows = draw(st.lists(st.builds(ShadowStep, sample=st.floats(0, 1, exclude_min=True),
                                      min_duration_s=non_negative, min_requests=st.integers(0)),
                            max_size=3))  # fmt: skip
    percents = sorted(draw(st.sets(st.floats(0, 100, exclude_min=True), max_size=8)))
    later: list = [
        WeightStep(percent=p, min_duration_s=draw(non_negative), min_requests=draw(st.integers(0)))
        for p in percents
    ]
    for _ in range(draw(st.integers(0, 3))):
        later.insert(draw(st.integers(0, len(later))), PauseStep(reason=draw(texts)))
    steps = (shadows + later)[:MAX_STEPS]
    return steps or [PauseStep()]


def checks_of(name: str) -> st.SearchStrategy[Check]:
    statistical = st.sampled_from([m for m in Metric if m not in (Metric.SAFETY, Metric.PROMQL)])
    query = st.text(min_size=1, max_size=40) | st.text(min_size=1, max_size=MAX_QUERY_CHARS)
    return st.one_of(
        st.builds(Check, name=st.just(name), metric=statistical, threshold=non_negative),
        st.builds(Check, name=st.just(name), metric=st.sampled_from(sorted(LATENCY_METRICS)),
                  threshold=non_negative, quantile=st.floats(0.5, 0.999)),
        st.builds(Check, name=st.just(name), metric=st.just(Metric.SAFETY)),
        st.builds(Check, name=st.just(name), metric=st.just(Metric.PROMQL),
                  threshold=non_negative, query=query),
    )  # fmt: skip


@st.composite
def plans(draw) -> RolloutPlan:
    check_names = draw(st.lists(names, max_size=MAX_CHECKS, unique=True))
    return RolloutPlan.model_validate({
        "route": draw(names),
        "candidate": {
            "name": draw(names),
            "backend": draw(names),
            "model": draw(st.text(min_size=1, max_size=MAX_MODEL_CHARS)),
            "adapter": draw(maybe(st.text(min_size=1, max_size=MAX_ADAPTER_CHARS))),
        },
        "steps": draw(step_lists()),
        "checks": [draw(checks_of(n)) for n in check_names],
        "confidence": draw(st.floats(0.5, 1, exclude_min=True, exclude_max=True)),
        "min_samples": draw(st.integers(1)),
        "evaluation_interval_s": draw(positive),
        "inconclusive_limit_s": draw(positive),
        "max_tenant_share": draw(st.floats(0, 1, exclude_min=True)),
    })  # fmt: skip


@st.composite
def histograms(draw) -> Histogram:
    bounds = tuple(sorted(draw(st.sets(numbers, max_size=6))))
    return Histogram(bounds, tuple(draw(st.lists(numbers, min_size=len(bounds) + 1,
                                                 max_size=len(bounds) + 1))))  # fmt: skip


variant_windows = st.builds(
    VariantWindow, requests=numbers, errors=numbers, latency=histograms(), ttft=histograms(),
    time_per_token=histograms(), feedback_count=numbers, feedback_sum=numbers, incidents=numbers,
)  # fmt: skip
windows = st.builds(Window, variant_windows, variant_windows, numbers, numbers)
components = st.tuples(*[numbers] * len(COMPONENTS))
error_evidence = st.builds(
    ErrorEvidence, closed=components, block=components, block_seconds=numbers,
    block_errors=numbers, recent_errors=numbers, rate_requests=numbers, last_share=numbers,
    damped_blocks=st.integers(0, 10**6),
)  # fmt: skip
evidence = st.builds(
    Evidence, attempt=maybe(windows), step=maybe(windows),
    error_rates=st.dictionaries(names, error_evidence, max_size=2),
    tail_levels=st.dictionaries(
        names, st.lists(st.builds(TailEvidence, numbers, numbers), max_size=2).map(tuple),
        max_size=2,
    ),
    reviews=maybe(windows), step_reviews=maybe(windows),
)  # fmt: skip
results = st.builds(
    CheckResult, names, st.sampled_from(Metric), st.sampled_from(Status), texts,
    candidate=maybe(numbers), stable=maybe(numbers), threshold=maybe(numbers),
    candidate_samples=numbers, stable_samples=numbers, evidence=maybe(numbers),
    evidence_needed=maybe(numbers), test=maybe(texts),
)  # fmt: skip
verdicts = st.builds(
    Verdict, st.lists(results, max_size=4).map(tuple), numbers, maybe(texts)
)  # fmt: skip


@st.composite
def rollouts(draw) -> Rollout:
    plan = draw(plans())
    status, _ = start(draw(texts), plan, draw(numbers), draw(texts))
    status = replace(
        status,
        phase=draw(st.sampled_from(Phase)),
        step=draw(st.integers(0, len(plan.steps) - 1)),
        attempt=draw(st.integers(1)),
        hold=draw(maybe(st.builds(Hold, texts, texts, st.booleans()))),
        weight_override_bp=draw(maybe(st.integers(0, 10_000))),
        waiting_since=draw(maybe(numbers)),
        reason=draw(texts),
    )
    return Rollout(
        plan,
        draw(st.builds(Variant, names, names, st.text(min_size=1))),
        status,
        created_at=draw(numbers),
        evidence=draw(evidence),
        last_verdict=draw(maybe(verdicts)),
        evaluated_until=draw(maybe(numbers)),
    )  # fmt: skip


@settings(
    max_examples=40,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(rollout=rollouts())
async def test_every_record_a_store_accepts_reads_back_equal(store: Store, rollout) -> None:
    current = await store.get(rollout.route)  # examples share the store: overwrite the route
    stored = await store.put(replace(rollout, revision=current.revision if current else 0))

    assert await store.get(rollout.route) == stored
    listing = await store.list()
    assert stored in listing.rollouts
    assert listing.quarantined == []


@settings(max_examples=20, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(rollout=rollouts(), poison=st.sampled_from([math.inf, -math.inf, math.nan]))
def test_a_rollout_holding_inf_or_nan_is_not_serialized_and_says_where(rollout, poison) -> None:
    errors = {"error-rate": ErrorEvidence(closed=(poison,) * len(COMPONENTS))}
    spoiled = replace(rollout, evidence=replace(rollout.evidence, error_rates=errors))
    with pytest.raises(
        Unstorable, match=r"evidence\.error_rates\.error-rate\.closed\.0 is not a finite number"
    ):
        spoiled.to_json()


def test_a_rollout_stored_with_the_earlier_evidence_reads_back_with_that_evidence_afresh() -> None:
    """Before issue 13 the evidence held `error_log_lr` and `tails`: such a rollout still
    loads, and its error and tail evidence start again (forgetting never fools a check)."""
    plan = RolloutPlan.model_validate(
        {"route": "support", "candidate": {"name": "v2", "backend": "local", "model": "v2"}}
    )
    stable = Variant("base", "local", "base")
    rollout = Rollout(plan, stable, start("r1", plan, 0.0, "sre")[0], created_at=0.0)
    stored = json.loads(rollout.to_json())
    stored["evidence"]["error_log_lr"] = [3.0] * 6
    stored["evidence"]["tails"] = {"latency_p95": {"hits": 1.0, "trials": 2.0}}
    loaded = Rollout.from_json(json.dumps(stored))
    assert loaded.evidence.error_rates == {}
    assert loaded.evidence.tail_levels == {}
