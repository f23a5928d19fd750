"""Run the gateway: `python -m gateway --routes routes.yaml --port 8080`.

The composition root: the gateway app plus, unless disabled, its embedded
control plane (store, metric source, controller) as the settings choose.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import uvicorn
from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from gateway.app import create_app
from gateway.exchange import ExchangeSink
from gateway.routes import RoutesFile
from gateway.settings import GatewaySettings
from gateway.windows import LocalWindows
from rollout.control_plane import ControlPlane, Timing
from rollout.prometheus import PrometheusSource
from rollout.redis_store import RedisStore
from rollout.source import MetricSource
from rollout.sqlite_store import SqliteStore


def control_plane(
    settings: GatewaySettings, registry: CollectorRegistry
) -> tuple[ControlPlane, list[ExchangeSink]]:
    if settings.state.startswith(("redis://", "rediss://", "unix://")):
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


def build_app(settings: GatewaySettings) -> FastAPI:
    registry = CollectorRegistry()
    routes = RoutesFile.load(settings.routes_file)
    if not settings.control_plane:
        return create_app(settings, routes, registry=registry)
    plane, sinks = control_plane(settings, registry)
    return create_app(settings, routes, registry=registry, sinks=sinks, control_plane=plane)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m gateway", description=__doc__)
    parser.add_argument("--routes", type=Path, help="routes file (default: $ROLLGATE_ROUTES_FILE)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    args = parser.parse_args(argv)
    settings = GatewaySettings(**({"routes_file": args.routes} if args.routes else {}))
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
    uvicorn.run(
        build_app(settings), host=args.host, port=args.port, log_level="warning", access_log=False
    )


if __name__ == "__main__":
    main()
