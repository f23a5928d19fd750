"""The loops: the leader evaluates rollouts; every replica follows the store's traffic.

`Controller.tick` does I/O in one order: take or renew the lease, load,
measure, decide, compare-and-swap the rollout, then publish and notify. A
replica without the lease only follows (`TrafficSync`), so exactly one
controller decides, and a lost race simply waits for the next tick.

A quarantined record (one that does not read back) is neither evaluated nor
routed by: its route is served by its configured stable until it is deleted,
and every other rollout goes on. Each replica logs it once, when it appears.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import replace

from rollout.analysis import Exposure, Verdict, judge
from rollout.errors import Conflict, StoreError, Unstorable
from rollout.evidence import accumulate
from rollout.fleet import NO_FLEET, Fleet
from rollout.machine import decide, weight_bp
from rollout.plan import Metric, ShadowStep
from rollout.record import Rollout, non_finite, traffic_plan
from rollout.service import Clock, OnChange
from rollout.source import REVIEW_ROLE, MetricSource, SourceUnavailable
from rollout.store import Lease, Listing, Quarantined, RolloutStore
from rollout.traffic import TrafficPlan
from rollout.windows import Window

log = logging.getLogger("rollgate.controller")

LEASE_MARGIN = 0.8  # lead only for this share of the lease's time to live
MAX_WINDOW_S = 3600.0  # a controller back from a long outage measures at most the last hour
SERIES_CONCURRENCY = 8  # intervals of a chart's series measured at once


async def repeat(work: Callable[[], Awaitable[None]], interval_s: float, what: str) -> None:
    """`work` every `interval_s` until cancelled; a failure is logged and tried again.

    A loop that died would leave this replica routing by a stale plan, or leading
    without deciding, with nothing to show for it but a silent task.
    """
    while True:
        try:
            await work()
        except StoreError as exc:
            log.warning("%s: %s", what, exc)
        except Exception:
            log.exception("%s failed; trying again in %g s", what, interval_s)
        await asyncio.sleep(interval_s)


def exposure(rollout: Rollout) -> Exposure:
    step = rollout.plan.steps[rollout.status.step]
    return Exposure(isinstance(step, ShadowStep), weight_bp(rollout.status, rollout.plan))


async def measure(
    source: MetricSource, rollout: Rollout, shadow: bool, start: float, end: float
) -> tuple[Window, Window | None]:
    """Stable and candidate over the same interval; in shadow the candidate's mirrored copies.

    In shadow also both variants' blind-review scores (as feedback); None at weights.
    """
    stable, candidate = rollout.stable.name, rollout.candidate.name
    asked = [(stable, "stable"), (candidate, "shadow" if shadow else "candidate")]
    if shadow:
        asked += [(stable, REVIEW_ROLE), (candidate, REVIEW_ROLE)]
    w = await asyncio.gather(*(source.window(rollout.route, v, r, start, end) for v, r in asked))
    for (variant, role), window in zip(asked, w, strict=True):
        if (where := non_finite(window)) is not None:
            # Missing data, as far as judging goes; and evidence must stay storable.
            raise SourceUnavailable(f"{variant} ({role}): {where} is not a finite number")
    reviews = Window(w[2], w[3], start, end) if shadow else None
    return Window(w[0], w[1], start, end), reviews


async def measure_series(
    source: MetricSource, rollout: Rollout, end: float, width_s: float, points: int
) -> list[tuple[Window, Window | None]]:
    """The last `points` intervals of `width_s` up to `end`, measured as the current step is.

    For charts. A few intervals at a time, so a Prometheus source answers them in turn.
    """
    shadow = exposure(rollout).shadow
    in_flight = asyncio.Semaphore(SERIES_CONCURRENCY)

    async def one(i: int) -> tuple[Window, Window | None]:
        start = end - (points - i) * width_s
        async with in_flight:
            return await measure(source, rollout, shadow, start, start + width_s)

    return list(await asyncio.gather(*(one(i) for i in range(points))))


async def custom_values(
    source: MetricSource, rollout: Rollout, at: float
) -> dict[str, float | None]:
    checks = [c for c in rollout.plan.checks if c.metric is Metric.PROMQL]
    values = await asyncio.gather(*(
        source.value(c.query.replace("$variant", rollout.candidate.name), at) for c in checks
    ))  # fmt: skip
    # PromQL answers +Inf, -Inf and NaN (x / 0): no number to judge by, so no data.
    return {
        c.name: v if v is not None and math.isfinite(v) else None
        for c, v in zip(checks, values, strict=True)
    }


async def evaluate(
    source: MetricSource, rollout: Rollout, now: float, fleet: Fleet = NO_FLEET
) -> tuple[Rollout, list]:
    """Measure the interval since the last evaluation, judge it, and decide.

    The candidate pool's headroom goes into the verdict: a step that would raise
    the weight waits for room. A rollback never needs any (stable serves from
    the same pool, and it is what relieves it).
    """
    start = max(rollout.evaluated_until or rollout.created_at, now - MAX_WINDOW_S)
    plan, seen = rollout.plan, exposure(rollout)
    try:
        window, reviews = await measure(source, rollout, seen.shadow, start, now)
        custom = await custom_values(source, rollout, now)
    except SourceUnavailable as exc:
        # Nothing measured: the window stays open, so the next answer covers the gap.
        verdict = Verdict.unavailable(plan, str(exc))
        status, events = decide(rollout.status, plan, verdict, None, now)
        return replace(rollout, last_verdict=verdict).with_status(status), events
    evidence = accumulate(rollout.evidence, plan, window, reviews)
    verdict = replace(
        judge(plan, evidence, seen, custom),
        no_headroom=fleet.no_headroom(rollout.candidate.backend),
    )
    status, events = decide(rollout.status, plan, verdict, None, now)
    measured = replace(rollout, evidence=evidence, last_verdict=verdict, evaluated_until=now)
    return measured.with_status(status), events


class Controller:
    """Evaluates due rollouts while it holds the lease; writes are fenced by the lease.

    The lease is renewed on its own cadence (a third of its time to live), so a
    slow evaluation cannot let it lapse unnoticed; the controller counts itself
    leader only until a safety margin before its lease would expire, and the store
    refuses its writes once another holds it.
    """

    def __init__(
        self,
        store: RolloutStore,
        lease: Lease,
        source: MetricSource,
        clock: Clock,
        on_change: OnChange,
        *,
        holder: str,
        lease_ttl_s: float = 5.0,
        on_leadership: Callable[[bool], None] = lambda _: None,
        fleet: Fleet = NO_FLEET,
    ) -> None:
        self._store, self._lease, self._source = store, lease, source
        self._fleet = fleet
        self._clock, self._on_change = clock, on_change
        self.holder, self._ttl = holder, lease_ttl_s
        self._on_leadership = on_leadership
        self._next_due: dict[str, float] = {}
        self._held_until = 0.0
        self.leader = False

    async def renew(self) -> None:
        asked = self._clock()
        try:
            held = await self._lease.acquire(self.holder, self._ttl)
        except StoreError as exc:
            log.warning("lease: %s", exc)
            held = False
        # Counted from before the request, with a margin for the store's clock.
        self._held_until = asked + LEASE_MARGIN * self._ttl if held else 0.0
        self._leading()

    def _leading(self) -> bool:
        leading = self._clock() < self._held_until
        if leading != self.leader:
            log.info("controller %s %s the lease", self.holder, "took" if leading else "lost")
            self.leader = leading
            self._on_leadership(leading)
        return leading

    async def evaluate_due(self) -> None:
        if not self._leading():
            return
        for rollout in (await self._store.list()).rollouts:
            # Not cancelled midway (a write may already be landing): the fence refuses
            # what an evaluation that outlasted the lease would write.
            if not self._leading():
                return
            await self._maybe_evaluate(rollout)

    async def tick(self) -> None:
        await self.renew()
        await self.evaluate_due()

    async def _maybe_evaluate(self, rollout: Rollout) -> None:
        now = self._clock()
        if not rollout.status.phase.active or now < self._next_due.get(rollout.rollout_id, 0.0):
            return
        if rollout.evaluated_until is None and now - rollout.created_at < 1.0:
            return  # nothing to measure yet
        # Paced in memory, so a silent source is asked once per interval, not once per tick.
        self._next_due[rollout.rollout_id] = now + rollout.plan.evaluation_interval_s
        updated, events = await evaluate(self._source, rollout, now, self._fleet)
        try:
            await self._store.put(updated, events, fence=self.holder)
        except Conflict as exc:
            # An SRE's command landed first (evaluate the fresh state next time), or the
            # lease passed on: either way this decision is not made.
            log.info("evaluation of %s not written: %s", rollout.route, exc)
            return
        except Unstorable as exc:
            # Nothing written (a bug: inf or nan in what was measured or judged); the
            # other rollouts are evaluated all the same.
            log.error("evaluation of %s not written: %s", rollout.route, exc)
            return
        await self._on_change(events)

    async def run(self, interval_s: float) -> None:
        renewing = asyncio.create_task(repeat(self.renew, self._ttl / 3, "lease"))
        try:
            await repeat(self.evaluate_due, interval_s, "controller")
        finally:
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def resign(self) -> None:
        with contextlib.suppress(StoreError):
            await self._lease.release(self.holder)


class TrafficSync:
    """Keeps this replica's routing in step with the store (every replica runs one)."""

    def __init__(
        self,
        store: RolloutStore,
        base: TrafficPlan,
        publish: Callable[[TrafficPlan, Listing], None],
        fleet: Fleet = NO_FLEET,
    ) -> None:
        self._store, self._base, self._publish = store, base, publish
        self._fleet = fleet
        self._seen: int | None = None
        self._quarantined: frozenset[Quarantined] = frozenset()
        self._version = base.version
        # One refresh at a time: a caller that returns has seen every write before its call.
        self._lock = asyncio.Lock()

    async def refresh(self, force: bool = False) -> None:
        async with self._lock:
            changes = await self._store.changes()
            if changes == self._seen and not force:
                return
            listing = await self._store.list()
            self._report(listing.quarantined)
            rollouts = listing.rollouts
            self._version += 1
            plan = traffic_plan(self._base, rollouts, self._version)
            # Adapters first: no replica gets requests for one it has not loaded.
            await self._fleet.follow(plan, rollouts)
            self._publish(plan, listing)
            self._seen = changes  # only now: a refresh that failed is tried again

    def _report(self, quarantined: Sequence[Quarantined]) -> None:
        """Log each quarantined record once, when it appears (not at every refresh)."""
        now = frozenset(quarantined)
        for record in sorted(now - self._quarantined, key=lambda q: q.route):
            log.error(
                "the rollout of route %s (revision %d) does not read back and is quarantined:"
                " %s; the route is served by its stable until it is deleted (rollgate delete %s)",
                record.route, record.revision, record.error, record.route,
            )  # fmt: skip
        for record in sorted(self._quarantined - now, key=lambda q: q.route):
            log.info("the rollout of route %s is no longer quarantined", record.route)
        self._quarantined = now

    async def run(self, interval_s: float) -> None:
        # On a store error the gateway keeps routing by the last plan it saw.
        await repeat(self.refresh, interval_s, "traffic sync")
