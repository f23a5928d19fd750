"""Sticky weighted assignment: stickiness, nested cohorts, reshuffling, accuracy, the
secret and tenant in the hash, the blast radius, and a client aiming at the candidate."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from gateway.assignment import ShareGuard, bucket, choose_role, user_key, within_share
from rollout.traffic import Role, RouteTraffic, Variant

STABLE = Variant("base", "pool", "tiny-llama")
CANDIDATE = Variant("acme-voice", "pool", "acme-voice")
SECRET = b"s" * 32
FULL = 10_000
keys = st.text(min_size=1, max_size=40)
weights = st.integers(min_value=0, max_value=10_000)


def traffic(weight_bp: int, rollout_id: str = "r1") -> RouteTraffic:
    return RouteTraffic("support", STABLE, CANDIDATE, rollout_id=rollout_id, weight_bp=weight_bp)


def role(t: RouteTraffic, user: str, cap: int = FULL, tenant: str = "acme") -> Role:
    return choose_role(t, bucket(SECRET, t.route, t.rollout_id, tenant, user), cap)


@given(keys, weights)
def test_the_same_key_always_gets_the_same_variant(key, weight):
    assert len({role(traffic(weight), key) for _ in range(3)}) == 1


@given(keys, weights, weights)
def test_raising_the_weight_only_moves_users_to_the_candidate(key, a, b):
    low, high = sorted((a, b))
    if role(traffic(low), key) is Role.CANDIDATE:
        assert role(traffic(high), key) is Role.CANDIDATE


@given(keys, weights, weights, weights)
def test_the_blast_radius_caps_the_weight_and_keeps_cohorts_nested(key, weight, a, b):
    low, high = sorted((a, b))
    if role(traffic(weight), key, cap=high) is Role.CANDIDATE:
        assert role(traffic(weight), key, cap=FULL) is Role.CANDIDATE
    assert role(traffic(weight), key, cap=0) is Role.STABLE
    if role(traffic(weight), key, cap=low) is Role.CANDIDATE:
        assert role(traffic(weight), key, cap=high) is Role.CANDIDATE


@given(st.lists(keys, min_size=200, max_size=200, unique=True))
def test_a_new_rollout_id_reshuffles(users):
    first = {u for u in users if role(traffic(5_000, "r1"), u) is Role.CANDIDATE}
    second = {u for u in users if role(traffic(5_000, "r2"), u) is Role.CANDIDATE}
    assert first != second


def test_the_secret_and_the_tenant_decide_the_bucket_too():
    users = [f"user-{i}" for i in range(200)]
    ours = [bucket(SECRET, "support", "r1", "acme", u) for u in users]
    assert ours != [bucket(b"t" * 32, "support", "r1", "acme", u) for u in users]
    assert ours != [bucket(SECRET, "support", "r1", "globex", u) for u in users]


def test_observed_split_is_within_one_point_of_the_weight_over_20000_keys():
    users = [f"user-{i}" for i in range(20_000)]
    for weight_bp in (100, 500, 1_000, 2_500, 5_000, 10_000):
        share = sum(role(traffic(weight_bp), u) is Role.CANDIDATE for u in users) / len(users)
        assert abs(share * 100 - weight_bp / 100) <= 1.0, (weight_bp, share)


def test_zero_weight_or_no_candidate_is_always_stable():
    assert role(traffic(0), "k") is Role.STABLE
    assert role(RouteTraffic("support", STABLE), "k") is Role.STABLE


@given(keys)
def test_buckets_are_in_range(key):
    assert 0 <= bucket(SECRET, "support", "r1", "acme", key) < 10_000


def test_user_key_prefers_header_then_user_then_the_fallback_and_is_bounded():
    assert user_key("h", "u", "k") == "h"
    assert user_key(None, "u", "k") == "u"
    assert user_key("", None, "k") == "k"
    assert len(user_key("x" * 10_000, None, "k")) == 256


class Clock:
    def __init__(self) -> None:
        self.now = 1_000_000.0

    def __call__(self) -> float:
        return self.now


def test_within_share_leaves_room_for_chance_and_no_more():
    assert within_share(0, 0, 0.05)  # the first request may land on the candidate
    assert within_share(5, 100, 0.05)
    assert not within_share(30, 100, 0.05)
    assert not within_share(1, 1000, 0.0)  # a blast radius of 0 is never room for chance


def test_an_aiming_client_gets_no_more_than_its_share_of_the_candidate():
    """A hostile client that found the user keys landing on the candidate (by what the
    answers say) sends everything with them: the guard keeps its share near the weight."""
    clock, t = Clock(), traffic(500)
    guard = ShareGuard(clock)
    aimed = [u for u in (f"probe-{i}" for i in range(2000)) if role(t, u) is Role.CANDIDATE]
    served = []
    for i in range(6000):
        clock.now += 0.05  # 20 requests a second for 5 minutes
        wanted = role(t, aimed[i % len(aimed)])
        served.append(guard.decide(t, "acme", wanted, 500))
    share = served.count(Role.CANDIDATE) / len(served)
    assert wanted is Role.CANDIDATE
    assert share < 0.05 + 0.03, share


def test_honest_users_keep_their_variant_under_the_guard():
    clock, t = Clock(), traffic(500)
    guard, rng = ShareGuard(clock), random.Random(1)
    flipped = 0
    for _ in range(20_000):
        clock.now += 0.05
        wanted = role(t, f"user-{rng.randrange(5000)}")
        flipped += guard.decide(t, "acme", wanted, 500) is not wanted
    assert flipped / 20_000 < 0.002, flipped


def test_the_guard_counts_each_tenant_apart():
    clock, t = Clock(), traffic(5_000)
    guard = ShareGuard(clock)
    for _ in range(200):
        guard.decide(t, "greedy", Role.CANDIDATE, 5_000)
    assert guard.decide(t, "greedy", Role.CANDIDATE, 5_000) is Role.STABLE
    assert guard.decide(t, "other", Role.CANDIDATE, 5_000) is Role.CANDIDATE
