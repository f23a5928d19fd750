"""`create_app`: the gateway as a FastAPI app, its state owned by the lifespan.

app = create_app(GatewaySettings(), RoutesFile.load(Path("routes.yaml")))
"""

from __future__ import annotations

import asyncio
import logging
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

from gateway.access import Access, AccessMetrics, KeySync
from gateway.adapters import AdapterCheck, AdapterFleet
from gateway.admin import admin_dependency
from gateway.assignment import ShareGuard
from gateway.attribution import StableRecheck
from gateway.bounded import read_model, unprocessable
from gateway.chat import ChatFastPath, bearer, error_response, internal_error_response
from gateway.console import console_router
from gateway.discovery import Resolver, resolve_dns
from gateway.errors import (
    Conflict,
    Forbidden,
    GatewayError,
    NotFound,
    Unprocessable,
    error_body,
)
from gateway.exchange import Clock, ExchangeSink
from gateway.feedback import InvalidToken, LocalScoredOnce, ScoredOnce
from gateway.key_store import KeyStore
from gateway.keys import Role
from gateway.keys_api import keys_router
from gateway.limits import Limiter, LocalLimiter
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

log = logging.getLogger("rollgate.gateway")


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
    score: float = Field(ge=0.0, le=1.0, allow_inf_nan=False, description="0 (bad) .. 1 (good)")
    token: str = Field(min_length=1, max_length=1024, description="the answer's feedback token")


class ReviewIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preferred: Preference = Field(description="the better answer: a, b, or same")


async def _gateway_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(exc)  # type: ignore[arg-type]


async def _validation_error(_: Request, exc: Exception) -> JSONResponse:
    return error_response(unprocessable(exc.errors(), skip=1))  # type: ignore[attr-defined]


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
    limiter: Limiter,
    scored_once: ScoredOnce,
) -> Services:
    timeouts = Timeouts(connect=settings.connect_timeout, read=settings.read_timeout)
    backends = {
        name: BackendPool(name, spec, timeouts, clock=clock, resolver=resolver)
        for name, spec in routes.backends.items()
    }
    registry.register(PoolCollector(backends))
    metrics = GatewayMetrics(registry, safety.rules)
    # Flagged candidate answers wait for stable's answer to the same prompt (attribution.py).
    recheck = StableRecheck(
        safety,
        queue_size=settings.shadow_queue_size,
        workers=settings.shadow_workers,
        timeout=settings.shadow_stable_timeout,
    )
    recorder = Recorder(metrics, safety, sinks, recheck)
    table = RoutingTable(routes.plan())
    table.subscribe(metrics.publish)
    shadow = ShadowMirror(
        recorder=recorder,
        recheck=recheck,
        pairs=PairSample(settings.shadow_pairs, rng),
        clock=clock,
        queue_size=settings.shadow_queue_size,
        workers=settings.shadow_workers,
        stable_timeout=settings.shadow_stable_timeout,
    )
    access = Access(settings, AccessMetrics(registry), clock)
    return Services(
        settings, table, backends, recorder, shadow, access, limiter, ShareGuard(clock),
        scored_once, clock, rng,
    )  # fmt: skip


MAX_FEEDBACK_BYTES = 4096


def admin_name(request: Request) -> str:
    """Who the audit log names: the authenticated token's name, never a header."""
    return request.state.admin.name


async def start_access(
    services: Services, store: KeyStore | None, keys: KeySync | None, running: AsyncExitStack
) -> None:
    """The shared server secret and the credentials, before the first request."""
    settings, access = services.settings, services.access
    if settings.secret is not None:
        access.use_secret(settings.secret.get_secret_value().encode())
    elif store is not None:
        access.use_secret(await store.secret())
    else:
        log.warning("no state store and no ROLLGATE_SECRET: cohorts are this process's own")
    if keys is not None:
        await keys.refresh()
        task = asyncio.create_task(keys.run(settings.state_poll_s))
        running.callback(task.cancel)
    if not access.keys_required:
        log.warning(
            "ROLLGATE_AUTH=none: any client may call as the one anonymous tenant; "
            "for local use only"
        )
    elif store is None:
        log.warning("ROLLGATE_AUTH=keys without a key store: no client key can be valid")


def adapter_check(settings: GatewaySettings) -> AdapterCheck | None:
    if settings.base_model_dir is None:
        return None
    name = settings.base_model_name or settings.base_model_dir.name
    return AdapterCheck(settings.base_model_dir, name, settings.max_lora_rank)


def _app(title: str, services: Services, registry: CollectorRegistry, **options) -> FastAPI:
    app = FastAPI(title=title, **options)
    app.state.services = services
    app.state.registry = registry
    app.add_exception_handler(GatewayError, _gateway_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(RolloutError, _rollout_error)
    app.add_exception_handler(SourceUnavailable, _source_unavailable)
    app.add_exception_handler(Exception, _unexpected)
    return app


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
    key_store: KeyStore | None = None,
    limiter: Limiter | None = None,
    scored_once: ScoredOnce | None = None,
) -> FastAPI:
    """The data plane; with `key_store` also its credentials and the admin API for them.

    `limiter` and `scored_once` default to this process's memory; pass the Redis ones
    when several replicas share state.
    """
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
        limiter or LocalLimiter(clock),
        scored_once or LocalScoredOnce(settings.feedback_capacity, clock),
    )
    keys = (
        KeySync(key_store, services.access, services.recorder.metrics.known_tenants)
        if key_store is not None
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        # Whatever has started is stopped, in reverse order, however far startup got
        # (a store that is down at boot) and even when one part fails to stop.
        async with AsyncExitStack() as running:
            running.push_async_callback(services.limiter.close)
            running.push_async_callback(services.scored_once.close)
            await start_access(services, key_store, keys, running)
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

    app = _app("rollgate gateway", services, registry, lifespan=lifespan)
    app.add_middleware(ChatFastPath)
    # With ROLLGATE_ADMIN_PORT the admin API and the console live on an app of their own
    # (served on that port, sharing this one's state and lifespan); the data plane has none.
    admin = app if settings.admin_port is None else _app("rollgate admin", services, registry)
    app.state.admin_app = admin

    @app.get("/v1/models")
    async def models() -> dict:
        names = sorted(services.table.plan.routes)
        return {
            "object": "list",
            "data": [
                {"id": n, "object": "model", "created": 0, "owned_by": "rollgate"} for n in names
            ],
        }

    async def healthz() -> dict:
        return {"status": "ok"}

    app.get("/healthz")(healthz)
    if admin is not app:
        admin.get("/healthz")(healthz)

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
    async def feedback(request: Request) -> dict:
        client = services.access.client(bearer(request))
        body = await read_model(request, FeedbackIn, MAX_FEEDBACK_BYTES)
        try:
            answered = services.access.tokens.open(body.token)
        except InvalidToken as exc:
            raise Unprocessable(str(exc), param="token") from exc
        if answered.request_id != body.request_id:
            raise Unprocessable("the token is for another request", param="token")
        if services.access.keys_required and answered.key_id != client.key_id:
            raise Forbidden("only the key that made the request may score its answer")
        if not await services.scored_once.first(body.request_id, settings.feedback_ttl):
            raise Conflict(f"request {body.request_id!r} has been scored already")
        services.recorder.scored(
            answered.route, answered.variant, answered.role, body.score, tenant=answered.tenant
        )
        # Which variant answered stays on the server.
        return {"request_id": body.request_id, "accepted": True}

    viewer = [Depends(admin_dependency(Role.VIEWER))]

    @admin.get("/admin/shadow-pairs", dependencies=viewer)
    async def shadow_pairs(route: str | None = None) -> dict:
        return {"pairs": [p.public() for p in services.shadow.pairs.list(route)]}

    @admin.post("/admin/shadow-pairs/{pair_id}/review", dependencies=viewer)
    async def review_pair(pair_id: str, body: ReviewIn) -> dict:
        pair = services.shadow.review(pair_id, body.preferred)
        if pair is None:
            raise NotFound(
                f"no shadow pair {pair_id!r} (unknown, rotated out, or already reviewed)",
                param="pair_id",
            )
        # Which answer was the candidate's stays on the server, even after the review.
        return {"pair_id": pair.pair_id, "route": pair.route, "preferred": body.preferred}

    admin.include_router(console_router())  # the page only: its data comes from /admin
    if control_plane is not None:
        # Reads need a viewer, changes an operator.
        by_method = [Depends(admin_dependency(None))]
        admin.include_router(control_plane.router(), dependencies=by_method)
    if key_store is not None:
        operator = [Depends(admin_dependency(Role.OPERATOR))]
        router = keys_router(lambda: key_store, keys.refresh, admin_name, time.time)
        admin.include_router(router, dependencies=operator)
    return app
