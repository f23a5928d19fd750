"""`rollgate` against a fake admin API: plan files are checked before anything is sent."""

from __future__ import annotations

import contextlib
import io
import json
import tempfile
from pathlib import Path

import httpx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rollout.api import rollout_view
from rollout.cli import EXIT_USAGE, main, render_rollout
from rollout.machine import start
from rollout.plan import MAX_PLAN_BYTES, MAX_STEPS, RolloutPlan
from rollout.record import Rollout
from rollout.traffic import Variant

PLAN = {"route": "support", "candidate": {"name": "v2", "backend": "local", "model": "v2"}}


def view(plan: dict = PLAN) -> dict:
    validated = RolloutPlan.model_validate(plan)
    status, _ = start("support-1", validated, 0.0, "alice")
    return rollout_view(Rollout(validated, Variant("base", "local", "tiny"), status, 0.0))


class FakeApi:
    """Answers every call with `answer`; keeps what was sent."""

    def __init__(self, answer: dict | None = None, status: int = 200) -> None:
        self.answer, self.status = answer if answer is not None else view(), status
        self.sent: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.sent.append(request)
        return httpx.Response(self.status, json=self.answer)


def rollgate(*argv: str, api: FakeApi) -> tuple[int, str, str]:
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = main(["--url", "http://gateway", *argv], transport=httpx.MockTransport(api))
    return code, out.getvalue(), err.getvalue()


def apply(tmp_path: Path, content: str | bytes) -> tuple[int, str, str, FakeApi]:
    path = tmp_path / "plan.yaml"
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    api = FakeApi()
    return (*rollgate("apply", "-f", str(path), api=api), api)


ROUTE = "route: support\ncandidate: {name: v2, backend: local, model: v2}\n"


@pytest.mark.parametrize(
    ("content", "says"),
    [
        (
            ROUTE + "steps: [{kind: shadow, min_duration_s: .inf}]",
            "steps.0.shadow.min_duration_s: Input should be a finite number",
        ),
        (ROUTE + "max_tenant_share: .nan", "max_tenant_share: Input should be a finite number"),
        (
            ROUTE + "checks: [{name: q, metric: promql, threshold: -.inf, query: up}]",
            "checks.0.threshold: Input should be a finite number",
        ),
        (ROUTE + "steps: [{kind: weight, percent: lots}]", "steps.0.weight.percent: Input should"),
        (ROUTE + "surprise: 1", "surprise: Extra inputs are not permitted"),
        (
            ROUTE + "steps: [" + ", ".join(["{kind: pause}"] * (MAX_STEPS + 1)) + "]",
            f"steps: Tuple should have at most {MAX_STEPS} items",
        ),
        (
            ROUTE + "steps: [{kind: weight, percent: 10}, {kind: weight, percent: 5}]",
            "steps.1.percent: weights must rise (5 after 10)",
        ),
        (ROUTE + "steps: [{kind: pause, reason: '" + "x" * 501 + "'}]", "at most 500 characters"),
        ("- route\n- support\n", "a plan is a mapping"),
        ("", "a plan is a mapping"),
        ("route: [support", "not YAML"),
        ("route: 2024-13-45\n", "not YAML: month must be in 1..12"),
        ("[" * 50_000, "not YAML"),
        (b"route: \xff\xfe support\n", "not YAML"),
    ],
)
def test_a_bad_plan_file_is_exit_2_naming_the_field_and_nothing_is_sent(
    tmp_path, content, says
) -> None:
    code, _, err, api = apply(tmp_path, content)
    assert code == EXIT_USAGE
    assert err.startswith(f"rollgate: {tmp_path / 'plan.yaml'}: ")
    assert says in err
    assert "Traceback" not in err
    assert api.sent == []


def test_a_list_whose_items_failed_is_not_also_said_to_be_too_short(tmp_path) -> None:
    _, _, err, _ = apply(tmp_path, ROUTE + "steps: [{kind: shadow, min_duration_s: .inf}]")
    assert err.count("rollgate: ") == 1


def test_a_plan_file_over_the_limit_is_not_read_past_it(tmp_path) -> None:
    code, _, err, api = apply(tmp_path, ROUTE + "#" * MAX_PLAN_BYTES)
    assert (code, api.sent) == (EXIT_USAGE, [])
    assert f"a plan is at most {MAX_PLAN_BYTES} bytes" in err
    code, _, err = rollgate("apply", "-f", "/dev/zero", api=api)  # endless
    assert code == EXIT_USAGE
    assert "at most" in err


@pytest.mark.parametrize("name", ["missing.yaml", "."])
def test_an_unreadable_plan_file_is_exit_2(tmp_path, name) -> None:
    code, _, err = rollgate("apply", "-f", str(tmp_path / name), api=FakeApi())
    assert code == EXIT_USAGE
    assert "cannot read the plan" in err


def test_a_valid_plan_is_sent_as_the_fields_the_file_sets(tmp_path) -> None:
    code, out, _, api = apply(tmp_path, ROUTE + "steps: [{kind: weight, percent: 50}]")
    assert code == 0
    assert "phase RUNNING" in out
    (sent,) = api.sent
    assert json.loads(sent.content) == {
        **PLAN,
        "steps": [{"kind": "weight", "percent": 50.0}],
    }  # the gateway's own defaults apply to the rest


def test_status_shows_quarantined_rollouts_apart() -> None:
    quarantined = {"route": "billing", "revision": 3, "error": "steps.0.x: not a number"}
    api = FakeApi({"rollouts": [view()], "quarantined": [quarantined]})
    code, out, _ = rollgate("status", api=api)
    assert code == 0
    table, apart = out.split("\n\n")
    assert "support" in table
    assert "billing" not in table
    assert "QUARANTINED" in apart
    assert apart.splitlines()[1].split(maxsplit=2) == ["billing", "3", "steps.0.x: not a number"]


def test_deleting_a_quarantined_rollout_says_so() -> None:
    api = FakeApi({"route": "billing", "revision": 3, "error": "bad"})
    code, out, _ = rollgate("delete", "billing", api=api)
    assert code == 0
    assert out.strip() == "deleted the unreadable rollout (revision 3) of billing"
    assert api.sent[0].method == "DELETE"


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    content=st.one_of(
        st.binary(max_size=300),
        st.text(max_size=300),
        st.recursive(
            st.none() | st.booleans() | st.floats() | st.integers() | st.text(max_size=20),
            lambda inner: (
                st.lists(inner, max_size=4)
                | st.dictionaries(st.sampled_from(["route", "steps", "kind", "x"]), inner)
            ),
            max_leaves=20,
        ).map(lambda doc: yaml.safe_dump({**PLAN, "steps": doc})),
    )
)
def test_any_plan_file_is_sent_valid_or_refused_with_exit_2(content: str | bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        code, _, err, api = apply(Path(tmp), content)
    assert code in (0, EXIT_USAGE)
    assert len(api.sent) == (code == 0)
    assert "Traceback" not in err


def test_get_shows_each_checks_evidence_against_its_level_and_the_test_that_fired() -> None:
    check = {
        "name": "error-rate", "status": "fail", "reason": "candidate worse", "candidate": 0.5,
        "stable": 0.01, "threshold": 0.1, "candidate_samples": 12.0, "stable_samples": 900.0,
        "evidence": 179.2, "evidence_needed": 60.0, "test": "outage",
    }  # fmt: skip
    shown = render_rollout({
        "route": "support", "rollout_id": "r1", "attempt": 1, "phase": "rolled_back",
        "stable": {"name": "base"}, "candidate": {"name": "v2"}, "weight_percent": 0.0,
        "shadow_sample": 0.0, "steps": [], "step": 0, "reason": "", "checks": [check],
    })  # fmt: skip
    assert "179/60" in shown
    assert "candidate worse [outage]" in shown
