"""Client keys, limits, hidden variants, feedback tokens and admin roles, tried as a hostile
client would, against an in-process gateway over loopback."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from gateway.forward import FEEDBACK_HEADER
from tests.gateway.conftest import ADMIN_TOKEN
from tests.servers import serving

CHAT = {"model": "support", "messages": [{"role": "user", "content": "Where is my order?"}]}
OPERATOR = {"authorization": f"Bearer {ADMIN_TOKEN}"}


def bearer(secret: str) -> dict[str, str]:
    return {"authorization": f"Bearer {secret}"}


def create_key(stack, **spec) -> str:
    body = {"name": "app", "tenant": "acme", **spec}
    created = stack.http.post("/admin/keys", json=body, headers=OPERATOR)
    assert created.status_code == 201, created.text
    return created.json()["key"]


def chat(stack, secret: str | None, **headers) -> httpx.Response:
    auth = bearer(secret) if secret else {"authorization": ""}
    return stack.http.post("/v1/chat/completions", json=CHAT, headers={**auth, **headers})


def score(stack, secret: str, answer: httpx.Response, value: float = 0.0, **extra):
    body = {
        "request_id": answer.headers["x-request-id"],
        "score": value,
        "token": answer.headers[FEEDBACK_HEADER],
        **extra,
    }
    return stack.http.post("/v1/feedback", json=body, headers=bearer(secret))


def test_requests_without_a_valid_key_get_an_openai_401(make_stack):
    stack = make_stack()
    for secret in (None, "sk-guess", "rgk_0123456789abcdef_nope"):
        response = chat(stack, secret)
        assert response.status_code == 401
        error = response.json()["error"]
        assert (error["type"], error["code"]) == ("authentication_error", "invalid_api_key")
    assert stack.stable_seen.bodies == []  # nothing reached an upstream


def test_a_revoked_key_stops_working_at_once(make_stack):
    stack = make_stack()
    secret = create_key(stack)
    assert chat(stack, secret).status_code == 200
    (listed,) = [k for k in stack.http.get("/admin/keys", headers=OPERATOR).json()["keys"]
                 if k["spec"]["tenant"] == "acme"]  # fmt: skip
    assert "secret_sha256" not in listed
    assert secret not in json.dumps(listed)
    revoked = stack.http.delete(f"/admin/keys/{listed['id']}", headers=OPERATOR)
    assert (revoked.status_code, revoked.json()["revoked_by"]) == (200, "bootstrap")
    assert chat(stack, secret).status_code == 401


def test_without_the_debug_scope_the_variant_stays_hidden(make_stack):
    stack = make_stack(weight_percent=100)
    plain, debug = create_key(stack), create_key(stack, scopes=["debug"])
    hidden = chat(stack, plain)
    assert "x-rollgate-variant" not in hidden.headers
    assert hidden.json()["model"] == "support"
    assert "acme-voice" not in hidden.text.replace("Hello from Acme", "")
    shown = chat(stack, debug)
    assert shown.headers["x-rollgate-variant"] == "acme-voice"
    assert shown.json()["model"] == "acme-voice"
    streamed = stack.http.post(
        "/v1/chat/completions", json={**CHAT, "stream": True}, headers=bearer(plain)
    )
    assert '"model":"acme-voice"' not in streamed.text.replace(" ", "")
    assert '"model":"support"' in streamed.text.replace(" ", "")


def test_a_key_that_opts_out_of_canaries_always_gets_stable(make_stack):
    stack = make_stack(weight_percent=100)
    opted_out = create_key(stack, scopes=["debug"], max_candidate_percent=0)
    for user in range(20):
        answer = chat(stack, opted_out, **{"x-rollgate-key": f"user-{user}"})
        assert answer.headers["x-rollgate-variant"] == "base"


def test_an_opted_out_keys_prompts_are_not_mirrored_to_the_candidate(make_stack):
    stack = make_stack(shadow_sample=1.0)
    opted_out, other = create_key(stack, max_candidate_percent=0), create_key(stack)
    for _ in range(5):
        assert chat(stack, opted_out).status_code == 200
    assert stack.candidate_seen.bodies == []
    assert chat(stack, other).status_code == 200
    deadline = time.monotonic() + 5
    while not stack.candidate_seen.bodies:
        assert time.monotonic() < deadline, "the other key's request was never mirrored"
        time.sleep(0.02)


def test_request_limits_answer_429_with_retry_after(make_stack):
    stack = make_stack()
    slow = create_key(stack, requests_per_s=0.2, burst=2)
    assert [chat(stack, slow).status_code for _ in range(2)] == [200, 200]
    refused = chat(stack, slow)
    assert refused.status_code == 429
    assert refused.json()["error"]["type"] == "rate_limit_error"
    assert 1 <= int(refused.headers["retry-after"]) <= 5
    assert chat(stack, create_key(stack)).status_code == 200  # other keys are not held back


@pytest.mark.parametrize("stream", [False, True])
def test_tokens_per_minute_count_prompt_and_completion_after_the_answer(make_stack, stream):
    stack = make_stack()
    # The stand-in's answers use 10 prompt and 11 completion tokens: one answer puts a key
    # with 20 tokens a minute into debt, and it waits for the bucket to refill.
    frugal = create_key(stack, tokens_per_min=20)
    body = {**CHAT, "stream": stream}
    auth = bearer(frugal)
    assert stack.http.post("/v1/chat/completions", json=body, headers=auth).status_code == 200
    refused = stack.http.post("/v1/chat/completions", json=body, headers=auth)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "tokens_per_minute"
    # 1 token of debt at a third of a token a second: completion tokens alone would be none.
    assert int(refused.headers["retry-after"]) == 3


def test_feedback_needs_the_answers_token_and_counts_once(make_stack):
    stack = make_stack()
    secret = create_key(stack)
    answer = chat(stack, secret)
    no_token = stack.http.post(
        "/v1/feedback",
        json={"request_id": answer.headers["x-request-id"], "score": 0},
        headers=bearer(secret),
    )
    assert no_token.status_code == 422
    first = score(stack, secret, answer)
    assert first.status_code == 200
    assert "base" not in first.text
    assert "variant" not in first.json()
    replays = [score(stack, secret, answer).status_code for _ in range(300)]
    assert set(replays) == {409}
    count = stack.metric(
        "rollgate_feedback_score_count", route="support", variant="base", role="stable",
        tenant="acme",
    )  # fmt: skip
    assert count == 1


def test_feedback_tokens_cannot_be_forged_moved_or_used_by_another_key(make_stack):
    stack = make_stack()
    mine, theirs = create_key(stack), create_key(stack, tenant="globex")
    answer = chat(stack, mine)
    assert score(stack, theirs, answer).status_code == 403
    token = answer.headers[FEEDBACK_HEADER]
    tampered = token[:-4] + ("AAAA" if not token.endswith("AAAA") else "BBBB")
    assert score(stack, mine, answer, token=tampered).status_code == 422
    other = chat(stack, mine)
    moved = score(stack, mine, other, token=token)  # a token for another request id
    assert moved.status_code == 422
    assert score(stack, mine, answer).status_code == 200


def test_admin_roles_and_the_actor_come_from_the_token(make_stack):
    stack = make_stack()
    made = stack.http.post(
        "/admin/tokens", json={"name": "alice", "role": "viewer"}, headers=OPERATOR
    )
    viewer = bearer(made.json()["token"])
    assert stack.http.get("/admin/shadow-pairs", headers=viewer).status_code == 200
    refused = stack.http.post("/admin/keys", json={"name": "a", "tenant": "t"}, headers=viewer)
    assert refused.status_code == 403
    assert stack.http.get("/admin/keys", headers=viewer).status_code == 403
    key = stack.http.post(
        "/admin/keys", json={"name": "a", "tenant": "t"},
        headers={**OPERATOR, "x-rollgate-actor": "mallory"},
    )  # fmt: skip
    assert key.json()["created_by"] == "bootstrap"  # the token's name, not the header


def test_failed_admin_authentications_are_throttled_per_address(make_stack):
    stack = make_stack()
    wrong = bearer("rga_0123456789abcdef_guess")
    codes = [stack.http.get("/admin/shadow-pairs", headers=wrong).status_code for _ in range(25)]
    assert codes[:20] == [401] * 20
    assert set(codes[20:]) == {429}
    # Even the right token waits out the window: a guesser cannot tell a hit.
    assert stack.http.get("/admin/shadow-pairs", headers=OPERATOR).status_code == 429


def test_an_admin_port_takes_admin_off_the_data_plane(make_stack):
    stack = make_stack(admin_port=1)  # the test serves the admin app itself
    assert stack.http.get("/admin/shadow-pairs", headers=OPERATOR).status_code == 404
    assert stack.http.get("/console").status_code == 404
    assert chat(stack, None).status_code == 401
    admin_app = stack.app.state.admin_app
    with serving(admin_app) as url:
        found = httpx.get(f"{url}/admin/shadow-pairs", headers=OPERATOR)
        assert found.status_code == 200
        assert httpx.post(f"{url}/v1/chat/completions", json=CHAT).status_code == 404


@pytest.mark.parametrize("size", [5_000, 200_000])
def test_oversized_feedback_and_key_bodies_are_refused_before_parsing(make_stack, size):
    stack = make_stack()
    blob = "x" * size
    feedback = stack.http.post(
        "/v1/feedback", content=json.dumps({"request_id": blob, "score": 1, "token": blob})
    )
    assert feedback.status_code in (413, 422)
    key = stack.http.post("/admin/keys", content=blob, headers=OPERATOR)
    assert key.status_code == 413 if size > 8192 else key.status_code == 422


def test_a_new_tenants_score_series_start_at_zero_before_its_first_score(make_stack):
    """Prometheus' increase() misses a series' first sample: it must exist at 0 already."""
    stack = make_stack(weight_percent=50)
    labels = {"route": "support", "variant": "acme-voice", "role": "candidate", "tenant": "initech"}
    assert stack.registry.get_sample_value("rollgate_feedback_score_count", labels) is None
    create_key(stack, tenant="initech")
    assert stack.registry.get_sample_value("rollgate_feedback_score_count", labels) == 0


def test_deeply_nested_feedback_and_key_bodies_are_422_not_500(make_stack):
    stack = make_stack()
    nested = '{"request_id": "x", "score": 1, "token": ' + "[" * 2000 + "]" * 2000 + "}"
    feedback = stack.http.post("/v1/feedback", content=nested)
    assert feedback.status_code == 422
    assert feedback.json()["error"]["type"] == "invalid_request_error"
    key = stack.http.post(
        "/admin/keys", content='{"name": ' + "[" * 4000 + "]" * 4000 + "}", headers=OPERATOR
    )
    assert key.status_code == 422
