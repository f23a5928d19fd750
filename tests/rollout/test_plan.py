import pytest
from pydantic import ValidationError

from rollout.plan import (
    DEFAULT_CHECKS,
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
