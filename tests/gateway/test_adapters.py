"""Adapters across a pool's replicas, and capacity-aware steps, through the admin API.

The replicas are stand-ins that keep a model list and answer vLLM's load and
unload calls the way vLLM does; the gateway, its pools, the embedded control
plane and its SQLite store are real. tests/rollout/test_scale_out.py does the
same against real vLLM replicas.
"""

from __future__ import annotations

import time
from collections import Counter
from pathlib import Path

import pytest
from prometheus_client import CollectorRegistry

import gateway.adapters
from gateway.windows import LocalWindows
from loadtests.standin import Faults
from rollout.control_plane import ControlPlane, Timing
from rollout.sqlite_store import SqliteStore
from tests.gateway.conftest import ADAPTER, BASE, POOL
from tests.gateway.test_proxy import eventually
from tests.serving.test_validation import MODULES, good_config, write_adapter, write_safetensors

ADAPTER_DIR = "/adapters/acme-voice"


def plan(*steps: dict, **candidate) -> dict:
    return {
        "route": "support",
        "candidate": {
            "name": ADAPTER, "backend": POOL, "model": ADAPTER, "adapter": ADAPTER_DIR,
            **candidate,
        },
        "steps": list(steps) or [{"kind": "weight", "percent": 50, "min_duration_s": 3600}],
        "checks": [],
        "evaluation_interval_s": 0.2,
    }  # fmt: skip


@pytest.fixture
def fleet(make_pool, tmp_path: Path):
    """A pool of stand-in replicas serving only the base, behind a gateway with a control plane."""

    def make(n: int = 2, *, models=(BASE,), **options):
        windows = LocalWindows()
        store = SqliteStore(tmp_path / "state.db")
        plane = ControlPlane(
            store, store, windows, CollectorRegistry(), timing=Timing(tick_s=0.1, sync_s=0.05)
        )
        faults = [Faults(models=list(models)) for _ in range(n)]
        return make_pool(faults, weight=None, control_plane=plane, sinks=[windows], **options)

    return make


def test_a_rollout_loads_its_adapter_on_every_replica_before_any_traffic(fleet):
    stack = fleet()
    response = stack.admin("POST", "", json=plan())
    assert response.status_code == 201, response.text
    assert [r.seen.loads for r in stack.replicas] == [[ADAPTER], [ADAPTER]]
    served = Counter(stack.chat(user=f"u{i}").headers["x-rollgate-variant"] for i in range(60))
    assert served[ADAPTER] > 10
    assert all(r.count(ADAPTER) > 0 for r in stack.replicas)
    assert stack.metric("rollgate_pool_retries_total", pool=POOL) == 0


def test_a_rollout_whose_adapter_cannot_be_loaded_everywhere_does_not_start(fleet):
    stack = fleet()
    stack.replicas[1].faults.refuse_loads = True
    response = stack.admin("POST", "", json=plan())
    assert response.status_code == 502
    message = response.json()["error"]["message"]
    assert f"adapter '{ADAPTER}' could not be loaded on 1 of 2 replicas of pool 'vllm'" in message
    assert "injected refusal" in message
    assert stack.admin("GET", "/support").status_code == 404
    assert stack.replicas[0].seen.unloads == [ADAPTER]  # the half-done load is undone
    assert stack.replicas[0].faults.models == [BASE]


def test_a_restarted_replica_gets_the_adapter_again_before_its_requests(fleet):
    stack = fleet()
    assert stack.admin("POST", "", json=plan()).status_code == 201
    restarted = stack.replicas[0]
    restarted.faults.healthy = False  # the process died...
    restarted.faults.models = [BASE]  # ...and came back with only its command line's models
    eventually(lambda: stack.pool.balancer.summary()["available"] == 1)
    restarted.faults.healthy = True
    eventually(lambda: restarted.seen.loads == [ADAPTER, ADAPTER])
    eventually(lambda: stack.pool.balancer.summary()["available"] == 2)
    before = restarted.count(ADAPTER)
    for i in range(60):
        assert stack.chat(user=f"u{i}").status_code == 200
    assert restarted.count(ADAPTER) > before  # it serves the candidate again
    # No request for the adapter reached it while it lacked the adapter (that is a 404, retried).
    assert stack.metric("rollgate_pool_retries_total", pool=POOL) == 0


def test_a_replica_that_cannot_load_the_adapter_is_not_asked_at_every_probe(fleet, monkeypatch):
    monkeypatch.setattr(gateway.adapters, "REPAIR_RETRY_S", 3600.0)
    stack = fleet()
    assert stack.admin("POST", "", json=plan()).status_code == 201
    restarted = stack.replicas[0]
    restarted.faults.healthy = False
    restarted.faults.models = [BASE]
    restarted.faults.refuse_loads = True  # e.g. its LoRA slots are full
    eventually(lambda: stack.pool.balancer.summary()["available"] == 1)
    restarted.faults.healthy = True
    eventually(lambda: restarted.seen.loads == [ADAPTER, ADAPTER])  # one repair, refused
    time.sleep(1.0)  # ten probes of the replica
    assert restarted.seen.loads == [ADAPTER, ADAPTER]
    for i in range(40):  # meanwhile it serves the base, never the adapter it lacks
        assert stack.chat(user=f"u{i}").status_code == 200
    assert restarted.count(ADAPTER) == 0
    assert restarted.count(BASE) > 0


def test_a_rolled_back_candidate_stays_loaded_until_the_rollout_is_deleted(fleet):
    stack = fleet()
    assert stack.admin("POST", "", json=plan()).status_code == 201
    assert stack.admin("POST", "/support/abort", json={"reason": "bad"}).status_code == 200
    assert stack.admin("GET", "/support").json()["phase"] == "aborted"
    assert all(r.seen.unloads == [] for r in stack.replicas)  # ready for a quick retry
    deleted = stack.admin("DELETE", "/support")
    assert deleted.status_code == 200
    eventually(lambda: all(r.seen.unloads == [ADAPTER] for r in stack.replicas))
    assert all(r.faults.models == [BASE] for r in stack.replicas)
    assert stack.admin("GET", "/support").status_code == 404
    last = stack.admin("GET", "/support/history").json()["events"][-1]
    assert (last["kind"], last["actor"], last["from_phase"]) == ("deleted", "bootstrap", "aborted")


def test_an_active_rollout_cannot_be_deleted(fleet):
    stack = fleet()
    assert stack.admin("POST", "", json=plan()).status_code == 201
    refused = stack.admin("DELETE", "/support")
    assert refused.status_code == 409
    assert "abort it first" in refused.json()["error"]["message"]


def test_after_promotion_the_old_stable_adapter_is_unloaded_after_the_delay(fleet):
    stack = fleet(models=(BASE, "acme-v1"), stable="acme-v1", adapter_unload_after_s=0.5)
    body = plan(name="acme-v2", model="acme-v2", adapter="/adapters/acme-v2")
    assert stack.admin("POST", "", json=body).status_code == 201
    promoted = stack.admin("POST", "/support/promote", json={"full": True})
    assert promoted.json()["phase"] == "promoted"
    assert all(r.seen.unloads == [] for r in stack.replicas)  # not before the delay
    eventually(lambda: all(r.seen.unloads == ["acme-v1"] for r in stack.replicas))
    assert all(r.faults.models == [BASE, "acme-v2"] for r in stack.replicas)
    response = stack.chat()
    assert (response.status_code, response.headers["x-rollgate-variant"]) == (200, "acme-v2")


def test_a_step_waits_for_headroom_and_says_why(fleet):
    stack = fleet()
    for replica in stack.replicas:
        replica.faults.waiting = 12  # both queues long: the pool is full
    eventually(lambda: stack.pool.balancer.no_headroom() is not None)
    shadow = {"kind": "shadow", "sample": 0.5, "min_duration_s": 0, "min_requests": 0}
    weight = {"kind": "weight", "percent": 50, "min_duration_s": 3600}
    assert stack.admin("POST", "", json=plan(shadow, weight)).status_code == 201
    eventually(lambda: "holding shadow" in stack.admin("GET", "/support").json()["reason"])
    rollout = stack.admin("GET", "/support").json()
    assert rollout["step_label"] == "shadow"
    assert "pool 'vllm' is near its limits: 2 of 2 replicas" in rollout["reason"]
    for replica in stack.replicas:
        replica.faults.waiting = 0
    eventually(lambda: stack.admin("GET", "/support").json()["step_label"] == "50%")


def test_an_adapter_that_does_not_fit_the_base_is_refused_before_any_replica_sees_it(
    fleet, tmp_path
):
    base = tmp_path / "base"
    base.mkdir()
    names = [f"model.layers.0.self_attn.{m}.weight" for m in MODULES[:4]]
    names += [f"model.layers.0.mlp.{m}.weight" for m in MODULES[4:]]
    write_safetensors(base / "model.safetensors", names)
    stack = fleet(base_model_dir=base, base_model_name="tiny", max_lora_rank=8)
    (tmp_path / "bad").mkdir()
    bad = write_adapter(tmp_path / "bad", {**good_config(), "base_model_name_or_path": "other"})
    refused = stack.admin("POST", "", json=plan(adapter=str(bad)))
    assert refused.status_code == 422
    message = refused.json()["error"]["message"]
    assert message.startswith(f"candidate.adapter: adapter '{ADAPTER}': base_model_name_or_path")
    assert all(r.seen.loads == [] for r in stack.replicas)
    (tmp_path / "good").mkdir()
    good = write_adapter(tmp_path / "good", good_config())
    assert stack.admin("POST", "", json=plan(adapter=str(good))).status_code == 201
    assert all(r.seen.loads == [ADAPTER] for r in stack.replicas)
