"""Run the gateway: `python -m gateway --routes routes.yaml --port 8080`.

The composition root: the gateway app plus, unless disabled, its embedded
control plane (store, metric source, controller) as the settings choose.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import uvicorn
import uvloop
from fastapi import FastAPI
from prometheus_client import CollectorRegistry, Gauge

from gateway.app import create_app
from gateway.exchange import ExchangeSink
from gateway.feedback import RedisScoredOnce
from gateway.key_store import RedisKeyStore, SqliteKeyStore
from gateway.redis_limits import RedisLimiter
from gateway.routes import RoutesFile
from gateway.settings import GatewaySettings
from gateway.windows import LocalWindows
from rollout.control_plane import ControlPlane, Timing
from rollout.prometheus import PrometheusSource
from rollout.redis_store import RedisStore
from rollout.source import MetricSource
from rollout.sqlite_store import SqliteStore


def shared_state(settings: GatewaySettings) -> bool:
    return settings.state.startswith(("redis://", "rediss://", "unix://"))


def control_plane(
    settings: GatewaySettings, registry: CollectorRegistry
) -> tuple[ControlPlane, list[ExchangeSink]]:
    if shared_state(settings):
        store = RedisStore(settings.state)
    else:
        Path(settings.state).parent.mkdir(parents=True, exist_ok=True)
        store = SqliteStore(Path(settings.state))
    sinks: list[ExchangeSink] = []
    source: MetricSource
    if settings.prometheus_url:
        source = PrometheusSource(settings.prometheus_url)
    else:
        source = LocalWindows()
        sinks.append(source)
    timing = Timing(settings.controller_tick_s, settings.state_poll_s, settings.lease_ttl_s)
    plane = ControlPlane(store, store, source, registry, webhooks=settings.webhooks, timing=timing)
    return plane, sinks


def access(settings: GatewaySettings, registry: CollectorRegistry) -> dict:
    """Credentials, limits and scored request ids: in the rollouts' store, shared by
    every replica when that is Redis."""
    if shared_state(settings):
        limiter = RedisLimiter(settings.state)
        Gauge(
            "rollgate_limits_local_fallback",
            "1 while Redis does not answer and this replica enforces key limits on its own.",
            registry=registry,
        ).set_function(lambda: int(limiter.failed_over))
        return {
            "key_store": RedisKeyStore(settings.state),
            "limiter": limiter,
            "scored_once": RedisScoredOnce(settings.state),
        }
    Path(settings.state).parent.mkdir(parents=True, exist_ok=True)
    return {"key_store": SqliteKeyStore(Path(settings.state))}


def build_app(settings: GatewaySettings) -> FastAPI:
    registry = CollectorRegistry()
    routes = RoutesFile.load(settings.routes_file)
    if not settings.control_plane:
        return create_app(settings, routes, registry=registry, **access(settings, registry))
    plane, sinks = control_plane(settings, registry)
    return create_app(
        settings,
        routes,
        registry=registry,
        sinks=sinks,
        control_plane=plane,
        **access(settings, registry),
    )


class _AdminServer(uvicorn.Server):
    """The admin listener: the data-plane server takes the signals and stops it after."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


async def serve(app: FastAPI, host: str, port: int, admin_port: int | None) -> None:
    options = {"host": host, "log_level": "warning", "access_log": False}
    server = uvicorn.Server(uvicorn.Config(app, port=port, **options))
    if admin_port is None:
        await server.serve()
        return
    admin_config = uvicorn.Config(app.state.admin_app, port=admin_port, lifespan="off", **options)
    admin = _AdminServer(admin_config)
    admin_task = asyncio.create_task(admin.serve())
    try:
        await server.serve()
    finally:
        admin.should_exit = True
        await admin_task


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--routes", type=Path, help="routes file (default: $ROLLGATE_ROUTES_FILE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    settings = GatewaySettings(**({"routes_file": args.routes} if args.routes else {}))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    # uvloop, as uvicorn.run would pick it: the hot path's figures in BENCHMARKS.md assume it.
    uvloop.run(serve(build_app(settings), args.host, args.port, settings.admin_port))


if __name__ == "__main__":
    main()
