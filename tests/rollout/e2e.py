"""Helpers the rollout tests on real vLLM share: plans quick enough for a test, waiting
for a rollout, asking which variant a user gets. Their fixtures are in conftest.py."""

from __future__ import annotations

import time
from collections.abc import Callable

import httpx

from tests.processes import GatewayProcess

EVALUATION_S = 2.0  # two scrapes per window
TENANTS = ("acme", "globex", "initech")
# On the CPU build a LoRA adapter costs measurably more per token than the base, and more
# so when the machine is loaded (CI): the healthy adapter's p95 may exceed base's by more
# than 20%, a real regression the default plan rightly refuses. These plans allow it.
CPU_LORA_CHECKS = [
    {"name": "error-rate", "metric": "error_rate", "threshold": 0.10},
    {"name": "latency-p95", "metric": "latency_p95", "threshold": 1.0},
    {"name": "satisfaction", "metric": "satisfaction", "threshold": 5},
    {"name": "safety", "metric": "safety"},
]


def plan(route: str, adapter: str, backend: str = "vllm", **overrides) -> dict:
    quick = {"min_duration_s": 6, "min_requests": 5}
    return {
        "route": route,
        "candidate": {"name": adapter, "backend": backend, "model": adapter},
        "steps": [
            {"kind": "shadow", **quick},
            *({"kind": "weight", "percent": p, **quick} for p in (5, 10, 25, 50, 100)),
        ],
        "checks": CPU_LORA_CHECKS,
        "min_samples": 10,
        "evaluation_interval_s": EVALUATION_S,
        "inconclusive_limit_s": 240,
        **overrides,
    }


def wait_for(admin: httpx.Client, route: str, done: Callable[[dict], bool], timeout: float):
    deadline = time.monotonic() + timeout
    while True:
        rollout = admin.get(f"/admin/rollouts/{route}").json()
        if done(rollout):
            return rollout
        assert time.monotonic() < deadline, f"timed out; rollout is {rollout}"
        time.sleep(0.5)


def variants(gateway: GatewayProcess, route: str, users: list[str]) -> dict[str, str]:
    body = {"model": route, "messages": [{"role": "user", "content": "hi"}], "max_tokens": 1}
    auth = {"authorization": f"Bearer {gateway.keys[0]}"}
    with httpx.Client(base_url=gateway.url, timeout=60, headers=auth) as http:
        return {
            user: http.post(
                "/v1/chat/completions", json=body, headers={"x-rollgate-key": user}
            ).headers["x-rollgate-variant"]
            for user in users
        }
