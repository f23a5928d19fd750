"""Checks → verdict: is the candidate worse than stable, by more than the plan allows?

Pure: the controller measures (I/O), `rollout/evidence.py` accumulates, this module judges.

Two kinds of evidence, kept apart on purpose:

* **Fail** needs statistical confidence, at any sample size, and it is looked at every evaluation
  interval for as long as a rollout runs. Repeated looks at a fixed-sample test
  would roll back healthy candidates far more often than its nominal level, so
  each statistical check keeps an *e-value*: a likelihood-ratio mixture that is
  a (super)martingale while the candidate is within its threshold. By Ville's
  inequality the chance that it ever reaches 1/alpha during a rollout, at any
  number of looks, is at most alpha. `confidence` is for the whole rollout:
  alpha = 1 - confidence is split evenly over the statistical checks, so a
  healthy candidate is rolled back by chance with probability at most alpha.
  Evidence accumulates over the whole attempt (every step), so traffic at 1%
  and at 50% both count.
* **Pass** needs enough samples in the current step's window and evidence of
  harm below halfway to a fail (on a log scale). Missing data, a silent source,
  or evidence past halfway (the candidate looks worse, not yet with confidence)
  are inconclusive: the step waits for more data, it never passes on them.

The tests, by metric:

* error rate: each interval, conditional on the interval's errors, how many of
  them are the candidate's is binomial with a share fixed by the two request
  counts and the rate ratio (exact for rare, Poisson-like errors). The
  alternatives are ratios above 1 + threshold, fixed and learned from recent
  intervals, and bursts of errors are damped (`rollout/error_evidence.py`).
* latencies (total, first token, per output token) at the check's quantile q
  (p95 unless the plan says otherwise) and further out in the tail: a candidate
  within the threshold has at most 1 - q of its answers slower than (1 + threshold)
  times stable's q-quantile, so the count above that limit is binomial with
  p <= 1 - q. The same holds further out, where a fifth as many answers lie (for
  p95: p99), with its own count; the evidence is the mean of the two, so a
  regression in the slowest 2% is caught by a p95 check too.
* satisfaction (mean score in points, 0..100): a normal mixture sequential test
  (mSPRT) on the difference in means, with the variance bound m(1 - m) of
  scores in [0, 1]. At weights it judges users' scores, each tenant's counted
  only up to a common cap so that no tenant holds more than `max_tenant_share`
  of a variant's evidence (`rollout/tenants.py`): one tenant alone cannot decide
  a rollout, either way. The capped counts are what the e-value and the sample
  minimum see. In shadow nobody sees the candidate's answers, so it judges blind
  reviews of shadow pairs (each scores the preferred answer 1 and the other 0,
  or both 0.5; reviewers are admins, not capped). While a shadow step has fewer
  reviews than a verdict needs it is skipped, not waited for: reviews are
  voluntary, and a rollout nobody reviews must not be held.
* safety: critical, no statistics, no sample minimum: one candidate incident fails.
  Only the candidate's own incidents count: an answer flagged while stable's
  answer to the same prompt was flagged too is prompt-induced, shown, not counted.
* PromQL: the query's value against its threshold, as measured.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, replace
from enum import StrEnum

from rollout import error_evidence
from rollout.error_evidence import ErrorEvidence
from rollout.evalues import satisfaction_evalue
from rollout.evidence import Evidence, error_rate_of, histogram_of
from rollout.plan import Check, Metric, RolloutPlan
from rollout.tail_evidence import (
    REFERENCE_TAIL_ANSWERS,
    TailEvidence,
    has_reference,
    tail_evalue,
    tail_levels,
)
from rollout.tenants import Capped, capped
from rollout.traffic import FULL_WEIGHT_BP
from rollout.windows import VariantWindow, Window

STATISTICAL = frozenset({
    Metric.ERROR_RATE,
    Metric.LATENCY_P95,
    Metric.TIME_TO_FIRST_TOKEN_P95,
    Metric.TIME_PER_OUTPUT_TOKEN_P95,
    Metric.SATISFACTION,
})  # fmt: skip


class Status(StrEnum):
    PASS = "pass"
    SKIPPED = "skipped"  # not judged in this step (e.g. satisfaction in shadow, unreviewed)
    INCONCLUSIVE = "inconclusive"
    FAIL = "fail"

    @property
    def severity(self) -> int:
        return _SEVERITY[self]


_SEVERITY = {Status.PASS: 0, Status.SKIPPED: 0, Status.INCONCLUSIVE: 1, Status.FAIL: 2}


@dataclass(frozen=True, slots=True)
class CheckResult:
    """One check's answer, with the figures behind it (for people and the audit log)."""

    name: str
    metric: Metric
    status: Status
    reason: str
    candidate: float | None = None
    stable: float | None = None
    threshold: float | None = None
    candidate_samples: float = 0.0
    stable_samples: float = 0.0
    evidence: float | None = None  # the e-value; fail at 1 / alpha
    evidence_needed: float | None = None
    test: str | None = None  # which of the check's tests holds the most evidence


@dataclass(frozen=True, slots=True)
class Verdict:
    results: tuple[CheckResult, ...] = ()
    candidate_requests: float = 0.0  # in the current step
    no_headroom: str | None = None  # why the candidate's pool cannot take a higher weight now

    @property
    def status(self) -> Status:
        """Worst first: any fail fails, any inconclusive waits, else pass."""
        if not self.results:
            return Status.PASS
        worst = max(self.results, key=lambda r: r.status.severity)
        return Status.PASS if worst.status is Status.SKIPPED else worst.status

    @property
    def failures(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.FAIL)

    @property
    def waiting_on(self) -> tuple[CheckResult, ...]:
        return tuple(r for r in self.results if r.status is Status.INCONCLUSIVE)

    @classmethod
    def unavailable(cls, plan: RolloutPlan, why: str) -> Verdict:
        """Every check inconclusive: the metric source did not answer."""
        reason = f"no data: {why}"
        return cls(
            tuple(
                CheckResult(c.name, c.metric, Status.INCONCLUSIVE, reason, threshold=c.threshold)
                for c in plan.checks
            )
        )


@dataclass(frozen=True, slots=True)
class Exposure:
    """How the candidate meets users in the step being judged."""

    shadow: bool  # mirrored copies only: nobody sees, so nobody scores, its answers
    weight_bp: int  # at 100% stable serves nobody: there is nothing to compare with


def judge(
    plan: RolloutPlan,
    evidence: Evidence,
    exposure: Exposure,
    custom: Mapping[str, float | None] | None = None,
) -> Verdict:
    """Every check of the plan against the evidence. `custom`: PromQL values by check name."""
    alpha = (1 - plan.confidence) / max(1, sum(c.metric in STATISTICAL for c in plan.checks))
    context = _Context(plan, evidence, exposure, 1 / alpha, custom or {})
    step = evidence.step
    requests = step.candidate.requests if step else 0.0
    return Verdict(tuple(_judge_one(check, context) for check in plan.checks), requests)


@dataclass(frozen=True, slots=True)
class _Context:
    plan: RolloutPlan
    evidence: Evidence
    exposure: Exposure
    needed: float  # e-value at which a statistical check fails
    custom: Mapping[str, float | None]


def _judge_one(check: Check, ctx: _Context) -> CheckResult:
    if check.metric is Metric.SAFETY:
        return _safety(check, ctx)
    if check.metric is Metric.PROMQL:
        return _promql(check, ctx)
    if check.metric is Metric.SATISFACTION and ctx.exposure.shadow:
        return _blind_reviews(check, ctx)
    if ctx.exposure.weight_bp >= FULL_WEIGHT_BP and not ctx.exposure.shadow:
        return CheckResult(
            check.name, check.metric, Status.SKIPPED,
            "stable serves no traffic at 100%: nothing to compare with",
        )  # fmt: skip
    if check.metric is Metric.ERROR_RATE:
        return _error_rate(check, ctx)
    if check.metric is Metric.SATISFACTION:
        return _users_scores(check, ctx)
    return _tail_check(check, ctx)


def _decide(
    check: Check,
    ctx: _Context,
    *,
    evidence: float,
    values: tuple[float | None, float | None],
    unit: str,
    test: str | None = None,
    looks_worse: bool = True,
    wait: str | None = None,
) -> CheckResult:
    """The shared rule: fail on confidence, pass on enough samples and weak evidence, else wait.

    `looks_worse`: whether the latest data still points the way the evidence does; evidence
    past halfway holds a pass back only while it does. `wait`: why the check may not pass
    yet whatever its evidence (its evidence is being damped).
    """
    step = _step(ctx)
    n_c, n_s = _samples(check.metric, step.candidate), _samples(check.metric, step.stable)
    figures = dict(
        candidate=values[0], stable=values[1], threshold=check.threshold,
        candidate_samples=n_c, stable_samples=n_s, evidence=evidence, evidence_needed=ctx.needed,
        test=test,
    )  # fmt: skip
    minimum = ctx.plan.min_samples
    # No sample floor for a fail: the e-value is valid at any sample size, and a candidate
    # failing every request must not serve `min_samples` of them first. The floor guards
    # a pass, which the absence of evidence at a few samples cannot justify.
    if evidence >= ctx.needed:
        reason = f"candidate worse than stable by more than {_threshold(check)} ({unit}), "
        reason += f"confidence {ctx.plan.confidence:.0%}"
        return CheckResult(check.name, check.metric, Status.FAIL, reason, **figures)
    if min(n_c, n_s) < minimum:
        reason = f"waiting for samples: {n_c:.0f} candidate, {n_s:.0f} stable of {minimum} each"
        return CheckResult(check.name, check.metric, Status.INCONCLUSIVE, reason, **figures)
    if wait is not None:
        return CheckResult(check.name, check.metric, Status.INCONCLUSIVE, wait, **figures)
    if evidence >= math.sqrt(ctx.needed) and looks_worse:
        reason = f"looks worse than {_threshold(check)} ({unit}), not yet with confidence"
        return CheckResult(check.name, check.metric, Status.INCONCLUSIVE, reason, **figures)
    reason = f"within {_threshold(check)} ({unit})"
    return CheckResult(check.name, check.metric, Status.PASS, reason, **figures)


def _threshold(check: Check) -> str:
    if check.metric is Metric.SATISFACTION:
        return f"{check.threshold:g} points"
    return f"{check.threshold:.0%}"


def _samples(metric: Metric, v: VariantWindow) -> float:
    if metric is Metric.ERROR_RATE:
        return v.requests
    if metric is Metric.SATISFACTION:
        return v.feedback_count
    return histogram_of(v, metric).total


def _step(ctx: _Context) -> Window:
    return ctx.evidence.step or Window(VariantWindow(), VariantWindow(), 0.0, 0.0)


def _error_rate(check: Check, ctx: _Context) -> CheckResult:
    w = _step(ctx)
    rate_c = w.candidate.errors / w.candidate.requests if w.candidate.requests else None
    rate_s = w.stable.errors / w.stable.requests if w.stable.requests else None
    errors = ctx.evidence.error_rates.get(check.name, ErrorEvidence())
    stable_rate = error_rate_of(ctx.evidence.attempt.stable) if ctx.evidence.attempt else 0.0
    found = error_evidence.assess(errors, stable_rate)
    test = found.leading
    if errors.damped_blocks:
        test += f"; {errors.damped_blocks} burst block(s) damped"
    # The evidence never decays while the candidate is healthy (the plug-in bets stop): what
    # the step shows decides whether evidence past halfway still holds a pass back.
    worse = rate_c is None or rate_s is None or rate_c > (1 + check.threshold) * rate_s
    # Damped evidence is evidence not yet heard: a burst that lasts is a regression.
    wait = None
    if found.bursting:
        wait = "a burst of the candidate's errors in the last minutes: waiting to see if it lasts"
    return _decide(
        check, ctx, evidence=found.evalue, values=(rate_c, rate_s), unit="error rate",
        test=test, looks_worse=worse, wait=wait,
    )  # fmt: skip


def _tail_check(check: Check, ctx: _Context) -> CheckResult:
    w = _step(ctx)
    q = check.tail_quantile
    h_c, h_s = histogram_of(w.candidate, check.metric), histogram_of(w.stable, check.metric)
    levels = tail_levels(q)
    seen = ctx.evidence.tail_levels.get(check.name, (TailEvidence(),) * len(levels))
    per_level = [tail_evalue(t) for t in seen]
    top = max(range(len(levels)), key=per_level.__getitem__)
    if seen[0].trials <= 0:  # nothing judged yet: no evidence either way, so no pass
        if has_reference(h_s, q) and h_c.total <= 0:
            why = "waiting for the candidate's answers"
        elif has_reference(h_s, q):
            why = f"stable's p{100 * q:g} is a reference now: judging from the next interval"
        else:
            needed = math.ceil(REFERENCE_TAIL_ANSWERS / (1 - q))
            why = (
                f"waiting for stable's p{100 * q:g}: {h_s.total:.0f} stable answers in the "
                f"step, {needed} make a reference"
            )
        return CheckResult(
            check.name, check.metric, Status.INCONCLUSIVE, why, threshold=check.threshold,
            candidate_samples=h_c.total, stable_samples=h_s.total,
        )  # fmt: skip
    return _decide(
        check, ctx,
        evidence=sum(per_level) / len(per_level),
        values=(h_c.quantile(q), h_s.quantile(q)),
        unit=f"{check.metric.value} at p{100 * q:g}, seconds",
        test=f"share above {1 + check.threshold:g}x stable's p{100 * levels[top]:g}",
    )  # fmt: skip


def _satisfaction(
    check: Check, ctx: _Context, *, paired: bool = False, unit: str = "mean score, points"
) -> CheckResult:
    w = _step(ctx)
    n_c, n_s = w.candidate.feedback_count, w.stable.feedback_count
    mean_c = 100 * w.candidate.feedback_sum / n_c if n_c else None
    mean_s = 100 * w.stable.feedback_sum / n_s if n_s else None
    attempt = ctx.evidence.attempt
    evalue = satisfaction_evalue(check.threshold, attempt, paired=paired) if attempt else 1.0
    return _decide(check, ctx, evidence=evalue, values=(mean_c, mean_s), unit=unit)


def _users_scores(check: Check, ctx: _Context) -> CheckResult:
    """Satisfaction at weights: users' scores, no tenant holding more than its share."""
    share, evidence = ctx.plan.max_tenant_share, ctx.evidence
    step = _capped_window(_step(ctx), share)
    attempt = _capped_window(evidence.attempt, share) if evidence.attempt else None
    result = _satisfaction(
        check, replace(ctx, evidence=replace(evidence, attempt=attempt, step=step))
    )
    if result.status is not Status.INCONCLUSIVE:
        return result
    minimum, raw = ctx.plan.min_samples, _step(ctx)
    short = [
        f"{v.feedback_count:.0f} {name} scores, but from {c.tenants} tenant(s)"
        for name, v in (("candidate", raw.candidate), ("stable", raw.stable))
        if (c := _cap(v, share)).count < minimum <= v.feedback_count
    ]
    if not short:
        return result
    reason = "; ".join(short) + f": no tenant may decide more than {share:.0%} of the evidence"
    return replace(result, reason=f"{reason} ({result.reason})")


def _cap(v: VariantWindow, share: float) -> Capped:
    return capped(v.feedback_count, v.feedback_sum, v.feedback_tenants, share)


def _capped_window(w: Window, share: float) -> Window:
    def one(v: VariantWindow) -> VariantWindow:
        c = _cap(v, share)
        return replace(v, feedback_count=c.count, feedback_sum=c.total)

    return replace(w, stable=one(w.stable), candidate=one(w.candidate))


def _blind_reviews(check: Check, ctx: _Context) -> CheckResult:
    """Satisfaction in shadow: reviewers' blind preferences stand in for users' scores."""
    evidence = ctx.evidence
    reviewed = evidence.step_reviews.candidate.feedback_count if evidence.step_reviews else 0.0
    if reviewed <= 0:
        return CheckResult(
            check.name, check.metric, Status.SKIPPED,
            "no blind reviews yet in this step: shadow answers reach no user to score them",
            threshold=check.threshold,
        )  # fmt: skip
    reviews = replace(evidence, attempt=evidence.reviews, step=evidence.step_reviews)
    result = _satisfaction(
        check, replace(ctx, evidence=reviews), paired=True, unit="mean blind-review score, points"
    )
    minimum = ctx.plan.min_samples
    if result.status is Status.FAIL or reviewed >= minimum:
        return result
    reason = f"{reviewed:.0f} blind review(s) in this step, a verdict needs {minimum}: "
    reason += "not holding the step"
    return replace(result, status=Status.SKIPPED, reason=reason)


def _safety(check: Check, ctx: _Context) -> CheckResult:
    attempt, step = ctx.evidence.attempt, _step(ctx)
    incidents = attempt.candidate.incidents if attempt else 0.0
    figures = dict(
        candidate=incidents, stable=attempt.stable.incidents if attempt else 0.0,
        candidate_samples=step.candidate.requests, stable_samples=step.stable.requests,
    )  # fmt: skip
    prompted, aside = attempt.candidate.prompt_incidents if attempt else 0.0, ""
    if prompted:  # shown, not counted: stable's answers to the same prompts were flagged too
        aside = f"; {prompted:.0f} prompt-induced incident(s) (stable flagged too) not counted"
    if incidents > 0:
        reason = (
            f"{incidents:.0f} safety incident(s) in the candidate's answers: any one is critical"
        )
        return CheckResult(check.name, check.metric, Status.FAIL, reason + aside, **figures)
    if step.candidate.requests < ctx.plan.min_samples:
        reason = f"no incident yet; waiting for {ctx.plan.min_samples} candidate answers"
        return CheckResult(check.name, check.metric, Status.INCONCLUSIVE, reason + aside, **figures)
    reason = f"no incident in {step.candidate.requests:.0f} candidate answers"
    return CheckResult(check.name, check.metric, Status.PASS, reason + aside, **figures)


def _promql(check: Check, ctx: _Context) -> CheckResult:
    value = ctx.custom.get(check.name)
    if value is None or math.isnan(value):
        return CheckResult(
            check.name, check.metric, Status.INCONCLUSIVE, "the query returned no data",
            threshold=check.threshold,
        )  # fmt: skip
    status = Status.FAIL if value > check.threshold else Status.PASS
    word = "above" if status is Status.FAIL else "within"
    return CheckResult(
        check.name, check.metric, status, f"{value:g} {word} the threshold {check.threshold:g}",
        candidate=value, threshold=check.threshold,
    )  # fmt: skip
