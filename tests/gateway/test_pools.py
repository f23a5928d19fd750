"""Replica pools end to end over loopback: balancing, retries, ejection, discovery, readiness.

The replicas are fault-injecting stand-ins (the tests with real vLLM replicas
are in tests/rollout/test_scale_out.py); the gateway and its pools are real.
"""

from __future__ import annotations

import threading
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import gateway.pool
from loadtests.standin import Faults
from tests.gateway.conftest import ADAPTER, BASE, HANG, POOL, PoolStack
from tests.gateway.test_proxy import eventually


def both(models=(BASE, ADAPTER), **faults) -> Faults:
    return Faults(models=list(models), **faults)


def test_equal_replicas_share_steady_load_within_ten_percent(make_pool):
    stack = make_pool([both(latency=0.005), both(latency=0.005), both(latency=0.005)])
    with ThreadPoolExecutor(8) as workers:
        codes = list(workers.map(lambda i: stack.chat(user=f"u{i}").status_code, range(600)))
    assert codes == [200] * 600
    counts = [r.count() for r in stack.replicas]
    mean = sum(counts) / len(counts)
    assert all(abs(c - mean) <= 0.1 * mean for c in counts), counts


def test_a_replica_that_lacks_the_adapter_gets_no_requests_for_it(make_pool):
    stack = make_pool([both(), both(models=[BASE])], weight=50)
    served = Counter(stack.chat(user=f"u{i}").headers["x-rollgate-variant"] for i in range(80))
    assert served["acme-voice"] > 10
    assert served["base"] > 10
    has, lacks = stack.replicas
    assert lacks.count(ADAPTER) == 0
    assert has.count(ADAPTER) == served["acme-voice"]
    assert lacks.count(BASE) > 0  # the base still goes to both
    assert stack.metric("rollgate_pool_retries_total", pool=POOL) == 0


def test_a_failure_before_the_first_byte_is_retried_on_another_replica(make_pool):
    stack = make_pool([both(error_rate=1.0), both()])
    for stream in (False, True) * 4:
        response = stack.chat(stream=stream)
        assert response.status_code == 200
        assert response.headers["x-rollgate-variant"] == "base"
    broken, good = stack.replicas
    assert good.count() == 8
    assert broken.count() == 3  # then ejected: eject_after failures in a row
    labels = {"route": "support", "variant": "base", "role": "stable"}
    assert stack.metric("rollgate_requests_total", outcome="ok", **labels) == 8
    assert stack.metric("rollgate_requests_total", outcome="error", **labels) == 0
    assert stack.metric("rollgate_pool_retries_total", pool=POOL) == 3
    assert stack.metric("rollgate_pool_ejections_total", pool=POOL) == 1
    ready = stack.http.get("/readyz").json()["backends"][POOL]
    assert ready["available"] == 1
    assert [r["state"] for r in ready["replicas"]] == ["ejected", "available"]


def test_a_dead_replica_is_probed_out_and_never_tried(make_pool):
    stack = make_pool([both(), both()], down=1)
    for _ in range(6):
        assert stack.chat().status_code == 200
    assert stack.metric("rollgate_pool_retries_total", pool=POOL) == 0
    ready = stack.http.get("/readyz")
    assert ready.status_code == 200
    states = [r["state"] for r in ready.json()["backends"][POOL]["replicas"]]
    assert states == ["available", "available", "unhealthy"]
    dead = {"pool": POOL, "replica": ready.json()["backends"][POOL]["replicas"][2]["address"][7:]}
    assert stack.metric("rollgate_pool_replica_available", **dead) == 0


def test_an_unhealthy_replica_leaves_and_rejoins_with_its_probes(make_pool):
    stack = make_pool([both(), both()])
    first = stack.replicas[0]
    first.faults.healthy = False
    eventually(lambda: not stack.pool.balancer.available() or _available(stack) == 1)
    before = first.count()
    for _ in range(6):
        assert stack.chat().status_code == 200
    assert first.count() == before
    first.faults.healthy = True
    eventually(lambda: _available(stack) == 2)
    for _ in range(6):
        stack.chat()
    assert first.count() > before


def _available(stack: PoolStack) -> int:
    return stack.pool.balancer.summary()["available"]


def test_a_404_from_a_stale_model_list_is_retried_and_corrects_the_list(make_pool):
    stack = make_pool([both(), both()], weight=100, probe_interval_s=60)
    first, second = stack.replicas
    first.faults.models = [BASE]  # the adapter was unloaded since the last probe
    for _ in range(4):
        response = stack.chat()
        assert response.status_code == 200
        assert response.headers["x-rollgate-variant"] == "acme-voice"
    assert first.count(ADAPTER) <= 1  # asked once, answered 404, never again
    assert second.count(ADAPTER) == 4
    assert ADAPTER not in stack.pool.balancer.replica(first.url).models
    assert stack.metric("rollgate_pool_ejections_total", pool=POOL) == 0


def test_a_timeout_is_not_retried(make_pool):
    stack = make_pool([both(hang=True), both(hang=True)], read_timeout=0.3)
    response = stack.chat()
    assert response.status_code == 504
    assert sum(r.count() for r in stack.replicas) == 1


def test_no_replica_at_all_is_503_with_the_reason(make_pool):
    stack = make_pool([], down=2)
    response = stack.chat()
    assert response.status_code == 503
    assert "unhealthy: 2" in response.json()["error"]["message"]
    assert "127.0.0.1" not in response.json()["error"]["message"]  # no addresses to clients
    assert stack.http.get("/readyz").status_code == 503


def test_dns_discovery_follows_the_replicas(make_pool):
    names = {"replicas": ["127.0.0.2"]}
    stack = make_pool([both(), both()], dns=names)
    first, second = stack.replicas
    for _ in range(4):
        stack.chat()
    assert (first.count(), second.count()) == (4, 0)
    names["replicas"] = ["127.0.0.3", "127.0.0.2", "127.0.0.2"]
    eventually(lambda: _available(stack) == 2)
    for _ in range(6):
        stack.chat()
    assert second.count() == 3
    names["replicas"] = ["127.0.0.3"]
    eventually(lambda: stack.pool.members == (second.url,))
    del names["replicas"]  # a DNS failure keeps the replicas known so far
    for _ in range(4):
        assert stack.chat().status_code == 200
    assert stack.pool.members == (second.url,)


def test_a_resolver_that_hangs_neither_empties_the_pool_nor_stalls_its_probes(
    make_pool, monkeypatch
):
    monkeypatch.setattr(gateway.pool, "RESOLVE_TIMEOUT_S", 0.2)
    names = {"replicas": ["127.0.0.2", "127.0.0.3"]}
    stack = make_pool([both(), both()], dns=names)
    eventually(lambda: _available(stack) == 2)
    names["replicas"] = HANG
    first = stack.replicas[0]
    first.faults.healthy = False  # noticed only if the probes go on
    eventually(lambda: _available(stack) == 1)
    for _ in range(4):
        assert stack.chat().status_code == 200
    assert len(stack.pool.members) == 2


def test_concurrent_requests_spread_by_in_flight_count(make_pool):
    # Long requests: fewest-in-flight keeps the busy replica from getting more.
    stack = make_pool([both(latency=0.3), both(latency=0.3)])
    barrier = threading.Barrier(6)

    def send(_: int) -> int:
        barrier.wait()
        return stack.chat().status_code

    with ThreadPoolExecutor(6) as workers:
        assert list(workers.map(send, range(6))) == [200] * 6
    assert [r.count() for r in stack.replicas] == [3, 3]
