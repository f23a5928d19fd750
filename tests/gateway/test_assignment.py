"""Sticky weighted assignment: stickiness, nested cohorts, reshuffling, accuracy."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from gateway.assignment import bucket, choose_role, user_key
from rollout.traffic import Role, RouteTraffic, Variant

STABLE = Variant("base", "pool", "tiny-llama")
CANDIDATE = Variant("acme-voice", "pool", "acme-voice")
keys = st.text(min_size=1, max_size=40)
weights = st.integers(min_value=0, max_value=10_000)


def traffic(weight_bp: int, rollout_id: str = "r1") -> RouteTraffic:
    return RouteTraffic("support", STABLE, CANDIDATE, rollout_id=rollout_id, weight_bp=weight_bp)


@given(keys, weights)
def test_the_same_key_always_gets_the_same_variant(key, weight):
    assert len({choose_role(traffic(weight), key) for _ in range(3)}) == 1


@given(keys, weights, weights)
def test_raising_the_weight_only_moves_users_to_the_candidate(key, a, b):
    low, high = sorted((a, b))
    if choose_role(traffic(low), key) is Role.CANDIDATE:
        assert choose_role(traffic(high), key) is Role.CANDIDATE


@given(st.lists(keys, min_size=200, max_size=200, unique=True))
def test_a_new_rollout_id_reshuffles(users):
    first = {u for u in users if choose_role(traffic(5_000, "r1"), u) is Role.CANDIDATE}
    second = {u for u in users if choose_role(traffic(5_000, "r2"), u) is Role.CANDIDATE}
    assert first != second


def test_observed_split_is_within_one_point_of_the_weight_over_20000_keys():
    users = [f"user-{i}" for i in range(20_000)]
    for weight_bp in (100, 500, 1_000, 2_500, 5_000, 10_000):
        share = sum(choose_role(traffic(weight_bp), u) is Role.CANDIDATE for u in users) / len(
            users
        )
        assert abs(share * 100 - weight_bp / 100) <= 1.0, (weight_bp, share)


def test_zero_weight_or_no_candidate_is_always_stable():
    assert choose_role(traffic(0), "k") is Role.STABLE
    assert choose_role(RouteTraffic("support", STABLE), "k") is Role.STABLE


@given(keys)
def test_buckets_are_in_range(key):
    assert 0 <= bucket("support", "r1", key) < 10_000


def test_user_key_prefers_header_then_user_then_api_key():
    assert user_key("h", "u", "k") == "h"
    assert user_key(None, "u", "k") == "u"
    assert user_key("", None, "k") == "k"
    assert user_key(None, None, None) is None
