"""Gateways in front of fault-injecting stand-ins: two backends of one replica each
(`make_stack`), or one pool of several replicas (`make_pool`)."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from tempfile import mkdtemp

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
from tests.keys import key_store_with_debug_key
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
    app: object = None

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
def make_stack(tmp_path: Path) -> Iterator:
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
            keys, key = key_store_with_debug_key(Path(mkdtemp(dir=tmp_path)))
            app = create_app(
                settings,
                routes(stable_url, candidate_url, **route),
                registry=registry,
                rng=random.Random(7),
                sinks=sinks,
                control_plane=control_plane,
                key_store=keys,
            )
            url = stack.enter_context(serving(app))
            http = stack.enter_context(
                httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"})
            )
            return Stack(
                url, http, app.state.services, registry, stable, candidate, s_seen, c_seen, app
            )

        yield make


# --- one pool of several replicas --------------------------------------------------------

BASE, ADAPTER = "tiny-llama", "acme-voice"
POOL = "vllm"
HANG: list[str] = []  # a DNS answer that never comes (see make_pool)


@dataclass
class Replica:
    url: str
    faults: Faults
    seen: Seen

    def count(self, model: str | None = None) -> int:
        return sum(1 for b in self.seen.bodies if model is None or b["model"] == model)


@dataclass
class PoolStack:
    http: httpx.Client
    replicas: list[Replica]
    registry: CollectorRegistry
    app: object

    def metric(self, name: str, **labels: str) -> float:
        return self.registry.get_sample_value(name, labels) or 0.0

    def chat(self, stream: bool = False, user: str | None = None) -> httpx.Response:
        body = {
            "model": "support",
            "messages": [{"role": "user", "content": "How do I reset my password?"}],
            "stream": stream,
            **({"user": user} if user else {}),
        }
        return self.http.post("/v1/chat/completions", json=body)

    def admin(self, method: str, path: str, **kw) -> httpx.Response:
        auth = {"authorization": f"Bearer {ADMIN_TOKEN}"}
        return self.http.request(method, f"/admin/rollouts{path}", headers=auth, **kw)

    @property
    def pool(self):
        return self.app.state.services.backends[POOL]


def pool_routes(backend: dict, weight: float | None = 0, stable: str = BASE) -> RoutesFile:
    """Route `support` on the pool; with a fixed candidate at `weight` unless that is None."""
    route = {"name": "support", "stable": {"backend": POOL, "model": stable, "name": "base"}}
    if weight is not None:
        route |= {
            "candidate": {"backend": POOL, "model": ADAPTER},
            "rollout_id": "r1",
            "weight_percent": weight,
        }
    return RoutesFile.model_validate({"backends": {POOL: backend}, "routes": [route]})


@pytest.fixture
def make_pool(tmp_path: Path) -> Iterator:
    with ExitStack() as stack:

        def make(
            faults: list[Faults],
            *,
            down: int = 0,
            weight: float | None = 0,
            stable: str = BASE,
            dns: dict[str, list[str]] | None = None,
            probe_interval_s: float = 0.1,
            control_plane: ControlPlaneHook | None = None,
            sinks: Sequence[ExchangeSink] = (),
            **settings,
        ) -> PoolStack:
            """Replicas with these faults (on 127.0.0.1+i, one port), plus `down` addresses
            nobody listens on. With `dns`, the pool resolves `replicas:PORT` through it
            (a name mapped to HANG never answers)."""
            port = free_port()
            replicas = []
            for i, f in enumerate(faults):
                seen = Seen()
                url = stack.enter_context(
                    serving(create_standin(f, seen), port=port, host=f"127.0.0.{i + 2}")
                )
                replicas.append(Replica(url, f, seen))
            urls = [r.url for r in replicas]
            urls += [f"http://127.0.0.1:{free_port()}" for _ in range(down)]

            async def resolver(host: str, _: int) -> list[str]:
                assert dns is not None
                if host not in dns:
                    raise OSError(f"{host}: no such name")
                if dns[host] is HANG:
                    await asyncio.Event().wait()
                return dns[host]

            backend = (
                {"dns": f"replicas:{port}", "resolve_interval_s": 0.1} if dns else {"urls": urls}
            )
            backend["probe_interval_s"] = probe_interval_s
            registry = CollectorRegistry()
            keys, key = key_store_with_debug_key(Path(mkdtemp(dir=tmp_path)))
            app = create_app(
                GatewaySettings(
                    routes_file=Path("unused.yaml"),
                    admin_token=ADMIN_TOKEN,
                    control_plane=control_plane is not None,
                    **settings,
                ),
                pool_routes(backend, weight, stable),
                registry=registry,
                rng=random.Random(3),
                resolver=resolver,
                control_plane=control_plane,
                sinks=sinks,
                key_store=keys,
            )
            url = stack.enter_context(serving(app))
            http = stack.enter_context(
                httpx.Client(base_url=url, timeout=30, headers={"authorization": f"Bearer {key}"})
            )
            return PoolStack(http, replicas, registry, app)

        yield make
