"""Blind review of shadow pairs: the server maps A and B back to the variants and scores them."""

from __future__ import annotations

import asyncio
import math

import pytest

from gateway.shadow import BlindPair
from gateway.windows import LocalWindows
from rollout.tenants import REVIEW_TENANT
from tests.gateway.conftest import ADMIN_TOKEN, Stack
from tests.gateway.test_proxy import chat, eventually

ADMIN = {"authorization": f"Bearer {ADMIN_TOKEN}"}
PAIRS = 3


def pairs(stack: Stack) -> list[dict]:
    return stack.http.get("/admin/shadow-pairs", headers=ADMIN).json()["pairs"]


def review(stack: Stack, pair_id: str, body: dict, headers: dict = ADMIN):
    return stack.http.post(f"/admin/shadow-pairs/{pair_id}/review", json=body, headers=headers)


def scores(stack: Stack, variant: str) -> tuple[float, float]:
    labels = {"route": "support", "variant": variant, "role": "review", "tenant": REVIEW_TENANT}
    count = stack.metric("rollgate_feedback_score_count", **labels)
    return count, stack.metric("rollgate_feedback_score_sum", **labels)


@pytest.mark.parametrize(
    ("a_is_candidate", "preferred", "candidate", "stable"),
    [
        (True, "a", 1.0, 0.0),
        (True, "b", 0.0, 1.0),
        (False, "a", 0.0, 1.0),
        (False, "b", 1.0, 0.0),
        (True, "same", 0.5, 0.5),
        (False, "same", 0.5, 0.5),
    ],
)
def test_a_preference_maps_back_to_the_variants(a_is_candidate, preferred, candidate, stable):
    pair = BlindPair("p1", "support", [], "A", "B", a_is_candidate, "v2", "base")
    assert pair.scores(preferred) == (("v2", candidate), ("base", stable))


@pytest.fixture
def windows() -> LocalWindows:
    return LocalWindows()


@pytest.fixture
def stack(make_stack, windows: LocalWindows) -> Stack:
    stack = make_stack(shadow_sample=1.0, sinks=[windows])
    for _ in range(PAIRS):
        chat(stack)
    eventually(lambda: len(pairs(stack)) == PAIRS)
    return stack


@pytest.mark.parametrize("preferred", ["a", "b"])
def test_the_preferred_answer_scores_1_and_the_other_0(stack, windows, preferred) -> None:
    pair = pairs(stack)[0]
    assert set(pair) == {"pair_id", "route", "messages", "a", "b"}  # the variants stay hidden
    # Untouched before the first review (zeros exported), so increase() sees it.
    assert scores(stack, "acme-voice") == scores(stack, "base") == (0, 0)
    response = review(stack, pair["pair_id"], {"preferred": preferred})
    assert response.status_code == 200
    assert response.json() == {
        "pair_id": pair["pair_id"],
        "route": "support",
        "preferred": preferred,
    }
    candidate_won = pair[preferred] == stack.candidate.text
    assert scores(stack, "acme-voice") == (1, 1.0 if candidate_won else 0.0)
    assert scores(stack, "base") == (1, 0.0 if candidate_won else 1.0)
    # The control plane's local windows see the review too.
    window = asyncio.run(windows.window("support", "acme-voice", "review", -math.inf, math.inf))
    assert (window.feedback_count, window.feedback_sum) == (1, 1.0 if candidate_won else 0.0)


def test_same_scores_both_half_and_a_pair_is_reviewed_once(stack) -> None:
    pair_id = pairs(stack)[0]["pair_id"]
    assert review(stack, pair_id, {"preferred": "same"}).status_code == 200
    assert scores(stack, "acme-voice") == scores(stack, "base") == (1, 0.5)
    assert pair_id not in {p["pair_id"] for p in pairs(stack)}
    assert len(pairs(stack)) == PAIRS - 1
    again = review(stack, pair_id, {"preferred": "a"})
    assert again.status_code == 404
    assert again.json()["error"]["type"] == "not_found_error"
    assert "already reviewed" in again.json()["error"]["message"]
    assert scores(stack, "acme-voice") == (1, 0.5)  # counted once


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"preferred": "c"}, "preferred"),
        ({"preferred": "A"}, "preferred"),
        ({}, "preferred"),
        ({"preferred": "a", "variant": "candidate"}, "variant"),
    ],
)
def test_a_bad_review_is_refused_with_the_field(stack, body, param) -> None:
    pair_id = pairs(stack)[0]["pair_id"]
    response = review(stack, pair_id, body)
    assert response.status_code == 422
    error = response.json()["error"]
    assert (error["type"], error["param"]) == ("invalid_request_error", param)
    assert len(pairs(stack)) == PAIRS  # nothing taken


def test_unknown_pairs_and_callers_without_the_token_are_refused(stack) -> None:
    assert review(stack, "no-such-pair", {"preferred": "a"}).status_code == 404
    pair_id = pairs(stack)[0]["pair_id"]
    assert review(stack, pair_id, {"preferred": "a"}, headers={}).status_code == 401
    wrong = {"authorization": "Bearer wrong"}
    assert review(stack, pair_id, {"preferred": "a"}, headers=wrong).status_code == 401
    assert scores(stack, "acme-voice") == (0, 0)
