"""Two gateway processes sharing state in a real Redis share what access control keeps:
keys and their revocation, limits, scored request ids, and the server secret."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path

import httpx
import pytest

from gateway.forward import FEEDBACK_HEADER
from loadtests.standin import Faults, create_standin
from tests.processes import ADMIN_TOKEN, GatewayProcess
from tests.redis_server import redis_server
from tests.servers import serving

CHAT = {"model": "support", "messages": [{"role": "user", "content": "Where is my order?"}]}


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[GatewayProcess, GatewayProcess]]:
    with ExitStack() as stack:
        state = stack.enter_context(redis_server())
        stable = stack.enter_context(serving(create_standin(Faults())))
        candidate = stack.enter_context(serving(create_standin(Faults(text="Hello from Acme!"))))
        routes = {
            "backends": {"stable": {"url": stable}, "candidate": {"url": candidate}},
            "routes": [{
                "name": "support",
                "stable": {"backend": "stable", "model": "tiny-llama", "name": "base"},
                "candidate": {"backend": "candidate", "model": "acme-voice"},
                "rollout_id": "r1",
                "weight_percent": 50,
            }],
        }  # fmt: skip
        gateways = []
        for name in ("a", "b"):
            workdir = tmp_path / name
            workdir.mkdir()
            # An empty ROLLGATE_SECRET is unset: the replicas must agree on the one in Redis.
            env = {"ROLLGATE_STATE": state, "ROLLGATE_SECRET": ""}
            gateway = GatewayProcess(routes, workdir, env)
            stack.callback(gateway.stop)
            gateways.append(gateway.start())
        yield gateways[0], gateways[1]


def ask(gateway: GatewayProcess, key: str, user: str = "u1") -> httpx.Response:
    headers = {"authorization": f"Bearer {key}", "x-rollgate-key": user}
    return httpx.post(f"{gateway.url}/v1/chat/completions", json=CHAT, headers=headers)


def known(gateway: GatewayProcess, key: str) -> None:
    """Wait until `gateway` has seen `key` (made on another replica) at its store poll."""
    deadline = time.monotonic() + 10
    while ask(gateway, key, "probe").status_code == 401:
        assert time.monotonic() < deadline, "the key never reached the other replica"
        time.sleep(0.1)


def test_replicas_share_keys_limits_scores_and_cohorts(pair) -> None:
    a, b = pair
    key = a.create_key("acme", requests_per_s=0.1, burst=2)
    free = a.create_key("globex")
    known(b, free)  # made on A, known to B through Redis
    assert ask(a, key).status_code == 200
    assert ask(b, key).status_code == 200
    refused = ask(a, key)  # the burst of 2 is spent across both replicas
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "requests_per_second"
    metrics = httpx.get(f"{a.url}/metrics").text
    assert "rollgate_limits_local_fallback 0.0" in metrics  # Redis answers: shared limits

    answer = ask(a, free)
    body = {
        "request_id": answer.headers["x-request-id"],
        "score": 1,
        "token": answer.headers[FEEDBACK_HEADER],
    }
    auth = {"authorization": f"Bearer {free}"}
    assert httpx.post(f"{b.url}/v1/feedback", json=body, headers=auth).status_code == 200
    assert httpx.post(f"{a.url}/v1/feedback", json=body, headers=auth).status_code == 409

    users = [f"user-{i}" for i in range(40)]
    on_a = [ask(a, free, u).headers["x-rollgate-variant"] for u in users]
    on_b = [ask(b, free, u).headers["x-rollgate-variant"] for u in users]
    assert on_a == on_b  # one secret, so one cohort per user whichever replica answers
    assert set(on_a) == {"base", "acme-voice"}

    with httpx.Client(base_url=a.url, headers={"authorization": f"Bearer {ADMIN_TOKEN}"}) as admin:
        (listed,) = [k for k in admin.get("/admin/keys").json()["keys"]
                     if k["spec"]["tenant"] == "globex"]  # fmt: skip
        assert admin.delete(f"/admin/keys/{listed['id']}").status_code == 200
    deadline = time.monotonic() + 10  # B learns of it at its next store poll (0.25 s)
    while ask(b, free).status_code != 401:
        assert time.monotonic() < deadline, "replica B still takes the revoked key"
        time.sleep(0.1)
