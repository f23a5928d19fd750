"""What SREs do to rollouts: apply a plan, send a command, read state and history.

Every write goes through the state machine and lands in the store with
compare-and-swap; a lost race (the controller or another replica wrote
first) is retried on the fresh state, so a command is never applied to a
state nobody has seen.

A stored rollout that does not read back (quarantined) answers every call on
its route with `RolloutUnreadable`, except `delete`, which removes it with an
audit event like any other deletion.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rollout.errors import (
    Conflict,
    InvalidPlan,
    RolloutInProgress,
    RolloutNotFound,
    RolloutUnreadable,
)
from rollout.fleet import NO_FLEET, Fleet
from rollout.machine import AuditEvent, Command, EventKind, Phase, decide, deleted, start
from rollout.plan import RolloutPlan
from rollout.record import Rollout
from rollout.store import Listing, Quarantined, RolloutStore
from rollout.traffic import TrafficPlan, Variant

Clock = Callable[[], float]  # wall-clock seconds: stored, and shared by replicas
OnChange = Callable[[Sequence[AuditEvent]], Awaitable[None]]  # after every write
CAS_ATTEMPTS = 5
UNKNOWN = "unknown"  # what an audit event says of a quarantined rollout's id and step


@dataclass(frozen=True, slots=True)
class Topology:
    """The routes and backends the gateway was configured with."""

    base: TrafficPlan
    backends: frozenset[str]


class RolloutService:
    def __init__(
        self,
        store: RolloutStore,
        topology: Topology,
        clock: Clock,
        on_change: OnChange,
        fleet: Fleet = NO_FLEET,
    ) -> None:
        self._store = store
        self._topology = topology
        self._clock = clock
        self._on_change = on_change
        self._fleet = fleet

    async def apply(self, plan: RolloutPlan, actor: str) -> Rollout:
        """Start `plan` on its route; refused while another rollout there is still active."""
        self._validate(plan)
        existing = await self._store.get(plan.route)
        if existing is not None and existing.status.phase.active:
            raise RolloutInProgress(
                f"route {plan.route!r} has rollout {existing.rollout_id} "
                f"({existing.status.phase.value}); abort it first"
            )
        stable = self._stable(plan.route, existing)
        if stable.name == plan.candidate.name:
            raise InvalidPlan(f"candidate.name: {stable.name!r} is already the route's stable")
        candidate = plan.candidate
        if candidate.adapter is not None:
            # On every replica before the rollout exists: no request, shadow copies
            # included, can reach a replica that lacks it.
            await self._fleet.prepare(candidate.backend, candidate.model, candidate.adapter)
        now = self._clock()
        rollout_id = f"{plan.route}-{secrets.token_hex(4)}"
        status, events = start(rollout_id, plan, now, actor)
        rollout = Rollout(
            plan, stable, status, created_at=now, revision=existing.revision if existing else 0
        )
        stored = await self._store.put(rollout, events)
        await self._on_change(events)
        return stored

    async def command(self, route: str, command: Command) -> Rollout:
        for _ in range(CAS_ATTEMPTS):
            rollout = await self.get(route)
            status, events = decide(rollout.status, rollout.plan, None, command, self._clock())
            try:
                stored = await self._store.put(rollout.with_status(status), events)
            except Conflict:
                continue  # the controller or another replica wrote first: decide again
            await self._on_change(events)
            return stored
        raise Conflict(f"route {route!r}: the rollout kept changing; try again")

    async def delete(self, route: str, actor: str) -> Rollout | Quarantined:
        """Forget a finished rollout (promoted, rolled back or aborted), or a quarantined
        one; its history stays, ending with the deletion.

        A rolled-back candidate's adapter stays loaded on the replicas for an
        instant retry until then.
        """
        try:
            rollout = await self.get(route)
        except RolloutUnreadable as exc:
            unreadable = Quarantined(route, exc.revision, exc.error)
            events = [unreadable_deleted(unreadable, self._clock(), actor)]
            await self._store.delete(route, unreadable.revision, events)
            await self._on_change(events)
            return unreadable
        events = deleted(rollout.status, rollout.plan, self._clock(), actor)
        await self._store.delete(route, rollout.revision, events)
        await self._on_change(events)
        return rollout

    async def get(self, route: str) -> Rollout:
        rollout = await self._store.get(route)
        if rollout is None:
            raise RolloutNotFound(f"no rollout on route {route!r}")
        return rollout

    async def list(self) -> Listing:
        return await self._store.list()

    async def history(self, route: str, limit: int = 100) -> list[AuditEvent]:
        return await self._store.history(route, limit)

    def _validate(self, plan: RolloutPlan) -> None:
        if plan.route not in self._topology.base.routes:
            known = ", ".join(sorted(self._topology.base.routes)) or "none"
            raise InvalidPlan(f"route: unknown route {plan.route!r} (configured: {known})")
        if plan.candidate.backend not in self._topology.backends:
            known = ", ".join(sorted(self._topology.backends))
            backend = plan.candidate.backend
            raise InvalidPlan(
                f"candidate.backend: unknown backend {backend!r} (configured: {known})"
            )

    def _stable(self, route: str, existing: Rollout | None) -> Variant:
        """The route's stable now: a promoted candidate, or what the routes file says."""
        if existing is not None:
            return existing.traffic().stable
        return self._topology.base.routes[route].stable


def unreadable_deleted(record: Quarantined, now: float, actor: str) -> AuditEvent:
    """The event that records deleting a quarantined rollout, of which nothing but the route
    is known: its route was served by its stable alone (weight 0) while it was quarantined.
    """
    reason = f"unreadable rollout (revision {record.revision}) deleted by {actor}: {record.error}"
    return AuditEvent(
        at=now, route=record.route, rollout_id=UNKNOWN, attempt=0, kind=EventKind.DELETED,
        actor=actor, reason=reason, from_phase=Phase.ABORTED, to_phase=Phase.ABORTED,
        from_step=UNKNOWN, to_step=UNKNOWN, from_weight=0.0, to_weight=0.0,
    )  # fmt: skip
