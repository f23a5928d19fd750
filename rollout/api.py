"""The admin API's rollout endpoints (mounted under `/admin`, behind the admin token).

    POST   /admin/rollouts                  apply a plan (201); 413 over MAX_PLAN_BYTES
    GET    /admin/rollouts                  every rollout, with each check's last verdict,
                                            and apart the quarantined ones, with why
    GET    /admin/rollouts/{route}          one rollout (409 rollout_unreadable: quarantined)
    DELETE /admin/rollouts/{route}          forget a finished rollout, or a quarantined one
    GET    /admin/rollouts/{route}/history  its audit events, oldest first
    GET    /admin/rollouts/{route}/series   ?seconds=600&points=60: per interval, for charts
    POST   /admin/rollouts/{route}/weight   {"percent": 7.5}: set the weight and pause
    POST   /admin/rollouts/{route}/pause    {"reason": "..."}
    POST   /admin/rollouts/{route}/resume
    POST   /admin/rollouts/{route}/promote  {"full": false}: the next step, or straight to 100%
    POST   /admin/rollouts/{route}/abort    {"reason": "..."}
    POST   /admin/rollouts/{route}/retry

A plan's body is read up to MAX_PLAN_BYTES and no further, then parsed; every
number in a body is finite (inf and nan are refused, naming the field).

Reads need a viewer token, changes an operator token (the gateway checks them);
the audit log records the token's name as the actor.

`series` reads the control plane's metric source (the gateway's windows or
Prometheus) for the last `seconds` (at most 3600) in `points` equal intervals
(at most 120: each costs a Prometheus source two to four queries) of whole
seconds. Each point holds, for `stable` and `candidate` (its mirrored copies in
a shadow step: `candidate_role` says which), `requests`, `error_rate`,
`latency_p95_s` and `mean_score` (0..100; users' scores, or blind reviews in a
shadow step: `scores` says which) with its sample count `scored`; a figure
without data is null. 503 when the metric source does not answer.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict

from fastapi import APIRouter, Depends, Query, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from rollout.controller import exposure, measure_series
from rollout.errors import PlanTooLarge
from rollout.machine import AuditEvent, Command, CommandKind, shadow_sample, step_label, weight_bp
from rollout.plan import DEFAULT_QUANTILE, MAX_PLAN_BYTES, MAX_REASON_CHARS, RolloutPlan
from rollout.record import Rollout
from rollout.service import Clock, RolloutService
from rollout.source import REVIEW_ROLE, MetricSource
from rollout.store import Quarantined
from rollout.windows import VariantWindow, Window

MAX_SERIES_SECONDS = 3600  # what the gateway's own windows keep
MAX_SERIES_POINTS = 120


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)


class WeightIn(_Body):
    percent: float = Field(ge=0, le=100)


class ReasonIn(_Body):
    reason: str = Field(default="", max_length=MAX_REASON_CHARS)


class PromoteIn(_Body):
    full: bool = False


def caller(request: Request) -> str:
    """The authenticated admin's name, as the gateway's admin check left it: audit events
    record who the token says, never a name the caller chose."""
    return request.state.admin.name


def rollout_view(r: Rollout) -> dict:
    status, plan = r.status, r.plan
    return {
        "route": r.route,
        "rollout_id": r.rollout_id,
        "attempt": status.attempt,
        "phase": status.phase.value,
        "step": status.step,
        "step_label": step_label(status, plan),
        "steps": [s.label for s in plan.steps],
        "weight_percent": weight_bp(status, plan) / 100,
        "shadow_sample": shadow_sample(status, plan),
        "stable": asdict(r.stable),
        "candidate": asdict(r.candidate),
        "hold": asdict(status.hold) if status.hold else None,
        "waiting_since": status.waiting_since,
        "reason": status.reason,
        "created_at": r.created_at,
        "step_started_at": status.step_started_at,
        "evaluated_until": r.evaluated_until,
        "verdict": r.last_verdict.status.value if r.last_verdict else None,
        "checks": [asdict(c) for c in r.last_verdict.results] if r.last_verdict else [],
        "revision": r.revision,
        "plan": plan.model_dump(mode="json"),
    }


def quarantined_view(q: Quarantined) -> dict:
    return asdict(q)


async def read_plan(request: Request) -> RolloutPlan:
    """The body as a plan: 413 past MAX_PLAN_BYTES (read no further), else parsed and
    validated, each rule it breaks answered as any invalid body is (422, naming the field)."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > MAX_PLAN_BYTES:
        raise PlanTooLarge(f"a plan is at most {MAX_PLAN_BYTES} bytes; this one is {declared}")
    body = bytearray()
    async for chunk in request.stream():
        body += chunk
        if len(body) > MAX_PLAN_BYTES:
            raise PlanTooLarge(f"a plan is at most {MAX_PLAN_BYTES} bytes")
    try:
        return RolloutPlan.model_validate_json(body)
    except ValidationError as exc:
        errors = exc.errors(include_url=False)
        raise RequestValidationError([{**e, "loc": ("body", *e["loc"])} for e in errors]) from exc


def event_view(e: AuditEvent) -> dict:
    return asdict(e)


def variant_point(v: VariantWindow, scores: VariantWindow) -> dict:
    """One variant over one interval; `scores` is the window whose feedback counts."""
    scored = scores.feedback_count
    return {
        "requests": v.requests,
        "error_rate": v.errors / v.requests if v.requests else None,
        "latency_p95_s": v.latency.quantile(DEFAULT_QUANTILE),
        "mean_score": 100 * scores.feedback_sum / scored if scored else None,
        "scored": scored,
    }


def series_view(
    rollout: Rollout, intervals: list[tuple[Window, Window | None]], width_s: int
) -> dict:
    shadow = exposure(rollout).shadow
    points = []
    for window, reviews in intervals:
        scores = reviews or window
        points.append({
            "start": window.start,
            "end": window.end,
            "stable": variant_point(window.stable, scores.stable),
            "candidate": variant_point(window.candidate, scores.candidate),
        })  # fmt: skip
    return {
        "route": rollout.route,
        "rollout_id": rollout.rollout_id,
        "stable": rollout.stable.name,
        "candidate": rollout.candidate.name,
        "candidate_role": "shadow" if shadow else "candidate",
        "scores": REVIEW_ROLE if shadow else "feedback",
        "width_s": width_s,
        "points": points,
    }


def admin_router(
    service: Callable[[], RolloutService], source: MetricSource, clock: Clock
) -> APIRouter:
    router = APIRouter(prefix="/admin/rollouts", tags=["rollouts"])

    async def command(route: str, kind: CommandKind, actor: str, **fields) -> dict:
        cmd = Command(kind, actor, **fields)
        return rollout_view(await service().command(route, cmd))

    @router.post("", status_code=201)
    async def apply(request: Request, actor: str = Depends(caller)) -> dict:
        plan = await read_plan(request)
        return rollout_view(await service().apply(plan, actor))

    @router.get("")
    async def list_rollouts() -> dict:
        listing = await service().list()
        return {
            "rollouts": [rollout_view(r) for r in listing.rollouts],
            "quarantined": [quarantined_view(q) for q in listing.quarantined],
        }

    @router.get("/{route}")
    async def get(route: str) -> dict:
        return rollout_view(await service().get(route))

    @router.delete("/{route}")
    async def delete(route: str, actor: str = Depends(caller)) -> dict:
        gone = await service().delete(route, actor)
        return rollout_view(gone) if isinstance(gone, Rollout) else quarantined_view(gone)

    @router.get("/{route}/history")
    async def history(route: str, limit: int = Query(100, ge=1, le=10_000)) -> dict:
        events = await service().history(route, limit)
        if not events:
            await service().get(route)  # 404 for a route that never had a rollout
        return {"events": [event_view(e) for e in events]}

    @router.get("/{route}/series")
    async def series(
        route: str,
        seconds: int = Query(600, ge=1, le=MAX_SERIES_SECONDS),
        points: int = Query(60, ge=1, le=MAX_SERIES_POINTS),
    ) -> dict:
        rollout = await service().get(route)
        # Whole seconds, ending at one that is over: both sources count by the second.
        width_s = max(seconds // points, 1)
        intervals = await measure_series(source, rollout, math.floor(clock()), width_s, points)
        return series_view(rollout, intervals, width_s)

    @router.post("/{route}/weight")
    async def set_weight(route: str, body: WeightIn, actor: str = Depends(caller)):
        return await command(route, CommandKind.SET_WEIGHT, actor, percent=body.percent)

    @router.post("/{route}/pause")
    async def pause(route: str, body: ReasonIn | None = None, actor: str = Depends(caller)) -> dict:
        reason = body.reason if body else ""
        return await command(route, CommandKind.PAUSE, actor, reason=reason)

    @router.post("/{route}/resume")
    async def resume(route: str, actor: str = Depends(caller)) -> dict:
        return await command(route, CommandKind.RESUME, actor)

    @router.post("/{route}/promote")
    async def promote(
        route: str, body: PromoteIn | None = None, actor: str = Depends(caller)
    ) -> dict:
        full = body.full if body else False
        return await command(route, CommandKind.PROMOTE, actor, full=full)

    @router.post("/{route}/abort")
    async def abort(route: str, body: ReasonIn | None = None, actor: str = Depends(caller)) -> dict:
        reason = body.reason if body else ""
        return await command(route, CommandKind.ABORT, actor, reason=reason)

    @router.post("/{route}/retry")
    async def retry(route: str, actor: str = Depends(caller)) -> dict:
        return await command(route, CommandKind.RETRY, actor)

    return router
