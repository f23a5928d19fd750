"""The locust users (headless profile, as the demo runs them) against a live gateway and vLLM."""

from __future__ import annotations

import time

import httpx
import pytest

from rollout.demo.load import LocustLoad
from serving.corpus import BRAND_VOICE
from tests.processes import GatewayProcess, metric_sum

pytestmark = pytest.mark.vllm

ROUTE = "support"
RUN_S = 25
USERS = 3
TENANTS = ("acme", "globex", "initech")


def test_the_headless_profile_drives_both_variants_streams_and_scores(
    vllm_server, tmp_path
) -> None:
    routes = {
        "backends": {"vllm": {"url": vllm_server.config.base_url}},
        "routes": [{"name": ROUTE, "stable": {"backend": "vllm", "model": "tiny-llama",
                                              "name": "base"}}],
    }  # fmt: skip
    plan = {
        "route": ROUTE,
        "candidate": {"name": BRAND_VOICE.name, "backend": "vllm", "model": BRAND_VOICE.name},
        "steps": [{"kind": "weight", "percent": 50, "min_duration_s": 3600}],
    }
    env = {"ROLLGATE_STATE": str(tmp_path / "state.db")}
    with GatewayProcess(routes, tmp_path, env) as gateway, gateway.admin() as admin:
        assert admin.post("/admin/rollouts", json=plan).status_code == 201
        keys = [gateway.create_key(tenant) for tenant in TENANTS]
        with LocustLoad(gateway.url, tmp_path, users=USERS, route=ROUTE, keys=keys) as users:
            time.sleep(RUN_S)
            assert users.running(), (tmp_path / "locust.log").read_text()[-2000:]
        metrics = httpx.get(f"{gateway.url}/metrics").text

    figures = {f.name: f for f in users.figures()}
    assert {"chat [base]", f"chat [{BRAND_VOICE.name}]"} <= figures.keys(), figures
    assert any(name.startswith("stream [") for name in figures), figures
    assert all(f.failures == 0 for f in figures.values()), figures
    # Locust's per-variant counts are the gateway's: names come from x-rollgate-variant.
    for variant, role in (("base", "stable"), (BRAND_VOICE.name, "candidate")):
        seen_by_users = sum(
            f.requests for name, f in figures.items() if name.endswith(f"[{variant}]")
        )
        answered = metric_sum(
            metrics, "rollgate_requests_total", route=ROUTE, variant=variant, role=role
        )
        assert seen_by_users > 5
        # Requests cut short when locust stops are answered but never reported by it.
        assert abs(seen_by_users - answered) <= USERS + 0.05 * answered, (
            variant, seen_by_users, answered,
        )  # fmt: skip
    # Users scored about half their answers (--feedback-share 0.5), by the brand-voice rubric.
    scores = metric_sum(metrics, "rollgate_feedback_score_count", route=ROUTE)
    answers = sum(f.requests for name, f in figures.items() if name != "feedback")
    assert abs(figures["feedback"].requests - scores) <= USERS + 0.05 * scores  # as above
    assert 0.25 * answers < scores < 0.75 * answers
    brand_mean = metric_sum(
        metrics, "rollgate_feedback_score_sum", route=ROUTE, variant=BRAND_VOICE.name
    ) / metric_sum(metrics, "rollgate_feedback_score_count", route=ROUTE, variant=BRAND_VOICE.name)
    base_mean = metric_sum(
        metrics, "rollgate_feedback_score_sum", route=ROUTE, variant="base"
    ) / metric_sum(metrics, "rollgate_feedback_score_count", route=ROUTE, variant="base")
    assert brand_mean > base_mean + 0.2  # the rubric: brand voice 1.0, plain 0.7
    # Every tenant's key was used (user i calls with key i mod 3), and none was refused.
    for tenant in TENANTS:
        assert (
            metric_sum(metrics, "rollgate_client_requests_total", tenant=tenant, outcome="admitted")
            > 0.1 * answers
        ), (tenant, answers)
    assert metric_sum(metrics, "rollgate_client_requests_total", outcome="unauthorized") == 0
