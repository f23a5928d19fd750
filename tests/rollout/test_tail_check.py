"""Latency checks at a quantile and further out in the tail, through accumulate and judge."""

from __future__ import annotations

from dataclasses import replace

import pytest
from pydantic import ValidationError

from rollout.analysis import CheckResult, Status, judge
from rollout.plan import Check, Metric
from rollout.tail_evidence import tail_levels
from rollout.windows import Histogram, VariantWindow
from tests.rollout.test_analysis import BOUNDS, LATENCY, RUNNING, feed, make_plan, only, variant

P99 = Check(name="latency", metric=Metric.LATENCY_P95, threshold=0.2, quantile=0.99)


def latencies(answers: int, slowest: float = 0.0, factor: float = 1.0) -> Histogram:
    """Evenly spread answers (0.5 to 1.5 s), the `slowest` share of them `factor` times slower."""
    cut = answers - round(slowest * answers)
    spread = (0.5 + i / answers for i in range(answers))
    return Histogram.of(BOUNDS, [s * (factor if i >= cut else 1.0) for i, s in enumerate(spread)])


STABLE = latencies(2000)  # an interval's: enough for a reference at p99 (20 answers above)


def judged(check: Check, candidate: Histogram) -> CheckResult:
    """Three intervals of stable's answers and `candidate`'s, judged by `check` alone."""
    plan = make_plan(check)
    stable = replace(variant(round(STABLE.total)), latency=STABLE)
    slow = replace(variant(round(candidate.total)), latency=candidate)
    return only(judge(plan, feed(plan, stable, slow, times=3), RUNNING))


def test_the_slowest_2_percent_3x_slower_fails_a_p95_check_through_its_p99_level() -> None:
    result = judged(LATENCY, latencies(500, slowest=0.02, factor=3.0))
    assert result.status is Status.FAIL
    assert result.candidate == pytest.approx(result.stable, rel=0.02)  # p95 itself unmoved
    assert result.test == "share above 1.2x stable's p99"


def test_the_slowest_10_percent_1_5x_slower_fails_a_p95_check() -> None:
    assert judged(LATENCY, latencies(500, slowest=0.10, factor=1.5)).status is Status.FAIL


def test_a_candidate_as_fast_as_stable_passes() -> None:
    result = judged(LATENCY, latencies(500))
    assert result.status is Status.PASS
    assert result.evidence < 1.0


def test_a_p99_check_reports_the_p99_latencies() -> None:
    slow = latencies(500, slowest=0.02, factor=3.0)
    result = judged(P99, slow)
    assert (result.candidate, result.stable) == (
        pytest.approx(slow.quantile(0.99)),
        pytest.approx(STABLE.quantile(0.99)),
    )
    assert "at p99," in result.reason


def test_the_tail_levels_are_the_quantile_and_where_a_fifth_as_many_answers_lie() -> None:
    assert tail_levels(0.95) == (0.95, 0.99)
    assert tail_levels(0.99) == (0.99, 0.998)


def test_a_slower_candidate_does_not_pass_before_stable_gives_a_reference() -> None:
    plan = make_plan(LATENCY, min_samples=10)
    evidence = feed(plan, variant(100), variant(10, latency=2.5), times=3)
    assert only(judge(plan, evidence, RUNNING)).status is not Status.PASS


@pytest.mark.parametrize(
    ("metric", "quantile", "field"),
    [
        (Metric.ERROR_RATE, 0.99, "quantile: only latency checks"),
        (Metric.LATENCY_P95, 0.4, "quantile"),
        (Metric.LATENCY_P95, 1.0, "quantile"),
        (Metric.TIME_TO_FIRST_TOKEN_P95, 0.9995, "quantile"),
    ],
)
def test_a_quantile_off_a_latency_check_or_out_of_range_is_refused(
    metric: Metric, quantile: float, field: str
) -> None:
    with pytest.raises(ValidationError, match=field):
        Check(name="c", metric=metric, threshold=0.1, quantile=quantile)


@pytest.mark.parametrize(
    ("stable", "candidate", "why"),
    [
        (variant(10), variant(100), "waiting for stable's p95: 10 stable answers"),
        (variant(1000), variant(0), "waiting for the candidate's answers"),
    ],
    ids=["no-reference", "no-candidate-answers"],
)
def test_a_tail_check_without_evidence_says_what_it_waits_for(
    stable: VariantWindow, candidate: VariantWindow, why: str
) -> None:
    plan = make_plan(LATENCY, min_samples=10)
    result = only(judge(plan, feed(plan, stable, candidate), RUNNING))
    assert result.status is Status.INCONCLUSIVE
    assert why in result.reason
