"""The control plane as one object a gateway embeds: service, controller, sync, webhooks, metrics.

    control = ControlPlane(SqliteStore(path), LocalWindows(), registry)
    app = create_app(settings, routes, registry=registry, control_plane=control)

On start it reconciles from the store before the gateway serves: a restarted
replica routes at once by the same steps, weights and rollout ids (so the same
user cohorts) as before it died. A stored record that does not read back is
quarantined, not fatal: the gateway starts and serves its route by its stable.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from fastapi import APIRouter
from prometheus_client import CollectorRegistry

from rollout.api import admin_router
from rollout.controller import Controller, TrafficSync
from rollout.fleet import NO_FLEET, Fleet
from rollout.machine import AuditEvent
from rollout.service import Clock, RolloutService, Topology
from rollout.source import MetricSource
from rollout.store import Lease, Listing, RolloutStore
from rollout.telemetry import ControlPlaneMetrics
from rollout.traffic import RouteTraffic, TrafficPlan
from rollout.webhooks import Webhooks

log = logging.getLogger("rollgate.rollout")


@dataclass(frozen=True, slots=True)
class Timing:
    tick_s: float = 1.0  # how often the leader looks for rollouts due an evaluation
    sync_s: float = 0.25  # how often every replica polls the store for changes
    lease_ttl_s: float = 5.0  # a dead leader's lease passes on after this


class ControlPlane:
    def __init__(
        self,
        store: RolloutStore,
        lease: Lease,
        source: MetricSource,
        registry: CollectorRegistry,
        *,
        clock: Clock = time.time,
        holder: str | None = None,
        webhooks: Sequence[str] = (),
        timing: Timing = Timing(),
    ) -> None:
        self.store, self._lease, self._source = store, lease, source
        self._clock, self._timing = clock, timing
        self.holder = holder or f"{socket.gethostname()}-{os.getpid()}"
        self.metrics = ControlPlaneMetrics(registry)
        self.webhooks = Webhooks(webhooks)
        self.service: RolloutService | None = None
        self.controller: Controller | None = None
        self._sync: TrafficSync | None = None
        self._tasks: list[asyncio.Task] = []
        self._routes: Mapping[str, RouteTraffic] = {}  # as last routed, to stamp changes

    def router(self) -> APIRouter:
        return admin_router(lambda: self._started_service(), self._source, self._clock)

    def _started_service(self) -> RolloutService:
        if self.service is None:
            raise RuntimeError("the control plane has not started")
        return self.service

    async def start(
        self,
        publish: Callable[[TrafficPlan], None],
        base: TrafficPlan,
        backends: frozenset[str],
        fleet: Fleet = NO_FLEET,
    ) -> None:
        def show(plan: TrafficPlan, listing: Listing) -> None:
            publish(plan)
            self.metrics.show(listing.rollouts, (q.route for q in listing.quarantined))
            if plan.routes != self._routes:  # most writes only add evidence
                self._routes = plan.routes
                self.metrics.routed_at.set_to_current_time()

        self._sync = TrafficSync(self.store, base, show, fleet)
        self.service = RolloutService(
            self.store, Topology(base, backends), self._clock, self._changed, fleet
        )
        self.controller = Controller(
            self.store, self._lease, self._source, self._clock, self._changed,
            holder=self.holder, lease_ttl_s=self._timing.lease_ttl_s,
            on_leadership=lambda leading: self.metrics.leader.set(int(leading)), fleet=fleet,
        )  # fmt: skip
        await self._sync.refresh(force=True)
        self.webhooks.start()
        self._tasks = [
            asyncio.create_task(self._sync.run(self._timing.sync_s)),
            asyncio.create_task(self.controller.run(self._timing.tick_s)),
        ]

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self.controller is not None:
            await self.controller.resign()  # a successor need not wait for the lease to lapse
        await self.webhooks.stop()
        await self._source.close()
        await self.store.close()

    async def _changed(self, events: Sequence[AuditEvent]) -> None:
        for e in events:
            log.info(
                "rollout %s %s: %s -> %s (%s -> %s%%) by %s: %s",
                e.rollout_id, e.kind.value, e.from_step, e.to_step, e.from_weight, e.to_weight,
                e.actor, e.reason,
            )  # fmt: skip
        self.metrics.count(events)
        self.webhooks.notify(events)
        await self._sync.refresh()
