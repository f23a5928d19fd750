"""Rollout stores for tests (SQLite on a temporary file, Redis on a real throwaway server),
and a gateway before real vLLM and Prometheus for the end-to-end ones."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path

import anyio
import pytest

from rollout.redis_store import RedisStore
from rollout.sqlite_store import SqliteStore
from serving.process import free_port
from tests.processes import GatewayProcess
from tests.prometheus_server import prometheus_server
from tests.rollout.e2e import TENANTS

Store = SqliteStore | RedisStore
Elapse = Callable[[float], Awaitable[None]]


class FakeClock:
    """Epoch seconds that move only when a test says so."""

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(params=["sqlite", "redis"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def store(
    backend: str,
    clock: FakeClock,
    tmp_path: Path,
    redis_prefix: str,
    request: pytest.FixtureRequest,
) -> AsyncIterator[Store]:
    if backend == "sqlite":
        opened: Store = SqliteStore(tmp_path / "rollouts.db", clock=clock)
    else:
        opened = RedisStore(request.getfixturevalue("redis_url"), prefix=redis_prefix)
    yield opened
    await opened.close()


@pytest.fixture
def elapse(backend: str, clock: FakeClock) -> Elapse:
    """Let lease time pass: SQLite's lease reads the fake clock; Redis expires keys itself."""

    async def elapse(seconds: float) -> None:
        if backend == "sqlite":
            clock.now += seconds
        else:
            await anyio.sleep(seconds)

    return elapse


# --- the rollout tests on real vLLM ---------------------------------------------------------


@pytest.fixture(scope="module")
def gateway_port() -> int:
    return free_port()


@pytest.fixture(scope="module")
def prometheus(gateway_port: int, tmp_path_factory) -> Iterator[str]:
    with prometheus_server(
        [f"http://127.0.0.1:{gateway_port}"], tmp_path_factory.mktemp("prom")
    ) as url:
        yield url


@pytest.fixture
def start_gateway(vllm_server, prometheus, gateway_port, tmp_path) -> Iterator[Callable]:
    started: list[GatewayProcess] = []

    def start(
        route: str,
        *,
        port: int = gateway_port,
        prometheus_url: str = prometheus,
        backends: dict[str, str] | None = None,
        **env: str,
    ) -> GatewayProcess:
        urls = {"vllm": vllm_server.config.base_url, **(backends or {})}
        routes = {
            "backends": {name: {"url": url} for name, url in urls.items()},
            "routes": [{"name": route, "stable": {"backend": "vllm", "model": "tiny-llama",
                                                  "name": "base"}}],
        }  # fmt: skip
        settings = {
            "ROLLGATE_STATE": str(tmp_path / "state.db"),
            "ROLLGATE_PROMETHEUS_URL": prometheus_url,
            "ROLLGATE_CONTROLLER_TICK_S": "0.5",
            **env,
        }
        gateway = GatewayProcess(routes, tmp_path, settings, port=port).start()
        started.append(gateway)
        # Users of three tenants: one tenant's scores may not decide a rollout alone.
        gateway.keys = [gateway.create_key(tenant) for tenant in TENANTS]
        return gateway

    yield start
    for gateway in started:
        gateway.stop()
