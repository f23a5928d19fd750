"""The attacks of issue 12, each tried as a hostile client would, against a real gateway
process (embedded control plane, its own metric windows) in front of stand-ins for vLLM.

The stand-ins answer at once, so these run in seconds; the same attacks on real vLLM
are the rollout e2e tests' business.
"""

from __future__ import annotations

import json
import math
import sqlite3
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.forward import FEEDBACK_HEADER
from loadtests.standin import Faults, create_standin
from tests.processes import GatewayProcess, metric_sum
from tests.servers import serving

ROUTES = ("support", "billing")
BRAND = "Hello from Acme! Your order ships today."
CHECKS = [
    {"name": "satisfaction", "metric": "satisfaction", "threshold": 5},
    {"name": "safety", "metric": "safety"},
]


def plan(route: str, steps: list[dict], **overrides) -> dict:
    return {
        "route": route,
        "candidate": {"name": "acme-voice", "backend": "candidate", "model": "acme-voice"},
        "steps": steps,
        "checks": CHECKS,
        "min_samples": 10,
        "evaluation_interval_s": 1,
        **overrides,
    }


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., GatewayProcess]]:
    with ExitStack() as stack:

        def start_gateway(stable: Faults, candidate: Faults) -> GatewayProcess:
            urls = {
                "stable": stack.enter_context(serving(create_standin(stable))),
                "candidate": stack.enter_context(serving(create_standin(candidate))),
            }
            routes = {
                "backends": {name: {"url": url} for name, url in urls.items()},
                "routes": [
                    {"name": r, "stable": {"backend": "stable", "model": "tiny-llama",
                                           "name": "base"}}
                    for r in ROUTES
                ],
            }  # fmt: skip
            env = {
                "ROLLGATE_STATE": str(tmp_path / "state.db"),
                "ROLLGATE_CONTROLLER_TICK_S": "0.2",
            }
            gateway = GatewayProcess(routes, tmp_path, env)
            stack.callback(gateway.stop)
            return gateway.start()

        yield start_gateway


def ask(http: httpx.Client, key: str, user: str, content: str = "Where is my order?"):
    body = {"model": "support", "messages": [{"role": "user", "content": content}]}
    headers = {"authorization": f"Bearer {key}", "x-rollgate-key": user}
    return http.post("/v1/chat/completions", json=body, headers=headers)


def evaluated_after_now(admin: httpx.Client, route: str) -> dict:
    """The rollout once an evaluation has measured everything done so far (windows count
    whole seconds that are over: one second's margin), or once it has ended."""
    now = time.time()
    deadline = time.monotonic() + 60
    while True:
        rollout = admin.get(f"/admin/rollouts/{route}").json()
        if (rollout["evaluated_until"] or 0) > now + 1 or rollout["phase"] != "running":
            return rollout
        assert time.monotonic() < deadline, rollout
        time.sleep(0.2)


def test_one_tenant_cannot_steer_a_50_percent_rollout_with_feedback(start) -> None:
    gateway = start(Faults(), Faults(text=BRAND))
    attacker = gateway.create_key("mallory")  # debug: it even sees which variant answered
    with gateway.admin() as admin, httpx.Client(base_url=gateway.url, timeout=10) as http:
        steps = [{"kind": "weight", "percent": 50, "min_duration_s": 3600}]
        assert admin.post("/admin/rollouts", json=plan("support", steps)).status_code == 201
        answers = [ask(http, attacker, f"u{i}") for i in range(80)]
        auth = {"authorization": f"Bearer {attacker}"}
        bare = {"request_id": answers[0].headers["x-request-id"], "score": 0}
        assert http.post("/v1/feedback", json=bare, headers=auth).status_code == 422
        accepted = 0
        for answer in answers:
            bad = answer.headers["x-rollgate-variant"] == "acme-voice"
            body = {
                "request_id": answer.headers["x-request-id"],
                "score": 0.0 if bad else 1.0,
                "token": answer.headers[FEEDBACK_HEADER],
            }
            codes = [
                http.post("/v1/feedback", json=body, headers=auth).status_code for _ in range(5)
            ]
            assert codes[0] == 200
            assert set(codes[1:]) == {409}
            accepted += 1
        rollout = evaluated_after_now(admin, "support")
        metrics = http.get("/metrics").text
    assert rollout["phase"] == "running", rollout["reason"]
    check = next(c for c in rollout["checks"] if c["name"] == "satisfaction")
    assert check["status"] != "fail"
    assert "tenant" in check["reason"], check["reason"]
    counted = metric_sum(metrics, "rollgate_feedback_score_count", route="support")
    assert counted == accepted  # each answer once, however often its token came


def test_an_echoed_unsafe_prompt_in_shadow_is_the_prompts_not_the_candidates(start) -> None:
    gateway = start(Faults(echo=True), Faults(echo=True))
    user_key = gateway.create_key("acme", debug=False)
    with gateway.admin() as admin, httpx.Client(base_url=gateway.url, timeout=10) as http:
        steps = [{"kind": "shadow", "min_duration_s": 3600}]
        assert admin.post("/admin/rollouts", json=plan("support", steps)).status_code == 201
        served = ask(http, user_key, "u1", "Repeat after me: send me your password")
        assert served.status_code == 200
        deadline = time.monotonic() + 20
        while True:
            metrics = http.get("/metrics").text
            prompt = metric_sum(
                metrics, "rollgate_safety_incidents_total", variant="acme-voice", cause="prompt"
            )
            if prompt >= 1:
                break
            assert time.monotonic() < deadline, "the echo was never attributed"
            time.sleep(0.2)
        rollout = evaluated_after_now(admin, "support")
    assert rollout["phase"] == "running", rollout["reason"]
    blamed = metric_sum(
        metrics, "rollgate_safety_incidents_total", variant="acme-voice", cause="variant"
    )
    assert blamed == 0


def test_a_client_cannot_aim_its_traffic_at_the_candidate(start) -> None:
    gateway = start(Faults(), Faults(text=BRAND))
    key = gateway.create_key("mallory", debug=False)
    with gateway.admin() as admin, httpx.Client(base_url=gateway.url, timeout=10) as http:
        steps = [{"kind": "weight", "percent": 5, "min_duration_s": 3600}]
        assert admin.post("/admin/rollouts", json=plan("support", steps)).status_code == 201
        probe = {f"probe-{i}": ask(http, key, f"probe-{i}") for i in range(300)}
        for answer in probe.values():
            assert answer.json()["model"] == "support"
            assert "x-rollgate-variant" not in answer.headers
        aimed = [u for u, a in probe.items() if "Acme" in a.text]
        assert aimed, "the candidate served none of 300 users at 5%"
        hits = sum("Acme" in ask(http, key, aimed[i % len(aimed)]).text for i in range(400))
    share = hits / 400
    print(f"aimed share on the candidate: {share:.1%} at a 5% weight (unguarded: 100%)")
    # Within the minute the guard looks at: the weight's share of every request the tenant
    # sent, plus 3 standard deviations and 2 requests (gateway/assignment.py).
    sent = len(probe) + 400
    bound = 0.05 * sent + 3 * math.sqrt(0.05 * 0.95 * sent) + 2 + 1
    assert len(aimed) + hits <= bound
    assert share < 0.15


def test_infinity_and_oversized_plans_are_refused_and_the_gateway_keeps_serving(start) -> None:
    gateway = start(Faults(), Faults(text=BRAND))
    with gateway.admin() as admin:
        infinite = json.dumps(plan("support", [{"kind": "weight", "percent": 5}])).replace(
            '"min_samples": 10', '"min_samples": 10, "min_duration_s": Infinity'
        )
        steps = [{"kind": "weight", "percent": 5, "min_duration_s": float("inf")}]
        for body in (infinite, json.dumps(plan("support", steps), allow_nan=True)):
            refused = admin.post(
                "/admin/rollouts", content=body, headers={"content-type": "application/json"}
            )
            assert refused.status_code == 422, refused.text
        huge = plan("support", [{"kind": "pause"}] * 300_000)
        assert admin.post("/admin/rollouts", json=huge).status_code == 413
        assert admin.get("/admin/rollouts").status_code == 200
        good = plan("support", [{"kind": "weight", "percent": 5, "min_duration_s": 3600}])
        assert admin.post("/admin/rollouts", json=good).status_code == 201
    gateway.stop()
    gateway.start()
    with gateway.admin() as admin:
        assert admin.get("/admin/rollouts/support").json()["phase"] == "running"


def test_a_corrupted_row_is_quarantined_and_the_other_rollouts_go_on(start, tmp_path) -> None:
    gateway = start(Faults(), Faults(text=BRAND))
    long = [{"kind": "weight", "percent": 5, "min_duration_s": 3600}]
    with gateway.admin() as admin:
        for route in ROUTES:
            assert admin.post("/admin/rollouts", json=plan(route, long)).status_code == 201
        with sqlite3.connect(tmp_path / "state.db") as db:
            db.execute("UPDATE rollouts SET json = '{\"plan\": null}' WHERE route = 'support'")
            db.execute("UPDATE changes SET value = value + 1")
        listed = admin.get("/admin/rollouts").json()
        assert [q["route"] for q in listed["quarantined"]] == ["support"]
        assert [r["route"] for r in listed["rollouts"]] == ["billing"]
        assert admin.get("/admin/rollouts/support").status_code == 409
        before = admin.get("/admin/rollouts/billing").json()["evaluated_until"] or 0
        time.sleep(2.5)
        assert admin.get("/admin/rollouts/billing").json()["evaluated_until"] > before
    gateway.stop()
    gateway.start()  # a restart on the bad state starts and serves
    with gateway.admin() as admin:
        assert admin.delete("/admin/rollouts/support").status_code == 200
        assert admin.get("/admin/rollouts").json()["quarantined"] == []
        history = admin.get("/admin/rollouts/support/history").json()["events"]
        assert history[-1]["kind"] == "deleted"
        assert history[-1]["actor"] == "bootstrap"
