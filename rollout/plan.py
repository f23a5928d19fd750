"""Rollout plans: which candidate a route tries, through which steps, judged by which checks.

Read from YAML or JSON; every rule a plan breaks is reported with the field
that breaks it. Every number is finite and every size bounded (the limits
below): a plan is stored with its rollout as JSON, which has no inf or nan, and
read again on every evaluation.

    >>> plan = RolloutPlan.model_validate({
    ...     "route": "support",
    ...     "candidate": {"name": "support-v2", "backend": "local", "model": "support-v2"},
    ... })
    >>> [step.label for step in plan.steps]
    ['shadow', '5%', '10%', '25%', '50%', '100%']
"""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, model_validator

from rollout.traffic import Variant

NAME = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"  # routes, variants, backends, checks

# Plan limits. A plan travels in one admin request, is stored with its rollout and
# parsed again with every read of it, so it is small by construction.
MAX_PLAN_BYTES = 64 * 1024  # the plan file or request body, before it is parsed
MAX_STEPS = 64
MAX_CHECKS = 32
MAX_REASON_CHARS = 500  # a pause step's reason, as an SRE's pause reason
MAX_QUERY_CHARS = 2000  # a PromQL check's query
MAX_MODEL_CHARS = 256  # the candidate's model name as vLLM serves it
MAX_ADAPTER_CHARS = 1024  # the candidate's adapter directory
# Every string is bounded (a pattern or a length), which also refuses lone surrogates
# (U+D800..U+DFFF, which Python's json and YAML let in): what is accepted is UTF-8.


class _Strict(BaseModel):
    # allow_inf_nan=False: inf and nan are refused in every float field, naming it.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class ShadowStep(_Strict):
    """The candidate answers mirrored copies; clients only ever see stable."""

    kind: Literal["shadow"] = "shadow"
    sample: float = Field(default=1.0, gt=0, le=1)
    min_duration_s: float = Field(default=60.0, ge=0)
    min_requests: int = Field(default=100, ge=0)

    @property
    def label(self) -> str:
        return "shadow"


class WeightStep(_Strict):
    """The candidate serves `percent` of the route's users."""

    kind: Literal["weight"] = "weight"
    percent: float = Field(gt=0, le=100)
    min_duration_s: float = Field(default=60.0, ge=0)
    min_requests: int = Field(default=100, ge=0)

    @property
    def label(self) -> str:
        return f"{self.percent:g}%"


class PauseStep(_Strict):
    """Hold here until an SRE resumes or promotes."""

    kind: Literal["pause"] = "pause"
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)

    @property
    def label(self) -> str:
        return "pause"


Step = Annotated[ShadowStep | WeightStep | PauseStep, Field(discriminator="kind")]


class Metric(StrEnum):
    ERROR_RATE = "error_rate"
    LATENCY_P95 = "latency_p95"
    TIME_TO_FIRST_TOKEN_P95 = "ttft_p95"
    TIME_PER_OUTPUT_TOKEN_P95 = "time_per_output_token_p95"  # fair to a more verbose adapter
    SATISFACTION = "satisfaction"
    SAFETY = "safety"
    PROMQL = "promql"


LATENCY_METRICS = frozenset({
    Metric.LATENCY_P95,
    Metric.TIME_TO_FIRST_TOKEN_P95,
    Metric.TIME_PER_OUTPUT_TOKEN_P95,
})  # fmt: skip
DEFAULT_QUANTILE = 0.95


class Check(_Strict):
    """One comparison of candidate against stable.

    `threshold` means, by metric: the largest tolerated relative increase over
    stable (0.10 = 10% worse) for error rate and latencies; the largest
    tolerated drop in points (0..100) for satisfaction; the largest tolerated
    value of the query for PromQL (evaluated with `$variant` replaced by the
    candidate's name). Safety tolerates no incident and takes no threshold.

    `quantile` (latency checks only; 0.95 when left out, whatever the metric's
    name says): the quantile compared, and where the check of the upper tail
    starts: answers above (1 + threshold) times stable's quantile, and above the
    same multiple of the quantile where a fifth as many lie: p95 and p99, say.
    """

    name: str = Field(pattern=NAME)
    metric: Metric
    threshold: float | None = Field(default=None, ge=0)
    query: Annotated[str, Field(min_length=1, max_length=MAX_QUERY_CHARS)] | None = None
    quantile: float | None = Field(default=None, ge=0.5, le=0.999)

    @model_validator(mode="after")
    def _fits_its_metric(self) -> Check:
        if self.metric is Metric.SAFETY:
            if self.threshold is not None:
                raise ValueError("threshold: a safety check tolerates no incident; leave it out")
        elif self.threshold is None:
            raise ValueError(f"threshold: required for a {self.metric.value} check")
        if (self.metric is Metric.PROMQL) != (self.query is not None):
            raise ValueError("query: required for a promql check, and only there")
        if self.quantile is not None and self.metric not in LATENCY_METRICS:
            raise ValueError("quantile: only latency checks compare a quantile")
        return self

    @property
    def tail_quantile(self) -> float:
        return DEFAULT_QUANTILE if self.quantile is None else self.quantile


DEFAULT_STEPS: tuple[ShadowStep | WeightStep | PauseStep, ...] = (
    ShadowStep(),
    *(WeightStep(percent=p) for p in (5, 10, 25, 50, 100)),
)
DEFAULT_CHECKS: tuple[Check, ...] = (
    Check(name="error-rate", metric=Metric.ERROR_RATE, threshold=0.10),
    Check(name="latency-p95", metric=Metric.LATENCY_P95, threshold=0.20),
    Check(name="satisfaction", metric=Metric.SATISFACTION, threshold=5.0),
    Check(name="safety", metric=Metric.SAFETY),
)


class CandidateSpec(_Strict):
    name: str = Field(pattern=NAME)
    backend: str = Field(pattern=NAME)
    model: str = Field(min_length=1, max_length=MAX_MODEL_CHARS)
    # The LoRA adapter's directory as the vLLM replicas see it. Given, the gateway
    # loads it as `model` on every replica of `backend` before the rollout starts,
    # and again on replicas that restart; left out, vLLM must serve `model` already.
    adapter: Annotated[str, Field(min_length=1, max_length=MAX_ADAPTER_CHARS)] | None = None

    def variant(self) -> Variant:
        return Variant(name=self.name, backend=self.backend, model=self.model)


class RolloutPlan(_Strict):
    route: str = Field(pattern=NAME)
    candidate: CandidateSpec
    steps: tuple[Step, ...] = Field(default=DEFAULT_STEPS, min_length=1, max_length=MAX_STEPS)
    checks: tuple[Check, ...] = Field(default=DEFAULT_CHECKS, max_length=MAX_CHECKS)
    confidence: float = Field(default=0.95, gt=0.5, lt=1)
    min_samples: int = Field(default=200, ge=1)
    evaluation_interval_s: float = Field(default=10.0, gt=0)
    inconclusive_limit_s: float = Field(default=900.0, gt=0)
    # Users' scores: no tenant may hold more than this share of the satisfaction evidence,
    # so a single tenant cannot decide a rollout alone (1 lifts the cap).
    max_tenant_share: float = Field(default=0.5, gt=0, le=1)

    @model_validator(mode="after")
    def _steps_only_go_forward(self) -> RolloutPlan:
        last_weight, seen_weight = 0.0, False
        for i, step in enumerate(self.steps):
            if isinstance(step, ShadowStep) and seen_weight:
                raise ValueError(f"steps.{i}: a shadow step must come before every weight step")
            if isinstance(step, WeightStep):
                if step.percent <= last_weight:
                    raise ValueError(
                        f"steps.{i}.percent: weights must rise ({step.percent:g} after "
                        f"{last_weight:g})"
                    )
                last_weight, seen_weight = step.percent, True
        names = [check.name for check in self.checks]
        duplicates = sorted({n for n in names if names.count(n) > 1})
        if duplicates:
            raise ValueError(f"checks: names must be unique ({', '.join(duplicates)})")
        return self

    @classmethod
    def load(cls, path: Path) -> RolloutPlan:
        """From a YAML (or JSON, which is YAML) file."""
        return cls.model_validate(yaml.safe_load(path.read_text()))
