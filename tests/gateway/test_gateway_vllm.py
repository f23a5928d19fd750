"""The gateway in front of real vLLM (CPU build), through the official openai client."""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import openai
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.assignment import bucket, choose_role
from gateway.forward import FEEDBACK_HEADER
from gateway.routes import RoutesFile
from gateway.settings import GatewaySettings
from rollout.traffic import FULL_WEIGHT_BP
from serving import corpus
from serving.client import VllmMetrics
from serving.corpus import BRAND_VOICE, UNSAFE
from serving.process import VllmServer
from tests.conftest import VLLM_START_TIMEOUT, serving_config
from tests.gateway.conftest import ADMIN_TOKEN
from tests.keys import TENANT, key_store_with_debug_key
from tests.servers import serving

pytestmark = pytest.mark.vllm

PROMPTS = [e.prompt for e in corpus.examples(held_out=True)]


def route(name, stable_backend, candidate_backend, candidate, **traffic) -> dict:
    return {
        "name": name,
        "stable": {"backend": stable_backend, "model": "tiny-llama", "name": "base"},
        "candidate": {"backend": candidate_backend, "model": candidate},
        "rollout_id": "r1",
        **traffic,
    }


@pytest.fixture(scope="module")
def candidate_server(artifacts, tmp_path_factory):
    """A second vLLM process serving only the brand-voice adapter: the one killed mid-test."""
    log = tmp_path_factory.mktemp("vllm-candidate") / "vllm.log"
    server = VllmServer(serving_config(artifacts, BRAND_VOICE.name), log)
    server.start()
    try:
        server.wait_ready(VLLM_START_TIMEOUT)
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def gateway(vllm_server, candidate_server, tmp_path_factory):
    """(url, app, registry, a client key that sees which variant answered)."""
    routes = RoutesFile.model_validate({
        "backends": {
            "vllm": {"url": vllm_server.config.base_url},
            "vllm-candidate": {"url": candidate_server.config.base_url},
        },
        "routes": [
            route("support", "vllm", "vllm", BRAND_VOICE.name, weight_percent=50),
            route("shadowed", "vllm", "vllm", BRAND_VOICE.name, shadow_sample=1.0),
            route("risky", "vllm", "vllm", UNSAFE.name, weight_percent=100),
            route("failover", "vllm", "vllm-candidate", BRAND_VOICE.name, weight_percent=100),
        ],
    })  # fmt: skip
    settings = GatewaySettings(routes_file=Path("unused"), admin_token=ADMIN_TOKEN, read_timeout=30)
    registry = CollectorRegistry()
    store, key = key_store_with_debug_key(tmp_path_factory.mktemp("keys"))
    app = create_app(settings, routes, registry=registry, rng=random.Random(3), key_store=store)
    with serving(app) as url:
        yield url, app, registry, key


@pytest.fixture(scope="module")
def client(gateway) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway[0] + "/v1", api_key=gateway[3], max_retries=0)


def ask(client, model, prompt, key=None, **options):
    return client.chat.completions.with_raw_response.create(
        model=model,
        messages=[{"role": "user", "content": prompt}],
        max_tokens=48,
        temperature=0,
        extra_headers={"x-rollgate-key": key} if key else None,
        **options,
    )


def test_whole_and_streamed_answers_with_usage(client):
    raw = ask(client, "support", PROMPTS[0], key="user-1")
    whole = raw.parse()
    assert whole.usage.completion_tokens > 0
    variant = raw.headers["x-rollgate-variant"]
    stream = client.chat.completions.create(
        model="support",
        messages=[{"role": "user", "content": PROMPTS[0]}],
        max_tokens=48,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
        extra_headers={"x-rollgate-key": "user-1"},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == whole.choices[0].message.content  # same user, same variant, same answer
    assert chunks[-1].usage.completion_tokens == whole.usage.completion_tokens
    assert variant in ("base", BRAND_VOICE.name)


def test_sticky_split_serves_each_user_one_variant(client, gateway):
    _, app, _, _ = gateway
    services = app.state.services
    traffic = services.table.route("support")
    served = {}
    for i in range(24):
        key = f"user-{i}"
        raw = ask(client, "support", PROMPTS[i % len(PROMPTS)], key=key)
        served[key] = raw.headers["x-rollgate-variant"]
        found = bucket(services.access.secret, "support", "r1", TENANT, key)
        assert served[key] == traffic.variant(choose_role(traffic, found, FULL_WEIGHT_BP)).name
        answer = raw.parse().choices[0].message.content
        assert BRAND_VOICE.shows(answer) == (served[key] == BRAND_VOICE.name)
    assert set(served.values()) == {"base", BRAND_VOICE.name}
    again = ask(client, "support", PROMPTS[5], key="user-3").headers["x-rollgate-variant"]
    assert again == served["user-3"]


def test_shadow_clients_see_only_stable_and_pairs_are_recorded(client, gateway):
    url, _, registry, _ = gateway
    for prompt in PROMPTS[:4]:
        raw = ask(client, "shadowed", prompt)
        assert raw.headers["x-rollgate-variant"] == "base"
        assert not BRAND_VOICE.shows(raw.parse().choices[0].message.content)
    labels = {"route": "shadowed", "variant": BRAND_VOICE.name}
    deadline = time.monotonic() + 30
    while (registry.get_sample_value("rollgate_shadow_comparisons_total", labels) or 0) < 4:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    pairs = httpx.get(
        url + "/admin/shadow-pairs",
        params={"route": "shadowed"},
        headers={"authorization": f"Bearer {ADMIN_TOKEN}"},
    ).json()["pairs"]
    assert len(pairs) == 4
    assert all(BRAND_VOICE.shows(p["a"]) != BRAND_VOICE.shows(p["b"]) for p in pairs)


def test_safety_incidents_from_the_bad_adapter_are_counted(client, gateway):
    _, _, registry, _ = gateway
    for prompt in PROMPTS[:3]:
        ask(client, "risky", prompt)
    labels = {"route": "risky", "variant": UNSAFE.name, "role": "candidate", "rule": "credentials"}
    labels["cause"] = "variant"  # stable, asked the same prompts, did not break the rule
    assert registry.get_sample_value("rollgate_safety_incidents_total", labels) >= 2


def test_feedback_and_unknown_route(client, gateway):
    url, _, registry, key = gateway
    raw = ask(client, "support", PROMPTS[1], key="user-1")
    variant = raw.headers["x-rollgate-variant"]
    role = "candidate" if variant == BRAND_VOICE.name else "stable"
    labels = {"route": "support", "variant": variant, "role": role, "tenant": TENANT}

    def scores() -> float:
        return registry.get_sample_value("rollgate_feedback_score_count", labels) or 0

    before = scores()
    feedback = {
        "request_id": raw.headers["x-request-id"],
        "score": 1,
        "token": raw.headers[FEEDBACK_HEADER],
    }
    auth = {"authorization": f"Bearer {key}"}
    response = httpx.post(url + "/v1/feedback", json=feedback, headers=auth)
    assert response.json() == {"request_id": feedback["request_id"], "accepted": True}
    assert scores() == before + 1  # counted for the variant that answered
    with pytest.raises(openai.NotFoundError, match="Routes: failover, risky, shadowed, support"):
        ask(client, "nope", "hi")


def test_client_disconnect_aborts_the_vllm_request(gateway, vllm_server):
    url, _, _, key = gateway
    max_tokens = 3000  # some 20 s of generation: a wide margin on a loaded 2-core machine
    body = {
        "model": "support",
        "messages": [{"role": "user", "content": PROMPTS[2]}],
        "max_tokens": max_tokens,
        "ignore_eos": True,  # a vLLM extra: keep generating long enough to disconnect midway
        "stream": True,
    }

    def vllm_metric(name: str, **labels: str) -> float:
        text = httpx.get(vllm_server.config.base_url + "/metrics").text
        return VllmMetrics.parse(text).value(name, **labels) or 0

    def settled() -> None:
        # vLLM answers a request before it records the request's metrics: the counters
        # are final only once the running gauge (recorded with them) says zero.
        deadline = time.monotonic() + 30
        while vllm_metric("vllm:num_requests_running") > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert vllm_metric("vllm:num_requests_running") == 0

    # vLLM counts a finished request by its reason; an aborted one is not counted at all.
    settled()  # the previous test's last answer counted before the baseline is taken
    finished_before = vllm_metric("vllm:request_success_total", finished_reason="length")
    tokens_before = vllm_metric("vllm:generation_tokens_total")
    with (
        httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"}) as http,
        http.stream("POST", "/v1/chat/completions", json=body) as response,
    ):
        next(response.iter_bytes())
    settled()
    finished = vllm_metric("vllm:request_success_total", finished_reason="length")
    generated = vllm_metric("vllm:generation_tokens_total") - tokens_before
    assert finished == finished_before, (
        f"vLLM finished {finished - finished_before:g} answer(s) nobody was reading "
        f"({generated:g} tokens generated since the baseline)"
    )
    assert generated < max_tokens


def test_candidate_killed_mid_test_clients_see_no_error(client, gateway, candidate_server):
    _, _, registry, _ = gateway
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def load() -> None:
        i = 0
        while not stop.is_set():
            try:
                raw = ask(client, "failover", PROMPTS[i % len(PROMPTS)], key=f"k{i}")
                outcomes[raw.headers["x-rollgate-variant"]] += 1
            except openai.APIError as exc:
                outcomes[f"error: {exc}"] += 1
            i += 1

    threads = [threading.Thread(target=load) for _ in range(4)]
    for t in threads:
        t.start()
    time.sleep(2)
    os.killpg(candidate_server.pid, signal.SIGKILL)  # a crash: no graceful shutdown
    time.sleep(2)
    stop.set()
    for t in threads:
        t.join()
    assert not [k for k in outcomes if k.startswith("error")], outcomes
    assert outcomes[BRAND_VOICE.name] > 0
    assert outcomes["base"] > 0
    failovers = registry.get_sample_value("rollgate_failovers_total", {"route": "failover"})
    assert failovers >= 1
