"""Evidence: what a rollout attempt has seen, folded in one evaluation interval at a time.

Pure, and stored with the rollout (`rollout/record.py`), so it survives restarts.
The windows keep counts and histograms for the step and the whole attempt; each
statistical check keeps its own e-process state (`rollout/error_evidence.py`,
`rollout/tail_evidence.py`); `rollout/analysis.py` judges them.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from rollout import error_evidence, tail_evidence
from rollout.error_evidence import Counts, ErrorEvidence
from rollout.plan import Metric, RolloutPlan
from rollout.tail_evidence import TailEvidence, tail_levels
from rollout.windows import Histogram, VariantWindow, Window


@dataclass(frozen=True, slots=True)
class Evidence:
    """What a rollout attempt has seen so far; stored with the rollout, so it survives restarts."""

    attempt: Window | None = None  # since the attempt started: every step
    step: Window | None = None  # since the current step started
    # By check name. (Earlier versions kept `error_log_lr` and `tails`: a rollout stored
    # by them starts these afresh, which only forgets evidence.)
    error_rates: Mapping[str, ErrorEvidence] = field(default_factory=dict)
    tail_levels: Mapping[str, tuple[TailEvidence, ...]] = field(default_factory=dict)
    # Blind reviews' scores of shadow pairs (as feedback), in shadow steps only.
    reviews: Window | None = None  # since the attempt started
    step_reviews: Window | None = None  # since the current step started

    def next_step(self) -> Evidence:
        return replace(self, step=None, step_reviews=None)


def _add(total: Window | None, interval: Window) -> Window:
    return interval if total is None else total + interval


def accumulate(
    evidence: Evidence, plan: RolloutPlan, interval: Window, reviews: Window | None = None
) -> Evidence:
    """Fold one evaluation interval, and in shadow its blind reviews, into the evidence."""
    step = _add(evidence.step, interval)
    attempt = _add(evidence.attempt, interval)
    tails, errors = dict(evidence.tail_levels), dict(evidence.error_rates)
    for check in plan.checks:
        if check.metric is Metric.ERROR_RATE:
            errors[check.name] = error_evidence.observe(
                errors.get(check.name, ErrorEvidence()),
                check.threshold,
                _counts(interval),
                seconds=max(interval.end - interval.start, 0.0),
                stable_rate=error_rate_of(attempt.stable),
            )
        elif check.metric in HISTOGRAMS:
            tails[check.name] = tail_evidence.observe(
                tails.get(check.name),
                tail_levels(check.tail_quantile),
                check.threshold,
                histogram_of(step.stable, check.metric),
                histogram_of(interval.candidate, check.metric),
            )
    if reviews is not None:
        evidence = replace(
            evidence,
            reviews=_add(evidence.reviews, reviews),
            step_reviews=_add(evidence.step_reviews, reviews),
        )
    return replace(evidence, attempt=attempt, step=step, error_rates=errors, tail_levels=tails)


def _counts(w: Window) -> Counts:
    return Counts(w.candidate.requests, w.candidate.errors, w.stable.requests, w.stable.errors)


def error_rate_of(v: VariantWindow) -> float:
    return v.errors / v.requests if v.requests > 0 else 0.0


def histogram_of(v: VariantWindow, metric: Metric) -> Histogram:
    """The variant's histogram that a latency check of `metric` reads."""
    return getattr(v, HISTOGRAMS[metric])


HISTOGRAMS = {
    Metric.LATENCY_P95: "latency",
    Metric.TIME_TO_FIRST_TOKEN_P95: "ttft",
    Metric.TIME_PER_OUTPUT_TOKEN_P95: "time_per_token",
}
