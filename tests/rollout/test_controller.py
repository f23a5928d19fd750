"""The controller loop and the SRE service: real SQLite store, scripted source, fake clock."""

from __future__ import annotations

import itertools
import math
from dataclasses import replace
from pathlib import Path

import pytest

from rollout.analysis import Status
from rollout.controller import Controller, TrafficSync, measure_series
from rollout.errors import CommandRejected, InvalidPlan, RolloutInProgress, RolloutNotFound
from rollout.fleet import NoFleet
from rollout.machine import Command, CommandKind, EventKind, Phase
from rollout.plan import RolloutPlan
from rollout.record import Rollout
from rollout.service import RolloutService, Topology
from rollout.source import SourceUnavailable
from rollout.sqlite_store import SqliteStore
from rollout.traffic import RouteTraffic, TrafficPlan, Variant
from rollout.windows import Histogram, VariantWindow
from tests.rollout.conftest import FakeClock

pytestmark = pytest.mark.anyio

STABLE = Variant("base", "local", "tiny")
BASE = TrafficPlan({"support": RouteTraffic("support", STABLE)}, version=1)
TOPOLOGY = Topology(BASE, frozenset({"local"}))
BOUNDS = tuple(0.01 * 1.2**k for k in range(40))


def make_plan(**overrides) -> RolloutPlan:
    return RolloutPlan.model_validate({
        "route": "support",
        "candidate": {"name": "v2", "backend": "local", "model": "v2"},
        "steps": [
            {"kind": "shadow", "min_duration_s": 10, "min_requests": 10},
            {"kind": "weight", "percent": 10, "min_duration_s": 10, "min_requests": 10},
            {"kind": "weight", "percent": 100, "min_duration_s": 10, "min_requests": 10},
        ],
        "min_samples": 20,
        "evaluation_interval_s": 5,
        "inconclusive_limit_s": 30,
        **overrides,
    })  # fmt: skip


def traffic(requests: int, errors: int = 0, incidents: int = 0) -> VariantWindow:
    return VariantWindow(
        requests=requests,
        errors=errors,
        latency=Histogram.of(BOUNDS, [0.1 + i * 1e-4 for i in range(requests - errors)]),
        feedback_count=requests / 2,
        feedback_sum=requests * 0.4,
        incidents=incidents,
    )


class ScriptedSource:
    """Answers every window with the role's scripted traffic; `down` makes it silent.

    Blind reviews (role "review") are scripted by variant: none unless `reviews` says.
    """

    def __init__(self) -> None:
        self.by_role = {"stable": traffic(500), "candidate": traffic(50), "shadow": traffic(50)}
        self.reviews: dict[str, VariantWindow] = {}
        self.down = False
        self.asked: list[tuple[str, str, float, float]] = []

    async def window(self, route, variant, role, start, end) -> VariantWindow:
        if self.down:
            raise SourceUnavailable("prometheus: connection refused")
        self.asked.append((variant, role, start, end))
        if role == "review":
            return self.reviews.get(variant, VariantWindow())
        return self.by_role[role]

    async def value(self, query, at):
        return None


class Harness:
    def __init__(self, tmp_path: Path) -> None:
        self.clock = FakeClock()
        self.store = SqliteStore(tmp_path / "state.db", clock=self.clock)
        self.source = ScriptedSource()
        self.published: list[TrafficPlan] = []
        self.events: list = []
        self.sync = TrafficSync(self.store, BASE, lambda plan, _: self.published.append(plan))

        async def changed(events) -> None:
            self.events += events
            await self.sync.refresh()

        self.service = RolloutService(self.store, TOPOLOGY, self.clock, changed)
        self.controller = self.make_controller("a", changed)

    def make_controller(self, holder: str, changed) -> Controller:
        return Controller(
            self.store, self.store, self.source, self.clock, changed, holder=holder, lease_ttl_s=10
        )

    async def run_for(self, seconds: float, step: float = 1.0) -> None:
        for _ in range(int(seconds / step)):
            self.clock.now += step
            await self.controller.tick()

    @property
    def weight(self) -> int:
        return self.published[-1].routes["support"].weight_bp

    async def rollout(self) -> Rollout:
        return await self.service.get("support")


@pytest.fixture
async def h(tmp_path: Path):
    harness = Harness(tmp_path)
    yield harness
    await harness.store.close()


async def test_a_healthy_candidate_goes_through_every_step_to_promotion(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    assert h.published[-1].routes["support"].shadow_sample == 1.0
    await h.run_for(12)
    assert (await h.rollout()).status.step == 1
    assert h.weight == 1000
    await h.run_for(12)
    assert h.weight == 10_000
    await h.run_for(12)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.PROMOTED
    assert h.published[-1].routes["support"] == RouteTraffic("support", rollout.candidate)
    kinds = [e.kind for e in await h.service.history("support")]
    assert kinds == [EventKind.STARTED, EventKind.ADVANCED, EventKind.ADVANCED, EventKind.PROMOTED]


async def test_shadow_measures_mirrored_copies_then_weights_measure_served_ones(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(12)
    in_shadow = {(variant, role) for variant, role, _, _ in h.source.asked}
    assert in_shadow == {("base", "stable"), ("v2", "shadow"), ("base", "review"), ("v2", "review")}
    h.source.asked.clear()
    await h.run_for(6)
    at_weights = {(variant, role) for variant, role, _, _ in h.source.asked}
    assert at_weights == {("base", "stable"), ("v2", "candidate")}  # reviews judge shadow only


async def test_unreviewed_shadow_skips_satisfaction_and_still_advances(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(6)
    checks = {c.name: c for c in (await h.rollout()).last_verdict.results}
    assert checks["satisfaction"].status is Status.SKIPPED
    assert checks["satisfaction"].reason.startswith("no blind reviews yet")
    await h.run_for(6)
    assert (await h.rollout()).status.step == 1


async def test_blind_reviews_preferring_stable_roll_the_candidate_back_in_shadow(
    h: Harness,
) -> None:
    await h.service.apply(make_plan(), "alice")
    # Per interval 30 reviews: stable preferred in 27 of them.
    h.source.reviews = {
        "v2": VariantWindow(feedback_count=30, feedback_sum=3.0),
        "base": VariantWindow(feedback_count=30, feedback_sum=27.0),
    }
    await h.run_for(6)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.ROLLED_BACK
    event = h.events[-1]
    assert (event.kind, event.from_step, event.rule) == (
        EventKind.ROLLED_BACK,
        "shadow",
        "satisfaction",
    )
    (satisfaction,) = (c for c in event.checks if c.name == "satisfaction")
    assert (satisfaction.candidate, satisfaction.stable) == (
        pytest.approx(10.0),
        pytest.approx(90.0),
    )


async def test_series_are_consecutive_intervals_measured_as_the_step_is(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    h.source.asked.clear()
    intervals = await measure_series(h.source, await h.rollout(), 1000.0, 10, 6)
    assert [(w.start, w.end) for w, _ in intervals] == [
        (940.0 + 10 * i, 950.0 + 10 * i) for i in range(6)
    ]
    assert all(reviews is not None for _, reviews in intervals)  # shadow: reviews score
    assert {role for _, role, _, _ in h.source.asked} == {"stable", "shadow", "review"}


async def test_windows_are_contiguous(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(20)
    stable = [(start, end) for _, role, start, end in h.source.asked if role == "stable"]
    assert all(a[1] == b[0] for a, b in itertools.pairwise(stable))


async def test_a_safety_incident_rolls_back_at_the_next_evaluation(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    h.source.by_role["shadow"] = traffic(3, incidents=1)
    await h.run_for(6)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.ROLLED_BACK
    assert h.weight == 0
    event = h.events[-1]
    assert (event.kind, event.rule, event.actor) == (EventKind.ROLLED_BACK, "safety", "controller")
    assert any(c.name == "safety" and c.candidate == 1 for c in event.checks)
    # Retry brings the same rollout id (and so the same users) back at once.
    retried = await h.service.command("support", Command(CommandKind.RETRY, "alice"))
    assert (retried.rollout_id, retried.status.attempt) == (rollout.rollout_id, 2)
    assert retried.evidence.attempt is None


async def test_a_silent_source_waits_then_pauses_then_resumes(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    h.source.down = True
    await h.run_for(40)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.PAUSED
    assert rollout.status.step == 0  # nothing advanced on missing data
    assert "connection refused" in rollout.status.reason
    h.source.down = False
    await h.run_for(6)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.RUNNING
    # The first window after the outage spans it: nothing measured is lost.
    _, _, start, end = h.source.asked[0]
    assert end - start >= 40


async def test_an_sre_command_between_measure_and_write_wins(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(2)
    original_window, calls = h.source.window, []

    async def window_then_pause(*args):
        calls.append(args)
        if len(calls) == 1:
            await h.service.command("support", Command(CommandKind.PAUSE, "bob"))
        return await original_window(*args)

    h.source.window = window_then_pause
    await h.run_for(12)
    rollout = await h.rollout()
    assert rollout.status.phase is Phase.PAUSED
    assert rollout.status.hold.actor == "bob"


async def test_only_the_lease_holder_evaluates(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    other = h.make_controller("b", h.controller._on_change)
    await h.run_for(2)
    await other.tick()
    assert (h.controller.leader, other.leader) == (True, False)
    h.source.asked.clear()
    h.clock.now += 20  # "a" is gone: its lease lapses
    await other.tick()
    assert other.leader
    assert h.source.asked


async def test_apply_refuses_unknown_routes_backends_and_a_second_active_rollout(
    h: Harness,
) -> None:
    with pytest.raises(InvalidPlan, match="route: unknown route 'chat'"):
        await h.service.apply(make_plan(route="chat"), "alice")
    bad = make_plan(candidate={"name": "v2", "backend": "gpu", "model": "v2"})
    with pytest.raises(InvalidPlan, match=r"candidate\.backend: unknown backend 'gpu'"):
        await h.service.apply(bad, "alice")
    await h.service.apply(make_plan(), "alice")
    with pytest.raises(RolloutInProgress):
        await h.service.apply(make_plan(), "alice")
    with pytest.raises(RolloutNotFound):
        await h.service.get("chat")


async def test_after_promotion_the_next_rollout_starts_from_the_promoted_stable(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.service.command("support", Command(CommandKind.PROMOTE, "alice", full=True))
    with pytest.raises(InvalidPlan, match="already the route's stable"):
        await h.service.apply(make_plan(), "alice")
    v3 = {"name": "v3", "backend": "local", "model": "v3"}
    rollout = await h.service.apply(make_plan(candidate=v3), "alice")
    assert rollout.stable.name == "v2"


async def test_commands_that_do_not_apply_are_refused(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    with pytest.raises(CommandRejected, match="not rolled back"):
        await h.service.command("support", Command(CommandKind.RETRY, "alice"))


async def test_a_restarted_replica_routes_by_the_stored_state_at_once(h: Harness, tmp_path) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(12)
    before = h.published[-1].routes["support"]
    reopened = SqliteStore(tmp_path / "state.db")
    seen: list[TrafficPlan] = []
    await TrafficSync(reopened, BASE, lambda plan, _: seen.append(plan)).refresh(force=True)
    await reopened.close()
    assert seen[-1].routes["support"] == before
    assert before.weight_bp == 1000


class FlakyFleet(NoFleet):
    """Fails its first `follow` (a replica's model list that could not be read)."""

    def __init__(self) -> None:
        self.calls = 0

    async def follow(self, plan: TrafficPlan, rollouts) -> None:
        self.calls += 1
        if self.calls == 1:
            raise RuntimeError("replica answered garbage")


async def test_a_refresh_that_fails_is_tried_again_at_the_next_poll(h: Harness) -> None:
    seen: list[TrafficPlan] = []
    sync = TrafficSync(h.store, BASE, lambda plan, _: seen.append(plan), FlakyFleet())
    await h.service.apply(make_plan(), "alice")
    with pytest.raises(RuntimeError):
        await sync.refresh()
    assert seen == []
    await sync.refresh()  # no new write since: the change is still unseen
    assert seen[-1].routes["support"].candidate is not None


async def test_a_controller_that_stalls_past_its_lease_decides_nothing(h: Harness) -> None:
    await h.service.apply(make_plan(), "alice")
    await h.run_for(2)
    successor = h.make_controller("b", h.controller._on_change)
    original_window, calls = h.source.window, []

    async def stall_until_the_lease_passes(*args):
        calls.append(args)
        if len(calls) == 1:  # "a" hangs while its lease lapses and "b" takes it
            h.clock.now += 20
            await successor.renew()
        return await original_window(*args)

    h.source.window = stall_until_the_lease_passes
    before = await h.rollout()
    h.clock.now += 5  # the next evaluation is due, within the lease
    await h.controller.evaluate_due()
    assert calls  # it did measure and decide
    assert successor.leader
    assert (await h.rollout()).revision == before.revision  # a's evaluation was refused
    assert not h.controller._leading()


async def test_a_source_answering_nan_is_no_data_and_the_evidence_stays_storable(
    h: Harness,
) -> None:
    await h.service.apply(make_plan(), "alice")
    h.source.by_role["shadow"] = replace(traffic(50), requests=math.nan)
    await h.run_for(6)
    rollout = await h.rollout()
    assert rollout.last_verdict.status is Status.INCONCLUSIVE
    assert "v2 (shadow): requests is not a finite number" in rollout.status.reason
    assert rollout.evidence.attempt is None  # nothing measured was kept


@pytest.mark.parametrize("value", [math.inf, -math.inf, math.nan])
async def test_a_promql_check_answering_inf_or_nan_has_no_data(h: Harness, value) -> None:
    query = {"name": "ratio", "metric": "promql", "threshold": 0.1, "query": "x / y"}
    await h.service.apply(make_plan(checks=[query]), "alice")

    async def value_of(query, at):
        return value

    h.source.value = value_of
    await h.run_for(6)
    (result,) = (await h.rollout()).last_verdict.results
    assert (result.status, result.reason) == (Status.INCONCLUSIVE, "the query returned no data")
