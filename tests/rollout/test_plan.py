import json
import math
import typing

import pytest
from pydantic import BaseModel, ValidationError

from rollout import plan as plan_module
from rollout.plan import (
    DEFAULT_CHECKS,
    MAX_ADAPTER_CHARS,
    MAX_CHECKS,
    MAX_MODEL_CHARS,
    MAX_PLAN_BYTES,
    MAX_QUERY_CHARS,
    MAX_REASON_CHARS,
    MAX_STEPS,
    Check,
    Metric,
    PauseStep,
    RolloutPlan,
    ShadowStep,
    WeightStep,
)

CANDIDATE = {"name": "support-v2", "backend": "local", "model": "support-v2"}


def plan(**fields) -> RolloutPlan:
    return RolloutPlan.model_validate({"route": "support", "candidate": CANDIDATE, **fields})


def test_the_default_plan_is_the_one_users_asked_for():
    p = plan()
    assert isinstance(p.steps[0], ShadowStep)
    assert [s.percent for s in p.steps[1:]] == [5, 10, 25, 50, 100]
    assert {c.metric for c in p.checks} == {
        Metric.ERROR_RATE,
        Metric.LATENCY_P95,
        Metric.SATISFACTION,
        Metric.SAFETY,
    }
    assert {c.name: c.threshold for c in DEFAULT_CHECKS} == {
        "error-rate": 0.10,
        "latency-p95": 0.20,
        "satisfaction": 5.0,
        "safety": None,
    }
    assert p.confidence == 0.95
    assert p.candidate.variant().model == "support-v2"


def test_a_plan_from_yaml(tmp_path):
    path = tmp_path / "plan.yaml"
    path.write_text(
        "route: support\n"
        "candidate: {name: support-v2, backend: local, model: support-v2}\n"
        "steps:\n"
        "  - {kind: shadow, sample: 0.5, min_duration_s: 30}\n"
        "  - {kind: weight, percent: 1}\n"
        "  - {kind: pause, reason: look at the blind review}\n"
        "  - {kind: weight, percent: 100}\n"
        "checks:\n"
        "  - {name: ttft, metric: ttft_p95, threshold: 0.3}\n"
        "  - {name: refusals, metric: promql, threshold: 0.02,\n"
        "     query: 'rate(refusals_total{variant=\"$variant\"}[5m])'}\n"
    )
    p = RolloutPlan.load(path)
    assert [type(s) for s in p.steps] == [ShadowStep, WeightStep, PauseStep, WeightStep]
    assert p.steps[0].sample == 0.5
    assert [s.label for s in p.steps] == ["shadow", "1%", "pause", "100%"]
    assert p.checks[1].query.startswith("rate(")


@pytest.mark.parametrize(
    ("fields", "where", "rule"),
    [
        (
            {"steps": [{"kind": "weight", "percent": 10}, {"kind": "weight", "percent": 5}]},
            "steps.1.percent",
            "weights must rise",
        ),
        ({"steps": [{"kind": "weight", "percent": 0}]}, "steps.0.weight.percent", "greater than 0"),
        (
            {"steps": [{"kind": "weight", "percent": 120}]},
            "steps.0.weight.percent",
            "less than or equal to 100",
        ),
        (
            {"steps": [{"kind": "weight", "percent": 5}, {"kind": "shadow"}]},
            "steps.1",
            "before every weight step",
        ),
        (
            {"steps": [{"kind": "weight", "percent": 5, "min_duration_s": -1}]},
            "min_duration_s",
            "greater than or equal to 0",
        ),
        ({"steps": [{"kind": "canary"}]}, "steps.0", "does not match any of the expected tags"),
        ({"steps": []}, "steps", "at least 1 item"),
        (
            {"checks": [{"name": "x", "metric": "error_rate"}]},
            "threshold",
            "required for a error_rate check",
        ),
        (
            {"checks": [{"name": "x", "metric": "safety", "threshold": 1}]},
            "threshold",
            "tolerates no incident",
        ),
        (
            {"checks": [{"name": "x", "metric": "promql", "threshold": 1}]},
            "query",
            "required for a promql check",
        ),
        (
            {"checks": [{"name": "x", "metric": "latency_p95", "threshold": 0.2}] * 2},
            "checks",
            "names must be unique",
        ),
        (
            {"checks": [{"name": "x", "metric": "p99", "threshold": 0.2}]},
            "checks.0.metric",
            "Input should be",
        ),
        ({"confidence": 1.0}, "confidence", "less than 1"),
        ({"route": "no spaces"}, "route", "should match pattern"),
        ({"surprise": 1}, "surprise", "Extra inputs are not permitted"),
    ],
)
def test_invalid_plans_name_the_field_and_the_rule(fields, where, rule):
    with pytest.raises(ValidationError) as caught:
        plan(**fields)
    assert where in str(caught.value)
    assert rule in str(caught.value)


# --- finite numbers and bounded sizes ---------------------------------------------------------

VALID = {  # each model with a float field, as the smallest valid input
    ShadowStep: {},
    WeightStep: {"percent": 5},
    Check: {"name": "q", "metric": "promql", "threshold": 1, "query": "up"},
    RolloutPlan: {"route": "support", "candidate": CANDIDATE},
}


def float_fields(model: type[BaseModel]) -> list[str]:
    return [
        name
        for name, field in model.model_fields.items()
        if float in (field.annotation, *typing.get_args(field.annotation))
    ]


def test_every_model_with_a_float_field_is_covered():
    models = [m for m in vars(plan_module).values() if isinstance(m, type)]
    with_floats = {m for m in models if issubclass(m, BaseModel) and float_fields(m)}
    assert with_floats == set(VALID)


@pytest.mark.parametrize(
    ("model", "field"), [(m, f) for m in VALID for f in float_fields(m)], ids=str
)
@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
def test_every_float_field_takes_finite_numbers_only(model, field, value):
    with pytest.raises(ValidationError) as caught:
        model.model_validate({**VALID[model], field: value})
    (error,) = caught.value.errors()
    assert (error["loc"], error["msg"]) == ((field,), "Input should be a finite number")


@pytest.mark.parametrize("number", ["Infinity", "-Infinity", "NaN", "1e999"])
def test_a_json_plan_with_a_number_json_cannot_hold_is_refused(number):
    body = f'{{"route": "support", "candidate": {json.dumps(CANDIDATE)}, "confidence": {number}}}'
    with pytest.raises(ValidationError, match="confidence\n  Input should be a finite number"):
        RolloutPlan.model_validate_json(body)


def weights(n: int) -> list[dict]:
    return [{"kind": "weight", "percent": 100 * (i + 1) / n} for i in range(n)]


def checks(n: int) -> list[dict]:
    return [{"name": f"c{i}", "metric": "error_rate", "threshold": 0.1} for i in range(n)]


def promql(query: str) -> list[dict]:
    return [{"name": "q", "metric": "promql", "threshold": 1, "query": query}]


@pytest.mark.parametrize(
    ("field", "too_many", "where", "rule"),
    [
        ("steps", weights, "steps", f"at most {MAX_STEPS} items"),
        ("checks", checks, "checks", f"at most {MAX_CHECKS} items"),
        ("checks", lambda n: promql("u" * n), "checks.0.query", "at most 2000 characters"),
        (
            "steps",
            lambda n: [{"kind": "pause", "reason": "r" * n}],
            "steps.0.pause.reason",
            "at most 500 characters",
        ),
        (
            "candidate",
            lambda n: {**CANDIDATE, "model": "m" * n},
            "candidate.model",
            "at most 256 characters",
        ),
        (
            "candidate",
            lambda n: {**CANDIDATE, "adapter": "/" * n},
            "candidate.adapter",
            "at most 1024 characters",
        ),
    ],
    ids=["steps", "checks", "query", "reason", "model", "adapter"],
)
def test_sizes_are_bounded_at_the_limit(field, too_many, where, rule):
    limit = {
        "steps": MAX_STEPS,
        "checks.0.query": MAX_QUERY_CHARS,
        "checks": MAX_CHECKS,
        "steps.0.pause.reason": MAX_REASON_CHARS,
        "candidate.model": MAX_MODEL_CHARS,
        "candidate.adapter": MAX_ADAPTER_CHARS,
    }[where]
    plan(**{field: too_many(limit)})  # at the limit: fine
    with pytest.raises(ValidationError) as caught:
        plan(**{field: too_many(limit + 1)})
    assert where in str(caught.value)
    assert rule in str(caught.value)


def test_a_plan_at_every_limit_fits_in_the_bytes_allowed():
    """The byte limit leaves room for every step and check allowed, each with its longest
    reason, model and adapter (not every query at its longest: the bytes bound the whole)."""
    largest = plan(
        candidate={**CANDIDATE, "model": "m" * MAX_MODEL_CHARS, "adapter": "a" * MAX_ADAPTER_CHARS},
        steps=[{"kind": "pause", "reason": "r" * MAX_REASON_CHARS}] * MAX_STEPS,
        checks=checks(MAX_CHECKS),
    )
    assert len(largest.model_dump_json(exclude_defaults=True)) < MAX_PLAN_BYTES
