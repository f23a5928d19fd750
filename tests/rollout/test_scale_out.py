"""Scale-out end to end: two vLLM replicas in one pool behind two gateways.

Real vLLM (CPU build) twice, each started with the base model only and a spare
LoRA slot; two gateway processes sharing a real Redis; a real Prometheus
scraping both gateways; users on both. The brand-voice adapter reaches the
replicas only through the controller, which loads it at run time.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from dataclasses import dataclass

import httpx
import pytest

from serving.artifacts import Artifacts
from serving.corpus import BRAND_VOICE
from serving.process import VllmServer, free_port
from tests.conftest import VLLM_START_TIMEOUT, serving_config
from tests.processes import ADMIN_TOKEN, GatewayProcess, metric_sum
from tests.prometheus_server import prometheus_server
from tests.redis_server import redis_server
from tests.rollout.e2e import CPU_LORA_CHECKS, wait_for
from tests.users import Users

pytestmark = pytest.mark.vllm

ROUTE = "support-pool"
SUCCESS = "vllm:request_success_total"
QUICK = {"min_duration_s": 5, "min_requests": 5}


@dataclass
class Fleet:
    replicas: list[VllmServer]
    gateways: list[GatewayProcess]
    admin: httpx.Client
    keys: list[str]  # a client key for each gateway's users, made on that gateway


@pytest.fixture
def fleet(artifacts: Artifacts, tmp_path) -> Iterator[Fleet]:
    # The base only, and a core each: unpinned, both would bind the same core and one
    # would starve (serving/config.py), which makes the replicas anything but equal.
    configs = [
        serving_config(artifacts).model_copy(update={"cpu_cores": str(core)}) for core in range(2)
    ]
    ports = [free_port(), free_port()]
    routes = {
        "backends": {"vllm": {"urls": [c.base_url for c in configs], "probe_interval_s": 0.5}},
        "routes": [{"name": ROUTE, "stable": {"backend": "vllm", "model": "tiny-llama",
                                              "name": "base"}}],
    }  # fmt: skip
    with ExitStack() as stack:
        replicas = [VllmServer(c, tmp_path / f"vllm-{c.port}.log") for c in configs]
        # Whatever the list holds at the end is stopped: the test replaces a replica.
        stack.callback(lambda: [server.stop() for server in replicas])
        for server in replicas:
            server.start()
        with ThreadPoolExecutor(len(replicas)) as waiting:  # each start is mostly waiting
            list(waiting.map(lambda s: s.wait_ready(timeout=VLLM_START_TIMEOUT), replicas))
        prom_dir = tmp_path / "prometheus"
        prom_dir.mkdir()
        settings = {
            "ROLLGATE_STATE": stack.enter_context(redis_server()),
            "ROLLGATE_PROMETHEUS_URL": stack.enter_context(
                prometheus_server([f"http://127.0.0.1:{p}" for p in ports], prom_dir)
            ),
            "ROLLGATE_CONTROLLER_TICK_S": "0.5",
        }
        gateways = [
            stack.enter_context(GatewayProcess(routes, tmp_path, settings, port=port))
            for port in ports
        ]
        admin = stack.enter_context(
            httpx.Client(
                base_url=gateways[0].url,
                headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
                timeout=60,
            )
        )
        # Error rate and safety only: one tenant's users suffice.
        keys = [gateway.create_key("acme") for gateway in gateways]
        yield Fleet(replicas, gateways, admin, keys)


def served_by(replica: VllmServer) -> float:
    try:
        text = httpx.get(f"{replica.config.base_url}/metrics", timeout=5).text
    except httpx.HTTPError:
        return 0.0
    return metric_sum(text, SUCCESS)


def adapters_of(replica: VllmServer) -> set[str]:
    models = httpx.get(f"{replica.config.base_url}/v1/models", timeout=5).json()["data"]
    return {m["id"] for m in models if m.get("parent")}


def until(condition, timeout: float, what: str) -> float:
    """Seconds until `condition()` held."""
    start = time.monotonic()
    while not condition():
        assert time.monotonic() - start < timeout, f"not within {timeout} s: {what}"
        time.sleep(0.1)
    return time.monotonic() - start


def test_two_replicas_two_gateways_a_rollout_a_killed_replica(fleet: Fleet, artifacts) -> None:
    first, second = fleet.replicas
    adapter = BRAND_VOICE.name
    plan = {
        "route": ROUTE,
        "candidate": {
            "name": adapter, "backend": "vllm", "model": adapter,
            "adapter": str(artifacts.adapters[adapter]),
        },
        "steps": [{"kind": "weight", "percent": p, **QUICK} for p in (10, 50, 100)],
        "checks": CPU_LORA_CHECKS[:1] + CPU_LORA_CHECKS[3:],  # error rate and safety
        "min_samples": 10,
        "evaluation_interval_s": 2.0,
        "inconclusive_limit_s": 240,
    }  # fmt: skip
    # Equal replicas get equal shares. One user per gateway: replicas that share this
    # machine's two cores with everything else are not equal, and under more load the
    # fewest-in-flight rule rightly sends more to the one that answers faster (measured
    # in BENCHMARKS.md); stand-in replicas that are equal share 8 users evenly
    # (tests/gateway/test_pools.py).
    with ExitStack() as steady:
        for i, (g, key) in enumerate(zip(fleet.gateways, fleet.keys, strict=True)):
            steady.enter_context(
                Users(g.url, ROUTE, threads=1, max_tokens=8, seed=10 + i, keys=[key])
            )
        before = [served_by(r) for r in fleet.replicas]
        time.sleep(15)
        shares = [served_by(r) - b for r, b in zip(fleet.replicas, before, strict=True)]
    mean = sum(shares) / 2
    assert mean > 30, shares
    assert all(abs(s - mean) <= 0.1 * mean for s in shares), shares

    with ExitStack() as users_running:
        users = [
            users_running.enter_context(
                Users(g.url, ROUTE, threads=3, stream_share=0.2, max_tokens=8, seed=i, keys=[key])
            )
            for i, (g, key) in enumerate(zip(fleet.gateways, fleet.keys, strict=True))
        ]

        # The controller loads the adapter on both replicas, then the rollout runs to the end.
        assert adapters_of(first) == adapters_of(second) == set()
        applied = fleet.admin.post("/admin/rollouts", json=plan)
        assert applied.status_code == 201, applied.text
        assert adapters_of(first) == adapters_of(second) == {adapter}
        done = wait_for(fleet.admin, ROUTE, lambda r: r["phase"] != "running", timeout=240)
        assert done["phase"] == "promoted", done

        # One replica killed mid-load, then started again on its port.
        killed_at = time.time()
        VllmServer._signal_group(second.pid, signal.SIGKILL)
        second.stop()
        time.sleep(5)
        restarted = VllmServer(second.config, second.log_path.with_suffix(".restart.log"))
        restarted.start()
        fleet.replicas[1] = restarted  # stopped by the fixture
        restarted.wait_ready(timeout=VLLM_START_TIMEOUT)
        back = time.monotonic()
        # The controller notices the adapter is gone and loads it again; the replica serves.
        until(lambda: adapters_of(restarted) == {adapter}, 30, "the adapter reloaded")
        until(lambda: served_by(restarted) > 0, 30, "the restarted replica serving")
        first_request_s = time.monotonic() - back
        time.sleep(3)

    failed_whole = [f for u in users for f in u.failed if not f[1]]
    assert failed_whole == []
    answered = [s for u in users for s in u.served if s.sent >= killed_at]
    whole = [s for s in answered if not s.stream]
    assert len(whole) > 20
    assert [s.status for s in whole if s.status != 200] == []  # retried on the other replica
    assert {s.variant for s in answered} == {adapter}  # promoted: everyone gets the adapter
    # Back without the adapter, it was sent no request for it (vLLM would have answered 404).
    assert 'HTTP/1.1" 404' not in restarted.log_path.read_text()
    retries = sum(
        metric_sum(httpx.get(f"{g.url}/metrics").text, "rollgate_pool_retries_total")
        for g in fleet.gateways
    )
    assert retries > 0  # the kill was felt, and absorbed
    print(f"\nreplica back -> first served request: {first_request_s:.2f} s")
