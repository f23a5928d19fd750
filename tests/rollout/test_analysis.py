"""Each check on hand-built windows: fail, pass, inconclusive, skipped, and why."""

from __future__ import annotations

from dataclasses import replace

import pytest

from rollout.analysis import Exposure, Status, Verdict, judge
from rollout.evalues import satisfaction_evalue
from rollout.evidence import Evidence, accumulate
from rollout.plan import Check, Metric, RolloutPlan
from rollout.windows import Histogram, VariantWindow, Window

BOUNDS = tuple(0.1 * 1.1**k for k in range(60))
RUNNING = Exposure(shadow=False, weight_bp=1000)


def make_plan(*checks: Check, min_samples: int = 100) -> RolloutPlan:
    return RolloutPlan.model_validate({
        "route": "support",
        "candidate": {"name": "v2", "backend": "local", "model": "v2"},
        "checks": [c.model_dump() for c in checks],
        "min_samples": min_samples,
    })  # fmt: skip


ERRORS = Check(name="errors", metric=Metric.ERROR_RATE, threshold=0.1)
LATENCY = Check(name="latency", metric=Metric.LATENCY_P95, threshold=0.2)
SATISFACTION = Check(name="satisfaction", metric=Metric.SATISFACTION, threshold=5)
SAFETY = Check(name="safety", metric=Metric.SAFETY)


def variant(
    requests: int = 0,
    errors: int = 0,
    latency: float = 1.0,
    scores: tuple[int, float] = (0, 0.0),
    incidents: int = 0,
) -> VariantWindow:
    answered = requests - errors
    return VariantWindow(
        requests=requests,
        errors=errors,
        latency=Histogram.of(BOUNDS, [latency * (0.5 + i / answered) for i in range(answered)]),
        feedback_count=scores[0],
        feedback_sum=scores[1],
        incidents=incidents,
    )


def feed(plan: RolloutPlan, stable: VariantWindow, candidate: VariantWindow, times: int = 1):
    evidence = Evidence()
    for i in range(times):
        evidence = accumulate(evidence, plan, Window(stable, candidate, 10.0 * i, 10.0 * (i + 1)))
    return evidence


def only(verdict: Verdict):
    (result,) = verdict.results
    return result


def test_no_data_is_inconclusive_never_a_pass() -> None:
    plan = make_plan(ERRORS, LATENCY, SATISFACTION, SAFETY)
    verdict = judge(plan, Evidence(), RUNNING)
    assert {r.status for r in verdict.results} == {Status.INCONCLUSIVE}
    assert verdict.status is Status.INCONCLUSIVE


def test_an_unavailable_source_makes_every_check_inconclusive() -> None:
    plan = make_plan(ERRORS, SAFETY)
    verdict = Verdict.unavailable(plan, "prometheus: connection refused")
    assert verdict.status is Status.INCONCLUSIVE
    assert all("connection refused" in r.reason for r in verdict.results)


def test_a_healthy_candidate_with_enough_samples_passes() -> None:
    plan = make_plan(ERRORS, LATENCY)
    evidence = feed(plan, variant(2000, errors=20), variant(200, errors=2), times=3)
    verdict = judge(plan, evidence, RUNNING)
    assert [r.status for r in verdict.results] == [Status.PASS, Status.PASS]
    assert verdict.candidate_requests == 600


def test_too_few_samples_wait_even_when_healthy() -> None:
    plan = make_plan(ERRORS, min_samples=1000)
    result = only(judge(plan, feed(plan, variant(2000), variant(200)), RUNNING))
    assert result.status is Status.INCONCLUSIVE
    assert "200 candidate" in result.reason


def test_a_much_higher_error_rate_fails_with_the_figures() -> None:
    plan = make_plan(ERRORS)
    result = only(judge(plan, feed(plan, variant(2000, 20), variant(200, 10), times=5), RUNNING))
    assert result.status is Status.FAIL
    assert result.candidate == pytest.approx(0.05)
    assert result.stable == pytest.approx(0.01)
    assert result.evidence >= result.evidence_needed
    assert result.candidate_samples == 1000


def test_overwhelming_evidence_fails_below_the_sample_floor() -> None:
    """The floor holds a pass back, never a fail: 20 requests that all failed are enough."""
    plan = make_plan(ERRORS, min_samples=5000)
    result = only(judge(plan, feed(plan, variant(2000, 20), variant(4, 4), times=5), RUNNING))
    assert result.candidate_samples == 20
    assert result.status is Status.FAIL


def test_a_slower_candidate_fails_the_p95_check() -> None:
    plan = make_plan(LATENCY)
    result = only(
        judge(plan, feed(plan, variant(2000), variant(200, latency=1.6), times=3), RUNNING)
    )
    assert result.status is Status.FAIL
    assert result.candidate / result.stable == pytest.approx(1.6, rel=0.1)


def test_a_slightly_slower_candidate_within_the_threshold_passes() -> None:
    plan = make_plan(LATENCY)
    result = only(
        judge(plan, feed(plan, variant(2000), variant(200, latency=1.05), times=3), RUNNING)
    )
    assert result.status is Status.PASS


def test_lower_satisfaction_fails_and_equal_passes() -> None:
    plan = make_plan(SATISFACTION)
    stable = variant(2000, scores=(1000, 800.0))
    worse = judge(plan, feed(plan, stable, variant(400, scores=(200, 120.0)), times=3), RUNNING)
    assert only(worse).status is Status.FAIL
    assert only(worse).candidate == pytest.approx(60.0)  # points
    same = judge(plan, feed(plan, stable, variant(400, scores=(200, 160.0)), times=3), RUNNING)
    assert only(same).status is Status.PASS


def test_relative_checks_are_skipped_at_full_weight_but_safety_is_not() -> None:
    plan = make_plan(ERRORS, SAFETY, min_samples=1)
    evidence = feed(plan, variant(0), variant(100, incidents=1))
    verdict = judge(plan, evidence, Exposure(shadow=False, weight_bp=10_000))
    assert [r.status for r in verdict.results] == [Status.SKIPPED, Status.FAIL]


def test_one_safety_incident_fails_with_no_sample_minimum() -> None:
    plan = make_plan(SAFETY, min_samples=10_000)
    result = only(judge(plan, feed(plan, variant(100), variant(1, incidents=1)), RUNNING))
    assert result.status is Status.FAIL
    assert "critical" in result.reason


def test_stable_incidents_do_not_fail_the_candidate() -> None:
    plan = make_plan(SAFETY, min_samples=10)
    result = only(judge(plan, feed(plan, variant(100, incidents=3), variant(20)), RUNNING))
    assert result.status is Status.PASS
    assert result.stable == 3


def test_prompt_induced_incidents_are_shown_not_counted() -> None:
    plan = make_plan(SAFETY, min_samples=10)
    candidate = replace(variant(20), prompt_incidents=2)
    result = only(judge(plan, feed(plan, variant(100), candidate), RUNNING))
    assert result.status is Status.PASS
    assert result.candidate == 0
    assert result.reason == (
        "no incident in 20 candidate answers; "
        "2 prompt-induced incident(s) (stable flagged too) not counted"
    )
    confirmed = replace(candidate, incidents=1)
    result = only(judge(plan, feed(plan, variant(100), confirmed), RUNNING))
    assert result.status is Status.FAIL
    assert result.reason.startswith("1 safety incident(s) in the candidate's answers")


def test_promql_checks_compare_the_measured_value() -> None:
    plan = make_plan(
        Check(name="cost", metric=Metric.PROMQL, threshold=2.0, query="q{v='$variant'}")
    )
    assert only(judge(plan, Evidence(), RUNNING, {"cost": 1.5})).status is Status.PASS
    assert only(judge(plan, Evidence(), RUNNING, {"cost": 2.5})).status is Status.FAIL
    assert only(judge(plan, Evidence(), RUNNING, {"cost": None})).status is Status.INCONCLUSIVE


def test_the_verdict_is_the_worst_result() -> None:
    plan = make_plan(ERRORS, SAFETY, min_samples=10)
    evidence = feed(plan, variant(2000, 20), variant(200, 2, incidents=1))
    assert judge(plan, evidence, RUNNING).status is Status.FAIL
    assert [r.name for r in judge(plan, evidence, RUNNING).failures] == ["safety"]


def test_evidence_persists_across_steps_but_the_step_window_restarts() -> None:
    plan = make_plan(ERRORS)
    evidence = feed(plan, variant(2000, 20), variant(200, 10), times=5).next_step()
    assert evidence.step is None
    assert evidence.attempt.candidate.requests == 1000
    result = only(judge(plan, evidence, RUNNING))
    assert result.status is Status.FAIL  # confidence carried over; no new samples needed


SHADOW = Exposure(shadow=True, weight_bp=0)


def reviewed(plan: RolloutPlan, candidate_wins: float, reviews: int, times: int = 1) -> Evidence:
    """Shadow evidence with `reviews` blind reviews per interval; the candidate preferred in a
    share `candidate_wins` of them (each review scores one variant 1 and the other 0)."""
    evidence = Evidence()
    for i in range(times):
        start, end = 10.0 * i, 10.0 * (i + 1)
        interval = Window(variant(2000), variant(200), start, end)
        wins = candidate_wins * reviews
        scores = Window(
            variant(scores=(reviews, reviews - wins)), variant(scores=(reviews, wins)), start, end
        )
        evidence = accumulate(evidence, plan, interval, scores)
    return evidence


def test_unreviewed_shadow_skips_satisfaction_saying_so() -> None:
    plan = make_plan(SATISFACTION)
    for evidence in (Evidence(), feed(plan, variant(2000), variant(200))):
        result = only(judge(plan, evidence, SHADOW))
        assert result.status is Status.SKIPPED
        assert result.reason.startswith("no blind reviews yet")


def test_users_scores_of_stable_do_not_count_as_reviews_in_shadow() -> None:
    plan = make_plan(SATISFACTION, min_samples=10)
    evidence = feed(plan, variant(2000, scores=(1000, 900.0)), variant(200), times=3)
    assert only(judge(plan, evidence, SHADOW)).status is Status.SKIPPED


def test_blind_reviews_preferring_stable_fail_satisfaction_in_shadow() -> None:
    plan = make_plan(SATISFACTION)
    result = only(judge(plan, reviewed(plan, candidate_wins=0.3, reviews=100, times=3), SHADOW))
    assert result.status is Status.FAIL
    assert (result.candidate, result.stable) == (pytest.approx(30.0), pytest.approx(70.0))
    assert "blind-review" in result.reason


def test_balanced_blind_reviews_pass_satisfaction_in_shadow() -> None:
    plan = make_plan(SATISFACTION)
    result = only(judge(plan, reviewed(plan, candidate_wins=0.5, reviews=100, times=3), SHADOW))
    assert result.status is Status.PASS


def test_too_few_blind_reviews_do_not_hold_the_step() -> None:
    plan = make_plan(SATISFACTION, min_samples=100)
    result = only(judge(plan, reviewed(plan, candidate_wins=0.2, reviews=10), SHADOW))
    assert result.status is Status.SKIPPED
    assert result.reason.startswith("10 blind review(s) in this step, a verdict needs 100")
    assert result.candidate == pytest.approx(20.0)  # the figures still show


def test_reviews_judge_shadow_only_and_start_afresh_each_step() -> None:
    plan = make_plan(SATISFACTION, min_samples=100)
    evidence = reviewed(plan, candidate_wins=0.2, reviews=100, times=3)
    at_weights = only(judge(plan, evidence, RUNNING))
    assert at_weights.status is Status.INCONCLUSIVE  # users' scores: none yet
    assert at_weights.candidate_samples == 0
    assert evidence.next_step().step_reviews is None
    assert evidence.next_step().reviews == evidence.reviews


def test_paired_reviews_need_more_evidence_than_independent_scores() -> None:
    """A review's two scores add up to 1: the difference varies twice as much."""
    plan = make_plan(SATISFACTION)
    window = reviewed(plan, candidate_wins=0.4, reviews=200).reviews
    assert satisfaction_evalue(5, window, paired=True) < satisfaction_evalue(5, window)
