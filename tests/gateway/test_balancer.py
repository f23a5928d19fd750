"""Balancing inside a variant's pool: eligibility, preferences, ejection, membership, fairness.

Pure: a fake clock, no servers. The fairness tests simulate steady load in
ticks; in each tick the requests due end first, then new ones start, each
lasting a number of ticks drawn from a seeded generator whatever replica serves
it (equal replicas), so starts and ends interleave and the run is reproducible.
"""

from __future__ import annotations

import doctest
import heapq
import random
from collections import Counter
from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from gateway import balancer as balancer_module
from gateway.balancer import MAX_CURSORS, Balancer, BalancerConfig, Health, Replica

BASE, ADAPTER = "tiny-llama", "acme-voice"


@dataclass
class FakeClock:
    now: float = 0.0

    def __call__(self) -> float:
        return self.now


def make_pool(
    n: int,
    *,
    models: set[str] | None = None,
    probe: bool = True,
    config: BalancerConfig | None = None,
) -> tuple[FakeClock, Balancer]:
    """`n` replicas r0..r(n-1), healthy and serving `models` (base and adapter by default)."""
    clock = FakeClock()
    pool = Balancer([f"r{i}" for i in range(n)], clock=clock, config=config)
    for address in pool.members:
        if probe:
            pool.observe_health(address, ok=True)
        pool.observe_models(address, {BASE, ADAPTER} if models is None else models)
    return clock, pool


def picked(pool: Balancer, model: str = BASE, exclude: tuple[str, ...] = ()) -> str | None:
    replica = pool.pick(model, exclude)
    return None if replica is None else replica.address


def fail(pool: Balancer, address: str, times: int = 1) -> None:
    for _ in range(times):
        pool.started(address)
        pool.finished(address, ok=False)


def succeed(pool: Balancer, address: str) -> None:
    pool.started(address)
    pool.finished(address, ok=True)


def busy(pool: Balancer, address: str, requests: int) -> None:
    for _ in range(requests):
        pool.started(address)


def simulate(
    pool: Balancer,
    clock: FakeClock,
    *,
    requests: int,
    per_tick: int,
    seed: int,
    models: tuple[str, ...] = (BASE,),
) -> Counter[tuple[str, str]]:
    """Steady load: how many requests each (replica, model) got. Durations 1..20 ticks."""
    rng = random.Random(seed)
    ends: list[tuple[int, int, str]] = []  # (end tick, sequence, replica)
    picks: Counter[tuple[str, str]] = Counter()
    tick = sent = 0
    while sent < requests:
        while ends and ends[0][0] <= tick:
            pool.finished(heapq.heappop(ends)[2], ok=True)
        for _ in range(per_tick):
            model = models[sent % len(models)]
            replica = pool.pick(model)
            assert replica is not None
            pool.started(replica.address)
            picks[replica.address, model] += 1
            heapq.heappush(ends, (tick + rng.randint(1, 20), sent, replica.address))
            sent += 1
        tick += 1
        clock.now += 0.01
    return picks


def assert_fair(counts: list[int]) -> None:
    fair = sum(counts) / len(counts)
    assert all(abs(c - fair) <= 0.1 * fair for c in counts), (fair, counts)


# --- the module's own example ---------------------------------------------------------------


def test_the_module_example_runs():
    result = doctest.testmod(balancer_module)
    assert result.attempted > 0
    assert result.failed == 0


# --- configuration --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"eject_after": 0}, "eject_after"),
        ({"unhealthy_after": 0}, "unhealthy_after"),
        ({"ejection_s": 0}, "cool-downs"),
        ({"ejection_s": 20, "max_ejection_s": 10}, "cool-downs"),
        ({"max_waiting": -1}, "max_waiting"),
        ({"max_kv_usage": 1.5}, "max_kv_usage"),
        ({"max_kv_usage": 0}, "max_kv_usage"),
        ({"load_ttl_s": 0}, "load_ttl_s"),
    ],
)
def test_config_refuses_nonsense(changes, message):
    with pytest.raises(ValueError, match=message):
        BalancerConfig(**changes)


@given(st.integers(min_value=1, max_value=100_000))
def test_cooldowns_double_and_stay_within_the_cap(ejections):
    config = BalancerConfig()
    assert config.ejection_s <= config.cooldown(ejections) <= config.max_ejection_s
    assert config.cooldown(ejections + 1) >= config.cooldown(ejections)
    if ejections < 5:  # 10, 20, 40, 80, 160 s: below the 300 s cap
        assert config.cooldown(ejections) == 10.0 * 2 ** (ejections - 1)


# --- health ---------------------------------------------------------------------------------


def test_a_new_replica_gets_no_traffic_until_a_probe_says_healthy():
    _, pool = make_pool(2, probe=False)
    assert picked(pool) is None
    assert "not yet probed: 2" in pool.explain(BASE)
    assert not pool.available()
    pool.observe_health("r1", ok=True)
    assert {picked(pool) for _ in range(10)} == {"r1"}
    assert pool.available()


def test_an_unprobed_replica_failing_its_first_probe_is_unhealthy_at_once():
    _, pool = make_pool(1, probe=False)
    pool.observe_health("r0", ok=False)
    assert pool.replica("r0").health is Health.UNHEALTHY
    assert "unhealthy: 1" in pool.explain(BASE)


def test_a_serving_replica_is_unhealthy_after_consecutive_failed_probes_and_back_on_a_good_one():
    _, pool = make_pool(2, config=BalancerConfig(unhealthy_after=2))
    pool.observe_health("r0", ok=False)
    assert "r0" in {picked(pool) for _ in range(4)}  # one missed probe: still serving
    pool.observe_health("r0", ok=True)
    pool.observe_health("r0", ok=False)  # the good probe reset the count
    assert pool.replica("r0").health is Health.HEALTHY
    pool.observe_health("r0", ok=False)
    assert pool.replica("r0").health is Health.UNHEALTHY
    assert {picked(pool) for _ in range(10)} == {"r1"}
    pool.observe_health("r0", ok=True)
    assert {picked(pool) for _ in range(10)} == {"r0", "r1"}


# --- models ---------------------------------------------------------------------------------


def test_a_replica_lacking_the_adapter_gets_no_requests_for_it():
    clock, pool = make_pool(3)
    pool.observe_models("r2", {BASE})
    picks = simulate(pool, clock, requests=6_000, per_tick=4, seed=7, models=(BASE, ADAPTER))
    assert picks["r2", ADAPTER] == 0
    assert picks["r2", BASE] > 0  # it still serves the base
    assert_fair([picks["r0", ADAPTER], picks["r1", ADAPTER]])


def test_a_model_no_replica_serves_picks_none_and_says_why():
    _, pool = make_pool(2)
    assert picked(pool, "pirate") is None
    assert pool.explain("pirate") == (
        "no replica of pool 'pool' (2) can serve 'pirate': lacks the model: 2"
    )
    assert picked(pool, BASE) is not None


def test_a_replica_known_to_serve_is_preferred_over_one_not_yet_known():
    clock = FakeClock()
    pool = Balancer(["known", "unknown"], clock=clock)
    for address in pool.members:
        pool.observe_health(address, ok=True)
    pool.observe_models("known", {ADAPTER})
    busy(pool, "known", 5)
    pool.observe_load("known", waiting=50, kv_usage=1.0)  # even without headroom
    assert {picked(pool, ADAPTER) for _ in range(10)} == {"known"}
    # Not known to lack it either: with nobody known to serve it, it gets the request.
    assert picked(pool, "pirate") == "unknown"


def test_a_replica_whose_models_are_unknown_is_eligible():
    clock = FakeClock()
    pool = Balancer(["r0"], clock=clock)
    pool.observe_health("r0", ok=True)
    assert picked(pool, "anything") == "r0"


def test_a_refreshed_model_list_takes_effect_on_the_next_pick():
    _, pool = make_pool(2)
    pool.observe_models("r0", {BASE})
    assert {picked(pool, ADAPTER) for _ in range(6)} == {"r1"}
    pool.observe_models("r0", {BASE, ADAPTER})  # the adapter was loaded there
    assert {picked(pool, ADAPTER) for _ in range(6)} == {"r0", "r1"}


# --- load -----------------------------------------------------------------------------------


def test_fewest_in_flight_wins():
    _, pool = make_pool(3)
    busy(pool, "r0", 2)
    busy(pool, "r1", 1)
    assert picked(pool) == "r2"
    busy(pool, "r2", 3)
    assert picked(pool) == "r1"


@pytest.mark.parametrize(("waiting", "kv_usage"), [(5, 0.5), (0, 0.91), (None, 0.95), (9, None)])
def test_a_replica_with_headroom_is_preferred_even_when_busier(waiting, kv_usage):
    _, pool = make_pool(2)
    pool.observe_load("r0", waiting=waiting, kv_usage=kv_usage)
    pool.observe_load("r1", waiting=0, kv_usage=0.2)
    busy(pool, "r1", 8)
    assert {picked(pool) for _ in range(10)} == {"r1"}


def test_the_headroom_limits_are_inclusive():
    _, pool = make_pool(2, config=BalancerConfig(max_waiting=4, max_kv_usage=0.9))
    pool.observe_load("r0", waiting=4, kv_usage=0.9)
    busy(pool, "r1", 1)
    assert picked(pool) == "r0"


def test_without_headroom_anywhere_fewest_in_flight_still_serves():
    _, pool = make_pool(2)
    for address in pool.members:
        pool.observe_load(address, waiting=20, kv_usage=0.99)
    busy(pool, "r0", 3)
    assert picked(pool) == "r1"


def test_unknown_metrics_do_not_exclude_or_demote():
    _, pool = make_pool(3)
    pool.observe_load("r1", waiting=0, kv_usage=0.1)
    pool.observe_load("r2", waiting=None, kv_usage=None)  # the scrape lacked both
    busy(pool, "r1", 1)
    busy(pool, "r2", 1)
    assert picked(pool) == "r0"  # never scraped: counts as headroom, fewest in flight
    busy(pool, "r0", 1)
    assert {picked(pool) for _ in range(6)} == {"r0", "r1", "r2"}


def test_stale_metrics_are_ignored():
    clock, pool = make_pool(2, config=BalancerConfig(load_ttl_s=15))
    pool.observe_load("r0", waiting=30, kv_usage=0.99)
    busy(pool, "r1", 1)
    clock.now = 15.0
    assert picked(pool) == "r1"  # still fresh
    clock.now = 15.01
    assert picked(pool) == "r0"  # stale: as if never scraped
    assert pool.summary()["replicas"][0]["waiting"] is None


# --- rotation and fairness ------------------------------------------------------------------


def test_tied_replicas_take_turns():
    _, pool = make_pool(3)
    assert [picked(pool) for _ in range(6)] == ["r0", "r1", "r2", "r0", "r1", "r2"]
    busy(pool, "r1", 1)
    assert [picked(pool) for _ in range(4)] == ["r0", "r2", "r0", "r2"]


def test_each_model_has_its_own_rotation():
    _, pool = make_pool(3)
    pool.observe_models("r2", {BASE})
    # Base picks in between do not hand r2's turns for the adapter to the replica after it.
    turns = [(picked(pool, BASE), picked(pool, ADAPTER)) for _ in range(4)]
    assert [adapter for _, adapter in turns] == ["r0", "r1", "r0", "r1"]
    assert [base for base, _ in turns] == ["r0", "r1", "r2", "r0"]


def test_rotations_are_kept_for_a_bounded_number_of_models():
    clock = FakeClock()
    pool = Balancer(["r0", "r1"], clock=clock)
    for address in pool.members:
        pool.observe_health(address, ok=True)
    for i in range(3 * MAX_CURSORS):
        assert picked(pool, f"model-{i}") is not None
    assert len(pool._next) <= MAX_CURSORS


def test_sequential_requests_split_exactly_evenly():
    _, pool = make_pool(4)
    counts: Counter[str] = Counter()
    for _ in range(400):
        address = picked(pool)
        succeed(pool, address)
        counts[address] += 1
    assert list(counts.values()) == [100, 100, 100, 100]


@pytest.mark.parametrize(
    ("replicas", "per_tick", "seed"), [(2, 1, 1), (3, 2, 2), (4, 3, 3), (7, 5, 4), (16, 8, 5)]
)
def test_equal_replicas_share_steady_load_within_ten_percent(replicas, per_tick, seed):
    clock, pool = make_pool(replicas)
    picks = simulate(pool, clock, requests=10_000, per_tick=per_tick, seed=seed)
    assert_fair([picks[f"r{i}", BASE] for i in range(replicas)])


def test_equal_replicas_share_within_ten_percent_with_equal_metrics_scraped():
    clock, pool = make_pool(4)
    for address in pool.members:
        pool.observe_load(address, waiting=1, kv_usage=0.4)
    picks = simulate(pool, clock, requests=8_000, per_tick=3, seed=11)
    assert_fair([picks[f"r{i}", BASE] for i in range(4)])


# --- passive ejection -----------------------------------------------------------------------


def test_consecutive_failures_eject_a_replica_until_the_cooldown_ends():
    clock, pool = make_pool(2, config=BalancerConfig(eject_after=3, ejection_s=10))
    fail(pool, "r0", 2)
    assert "r0" in {picked(pool) for _ in range(4)}
    fail(pool, "r0")
    assert pool.replica("r0").ejected(clock.now)
    assert {picked(pool) for _ in range(10)} == {"r1"}
    clock.now = 9.99
    assert {picked(pool) for _ in range(10)} == {"r1"}
    clock.now = 10.0
    assert {picked(pool) for _ in range(10)} == {"r0", "r1"}


def test_a_success_resets_the_failure_count():
    clock, pool = make_pool(1, config=BalancerConfig(eject_after=3))
    for _ in range(5):
        fail(pool, "r0", 2)
        succeed(pool, "r0")
    assert not pool.replica("r0").ejected(clock.now)
    assert pool.replica("r0").failures == 0


def test_repeated_ejections_double_the_cooldown_up_to_the_cap():
    config = BalancerConfig(eject_after=3, ejection_s=10, max_ejection_s=50)
    clock, pool = make_pool(1, config=config)
    fail(pool, "r0", 3)
    cooldowns = [pool.replica("r0").ejected_until - clock.now]
    for _ in range(4):
        clock.now = pool.replica("r0").ejected_until
        assert picked(pool) == "r0"
        fail(pool, "r0")  # back on probation: one failure ejects it again
        cooldowns.append(pool.replica("r0").ejected_until - clock.now)
    assert cooldowns == [10, 20, 40, 50, 50]
    assert pool.ejections_total == 5


def test_a_success_after_the_return_forgives_the_ejections():
    clock, pool = make_pool(1, config=BalancerConfig(eject_after=3, ejection_s=10))
    fail(pool, "r0", 3)
    clock.now = 10
    fail(pool, "r0")  # second ejection: 20 s
    clock.now = 30
    succeed(pool, "r0")
    fail(pool, "r0", 2)
    assert not pool.replica("r0").ejected(clock.now)  # a full count of failures again
    fail(pool, "r0")
    assert pool.replica("r0").ejected_until - clock.now == 10  # and the first cool-down


def test_results_of_requests_sent_before_an_ejection_change_nothing():
    clock, pool = make_pool(2, config=BalancerConfig(eject_after=3, ejection_s=10))
    busy(pool, "r0", 4)  # four long requests in flight
    fail(pool, "r0", 3)
    ejected = pool.replica("r0")
    pool.finished("r0", ok=False)
    pool.finished("r0", ok=False)
    pool.finished("r0", ok=True)
    after = pool.replica("r0")
    assert (after.ejected_until, after.ejections, after.failures) == (
        ejected.ejected_until,
        ejected.ejections,
        ejected.failures,
    )
    assert after.in_flight == 1
    clock.now = 10
    fail(pool, "r0")  # the probation still holds
    assert pool.replica("r0").ejected_until == 30


def test_a_good_probe_does_not_lift_an_ejection():
    _, pool = make_pool(1, config=BalancerConfig(eject_after=1))
    fail(pool, "r0")
    pool.observe_health("r0", ok=True)
    assert picked(pool) is None


def test_a_replica_back_from_failed_probes_ends_its_cooldown_on_probation():
    config = BalancerConfig(eject_after=3, ejection_s=10, unhealthy_after=2)
    clock, pool = make_pool(1, config=config)
    fail(pool, "r0", 3)  # it died: requests fail, then probes
    pool.observe_health("r0", ok=False)
    clock.now = 2.0
    pool.observe_health("r0", ok=True)  # restarted: back long before the cool-down ends
    assert picked(pool) == "r0"
    fail(pool, "r0")  # on probation: one failure ejects it again, for twice as long
    assert pool.replica("r0").ejected_until - clock.now == 20


def test_with_every_replica_ejected_nothing_is_picked_and_the_reason_is_given():
    clock, pool = make_pool(2, config=BalancerConfig(eject_after=2, ejection_s=10))
    for address in pool.members:
        fail(pool, address, 2)
    assert picked(pool) is None
    assert pool.explain(BASE) == "no replica of pool 'pool' (2) can serve 'tiny-llama': ejected: 2"
    assert not pool.available()
    clock.now = 10
    assert pool.available()
    assert picked(pool) is not None


# --- retries within the pool ----------------------------------------------------------------


def test_excluded_replicas_are_not_picked():
    _, pool = make_pool(3)
    assert {picked(pool, exclude=("r0",)) for _ in range(6)} == {"r1", "r2"}
    assert picked(pool, exclude=("r0", "r2")) == "r1"
    assert picked(pool, exclude=("r0", "r1", "r2")) is None
    assert "already tried: 3" in pool.explain(BASE, exclude=("r0", "r1", "r2"))


def test_explain_names_each_reason_once_counted():
    _, pool = make_pool(4, config=BalancerConfig(eject_after=1))
    pool.observe_models("r0", {BASE})
    fail(pool, "r1")
    pool.observe_health("r2", ok=False)
    pool.observe_health("r2", ok=False)
    assert pool.explain(ADAPTER, exclude=("r3",)) == (
        "no replica of pool 'pool' (4) can serve 'acme-voice': "
        "already tried: 1, unhealthy: 1, ejected: 1, lacks the model: 1"
    )


# --- membership -----------------------------------------------------------------------------


def test_membership_changes_keep_the_state_of_replicas_that_stay():
    _, pool = make_pool(2, config=BalancerConfig(eject_after=1))
    busy(pool, "r0", 2)
    pool.observe_load("r0", waiting=1, kv_usage=0.5)
    fail(pool, "r1")
    before = pool.replicas()
    pool.set_members(["r1", "r0", "r2", "r0"])
    assert pool.members == ("r1", "r0", "r2")  # duplicates once, in the order given
    assert (pool.replica("r1"), pool.replica("r0")) == (before[1], before[0])
    assert pool.replica("r2") == Replica("r2")  # new: unprobed, nothing known
    assert picked(pool) == "r0"  # r1 still ejected, r2 not yet probed
    pool.observe_health("r2", ok=True)
    assert picked(pool) == "r0"  # known to serve the base: before r2, whose models are unknown
    assert picked(pool, "pirate") == "r2"  # r0 is known to lack it


def test_removed_replicas_are_forgotten_and_late_reports_about_them_dropped():
    _, pool = make_pool(2)
    busy(pool, "r0", 3)
    pool.set_members(["r1"])
    pool.finished("r0", ok=False)
    pool.observe_health("r0", ok=True)
    pool.observe_models("r0", {BASE})
    pool.observe_load("r0", waiting=0, kv_usage=0.0)
    pool.started("r0")
    assert pool.members == ("r1",)
    assert pool.replica("r0") is None
    pool.set_members(["r1", "r0"])  # back at the same address: a new replica
    assert pool.replica("r0") == Replica("r0")


def test_an_empty_pool_picks_nothing_and_is_not_ready():
    _, pool = make_pool(2)
    pool.set_members([])
    assert picked(pool) is None
    assert pool.explain(BASE) == "pool 'pool' has no replicas"
    assert not pool.available()
    assert pool.summary()["members"] == 0


def test_in_flight_never_goes_below_zero():
    _, pool = make_pool(1)
    pool.finished("r0", ok=True)
    pool.finished("r0", ok=False)
    assert pool.replica("r0").in_flight == 0


# --- readiness ------------------------------------------------------------------------------


def test_summary_tells_each_replicas_state():
    clock, pool = make_pool(4, config=BalancerConfig(eject_after=1, ejection_s=10))
    pool.set_members(["r0", "r1", "r2", "r3", "r4"])
    fail(pool, "r1")
    pool.observe_health("r2", ok=False)
    pool.observe_health("r2", ok=False)
    busy(pool, "r3", 2)
    pool.observe_load("r3", waiting=7, kv_usage=0.5)
    clock.now = 2.5
    summary = pool.summary()
    assert (summary["ready"], summary["available"], summary["members"]) == (True, 2, 5)
    states = {r["address"]: r for r in summary["replicas"]}
    assert [states[f"r{i}"]["state"] for i in range(5)] == [
        "available",
        "ejected",
        "unhealthy",
        "available",
        "not yet probed",
    ]
    assert states["r1"]["ejected_for_s"] == 7.5
    assert states["r0"]["ejected_for_s"] is None
    assert states["r3"] == {
        "address": "r3",
        "state": "available",
        "in_flight": 2,
        "failures": 0,
        "ejected_for_s": None,
        "models": [ADAPTER, BASE],
        "waiting": 7,
        "kv_usage": 0.5,
        "headroom": False,
    }
    assert states["r4"]["models"] is None


# --- invariants under any sequence of events ------------------------------------------------

ADDRESSES = [f"r{i}" for i in range(5)]
MODELS = [BASE, ADAPTER, "pirate"]
addresses = st.sampled_from(ADDRESSES)
mostly_ok = st.sampled_from([True, True, True, False])  # or few picks would find a replica
model_lists = st.sampled_from([set(MODELS), {BASE, ADAPTER}, {BASE}, set()]) | st.frozensets(
    st.sampled_from(MODELS)
)


class PoolMachine(RuleBasedStateMachine):
    """Random interleavings of every operation; each pick is checked against the rules."""

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self.config = BalancerConfig(eject_after=2, ejection_s=5, max_ejection_s=20, load_ttl_s=10)
        self.pool = Balancer(ADDRESSES[:3], clock=self.clock, config=self.config)
        for address in self.pool.members:
            self.pool.observe_health(address, ok=True)
        self.sent: list[str] = []  # requests started and not yet finished, by replica

    @rule(members=st.lists(addresses, max_size=6))
    def set_members(self, members):
        self.pool.set_members(members)

    @rule(address=addresses, ok=mostly_ok)
    def probe(self, address, ok):
        self.pool.observe_health(address, ok)

    @rule(address=addresses, models=model_lists)
    def list_models(self, address, models):
        self.pool.observe_models(address, models)

    @rule(
        address=addresses,
        waiting=st.none() | st.integers(min_value=0, max_value=10),
        kv_usage=st.none() | st.floats(min_value=0, max_value=1),
    )
    def scrape(self, address, waiting, kv_usage):
        self.pool.observe_load(address, waiting, kv_usage)

    @rule(seconds=st.floats(min_value=0, max_value=30))
    def wait(self, seconds):
        self.clock.now += seconds

    @rule(
        model=st.sampled_from(MODELS),
        exclude=st.frozensets(addresses, max_size=3),
        send=st.booleans(),
    )
    def pick(self, model, exclude, send):
        now = self.clock.now
        eligible = [
            r
            for r in self.pool.replicas()
            if r.address not in exclude
            and r.health is Health.HEALTHY
            and not (r.ejected_until is not None and now < r.ejected_until)
            and (r.models is None or model in r.models)
        ]
        chosen = self.pool.pick(model, exclude)
        if chosen is None:
            assert not eligible
            assert self.pool.explain(model, exclude).startswith(("no replica", "pool"))
            return
        assert chosen in eligible
        assert self.preference(chosen) == min(map(self.preference, eligible))
        if send:
            self.pool.started(chosen.address)
            self.sent.append(chosen.address)

    def preference(self, r: Replica) -> tuple[bool, bool, int]:
        fresh = r.load_at is not None and self.clock.now - r.load_at <= self.config.load_ttl_s
        full = fresh and (
            (r.waiting is not None and r.waiting > self.config.max_waiting)
            or (r.kv_usage is not None and r.kv_usage > self.config.max_kv_usage)
        )
        return (r.models is None, full, r.in_flight)

    @precondition(lambda self: self.sent)
    @rule(data=st.data(), ok=mostly_ok)
    def finish(self, data, ok):
        index = data.draw(st.integers(min_value=0, max_value=len(self.sent) - 1))
        self.pool.finished(self.sent.pop(index), ok)

    @rule(address=addresses, ok=st.booleans())
    def finish_unknown(self, address, ok):
        self.pool.finished(address, ok)  # never started, or started before a re-add

    @invariant()
    def in_flight_is_never_negative_nor_more_than_was_sent(self):
        for r in self.pool.replicas():
            assert 0 <= r.in_flight <= self.sent.count(r.address)

    @invariant()
    def ejections_stay_within_the_cap(self):
        for r in self.pool.replicas():
            if r.ejected_until is not None:
                # As the balancer computes it (now + cool-down): a difference of floats
                # can exceed the cap by a rounding error.
                assert r.ejected_until <= self.clock.now + self.config.max_ejection_s
            assert 0 <= r.failures < self.config.eject_after

    @invariant()
    def readiness_matches_the_states(self):
        summary = self.pool.summary()
        assert summary["ready"] == bool(self.pool.available()) == (summary["available"] > 0)


PoolMachine.TestCase.settings = settings(max_examples=60, stateful_step_count=40, deadline=None)
test_pool_invariants = PoolMachine.TestCase


# --- capacity for a rollout's next step ------------------------------------------------------


def test_headroom_holds_once_more_than_half_the_available_replicas_are_full():
    clock, pool = make_pool(4, config=BalancerConfig(max_waiting=4, max_kv_usage=0.9))
    assert pool.no_headroom() is None  # nothing scraped yet: no reason to hold
    pool.observe_load("r0", waiting=9, kv_usage=0.2)
    pool.observe_load("r1", waiting=0, kv_usage=0.95)
    assert pool.no_headroom() is None  # two of four full: half still has room
    pool.observe_load("r2", waiting=5, kv_usage=0.5)
    reason = pool.no_headroom()
    assert reason == (
        "pool 'pool' is near its limits: 3 of 4 replicas have more than 4 requests waiting"
        " or more than 90% of their KV cache in use"
    )
    fail(pool, "r3", 3)  # the roomy one ejected: 3 of 3 full
    assert "3 of 3 replicas" in pool.no_headroom()
    clock.now = 100.0  # the scrapes went stale and the ejection ended: room again
    assert pool.no_headroom() is None


def test_a_pool_with_no_replica_taking_requests_has_no_headroom():
    _, pool = make_pool(2, probe=False)
    assert pool.no_headroom() == "pool 'pool' has no replica taking requests"
