"""The admin API and the `rollgate` CLI against a live gateway with its embedded control plane."""

from __future__ import annotations

import itertools
import json
import sqlite3
import time
from pathlib import Path

import pytest
import yaml
from prometheus_client import CollectorRegistry

from gateway.windows import LocalWindows
from rollout.cli import main as rollgate
from rollout.control_plane import ControlPlane, Timing
from rollout.plan import MAX_PLAN_BYTES
from rollout.prometheus import PrometheusSource
from rollout.sqlite_store import SqliteStore
from serving.process import free_port
from tests.gateway.conftest import ADMIN_TOKEN

PLAN = {
    "route": "support",
    "candidate": {"name": "acme-voice", "backend": "candidate-pool", "model": "acme-voice"},
    # Long steps: in these tests only people move the rollout.
    "steps": [
        {"kind": "shadow", "min_duration_s": 3600},
        {"kind": "weight", "percent": 50, "min_duration_s": 3600},
        {"kind": "weight", "percent": 100, "min_duration_s": 3600},
    ],
}


@pytest.fixture
def stack(make_stack, tmp_path: Path):
    windows = LocalWindows()
    store = SqliteStore(tmp_path / "state.db")
    plane = ControlPlane(
        store, store, windows, CollectorRegistry(), timing=Timing(tick_s=0.2, sync_s=0.05)
    )
    return make_stack(sinks=[windows], control_plane=plane)


@pytest.fixture
def cli(stack, capsys, monkeypatch):
    monkeypatch.setenv("ROLLGATE_ADMIN_TOKEN", ADMIN_TOKEN)
    monkeypatch.setenv("ROLLGATE_URL", stack.url)

    def run(*argv: str) -> tuple[int, str, str]:
        code = rollgate(list(argv))
        out, err = capsys.readouterr()
        return code, out, err

    return run


@pytest.fixture
def plan_file(tmp_path: Path) -> Path:
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(PLAN))
    return path


def routed(stack) -> tuple[int, float]:
    traffic = stack.services.table.plan.routes["support"]
    return traffic.weight_bp, traffic.shadow_sample


@pytest.mark.parametrize(
    ("headers", "status"),
    [({}, 401), ({"authorization": "Bearer wrong"}, 401), ({"authorization": "Basic x"}, 401)],
)
def test_admin_endpoints_refuse_without_a_valid_token(stack, headers, status) -> None:
    for method, path in (("GET", "/admin/rollouts"), ("POST", "/admin/rollouts/support/pause")):
        response = stack.http.request(method, path, headers=headers, json=PLAN)
        assert response.status_code == status
        assert response.json()["error"]["type"] in ("authentication_error", "permission_error")


def test_the_cli_drives_a_whole_rollout_by_hand(stack, cli, plan_file) -> None:
    code, out, _ = cli("apply", "-f", str(plan_file))
    assert code == 0
    assert "phase RUNNING" in out
    assert "[shadow]" in out
    assert routed(stack) == (0, 1.0)

    assert cli("promote", "support")[0] == 0
    assert routed(stack) == (5000, 0.0)

    code, out, _ = cli("set-weight", "support", "2.5")
    assert code == 0
    assert "phase PAUSED" in out
    assert routed(stack) == (250, 0.0)

    assert cli("resume", "support")[0] == 0
    assert routed(stack) == (5000, 0.0)

    code, out, _ = cli("pause", "support", "--reason", "dashboards look odd")
    assert "dashboards look odd" in out
    code, out, _ = cli("--output", "json", "get", "support")
    assert json.loads(out)["hold"]["reason"] == "dashboards look odd"

    assert cli("resume", "support")[0] == 0
    code, out, _ = cli("promote", "support", "--full")
    assert "phase PROMOTED" in out
    promoted = stack.services.table.plan.routes["support"]
    assert (promoted.stable.name, promoted.candidate) == ("acme-voice", None)

    code, out, _ = cli("--output", "json", "history", "support")
    events = json.loads(out)["events"]
    kinds = [e["kind"] for e in events]
    assert kinds == [
        "started", "advanced", "weight_set", "resumed", "paused", "resumed", "promoted",
    ]  # fmt: skip
    assert {e["actor"] for e in events} == {"bootstrap"}  # the admin token's name
    code, out, _ = cli("status")
    assert "promoted" in out


def test_abort_and_retry(stack, cli, plan_file) -> None:
    cli("apply", "-f", str(plan_file))
    code, _, err = cli("retry", "support")
    assert code == 1
    assert "409" in err
    assert "not rolled back" in err
    code, out, _ = cli("abort", "support", "--reason", "wrong adapter")
    assert code == 0
    assert "ABORTED" in out
    assert routed(stack) == (0, 0.0)
    assert stack.services.table.plan.routes["support"].candidate is None


def test_cli_errors_say_what_went_wrong(stack, cli, plan_file, tmp_path) -> None:
    code, _, err = cli("get", "support")
    assert (code, "404" in err) == (1, True)

    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump({**PLAN, "steps": [{"kind": "weight", "percent": 150}]}))
    code, _, err = cli("apply", "-f", str(bad))
    assert code == 2  # checked before it is sent
    assert "steps.0.weight.percent" in err

    unknown = tmp_path / "unknown.yaml"
    unknown.write_text(yaml.safe_dump({**PLAN, "route": "chat"}))
    code, _, err = cli("apply", "-f", str(unknown))
    assert code == 1  # only the gateway knows its routes
    assert "unknown route 'chat'" in err

    code, _, err = cli("apply", "-f", str(tmp_path / "missing.yaml"))
    assert code == 2
    assert "cannot read the plan" in err

    code, _, err = cli("--url", f"http://127.0.0.1:{free_port()}", "status")
    assert code == 3
    assert "cannot reach" in err

    code, _, err = cli("--token", "wrong", "status")
    assert code == 1
    assert "401" in err


def test_the_api_answers_with_each_checks_verdict_and_why(stack) -> None:
    # The audit log names the token, not what the caller says it is.
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}", "x-rollgate-actor": "carol"}
    http = stack.http
    created = http.post(
        "/admin/rollouts", json={**PLAN, "evaluation_interval_s": 0.5}, headers=headers
    )
    assert created.status_code == 201
    assert created.json()["rollout_id"].startswith("support-")
    deadline = time.monotonic() + 10
    while not (rollout := http.get("/admin/rollouts/support", headers=headers).json())["checks"]:
        assert time.monotonic() < deadline, "the controller never evaluated"
        time.sleep(0.1)
    checks = {c["name"]: c for c in rollout["checks"]}
    assert set(checks) == {"error-rate", "latency-p95", "satisfaction", "safety"}
    assert checks["satisfaction"]["status"] == "skipped"  # shadow: nobody scores
    assert checks["error-rate"]["status"] == "inconclusive"
    assert "waiting for samples" in checks["error-rate"]["reason"]
    assert rollout["verdict"] == "inconclusive"

    again = http.post("/admin/rollouts", json=PLAN, headers=headers)
    assert again.status_code == 409
    assert again.json()["error"]["type"] == "rollout_in_progress"
    history = http.get("/admin/rollouts/support/history", headers=headers).json()["events"]
    assert history[0]["actor"] == "bootstrap"
    assert history[-1]["kind"] == "waiting"


def test_series_give_each_variant_per_interval_for_charts(stack) -> None:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    http = stack.http
    assert http.post("/admin/rollouts", json=PLAN, headers=headers).status_code == 201
    chat = {"model": "support", "messages": [{"role": "user", "content": "Hi"}]}
    for _ in range(4):
        assert http.post("/v1/chat/completions", json=chat).status_code == 200
    deadline = time.monotonic() + 10
    while len(pairs := http.get("/admin/shadow-pairs", headers=headers).json()["pairs"]) < 4:
        assert time.monotonic() < deadline, "the shadow copies were never compared"
        time.sleep(0.05)
    review = f"/admin/shadow-pairs/{pairs[0]['pair_id']}/review"
    assert http.post(review, json={"preferred": "same"}, headers=headers).status_code == 200
    time.sleep(1.1)  # the series read seconds that are over

    series = http.get("/admin/rollouts/support/series?seconds=60&points=6", headers=headers)
    assert series.status_code == 200
    body = series.json()
    assert (body["candidate_role"], body["scores"], body["width_s"]) == ("shadow", "review", 10)
    points = body["points"]
    assert len(points) == 6
    assert all(a["end"] == b["start"] for a, b in itertools.pairwise(points))
    assert sum(p["stable"]["requests"] for p in points) == 4
    assert sum(p["candidate"]["requests"] for p in points) == 4  # the mirrored copies
    scored = [p for p in points if p["candidate"]["scored"]]
    assert [(p["candidate"]["mean_score"], p["stable"]["mean_score"]) for p in scored] == [
        (50.0, 50.0)
    ]
    answered = [p for p in points if p["stable"]["requests"]]
    assert all(p["stable"]["error_rate"] == 0 for p in answered)
    assert all(p["stable"]["latency_p95_s"] > 0 for p in answered)
    assert all(p["stable"]["mean_score"] is None for p in points if not p["stable"]["scored"])


@pytest.mark.parametrize(
    ("query", "status"),
    [("points=121", 422), ("points=0", 422), ("seconds=3601", 422), ("seconds=abc", 422)],
)
def test_series_are_bounded(stack, query, status) -> None:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    stack.http.post("/admin/rollouts", json=PLAN, headers=headers)
    response = stack.http.get(f"/admin/rollouts/support/series?{query}", headers=headers)
    assert response.status_code == status
    assert response.json()["error"]["type"] == "invalid_request_error"


def test_series_of_a_route_without_a_rollout_is_404(stack) -> None:
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    response = stack.http.get("/admin/rollouts/support/series", headers=headers)
    assert response.status_code == 404


def test_series_from_a_silent_metric_source_are_503(make_stack, tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    silent = PrometheusSource(f"http://127.0.0.1:{free_port()}", timeout=1)
    plane = ControlPlane(store, store, silent, CollectorRegistry(), timing=Timing(tick_s=0.2))
    stack = make_stack(control_plane=plane)
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    assert stack.http.post("/admin/rollouts", json=PLAN, headers=headers).status_code == 201
    response = stack.http.get("/admin/rollouts/support/series?points=2", headers=headers)
    assert response.status_code == 503
    error = response.json()["error"]
    assert error["type"] == "source_unavailable"
    assert "did not answer" in error["message"]


# --- state that cannot be poisoned ----------------------------------------------------------


def admin(stack, method: str, path: str, **kwargs):
    headers = {"authorization": f"Bearer {ADMIN_TOKEN}"}
    return stack.http.request(method, f"/admin/rollouts{path}", headers=headers, **kwargs)


@pytest.mark.parametrize(
    ("body", "where"),
    [
        (
            '"steps": [{"kind": "shadow", "min_duration_s": Infinity}]',
            "steps.0.shadow.min_duration_s",
        ),
        ('"max_tenant_share": NaN', "max_tenant_share"),
        ('"confidence": 1e999', "confidence"),
    ],
)
def test_a_plan_with_a_number_json_cannot_hold_is_refused_naming_it(stack, body, where) -> None:
    plan = json.dumps(PLAN)[:-1] + ", " + body + "}"
    response = admin(stack, "POST", "", content=plan)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", where)
    assert error["message"] == f"{where}: Input should be a finite number"
    assert admin(stack, "GET", "").json()["rollouts"] == []


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
def test_a_plan_over_the_byte_limit_is_413_unparsed(stack, declared) -> None:
    plan = json.dumps({**PLAN, "padding": " " * MAX_PLAN_BYTES}).encode()
    content = plan if declared else iter([plan[:1000], plan[1000:]])
    response = admin(stack, "POST", "", content=content)
    assert response.status_code == 413
    assert response.json() == {
        "error": {
            "message": f"a plan is at most {MAX_PLAN_BYTES} bytes"
            + (f"; this one is {len(plan)}" if declared else ""),
            "type": "plan_too_large",
            "param": None,
            "code": 413,
        }
    }


def test_weights_are_finite(stack) -> None:
    assert admin(stack, "POST", "", json=PLAN).status_code == 201
    for percent in ("NaN", "Infinity", "1e999"):
        response = admin(stack, "POST", "/support/weight", content=f'{{"percent": {percent}}}')
        assert response.status_code == 422


def test_a_record_that_does_not_read_back_is_quarantined_and_deletable(
    stack, cli, plan_file, tmp_path
) -> None:
    assert cli("apply", "-f", str(plan_file))[0] == 0
    with sqlite3.connect(tmp_path / "state.db") as db:
        record = json.loads(db.execute("SELECT json FROM rollouts").fetchone()[0])
        record["plan"]["steps"][0]["min_duration_s"] = None  # an inf, as it used to be stored
        db.execute("UPDATE rollouts SET json = ?", (json.dumps(record),))
        db.execute("UPDATE changes SET value = value + 1")  # as a write would

    listed = admin(stack, "GET", "")
    assert listed.status_code == 200
    why = "plan.steps.0.shadow.min_duration_s: Input should be a valid number"
    assert listed.json() == {
        "rollouts": [],
        "quarantined": [{"route": "support", "revision": 1, "error": why}],
    }
    for method, path in (("GET", "/support"), ("POST", "/support/abort"), ("POST", "")):
        response = admin(stack, method, path, json=PLAN if path == "" else None)
        assert response.status_code == 409
        assert response.json()["error"]["type"] == "rollout_unreadable"
        assert "rollgate delete support" in response.json()["error"]["message"]
    deadline = time.monotonic() + 5
    while routed(stack) != (0, 0.0):  # the sync saw the change: stable serves the route
        assert time.monotonic() < deadline, "the quarantined rollout is still routed"
        time.sleep(0.05)

    code, out, _ = cli("status")
    assert (code, "QUARANTINED" in out, why in out) == (0, True, True)
    code, out, _ = cli("delete", "support")
    assert (code, out.strip()) == (0, "deleted the unreadable rollout (revision 1) of support")

    assert admin(stack, "GET", "").json() == {"rollouts": [], "quarantined": []}
    last = admin(stack, "GET", "/support/history").json()["events"][-1]
    assert last["kind"] == "deleted"
    assert f"unreadable rollout (revision 1) deleted by {last['actor']}: {why}" == last["reason"]
    assert cli("apply", "-f", str(plan_file))[0] == 0  # the route starts afresh


def test_cli_creates_lists_and_revokes_keys_and_tokens(stack, cli) -> None:
    code, out, _ = cli("keys", "create", "checkout", "--tenant", "acme", "--rps", "5")
    assert code == 0
    secret = out.split()[0]
    chat = {"model": "support", "messages": [{"role": "user", "content": "hi"}]}
    auth = {"authorization": f"Bearer {secret}"}
    assert stack.http.post("/v1/chat/completions", json=chat, headers=auth).status_code == 200
    code, out, _ = cli("-o", "json", "keys", "list")
    (key,) = [k for k in json.loads(out)["keys"] if k["spec"]["name"] == "checkout"]
    assert key["spec"]["requests_per_s"] == 5
    assert secret not in out
    assert cli("keys", "revoke", key["id"])[0] == 0
    assert stack.http.post("/v1/chat/completions", json=chat, headers=auth).status_code == 401

    code, out, _ = cli("tokens", "create", "alice", "--role", "viewer")
    viewer = out.split()[0]
    assert code == 0
    code, _, err = cli("--token", viewer, "keys", "create", "x", "--tenant", "t")
    assert (code, "403" in err) == (1, True)
    assert cli("--token", viewer, "status")[0] == 0
    with pytest.raises(SystemExit) as usage:
        cli("keys", "create", "bad", "--tenant", "t", "--rps", "inf")
    assert usage.value.code == 2
    code, _, err = cli("keys", "create", "bad", "--tenant", "t", "--max-candidate-percent", "150")
    assert (code, "max_candidate_percent" in err) == (1, True)
