"""Rollout stores for tests: SQLite on a temporary file, Redis on a real throwaway server."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import anyio
import pytest

from rollout.redis_store import RedisStore
from rollout.sqlite_store import SqliteStore

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
