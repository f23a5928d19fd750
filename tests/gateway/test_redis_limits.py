"""Per-key limits in Redis, against a real redis-server: the promises `LocalLimiter` keeps,
kept across replicas (two limiters on one Redis), leases, and the failover when Redis fails.

Redis's clock runs in real time, so waits here are real and short."""

from __future__ import annotations

import asyncio
import logging
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio
import pytest
import redis
import redis.asyncio as aioredis

from gateway.errors import RateLimited
from gateway.limits import UNCOUNTED, Limits
from gateway.redis_limits import RedisLimiter
from serving.process import free_port
from tests.gateway.test_limits import refused
from tests.processes import stop
from tests.redis_server import redis_server

pytestmark = pytest.mark.anyio


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


# Generous: these tests are about the limits; a loaded test host must not make them fail over.
TIMEOUT_S = 2.0


@pytest.fixture
async def limiter(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    opened = RedisLimiter(redis_url, redis_prefix, timeout_s=TIMEOUT_S)
    yield opened
    await opened.close()


@pytest.fixture
async def replica(redis_url: str, redis_prefix: str) -> AsyncIterator[RedisLimiter]:
    """A second gateway replica's limiter: another client, the same Redis and prefix."""
    opened = RedisLimiter(redis_url, redis_prefix, timeout_s=TIMEOUT_S)
    yield opened
    await opened.close()


@contextmanager
def redis_on(port: int, workdir: Path) -> Iterator[None]:
    """A redis-server on a port of our choosing, so that it can come back on it."""
    command = [shutil.which("redis-server") or "redis-server", "--port", str(port)]
    command += ["--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", str(workdir)]
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                assert time.monotonic() < deadline, "redis-server did not start"
                time.sleep(0.01)
        client.close()
        yield
    finally:
        stop(proc, timeout=10)


# --- the same promises as in one process ------------------------------------------------------


async def test_a_burst_then_the_rate(limiter: RedisLimiter):
    limits = Limits(requests_per_s=2, burst=3)
    for _ in range(3):
        await limiter.acquire("k", limits)

    limited = await refused(limiter, limits)
    assert limited.code == "requests_per_second"
    assert 0.3 < limited.retry_after_s <= 0.5
    await anyio.sleep(limited.retry_after_s)
    await limiter.acquire("k", limits)


async def test_the_burst_defaults_to_one_second_of_requests(limiter: RedisLimiter):
    limits = Limits(requests_per_s=20)
    for _ in range(20):
        await limiter.acquire("k", limits)
    await refused(limiter, limits)


async def test_tokens_are_post_paid_into_debt(limiter: RedisLimiter):
    limits = Limits(tokens_per_min=600)  # 10 per second
    one = await limiter.acquire("k", limits)
    two = await limiter.acquire("k", limits)  # admitted: the bucket is not in debt yet
    await one.release(900)
    await two.release(300)  # 600 over: a minute of debt

    limited = await refused(limiter, limits)
    assert limited.code == "tokens_per_minute"
    assert limited.retry_after_s == pytest.approx(60, abs=0.5)


async def test_a_debt_is_waited_out(limiter: RedisLimiter):
    limits = Limits(tokens_per_min=6_000)  # 100 per second
    await (await limiter.acquire("k", limits)).release(6_030)

    limited = await refused(limiter, limits)
    assert 0.2 < limited.retry_after_s <= 0.3
    await anyio.sleep(limited.retry_after_s)
    await limiter.acquire("k", limits)


async def test_the_refusal_names_the_longest_wait(limiter: RedisLimiter):
    limits = Limits(requests_per_s=1, tokens_per_min=60, concurrent=5)
    await (await limiter.acquire("k", limits)).release(120)

    limited = await refused(limiter, limits)
    assert limited.code == "tokens_per_minute"
    assert limited.retry_after_s == pytest.approx(60, abs=0.5)


async def test_a_refused_request_costs_nothing(limiter: RedisLimiter):
    limits = Limits(requests_per_s=0.1, burst=2, concurrent=1)
    permit = await limiter.acquire("k", limits)
    assert (await refused(limiter, limits)).code == "concurrent_requests"
    await permit.release(0)
    await limiter.acquire("k", limits)  # the refusal took no request from the bucket


async def test_a_client_that_never_reports_usage_is_still_bounded_by_rate(limiter: RedisLimiter):
    limits = Limits(requests_per_s=10, tokens_per_min=1_000)
    admitted = 0
    for _ in range(100):
        try:
            permit = await limiter.acquire("k", limits)
        except RateLimited:
            continue
        admitted += 1
        await permit.release(0)
    assert 10 <= admitted <= 11  # the burst, and what refilled while the loop ran


async def test_unlimited_never_asks_redis():
    limiter = RedisLimiter(f"redis://127.0.0.1:{free_port()}/0")  # nobody listens
    assert await limiter.acquire("k", Limits()) is UNCOUNTED
    assert not limiter.failed_over
    await limiter.close()


async def test_an_idle_key_leaves_nothing_in_redis(
    limiter: RedisLimiter, redis_url: str, redis_prefix
):
    limits = Limits(requests_per_s=100, tokens_per_min=60_000, concurrent=1)
    await (await limiter.acquire("k", limits)).release(5)  # full again within 10 ms
    await anyio.sleep(0.05)

    client = aioredis.Redis.from_url(redis_url)
    assert await client.keys(f"{redis_prefix}:*") == []
    await client.aclose()


# --- replicas ---------------------------------------------------------------------------------


async def test_two_replicas_share_the_rate(limiter: RedisLimiter, replica: RedisLimiter):
    limits = Limits(requests_per_s=1, burst=2)
    await limiter.acquire("k", limits)
    await replica.acquire("k", limits)
    await refused(limiter, limits)
    await refused(replica, limits)


async def test_two_replicas_share_the_tokens(limiter: RedisLimiter, replica: RedisLimiter):
    limits = Limits(tokens_per_min=600)
    await (await limiter.acquire("k", limits)).release(1_200)
    assert (await refused(replica, limits)).code == "tokens_per_minute"


async def test_two_replicas_share_the_slots(limiter: RedisLimiter, replica: RedisLimiter):
    limits = Limits(concurrent=1)
    permit = await limiter.acquire("k", limits)
    await refused(replica, limits)
    await permit.release(0)
    await replica.acquire("k", limits)


async def test_two_hundred_concurrent_acquires_never_hold_more_than_the_limit(
    limiter: RedisLimiter, replica: RedisLimiter
):
    limits = Limits(concurrent=5)
    holding, most, admitted = 0, 0, 0

    async def client(replica: RedisLimiter) -> None:
        nonlocal holding, most, admitted
        for _ in range(3):
            try:
                permit = await replica.acquire("k", limits)
            except RateLimited:
                continue
            holding += 1
            admitted += 1
            most = max(most, holding)
            await anyio.sleep(0.001)
            holding -= 1
            await permit.release(0)

    await asyncio.gather(*(client((limiter, replica)[i % 2]) for i in range(200)))
    assert [limiter.failed_over, replica.failed_over] == [False, False]  # else 5 each
    assert most == 5
    assert admitted > 5


async def test_a_permit_never_released_frees_its_slot_when_its_lease_ends(
    redis_url: str, redis_prefix: str, replica: RedisLimiter
):
    dying = RedisLimiter(redis_url, redis_prefix, lease_s=0.3, timeout_s=TIMEOUT_S)
    limits = Limits(concurrent=1)
    await dying.acquire("k", limits)  # and the replica dies
    await dying.close()

    await refused(replica, limits)
    await anyio.sleep(0.35)
    await replica.acquire("k", limits)


async def test_a_cancelled_release_still_frees_the_slot(limiter: RedisLimiter):
    limits = Limits(concurrent=1)
    permit = await limiter.acquire("k", limits)

    async def request() -> None:
        try:
            await anyio.sleep(10)
        finally:
            await permit.release(0)  # in a cancelled scope: cancelled at its first await

    async with anyio.create_task_group() as group:
        group.start_soon(request)
        await anyio.sleep(0.01)
        group.cancel_scope.cancel()

    await asyncio.gather(*limiter._releases)
    await limiter.acquire("k", limits)


# --- when Redis fails -------------------------------------------------------------------------


async def test_a_down_redis_fails_over_to_limits_per_replica(caplog: pytest.LogCaptureFixture):
    limits = Limits(requests_per_s=0.1, burst=2, concurrent=1)
    with redis_server() as url:
        limiter = RedisLimiter(url)
        permit = await limiter.acquire("k", limits)

    with caplog.at_level(logging.WARNING, "rollgate.limits"):
        local = await limiter.acquire("k", limits)  # decided here, on the replica's own state
        assert (await refused(limiter, limits)).code == "concurrent_requests"
        await local.release(0)
        await (await limiter.acquire("k", limits)).release(0)
        assert (await refused(limiter, limits)).code == "requests_per_second"
        await permit.release(0)  # lost: the lease frees its slot
    await limiter.close()

    [message] = [r.getMessage() for r in caplog.records]
    assert message.startswith("rate limits: redis failed (")
    assert message.endswith("); limiting per replica meanwhile")


async def test_redis_is_asked_again_after_a_while_and_its_return_logged(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
):
    port, clock, limits = free_port(), FakeClock(), Limits(requests_per_s=100)
    limiter = RedisLimiter(f"redis://127.0.0.1:{port}/0", clock=clock, retry_s=1.0)
    with caplog.at_level(logging.WARNING, "rollgate.limits"):
        await limiter.acquire("k", limits)  # down: local
        with redis_on(port, tmp_path):
            await limiter.acquire("k", limits)  # still local: Redis is not asked for a second
            clock.now += 1.0
            await limiter.acquire("k", limits)  # Redis again
            await limiter.close()

    messages = [r.getMessage() for r in caplog.records]
    assert len(messages) == 2
    assert (
        messages[1] == "rate limits: redis is back after 1.0 s; 2 requests were limited per replica"
    )


async def test_a_slow_redis_counts_as_down(redis_url: str, redis_prefix: str):
    limiter = RedisLimiter(redis_url, redis_prefix, timeout_s=0.1)
    limits = Limits(requests_per_s=1)
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", 500, "ALL")

    started = time.monotonic()
    await limiter.acquire("k", limits)  # the script's answer waits for the pause: timed out
    assert time.monotonic() - started < 0.4
    assert limiter.failed_over
    await admin.aclose()
    await limiter.close()


async def test_while_redis_is_out_one_request_at_a_time_asks_it_again(redis_url: str, redis_prefix):
    clock, limits = FakeClock(), Limits(requests_per_s=1_000)
    limiter = RedisLimiter(redis_url, redis_prefix, clock=clock, timeout_s=0.1, retry_s=1.0)
    admin = aioredis.Redis.from_url(redis_url)
    await admin.execute_command("CLIENT", "PAUSE", 1_000, "ALL")
    await limiter.acquire("k", limits)  # timed out: failed over
    clock.now += 1.0

    async def timed() -> float:
        started = time.monotonic()
        await limiter.acquire("k", limits)
        return time.monotonic() - started

    took = await asyncio.gather(*(timed() for _ in range(20)))
    assert sum(t >= 0.1 for t in took) == 1  # the others were decided locally, at once
    await admin.execute_command("CLIENT", "UNPAUSE")
    await admin.aclose()
    await limiter.close()
