"""The data plane end to end over loopback, against fault-injecting stand-ins."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from gateway.body import ChatBody
from gateway.forward import FEEDBACK_HEADER
from loadtests.standin import Faults
from tests.gateway.conftest import ADMIN_TOKEN

CHAT = {
    "model": "support",
    "messages": [{"role": "user", "content": "How do I reset my password?"}],
}


def chat(stack, body=None, **headers) -> httpx.Response:
    return stack.http.post("/v1/chat/completions", json=body or CHAT, headers=headers)


def score(stack, answer: httpx.Response, value: float, **override) -> httpx.Response:
    """A user's score for `answer`, with the feedback token it came with."""
    body = {
        "request_id": answer.headers["x-request-id"],
        "score": value,
        "token": answer.headers[FEEDBACK_HEADER],
        **override,
    }
    return stack.http.post("/v1/feedback", json=body)


def sse_events(text: str) -> list:
    events = [e.removeprefix("data: ") for e in text.strip().split("\n\n")]
    return [e if e == "[DONE]" else json.loads(e) for e in events]


def summed(stack, name: str, **labels: str) -> float:
    """The sum over every series of `name` with these labels, whatever their others (tenant)."""
    return sum(
        sample.value
        for metric in stack.registry.collect()
        for sample in metric.samples
        if sample.name == name and labels.items() <= sample.labels.items()
    )


def eventually(predicate, timeout=5.0):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)


def test_forwards_with_only_the_model_rewritten(make_stack):
    stack = make_stack()
    body = {**CHAT, "temperature": 0.3, "max_tokens": 7, "user": "u1", "x_vendor": {"k": [1, 2]}}
    response = chat(stack, body)
    assert response.status_code == 200
    assert response.headers["x-rollgate-variant"] == "base"
    assert response.headers["x-request-id"].startswith("chatcmpl-")
    assert stack.stable_seen.bodies == [{**body, "model": "tiny-llama"}]
    assert response.json()["choices"][0]["message"]["content"].startswith("To reset")


def test_stream_relays_events_and_strips_usage_the_client_did_not_ask_for(make_stack):
    stack = make_stack()
    response = chat(stack, {**CHAT, "stream": True})
    events = sse_events(response.text)
    assert response.headers["content-type"].startswith("text/event-stream")
    assert events[-1] == "[DONE]"
    assert all(e["choices"] for e in events[:-1])  # no usage-only chunk
    assert stack.stable_seen.bodies[0]["stream_options"] == {"include_usage": True}
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1])
    assert text == stack.stable.text
    tokens = stack.metric(
        "rollgate_output_tokens_sum", route="support", variant="base", role="stable"
    )
    assert tokens == len(stack.stable.text.split())


def test_stream_keeps_usage_when_asked(make_stack):
    stack = make_stack()
    events = sse_events(
        chat(stack, {**CHAT, "stream": True, "stream_options": {"include_usage": True}}).text
    )
    assert events[-2]["choices"] == []
    assert events[-2]["usage"]["completion_tokens"] > 0


@pytest.mark.parametrize(
    ("raw", "status", "param"),
    [
        (b"{not json", 400, None),
        (b"[1, 2]", 400, None),
        (b'{"messages": [{"role": "user", "content": "x"}]}', 400, "model"),
        (b'{"model": "support", "messages": []}', 400, "messages"),
        (b'{"model": "support", "messages": [{}], "stream": "yes"}', 400, "stream"),
        (b'{"model": "support", "messages": [{}], "user": 5}', 400, "user"),
    ],
)
def test_bad_requests_get_openai_errors(make_stack, raw, status, param):
    stack = make_stack()
    response = stack.http.post("/v1/chat/completions", content=raw)
    assert response.status_code == status
    error = response.json()["error"]
    assert error["type"] == "invalid_request_error"
    assert error["param"] == param
    assert stack.stable_seen.bodies == []


def test_unknown_route_is_404_listing_the_routes(make_stack):
    response = chat(make_stack(), {**CHAT, "model": "nope"})
    assert response.status_code == 404
    assert "Routes: support" in response.json()["error"]["message"]
    assert response.json()["error"]["code"] == "model_not_found"


def test_a_bug_is_a_500_in_openai_form_and_the_gateway_keeps_serving(make_stack, monkeypatch):
    stack = make_stack()
    real_parse = ChatBody.parse
    monkeypatch.setattr(ChatBody, "parse", staticmethod(lambda raw: 1 / 0))
    response = chat(stack)
    assert response.status_code == 500
    assert response.json()["error"]["message"] == "internal error"
    assert "ZeroDivisionError" not in response.text
    monkeypatch.setattr(ChatBody, "parse", real_parse)
    assert chat(stack).status_code == 200


def test_a_failing_sink_does_not_fail_the_request(make_stack):
    class Broken:
        def record(self, exchange):
            raise RuntimeError("sink down")

        def incident(self, exchange, cause):
            raise RuntimeError("sink down")

        def scored(self, route, variant, role, score, tenant):
            raise RuntimeError("sink down")

    stack = make_stack(sinks=[Broken()])
    response = chat(stack)
    assert response.status_code == 200
    labels = {"route": "support", "variant": "base", "role": "stable"}
    assert stack.metric("rollgate_requests_total", outcome="ok", **labels) == 1
    assert score(stack, response, 1).status_code == 200
    assert summed(stack, "rollgate_feedback_score_count", **labels) == 1


def test_body_over_the_limit_is_413(make_stack):
    stack = make_stack(max_body_bytes=2048)
    big = {**CHAT, "messages": [{"role": "user", "content": "x" * 4096}]}
    assert chat(stack, big).status_code == 413
    assert stack.stable_seen.bodies == []


def test_upstream_5xx_is_502(make_stack):
    stack = make_stack(stable=Faults(error_rate=1.0))
    response = chat(stack)
    assert response.status_code == 502
    assert response.json()["error"]["type"] == "upstream_error"


def test_upstream_down_is_503_with_retry_after(make_stack):
    response = chat(make_stack(down={"stable"}))
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"


def test_upstream_timeout_is_504(make_stack):
    stack = make_stack(stable=Faults(hang=True), read_timeout=0.3)
    response = chat(stack)
    assert response.status_code == 504
    assert response.json()["error"]["type"] == "upstream_timeout"


def test_failing_candidate_fails_over_to_stable(make_stack):
    stack = make_stack(candidate=Faults(error_rate=1.0), weight_percent=100)
    for stream in (False, True):
        response = chat(stack, {**CHAT, "stream": stream})
        assert response.status_code == 200
        assert response.headers["x-rollgate-variant"] == "base"
    labels = {"route": "support", "variant": "acme-voice", "role": "candidate"}
    assert stack.metric("rollgate_requests_total", outcome="error", **labels) == 2
    assert stack.metric("rollgate_failovers_total", route="support") == 2


def test_candidate_down_fails_over_too(make_stack):
    stack = make_stack(down={"candidate"}, weight_percent=100)
    response = chat(stack)
    assert response.status_code == 200
    assert response.headers["x-rollgate-variant"] == "base"


def test_mid_stream_failure_ends_with_an_error_event(make_stack):
    stack = make_stack(stable=Faults(fail_after_events=3))
    response = chat(stack, {**CHAT, "stream": True})
    events = sse_events(response.text)
    assert events[-1] == "[DONE]"
    assert "error" in events[-2]
    labels = {"route": "support", "variant": "base", "role": "stable"}
    assert stack.metric("rollgate_requests_total", outcome="error", **labels) == 1


def test_client_disconnect_cancels_the_upstream_request(make_stack):
    stack = make_stack(stable=Faults(token_delay=0.2))
    with stack.http.stream(
        "POST", "/v1/chat/completions", json={**CHAT, "stream": True}
    ) as response:
        next(response.iter_bytes())
    eventually(lambda: stack.stable_seen.cancelled == 1)
    labels = {"route": "support", "variant": "base", "role": "stable"}
    eventually(lambda: stack.metric("rollgate_requests_total", outcome="cancelled", **labels) == 1)


def test_feedback_is_attributed_to_the_variant_that_answered(make_stack):
    stack = make_stack(weight_percent=100)
    answer = chat(stack)
    response = score(stack, answer, 0.25)
    assert response.status_code == 200
    assert "acme-voice" not in response.text  # the variant stays on the server
    labels = {"route": "support", "variant": "acme-voice", "role": "candidate"}
    assert summed(stack, "rollgate_feedback_score_sum", **labels) == 0.25
    assert score(stack, answer, 1, request_id="nope").status_code == 422
    bad = score(stack, chat(stack), 7)
    assert bad.status_code == 422
    assert bad.json()["error"]["param"] == "score"


def test_safety_incidents_are_counted_per_variant(make_stack):
    stack = make_stack(
        candidate=Faults(text="First send me your password. Then relax."), weight_percent=100
    )
    chat(stack)
    chat(stack, {**CHAT, "stream": True})
    labels = {
        "route": "support",
        "variant": "acme-voice",
        "role": "candidate",
        "rule": "credentials",
    }
    # Stable answers the same prompts safely: both are the candidate's own.
    eventually(
        lambda: stack.metric("rollgate_safety_incidents_total", **labels, cause="variant") == 2
    )


def test_shadow_serves_stable_and_records_pairs(make_stack):
    stack = make_stack(shadow_sample=1.0)
    for _ in range(3):
        response = chat(stack)
        assert response.headers["x-rollgate-variant"] == "base"
        assert response.json()["choices"][0]["message"]["content"] == stack.stable.text
    eventually(lambda: len(stack.candidate_seen.bodies) == 3)
    assert all(b["stream"] is False for b in stack.candidate_seen.bodies)
    labels = {"route": "support", "variant": "acme-voice"}
    eventually(lambda: stack.metric("rollgate_shadow_comparisons_total", **labels) == 3)
    assert stack.http.get("/admin/shadow-pairs").status_code == 401
    bad = stack.http.get("/admin/shadow-pairs", headers={"authorization": "Bearer wrong"})
    assert bad.status_code == 401
    pairs = stack.http.get(
        "/admin/shadow-pairs", headers={"authorization": f"Bearer {ADMIN_TOKEN}"}
    ).json()["pairs"]
    assert len(pairs) == 3
    assert {pairs[0]["a"], pairs[0]["b"]} == {stack.stable.text, stack.candidate.text}
    assert "a_is_candidate" not in pairs[0]


def test_models_health_and_readiness(make_stack):
    stack = make_stack()
    assert [m["id"] for m in stack.http.get("/v1/models").json()["data"]] == ["support"]
    assert stack.http.get("/healthz").json() == {"status": "ok"}
    assert stack.http.get("/readyz").status_code == 200
    # A candidate's pool down fails its requests over: the gateway still serves.
    ready = make_stack(down={"candidate"}).http.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["backends"]["candidate-pool"]["ready"] is False
    assert ready.json()["backends"]["stable-pool"]["ready"] is True
    ready = make_stack(down={"stable"}).http.get("/readyz")
    assert ready.status_code == 503
    replica = ready.json()["backends"]["stable-pool"]["replicas"][0]
    assert replica["state"] == "unhealthy"
