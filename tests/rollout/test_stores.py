"""Both rollout stores keep the same promises: compare-and-swap writes, events written with
them, a change counter, and a lease held by one holder at a time."""

from __future__ import annotations

import asyncio
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest
from redis.exceptions import RedisError

from rollout.machine import AuditEvent, Phase, start
from rollout.plan import RolloutPlan
from rollout.record import Rollout
from rollout.redis_store import RedisStore
from rollout.sqlite_store import SqliteStore
from rollout.store import Conflict, LeaseLost, Listing, StoreError
from rollout.traffic import Variant
from tests.redis_server import redis_server
from tests.rollout.conftest import Elapse, FakeClock, Store

LEASE_S = 0.4  # short: Redis expires the lease in real time


def new_rollout(route: str = "support") -> tuple[Rollout, list[AuditEvent]]:
    plan = RolloutPlan.model_validate(
        {"route": route, "candidate": {"name": "v2", "backend": "local", "model": "v2"}}
    )
    status, events = start("r1", plan, 0.0, "alice")
    return Rollout(plan, Variant("base", "local", "tiny"), status, created_at=0.0), events


def numbered(event: AuditEvent, *seconds: float) -> list[AuditEvent]:
    return [replace(event, at=at) for at in seconds]


def paused(rollout: Rollout) -> Rollout:
    return rollout.with_status(replace(rollout.status, phase=Phase.PAUSED))


# --- shared: compare-and-swap -----------------------------------------------------------------


@pytest.mark.anyio
async def test_a_new_route_is_stored_at_revision_1(store: Store) -> None:
    rollout, _ = new_rollout()
    assert await store.get("support") is None

    stored = await store.put(rollout)

    assert stored == replace(rollout, revision=1)
    assert await store.get("support") == stored


@pytest.mark.anyio
async def test_revision_0_creates_a_route_only_once(store: Store) -> None:
    rollout, _ = new_rollout()
    await store.put(rollout)

    with pytest.raises(Conflict):
        await store.put(rollout)


@pytest.mark.anyio
async def test_each_put_increments_the_revision(store: Store) -> None:
    rollout, _ = new_rollout()
    first = await store.put(rollout)

    second = await store.put(paused(first))

    assert second.revision == 2
    assert await store.get("support") == second


@pytest.mark.anyio
async def test_a_stale_revision_conflicts_and_writes_nothing(store: Store) -> None:
    rollout, events = new_rollout()
    first = await store.put(rollout, events)
    second = await store.put(paused(first))
    before = await store.changes()

    with pytest.raises(Conflict):
        await store.put(first, numbered(events[0], 1.0))

    assert await store.get("support") == second
    assert await store.history("support") == events
    assert await store.changes() == before


@pytest.mark.anyio
async def test_of_concurrent_writers_of_one_revision_exactly_one_wins(store: Store) -> None:
    rollout, _ = new_rollout()
    first = await store.put(rollout)

    results = await asyncio.gather(
        *(store.put(paused(first)) for _ in range(8)), return_exceptions=True
    )

    assert sum(isinstance(r, Rollout) for r in results) == 1
    assert sum(isinstance(r, Conflict) for r in results) == 7
    assert (await store.get("support")).revision == 2


# --- shared: events, list, delete, changes ----------------------------------------------------


@pytest.mark.anyio
async def test_history_is_oldest_first_per_route_and_keeps_the_last_limit(store: Store) -> None:
    rollout, events = new_rollout()
    first = await store.put(rollout, numbered(events[0], 1.0))
    await store.put(first, numbered(events[0], 2.0, 3.0))
    other, other_events = new_rollout("billing")
    await store.put(other, other_events)

    assert [e.at for e in await store.history("support")] == [1.0, 2.0, 3.0]
    assert [e.at for e in await store.history("support", limit=2)] == [2.0, 3.0]
    assert await store.history("support", limit=0) == []
    assert await store.history("billing") == other_events
    assert await store.history("nowhere") == []


@pytest.mark.anyio
async def test_list_returns_every_stored_rollout(store: Store) -> None:
    assert await store.list() == Listing([], [])
    support = await store.put(new_rollout("support")[0])
    billing = await store.put(new_rollout("billing")[0])

    assert await store.list() == Listing([billing, support], [])


@pytest.mark.anyio
async def test_delete_needs_the_current_revision_and_keeps_the_history(store: Store) -> None:
    rollout, events = new_rollout()
    stored = await store.put(rollout, events)

    for stale in (0, 2):
        with pytest.raises(Conflict):
            await store.delete("support", stale, events)  # nothing appended either
    await store.delete("support", stored.revision, events[:1])

    assert await store.get("support") is None
    assert await store.list() == Listing([], [])
    assert await store.history("support") == [*events, events[0]]
    with pytest.raises(Conflict):
        await store.delete("support", stored.revision)
    assert (await store.put(rollout)).revision == 1  # the route can start afresh


@pytest.mark.anyio
async def test_changes_grow_with_every_write(store: Store) -> None:
    rollout, _ = new_rollout()
    initial = await store.changes()

    stored = await store.put(rollout)
    after_put = await store.changes()
    await store.delete("support", stored.revision)

    assert initial < after_put < await store.changes()


# --- shared: lease ----------------------------------------------------------------------------


@pytest.mark.anyio
async def test_the_lease_has_one_holder_at_a_time(store: Store) -> None:
    assert await store.acquire("a", LEASE_S)
    assert not await store.acquire("b", LEASE_S)
    assert await store.acquire("a", LEASE_S)  # a renewal


@pytest.mark.anyio
async def test_renewing_keeps_the_lease_past_its_first_expiry(store: Store, elapse: Elapse) -> None:
    await store.acquire("a", LEASE_S)
    await elapse(LEASE_S * 0.6)
    assert await store.acquire("a", LEASE_S)

    await elapse(LEASE_S * 0.6)

    assert not await store.acquire("b", LEASE_S)


@pytest.mark.anyio
async def test_an_expired_lease_passes_to_another_holder(store: Store, elapse: Elapse) -> None:
    await store.acquire("a", LEASE_S)

    await elapse(LEASE_S * 1.25)

    assert await store.acquire("b", LEASE_S)
    assert not await store.acquire("a", LEASE_S)


@pytest.mark.anyio
async def test_fenced_writes_need_the_lease(store: Store, elapse: Elapse) -> None:
    rollout, events = new_rollout()
    with pytest.raises(LeaseLost):
        await store.put(rollout, events, fence="a")  # nobody holds it yet
    assert await store.get("support") is None
    assert await store.acquire("a", LEASE_S)
    stored = await store.put(rollout, events, fence="a")
    assert stored.revision == 1
    with pytest.raises(LeaseLost):
        await store.put(stored, fence="b")
    await elapse(LEASE_S * 1.5)
    assert await store.acquire("b", LEASE_S)
    with pytest.raises(LeaseLost):
        await store.put(stored, fence="a")  # a stalled past its lease: its decision is void
    assert (await store.get("support")).revision == 1
    assert len(await store.history("support")) == len(events)


@pytest.mark.anyio
async def test_only_the_holder_can_release_the_lease(store: Store) -> None:
    await store.acquire("a", LEASE_S)

    await store.release("b")
    assert not await store.acquire("b", LEASE_S)
    await store.release("a")

    assert await store.acquire("b", LEASE_S)


# --- SQLite -----------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_sqlite_data_survives_reopening_the_file(tmp_path: Path) -> None:
    rollout, events = new_rollout()
    first = SqliteStore(tmp_path / "rollouts.db")
    stored = await first.put(rollout, events)
    await first.close()

    reopened = SqliteStore(tmp_path / "rollouts.db")

    assert await reopened.get("support") == stored
    assert await reopened.history("support") == events
    assert await reopened.changes() == 1


@pytest.mark.anyio
async def test_two_sqlite_stores_on_one_file_share_rollouts_and_lease(tmp_path: Path) -> None:
    clock = FakeClock()
    one = SqliteStore(tmp_path / "rollouts.db", clock=clock)
    two = SqliteStore(tmp_path / "rollouts.db", clock=clock)
    rollout, _ = new_rollout()

    stored = await one.put(rollout)
    assert await two.get("support") == stored
    await two.put(paused(stored))

    with pytest.raises(Conflict):
        await one.put(paused(stored))
    assert await one.changes() == 2
    assert await one.acquire("a", LEASE_S)
    assert not await two.acquire("b", LEASE_S)


def _increment(path: Path, times: int) -> None:
    """Read-modify-write `times` times, retrying on `Conflict` as the controller does."""

    async def run() -> None:
        store = SqliteStore(path)
        for _ in range(times):
            while True:
                current = await store.get("support")
                try:
                    await store.put(current)
                    break
                except Conflict:
                    continue

    asyncio.run(run())


def test_sqlite_writers_in_several_processes_lose_no_write(tmp_path: Path) -> None:
    path = tmp_path / "rollouts.db"
    asyncio.run(SqliteStore(path).put(new_rollout()[0]))
    spawn = multiprocessing.get_context("spawn")  # no fork of pytest's threads

    with ProcessPoolExecutor(3, mp_context=spawn) as pool:
        for done in [pool.submit(_increment, path, 20) for _ in range(3)]:
            done.result()

    assert asyncio.run(SqliteStore(path).get("support")).revision == 1 + 3 * 20


def test_an_unusable_sqlite_file_raises_store_error(tmp_path: Path) -> None:
    with pytest.raises(StoreError):
        SqliteStore(tmp_path)  # a directory, not a file


# --- Redis ------------------------------------------------------------------------------------


@pytest.mark.anyio
async def test_a_redis_write_is_in_another_replicas_next_poll(
    redis_url: str, redis_prefix: str
) -> None:
    writer = RedisStore(redis_url, prefix=redis_prefix)
    reader = RedisStore(redis_url, prefix=redis_prefix)
    seen = await reader.changes()

    stored = await writer.put(new_rollout()[0])

    # The change counter moves in the same script as the write: no delay to wait out.
    assert await reader.changes() == seen + 1
    assert await reader.get("support") == stored
    await writer.close()
    await reader.close()


@pytest.mark.anyio
async def test_redis_stores_with_other_prefixes_are_apart(
    redis_url: str, redis_prefix: str
) -> None:
    one = RedisStore(redis_url, prefix=f"{redis_prefix}-one")
    two = RedisStore(redis_url, prefix=f"{redis_prefix}-two")

    await one.put(new_rollout()[0])

    assert await two.get("support") is None
    assert await two.changes() == 0
    await one.close()
    await two.close()


@pytest.mark.anyio
async def test_a_down_redis_raises_store_error() -> None:
    with redis_server() as url:
        store = RedisStore(url)
        await store.put(new_rollout()[0])

    with pytest.raises(StoreError) as raised:
        await store.get("support")
    assert isinstance(raised.value.__cause__, RedisError)
    with pytest.raises(StoreError):
        await store.acquire("a", LEASE_S)
    await store.close()
