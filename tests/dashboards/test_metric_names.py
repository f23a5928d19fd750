"""Every metric the dashboard and the rules query is one a running gateway or vLLM exports.

The live test starts a real gateway process in front of real vLLM (CPU build) with a
candidate both shadowed and weighted, sends traffic, and compares names against
both servers' /metrics. Recording rules' outputs are produced by the rules themselves,
so only their inputs are checked; `up` and ALERTS are Prometheus' own.
"""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry, generate_latest

from gateway.assignment import bucket
from gateway.forward import FEEDBACK_HEADER
from gateway.metrics import GatewayMetrics
from gateway.pool_metrics import PoolCollector
from rollout.telemetry import ControlPlaneMetrics
from serving.corpus import BRAND_VOICE
from tests.dashboards.promql import (
    BUILT_IN,
    dashboard_queries,
    exported,
    load_dashboard,
    load_rules,
    matcher_labels,
    metric_names,
    recorded_names,
    rule_queries,
    variable_metrics,
)
from tests.processes import SECRET, GatewayProcess, metric_sum

ROUTE = "support"
TENANT = "acme"
WEIGHT = 50
VLLM_PREFIX = "vllm:"
EXPOSITION = """\
# HELP rollgate_failovers_total Candidate failures retried on stable.
# TYPE rollgate_failovers_total counter
# HELP rollgate_request_duration_seconds End-to-end time of an attempt.
# TYPE rollgate_request_duration_seconds histogram
rollgate_request_duration_seconds_bucket{route="a",variant="b",role="stable",le="+Inf"} 1.0
rollgate_request_duration_seconds_sum{route="a",variant="b",role="stable"} 0.5
rollgate_request_duration_seconds_count{route="a",variant="b",role="stable"} 1.0
"""


def queries() -> list:
    return dashboard_queries(load_dashboard()) + rule_queries(load_rules())


def used_names() -> set[str]:
    """Metric names the files read, less those the rules record and Prometheus' own."""
    names = set(variable_metrics(load_dashboard()).values())
    for query in queries():
        names |= metric_names(query.expr)
    return names - recorded_names(load_rules()) - BUILT_IN


def unexported(used: set[str], exposition: dict[str, set[str]]) -> set[str]:
    return {name for name in used if name not in exposition}


def mismatched_labels(exposition: dict[str, set[str]]) -> list[str]:
    """Selectors matching on a label their metric's samples do not carry.

    Only metrics with samples can be judged: a family before its first event shows no labels.
    """
    wrong = []
    for query in queries():
        for name, labels in matcher_labels(query.expr).items():
            carried = exposition.get(name)
            if carried and not labels <= carried:
                wrong.append(f"{query.where}: {name} has no {sorted(labels - carried)}")
    return wrong


def split(names: set[str]) -> tuple[set[str], set[str]]:
    vllm = {n for n in names if n.startswith(VLLM_PREFIX)}
    return names - vllm, vllm


def test_metric_names_are_read_off_promql() -> None:
    expr = (
        'sum by (route, le) (rate(rollgate_x_bucket{route=~"$route", a="b(c) {d}"}[5m]))\n'
        "/ on (route) group_left vllm:y offset $__interval > bool 1e3\n"
        'or absent(up{job="rollgate"}) unless max without (a) (rollgate_z) * 2'
    )
    assert metric_names(expr) == {"rollgate_x_bucket", "vllm:y", "up", "rollgate_z"}
    assert matcher_labels(expr) == {"rollgate_x_bucket": {"route", "a"}, "up": {"job"}}


def test_a_name_counts_as_exported_by_its_family_even_before_its_first_sample() -> None:
    names = exported(EXPOSITION)
    assert (
        unexported({"rollgate_failovers_total", "rollgate_request_duration_seconds_count"}, names)
        == set()
    )
    # A misspelling, a histogram without its suffix, a counter without _total: all unknown.
    wrong = {"rollgate_request_duration_second_bucket", "rollgate_request_duration_seconds"}
    wrong |= {"rollgate_failovers"}
    assert unexported(wrong, names) == wrong
    assert names["rollgate_request_duration_seconds_bucket"] == {"route", "variant", "role", "le"}


def test_the_files_read_both_rollgate_and_vllm_metrics() -> None:
    rollgate, vllm = split(used_names())
    assert len(rollgate) > 15
    assert vllm >= {"vllm:num_requests_waiting", "vllm:num_requests_running"}
    assert all(n.startswith("rollgate_") for n in rollgate), sorted(rollgate)


def test_every_rollgate_name_is_registered_by_the_gateway_and_control_plane() -> None:
    """Without vLLM: the names the gateway's registries declare (the live test sees them served)."""
    registry = CollectorRegistry()
    GatewayMetrics(registry, safety_rules=("credentials",))
    ControlPlaneMetrics(registry)
    registry.register(PoolCollector({}))
    rollgate, _ = split(used_names())
    assert unexported(rollgate, exported(generate_latest(registry).decode())) == set()


@pytest.mark.vllm
def test_every_name_is_in_a_live_gateway_and_vllm_metrics(vllm_server, tmp_path: Path) -> None:
    config = vllm_server.config
    routes = {
        "backends": {"vllm": {"url": config.base_url}},
        "routes": [
            {
                "name": ROUTE,
                "stable": {"backend": "vllm", "model": config.served_name, "name": "base"},
            }
        ],
    }
    # Long steps and no checks that could fail on a few requests: only this test moves it.
    plan = {
        "route": ROUTE,
        "candidate": {"name": BRAND_VOICE.name, "backend": "vllm", "model": BRAND_VOICE.name},
        "steps": [
            {"kind": "shadow", "sample": 1.0, "min_duration_s": 3600},
            {"kind": "weight", "percent": 100, "min_duration_s": 3600},
        ],
        "checks": [{"name": "safety", "metric": "safety"}],
    }
    with GatewayProcess(
        routes, tmp_path, {"ROLLGATE_STATE": str(tmp_path / "state.db")}
    ) as gateway:
        key = gateway.create_key(TENANT)  # debug scope: answers say which variant served
        with gateway.admin() as admin:
            created = admin.post("/admin/rollouts", json=plan)
            assert created.status_code == 201, created.text
            # Paused on the shadow step at a weight: served candidate and shadow copies at once.
            weighted = admin.post(f"/admin/rollouts/{ROUTE}/weight", json={"percent": WEIGHT})
            assert weighted.status_code == 200, weighted.text
        rollout_id = created.json()["rollout_id"]
        gateway_text = wait_for_metrics(
            gateway.url, "rollgate_traffic_weight_percent", WEIGHT, route=ROUTE, role="candidate"
        )
        served = send_traffic(gateway.url, key, rollout_id)
        assert served == {"base", BRAND_VOICE.name}
        gateway_text = wait_for_metrics(gateway.url, "rollgate_shadow_comparisons_total", 1)
    vllm_text = httpx.get(f"{config.base_url}/metrics", timeout=10).text

    served_roles = {
        role
        for role in ("stable", "candidate", "shadow")
        if metric_sum(gateway_text, "rollgate_requests_total", route=ROUTE, role=role) > 0
    }
    assert served_roles == {"stable", "candidate", "shadow"}
    rollgate, vllm = split(used_names())
    gateway_names, vllm_names = exported(gateway_text), exported(vllm_text)
    assert unexported(rollgate, gateway_names) == set()
    assert unexported(vllm, vllm_names) == set()
    assert mismatched_labels({**gateway_names, **vllm_names}) == []


def wait_for_metrics(url: str, name: str, at_least: float, **labels: str) -> str:
    """The gateway's /metrics text once `name` (summed over `labels`) reaches `at_least`."""
    deadline = time.monotonic() + 120
    while True:
        text = httpx.get(f"{url}/metrics", timeout=10).text
        if metric_sum(text, name, **labels) >= at_least:
            return text
        assert time.monotonic() < deadline, f"{name}{labels} never reached {at_least}"
        time.sleep(0.25)


def send_traffic(url: str, client_key: str, rollout_id: str) -> set[str]:
    """Two users in the candidate's cohort and two in stable's, each asking streamed and not,
    with `client_key` (a key of TENANT)."""
    users = [f"user-{i}" for i in range(100)]
    found = {u: bucket(SECRET.encode(), ROUTE, rollout_id, TENANT, u) for u in users}
    candidate = [u for u in users if found[u] < WEIGHT * 100][:2]
    stable = [u for u in users if found[u] >= WEIGHT * 100][:2]
    served = set()
    auth = {"authorization": f"Bearer {client_key}"}
    with httpx.Client(base_url=url, timeout=120, headers=auth) as http:
        for key in candidate + stable:
            for stream in (False, True):
                body = {
                    "model": ROUTE,
                    "messages": [{"role": "user", "content": "Where is my order?"}],
                    "max_tokens": 8,
                    "stream": stream,
                }
                with http.stream(
                    "POST", "/v1/chat/completions", json=body, headers={"x-rollgate-key": key}
                ) as response:
                    response.read()
                assert response.status_code == 200, response.text
                variant = response.headers["x-rollgate-variant"]
                assert variant == (BRAND_VOICE.name if key in candidate else "base"), key
                served.add(variant)
                scored = http.post(
                    "/v1/feedback",
                    json={
                        "request_id": response.headers["x-request-id"],
                        "score": 0.8,
                        "token": response.headers[FEEDBACK_HEADER],
                    },
                )
                assert scored.status_code < 300, scored.text
    return served
