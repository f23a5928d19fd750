"""A gateway in front of two fault-injecting stand-ins (stable and candidate backends)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from prometheus_client import CollectorRegistry

from gateway.app import ControlPlaneHook, create_app
from gateway.exchange import ExchangeSink
from gateway.routes import RoutesFile
from gateway.services import Services
from gateway.settings import GatewaySettings
from loadtests.standin import Faults, Seen, create_standin
from serving.process import free_port
from tests.servers import serving

ADMIN_TOKEN = "test-admin-token"


@dataclass
class Stack:
    url: str
    http: httpx.Client
    services: Services
    registry: CollectorRegistry
    stable: Faults
    candidate: Faults
    stable_seen: Seen
    candidate_seen: Seen

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0


def routes(stable_url: str, candidate_url: str, **route) -> RoutesFile:
    return RoutesFile.model_validate({
        "backends": {"stable-pool": {"url": stable_url}, "candidate-pool": {"url": candidate_url}},
        "routes": [{
            "name": "support",
            "stable": {"backend": "stable-pool", "model": "tiny-llama", "name": "base"},
            "candidate": {"backend": "candidate-pool", "model": "acme-voice"},
            "rollout_id": "r1",
            **route,
        }],
    })  # fmt: skip


@pytest.fixture
def make_stack() -> Iterator:
    with ExitStack() as stack:

        def make(
            *,
            stable: Faults | None = None,
            candidate: Faults | None = None,
            down: set[str] = frozenset(),
            sinks: Sequence[ExchangeSink] = (),
            control_plane: ControlPlaneHook | None = None,
            **options,
        ) -> Stack:
            """`down` names backends with nothing listening ("stable", "candidate")."""
            route = {k: options.pop(k) for k in ("weight_percent", "shadow_sample") if k in options}
            stable, candidate = (
                stable or Faults(),
                candidate or Faults(text="Hello from Acme! Fine."),
            )
            s_seen, c_seen = Seen(), Seen()

            def backend(role: str, faults: Faults, seen: Seen) -> str:
                if role in down:
                    return f"http://127.0.0.1:{free_port()}"
                return stack.enter_context(serving(create_standin(faults, seen)))

            stable_url = backend("stable", stable, s_seen)
            candidate_url = backend("candidate", candidate, c_seen)
            settings = GatewaySettings(
                routes_file=Path("unused.yaml"), admin_token=ADMIN_TOKEN, **options
            )
            registry = CollectorRegistry()
            app = create_app(
                settings,
                routes(stable_url, candidate_url, **route),
                registry=registry,
                rng=random.Random(7),
                sinks=sinks,
                control_plane=control_plane,
            )
            url = stack.enter_context(serving(app))
            http = stack.enter_context(httpx.Client(base_url=url, timeout=30))
            return Stack(url, http, app.state.services, registry, stable, candidate, s_seen, c_seen)

        yield make
