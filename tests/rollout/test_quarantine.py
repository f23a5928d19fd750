"""A stored rollout that does not read back is quarantined: listed apart with why, refused on
its route, deletable, and never in the way of the other rollouts, the controller or a start."""

from __future__ import annotations

import json
import logging
import math
import sqlite3
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from prometheus_client import CollectorRegistry

from rollout.analysis import CheckResult, Status, Verdict
from rollout.control_plane import ControlPlane
from rollout.controller import Controller, TrafficSync
from rollout.error_evidence import ErrorEvidence
from rollout.errors import RolloutUnreadable, Unstorable
from rollout.evidence import Evidence
from rollout.machine import Command, CommandKind, EventKind, Phase
from rollout.plan import Metric
from rollout.service import RolloutService, Topology
from rollout.sqlite_store import SqliteStore
from rollout.store import Listing, Quarantined
from rollout.traffic import RouteTraffic, TrafficPlan, Variant
from tests.rollout.conftest import FakeClock, Store
from tests.rollout.test_controller import ScriptedSource, make_plan
from tests.rollout.test_stores import new_rollout

pytestmark = pytest.mark.anyio

STABLE = Variant("base", "local", "tiny")
BASE = TrafficPlan(
    {route: RouteTraffic(route, STABLE) for route in ("billing", "support")}, version=1
)


def stored_json(rollout) -> dict:
    return json.loads(rollout.to_json())


def with_null_duration(record: dict) -> bytes:
    """What the poisoned record looked like: a plan's inf written as null."""
    record["plan"]["steps"][0]["min_duration_s"] = None
    return json.dumps(record).encode()


def corrupt(backend: str, tmp_path: Path, request: pytest.FixtureRequest, route: str, data):
    """Overwrite the route's stored json by hand, as a careless admin would."""
    if backend == "sqlite":
        with sqlite3.connect(tmp_path / "rollouts.db") as db:
            db.execute("UPDATE rollouts SET json = ? WHERE route = ?", (data, route))
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    with redis.Redis.from_url(url) as client:
        client.hset(f"{prefix}:rollout:{route}", "json", data)


@pytest.fixture
def spoil(backend: str, tmp_path: Path, request: pytest.FixtureRequest):
    return lambda route, data: corrupt(backend, tmp_path, request, route, data)


# --- stores -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("damage", "why"),
    [
        (with_null_duration, "plan.steps.0.shadow.min_duration_s: Input should be a valid number"),
        (lambda _: b"{not json", "Invalid JSON"),
        (lambda _: b"\xff\xfe", "Invalid JSON"),
        (lambda _: b"[]", "Input should be an object"),
        (lambda record: json.dumps({**record, "status": 7}), "status: Input should be"),
    ],
)
async def test_a_record_that_does_not_read_back_is_listed_apart_with_why(
    store: Store, spoil, damage, why
) -> None:
    support = await store.put(new_rollout("support")[0])
    billing = await store.put(new_rollout("billing")[0])

    spoil("support", damage(stored_json(support)))

    listing = await store.list()
    assert listing.rollouts == [billing]
    (quarantined,) = listing.quarantined
    assert (quarantined.route, quarantined.revision) == ("support", 1)
    assert why in quarantined.error
    with pytest.raises(RolloutUnreadable) as raised:
        await store.get("support")
    assert (raised.value.revision, raised.value.error) == (1, quarantined.error)
    assert await store.get("billing") == billing


async def test_a_record_holding_another_route_is_quarantined(store: Store, spoil) -> None:
    billing = await store.put(new_rollout("billing")[0])
    await store.put(new_rollout("support")[0])

    spoil("support", billing.to_json())

    assert (await store.list()).quarantined == [
        Quarantined("support", 1, "it holds the route 'billing'")
    ]


async def test_a_quarantined_record_is_deleted_at_its_revision(store: Store, spoil) -> None:
    rollout, events = new_rollout("support")
    await store.put(rollout, events)
    spoil("support", b"garbage")
    (quarantined,) = (await store.list()).quarantined

    await store.delete("support", quarantined.revision, events[:1])

    assert await store.list() == Listing([], [])
    assert await store.history("support") == [*events, *events[:1]]
    assert (await store.put(rollout)).revision == 1  # the route starts afresh


@pytest.mark.parametrize(
    "spoiled",
    [
        lambda r: replace(
            r, evidence=Evidence(error_rates={"e": ErrorEvidence(closed=(math.nan,) * 6)})
        ),
        lambda r: replace(r, created_at=math.inf),
        lambda r: replace(
            r,
            last_verdict=Verdict(
                (CheckResult("q", Metric.PROMQL, Status.FAIL, "above", candidate=math.inf),)
            ),
        ),
    ],
)
async def test_a_record_holding_inf_or_nan_is_refused_and_nothing_written(
    store: Store, spoiled
) -> None:
    rollout, events = new_rollout()
    stored = await store.put(rollout, events)
    before = await store.changes()

    with pytest.raises(Unstorable, match="is not a finite number"):
        await store.put(spoiled(stored), events)

    assert await store.get("support") == stored
    assert await store.history("support") == events
    assert await store.changes() == before


async def test_an_event_holding_inf_is_refused_with_its_rollout(store: Store) -> None:
    rollout, events = new_rollout()
    check = CheckResult("q", Metric.PROMQL, Status.FAIL, "above", candidate=-math.inf)

    with pytest.raises(Unstorable, match=r"checks\.0\.candidate"):
        await store.put(rollout, [replace(events[0], checks=(check,))])

    assert await store.get("support") is None


# --- the control plane around a quarantined record ---------------------------------------------


class Plane:
    """Service, controller and sync on one SQLite file, with two routes."""

    def __init__(self, tmp_path: Path) -> None:
        self.path = tmp_path / "state.db"
        self.clock = FakeClock()
        self.store = SqliteStore(self.path, clock=self.clock)
        self.published: list[TrafficPlan] = []
        self.sync = TrafficSync(self.store, BASE, lambda plan, _: self.published.append(plan))

        async def changed(events) -> None:
            await self.sync.refresh()

        topology = Topology(BASE, frozenset({"local"}))
        self.service = RolloutService(self.store, topology, self.clock, changed)
        self.controller = Controller(
            self.store, self.store, ScriptedSource(), self.clock, changed, holder="a"
        )

    def spoil(self, route: str) -> None:
        with sqlite3.connect(self.path) as db:
            db.execute("UPDATE rollouts SET json = 'garbage' WHERE route = ?", (route,))

    async def run_for(self, seconds: float) -> None:
        for _ in range(int(seconds)):
            self.clock.now += 1
            await self.controller.tick()
            await self.sync.refresh()


@pytest.fixture
async def plane(tmp_path: Path):
    made = Plane(tmp_path)
    yield made
    await made.store.close()


async def test_the_other_rollouts_are_evaluated_and_routed(plane: Plane, caplog) -> None:
    await plane.service.apply(make_plan(), "alice")
    await plane.service.apply(make_plan(route="billing"), "alice")
    await plane.run_for(2)
    plane.spoil("support")

    with caplog.at_level(logging.ERROR, logger="rollgate.controller"):
        await plane.run_for(24)  # the controller writes billing's evidence all along

    assert (await plane.service.get("billing")).status.step == 2
    routes = plane.published[-1].routes
    assert routes["billing"].weight_bp == 10_000
    assert routes["support"] == RouteTraffic("support", STABLE)  # served by its stable
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1  # once, not at every refresh
    assert "route support (revision 2) does not read back and is quarantined" in logged[0]


async def test_a_quarantined_route_refuses_all_but_delete(plane: Plane) -> None:
    await plane.service.apply(make_plan(), "alice")
    plane.spoil("support")

    for call in (
        plane.service.get("support"),
        plane.service.apply(make_plan(), "bob"),
        plane.service.command("support", Command(CommandKind.ABORT, "bob")),
    ):
        with pytest.raises(RolloutUnreadable, match="rollgate delete support"):
            await call

    deleted = await plane.service.delete("support", "bob")

    assert deleted == Quarantined("support", 1, deleted.error)
    event = (await plane.service.history("support"))[-1]
    assert (event.kind, event.actor, event.to_weight) == (EventKind.DELETED, "bob", 0.0)
    assert "unreadable rollout (revision 1) deleted by bob: " in event.reason
    assert (await plane.service.apply(make_plan(), "bob")).status.phase is Phase.RUNNING


class ClosingSource(ScriptedSource):
    async def close(self) -> None:
        pass


async def test_a_gateway_starts_and_routes_on_a_state_with_a_bad_record(plane: Plane) -> None:
    await plane.service.apply(make_plan(), "alice")
    await plane.service.apply(make_plan(route="billing"), "alice")
    plane.spoil("support")
    store = SqliteStore(plane.path)
    restarted = ControlPlane(store, store, ClosingSource(), CollectorRegistry())
    published: list[TrafficPlan] = []

    await restarted.start(published.append, BASE, frozenset({"local"}))
    await restarted.stop()

    assert published[0].routes["billing"].shadow_sample == 1.0
    assert published[0].routes["support"] == RouteTraffic("support", STABLE)
