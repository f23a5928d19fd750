"""`create_app`: the gateway as a FastAPI app, its state owned by the lifespan.

app = create_app(GatewaySettings(), RoutesFile.load(Path("routes.yaml")))
"""

from __future__ import annotations

import asyncio
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Protocol

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from pydantic import BaseModel, ConfigDict, Field

from gateway.adapters import AdapterCheck, AdapterFleet
from gateway.admin import require_admin
from gateway.chat import ChatFastPath, error_response, internal_error_response
from gateway.console import console_router
from gateway.discovery import Resolver, resolve_dns
from gateway.errors import GatewayError, InvalidRequest, NotFound, error_body
from gateway.exchange import Clock, ExchangeSink
from gateway.feedback import FeedbackLedger
from gateway.metrics import GatewayMetrics
from gateway.pool import BackendPool
from gateway.pool_metrics import PoolCollector
from gateway.recorder import Recorder
from gateway.routes import RoutesFile, RoutingTable
from gateway.safety import DenyPatterns, SafetyChecker
from gateway.services import Services
from gateway.settings import GatewaySettings
from gateway.shadow import PairSample, Preference, ShadowMirror
from gateway.upstream import Timeouts
from rollout.errors import RolloutError
from rollout.fleet import Fleet
from rollout.source import SourceUnavailable
from rollout.traffic import TrafficPlan


class ControlPlaneHook(Protocol):
    """What the gateway needs of an embedded control plane (rollout.control_plane.ControlPlane)."""

    def router(self) -> APIRouter: ...

    async def start(
        self,
        publish: Callable[[TrafficPlan], None],
        base: TrafficPlan,
        backends: frozenset[str],
        fleet: Fleet,
    ) -> None: ...

    async def stop(self) -> None: ...


class FeedbackIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    request_id: str = Field(min_length=1, max_length=200)
    score: float = Field(ge=0.0, le=1.0, description="0 (bad) .. 1 (good)")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preferred: Preference = Field(description="the better answer: a, b, or same")


async def _gateway_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)  # type: ignore[arg-type]


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    first = exc.errors()[0] if exc.errors() else {}  # type: ignore[attr-defined]
    param = ".".join(str(p) for p in first.get("loc", ())[1:]) or None
    error = InvalidRequest(f"{param or 'body'}: {first.get('msg', 'invalid')}", param=param)
    return JSONResponse(error.body(), status_code=422)


async def _rollout_error(_: Request, exc: RolloutError) -> JSONResponse:
    kind = re.sub(
        r"(?<!^)(?=[A-Z])", "_", type(exc).__name__
    ).lower()  # RolloutNotFound: rollout_not_found
    return JSONResponse(error_body(str(exc), kind, exc.status), status_code=exc.status)


async def _source_unavailable(_: Request, exc: SourceUnavailable) -> JSONResponse:
    # The admin API's series read the metric source, which did not answer.
    return JSONResponse(error_body(str(exc), "source_unavailable", 503), status_code=503)


async def _unexpected(request: Request, _: Exception) -> JSONResponse:
    return internal_error_response(request.url.path)


def build_services(
    settings: GatewaySettings,
    routes: RoutesFile,
    registry: CollectorRegistry,
    clock: Clock,
    rng: random.Random,
    safety: SafetyChecker,
    sinks: Sequence[ExchangeSink],
    resolver: Resolver,
) -> Services:
    timeouts = Timeouts(connect=settings.connect_timeout, read=settings.read_timeout)
    backends = {
        name: BackendPool(name, spec, timeouts, clock=clock, resolver=resolver)
        for name, spec in routes.backends.items()
    }
    registry.register(PoolCollector(backends))
    metrics = GatewayMetrics(registry, safety.rules)
    recorder = Recorder(metrics, safety, sinks)
    table = RoutingTable(routes.plan())
    table.subscribe(metrics.publish)
    shadow = ShadowMirror(
        recorder=recorder,
        pairs=PairSample(settings.shadow_pairs, rng),
        clock=clock,
        queue_size=settings.shadow_queue_size,
        workers=settings.shadow_workers,
        stable_timeout=settings.shadow_stable_timeout,
    )
    feedback = FeedbackLedger(
        capacity=settings.feedback_capacity, ttl=settings.feedback_ttl, clock=clock
    )
    return Services(settings, table, backends, recorder, shadow, feedback, clock, rng)


def adapter_check(settings: GatewaySettings) -> AdapterCheck | None:
    if settings.base_model_dir is None:
        return None
    name = settings.base_model_name or settings.base_model_dir.name
    return AdapterCheck(settings.base_model_dir, name, settings.max_lora_rank)


def create_app(
    settings: GatewaySettings,
    routes: RoutesFile,
    *,
    registry: CollectorRegistry | None = None,
    clock: Clock = time.monotonic,
    rng: random.Random | None = None,
    safety: SafetyChecker | None = None,
    sinks: Sequence[ExchangeSink] = (),
    control_plane: ControlPlaneHook | None = None,
    resolver: Resolver = resolve_dns,
) -> FastAPI:
    registry = registry or CollectorRegistry()
    services = build_services(
        settings,
        routes,
        registry,
        clock,
        rng or random.Random(),
        safety or DenyPatterns(settings.deny_patterns),
        sinks,
        resolver,
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Whatever has started is stopped, in reverse order, however far startup got
        # (a store that is down at boot) and even when one part fails to stop.
        async with AsyncExitStack() as running:
            for pool in services.backends.values():
                running.push_async_callback(pool.close)
            # Every pool discovered and probed once, so that the first requests find replicas.
            await asyncio.gather(*(pool.start() for pool in services.backends.values()))
            services.shadow.start()
            running.push_async_callback(services.shadow.stop)
            fleet = AdapterFleet(
                services.backends,
                clock,
                check=adapter_check(settings),
                unload_after_s=settings.adapter_unload_after_s,
            )
            fleet.start()
            running.push_async_callback(fleet.close)
            if control_plane is not None:
                running.push_async_callback(control_plane.stop)
                # Reconciled from the store before the first request is served.
                base, backends = routes.plan(), frozenset(services.backends)
                await control_plane.start(services.table.publish, base, backends, fleet)
            yield

    app = FastAPI(title="rollgate gateway", lifespan=lifespan)
    app.state.services = services
    app.state.registry = registry
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RolloutError, _rollout_error)
    app.add_exception_handler(SourceUnavailable, _source_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    app.add_middleware(ChatFastPath)

    @app.get("/v1/models")
    async def models() -> dict:
        names = sorted(services.table.plan.routes)
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "rollgate"} for n in names
            ],
        }

    @app.get("/healthz")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/readyz")
    async def readyz() -> JSONResponse:
        # From the background probes: a readiness check that probed on its own would
        # pile load onto replicas exactly when they are slow. Ready while every pool
        # that serves a route's stable variant has a replica to take requests; a
        # candidate's pool being down only fails its requests over to stable.
        pools = {name: pool.balancer.summary() for name, pool in services.backends.items()}
        serving = {r.stable.backend for r in services.table.plan.routes.values()}
        ready = all(pools[name]["ready"] for name in serving)
        return JSONResponse({"ready": ready, "backends": pools}, status_code=200 if ready else 503)

    @app.get("/metrics")
    async def metrics() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    @app.post("/v1/feedback")
    async def feedback(body: FeedbackIn) -> dict:
        served = services.feedback.lookup(body.request_id)
        if served is None:
            raise NotFound(
                f"no answer with id {body.request_id!r} (unknown or expired)", param="request_id"
            )
        services.recorder.scored(served.route, served.variant, served.role, body.score)
        return {"request_id": body.request_id, "route": served.route, "variant": served.variant}

    @app.get("/admin/shadow-pairs", dependencies=[Depends(require_admin)])
    async def shadow_pairs(route: str | None = None) -> dict:
        return {"pairs": [p.public() for p in services.shadow.pairs.list(route)]}

    @app.post("/admin/shadow-pairs/{pair_id}/review", dependencies=[Depends(require_admin)])
    async def review_pair(pair_id: str, body: ReviewIn) -> dict:
        pair = services.shadow.review(pair_id, body.preferred)
        if pair is None:
            raise NotFound(
                f"no shadow pair {pair_id!r} (unknown, rotated out, or already reviewed)",
                param="pair_id",
            )
        # Which answer was the candidate's stays on the server, even after the review.
        return {"pair_id": pair.pair_id, "route": pair.route, "preferred": body.preferred}

    app.include_router(console_router())  # the page only: its data comes from /admin
    if control_plane is not None:
        app.include_router(control_plane.router(), dependencies=[Depends(require_admin)])
    return app
