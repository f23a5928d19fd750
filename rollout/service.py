"""What SREs do to rollouts: apply a plan, send a command, read state and history.

Every write goes through the state machine and lands in the store with
compare-and-swap; a lost race (the controller or another replica wrote
first) is retried on the fresh state, so a command is never applied to a
state nobody has seen.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass

from rollout.errors import Conflict, InvalidPlan, RolloutInProgress, RolloutNotFound
from rollout.fleet import NO_FLEET, Fleet
from rollout.machine import AuditEvent, Command, decide, deleted, start
from rollout.plan import RolloutPlan
from rollout.record import Rollout
from rollout.store import RolloutStore
from rollout.traffic import TrafficPlan, Variant

Clock = Callable[[], float]  # wall-clock seconds: stored, and shared by replicas
OnChange = Callable[[Rollout, Sequence[AuditEvent]], Awaitable[None]]
CAS_ATTEMPTS = 5


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
        await self._on_change(stored, events)
        return stored

    async def command(self, route: str, command: Command) -> Rollout:
        for _ in range(CAS_ATTEMPTS):
            rollout = await self.get(route)
            status, events = decide(rollout.status, rollout.plan, None, command, self._clock())
            try:
                stored = await self._store.put(rollout.with_status(status), events)
            except Conflict:
                continue  # the controller or another replica wrote first: decide again
            await self._on_change(stored, events)
            return stored
        raise Conflict(f"route {route!r}: the rollout kept changing; try again")

    async def delete(self, route: str, actor: str) -> Rollout:
        """Forget a finished rollout (promoted, rolled back or aborted); its history stays,
        ending with the deletion.

        A rolled-back candidate's adapter stays loaded on the replicas for an
        instant retry until then.
        """
        rollout = await self.get(route)
        events = deleted(rollout.status, rollout.plan, self._clock(), actor)
        await self._store.delete(route, rollout.revision, events)
        await self._on_change(rollout, events)
        return rollout

    async def get(self, route: str) -> Rollout:
        rollout = await self._store.get(route)
        if rollout is None:
            raise RolloutNotFound(f"no rollout on route {route!r}")
        return rollout

    async def list(self) -> list[Rollout]:
        return sorted(await self._store.list(), key=lambda r: r.route)

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
