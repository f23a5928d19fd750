"""Per-key limits: the pure token bucket, then `LocalLimiter` on a fake clock, and what
`LocalLimiter` and `RedisLimiter` must do alike (the Redis-only behaviour is in
test_redis_limits.py)."""

from __future__ import annotations

import asyncio
import doctest
import math
from dataclasses import dataclass

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from gateway import limits as limits_module
from gateway.errors import RateLimited
from gateway.limits import (
    CONCURRENCY_RETRY_S,
    MIN_SWEEP,
    UNCOUNTED,
    Bucket,
    Limit,
    Limiter,
    Limits,
    LocalLimiter,
    Permit,
    charge,
    take,
)
from gateway.redis_limits import RedisLimiter

pytestmark = pytest.mark.anyio


@dataclass
class FakeClock:
    now: float = 1_000.0

    def __call__(self) -> float:
        return self.now


async def refused(limiter: Limiter, limits: Limits, key: str = "k") -> RateLimited:
    with pytest.raises(RateLimited) as raised:
        await limiter.acquire(key, limits)
    return raised.value


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def limiter(clock: FakeClock) -> LocalLimiter:
    return LocalLimiter(clock)


@pytest.fixture(params=["local", "redis"])
async def any_limiter(request: pytest.FixtureRequest, clock: FakeClock):
    """Either implementation, for what both must do alike (no clock involved)."""
    if request.param == "local":
        yield LocalLimiter(clock)
        return
    url, prefix = request.getfixturevalue("redis_url"), request.getfixturevalue("redis_prefix")
    opened = RedisLimiter(url, prefix, timeout_s=2.0)  # generous: a loaded host stays on Redis
    yield opened
    await opened.close()


def test_the_module_examples_run():
    result = doctest.testmod(limits_module)
    assert result.attempted > 0
    assert result.failed == 0


# --- the pure bucket ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("bucket", "cost", "now", "allowed", "level", "retry"),
    [
        (None, 1, 0.0, True, 3.0, 0.0),  # no bucket is a full one
        (Bucket(0.0, at=0.0), 1, 0.0, False, 0.0, 0.5),
        (Bucket(0.0, at=0.0), 1, 0.5, True, 0.0, 0.0),  # refilled at 2 per second
        (Bucket(3.5, at=0.0), 1, 10.0, True, 3.0, 0.0),  # never above the capacity
        (Bucket(1.0, at=5.0), 2, 4.0, False, 1.0, 0.5),  # a clock that went back refills nothing
        (Bucket(-4.0, at=0.0), 0, 0.0, False, -4.0, 2.0),  # debt: even nothing waits
        (Bucket(-4.0, at=0.0), 0, 2.0, True, 0.0, 0.0),
        (None, 5, 0.0, False, 4.0, math.inf),  # more than the bucket holds: never
    ],
)
def test_take(
    bucket: Bucket | None, cost: float, now: float, allowed: bool, level: float, retry: float
):
    taken = take(bucket, rate=2.0, capacity=4.0, cost=cost, now=now)

    assert (taken.allowed, taken.bucket.level, taken.bucket.at) == (allowed, level, now)
    assert taken.retry_after_s == pytest.approx(retry)


def test_charge_may_go_into_debt():
    assert charge(Bucket(1.0, at=0.0), rate=2.0, capacity=4.0, cost=10, now=1.0) == Bucket(
        -7.0, 1.0
    )


@settings(max_examples=300)
@given(
    rate=st.floats(0.01, 1_000),
    capacity=st.floats(1, 1_000),
    steps=st.lists(st.tuples(st.floats(0, 5), st.floats(0, 50)), max_size=60),
)
def test_a_bucket_never_admits_more_than_its_capacity_plus_its_refill(
    rate: float, capacity: float, steps: list[tuple[float, float]]
):
    bucket, now, admitted = None, 0.0, []
    for dt, cost in steps:
        now += dt
        taken = take(bucket, rate, capacity, cost, now)
        bucket = taken.bucket
        if taken.allowed:
            admitted.append((now, cost))
    for i, (start, _) in enumerate(admitted):
        total = 0.0
        for end, cost in admitted[i:]:
            total += cost
            assert total <= (capacity + rate * (end - start)) * (1 + 1e-9)


@settings(max_examples=500)
@given(
    level=st.floats(-1e6, 1e3),
    rate=st.floats(1e-3, 1e6),
    capacity=st.floats(1, 1e3),
    cost=st.floats(0, 1e3),
    now=st.floats(0, 1e10),
)
def test_retry_after_is_exact(level: float, rate: float, capacity: float, cost: float, now: float):
    assume(cost <= capacity)
    taken = take(Bucket(level, now), rate, capacity, cost, now)
    assume(not taken.allowed)

    retry = taken.retry_after_s
    assert take(taken.bucket, rate, capacity, cost, now + retry).allowed
    exact = (cost - min(level, capacity)) / rate
    assert retry <= exact * (1 + 1e-12) + 4 * math.ulp(now + exact)  # the clock's resolution


# --- requests per second --------------------------------------------------------------------


async def test_a_burst_then_the_rate(limiter: LocalLimiter, clock: FakeClock):
    limits = Limits(requests_per_s=2, burst=3)
    for _ in range(3):
        await limiter.acquire("k", limits)

    first = await refused(limiter, limits)
    assert (first.code, first.retry_after_s) == ("requests_per_second", pytest.approx(0.5))
    assert first.status == 429
    assert first.headers == {"retry-after": "1"}
    clock.now += 0.2
    assert (await refused(limiter, limits)).retry_after_s == pytest.approx(0.3)
    clock.now += 0.3
    await limiter.acquire("k", limits)


@pytest.mark.parametrize(("rate", "burst"), [(0.5, 1), (1, 1), (20, 20)])
async def test_the_burst_defaults_to_one_second_of_requests_and_at_least_one(
    limiter: LocalLimiter, rate: float, burst: int
):
    limits = Limits(requests_per_s=rate)
    for _ in range(burst):
        await limiter.acquire("k", limits)
    await refused(limiter, limits)


async def test_waiting_the_retry_after_is_enough(limiter: LocalLimiter, clock: FakeClock):
    limits = Limits(requests_per_s=3)
    clock.now = 1_765_000_000.123  # epoch seconds: the float arithmetic is at its coarsest
    waits = 0
    for _ in range(50):
        try:
            await limiter.acquire("k", limits)
        except RateLimited as limited:
            waits += 1
            clock.now += limited.retry_after_s
            await limiter.acquire("k", limits)
    assert waits == 47


async def test_keys_are_limited_apart(any_limiter: Limiter):
    limits = Limits(requests_per_s=1)
    await any_limiter.acquire("a", limits)
    await any_limiter.acquire("b", limits)
    await refused(any_limiter, limits, "a")


async def test_a_client_that_never_reports_usage_is_still_bounded_by_rate(
    limiter: LocalLimiter, clock: FakeClock
):
    limits = Limits(requests_per_s=10, tokens_per_min=1_000)
    admitted = 0
    for _ in range(100):
        try:
            permit = await limiter.acquire("k", limits)
        except RateLimited:
            continue
        admitted += 1
        await permit.release(0)
    assert admitted == 10
    clock.now += 1
    assert await limiter.acquire("k", limits)


# --- tokens per minute -----------------------------------------------------------------------


async def test_tokens_are_post_paid_and_the_debt_is_waited_out(
    limiter: LocalLimiter, clock: FakeClock
):
    limits = Limits(tokens_per_min=600)  # 10 per second
    one = await limiter.acquire("k", limits)
    two = await limiter.acquire("k", limits)  # admitted: the bucket is not in debt yet
    await one.release(900)
    await two.release(300)  # 600 over: a minute of debt

    limited = await refused(limiter, limits)
    assert (limited.code, limited.retry_after_s) == ("tokens_per_minute", pytest.approx(60))
    clock.now += 59
    assert (await refused(limiter, limits)).retry_after_s == pytest.approx(1)
    clock.now += 1
    await limiter.acquire("k", limits)


async def test_tokens_refill_to_one_minute_at_most(limiter: LocalLimiter, clock: FakeClock):
    limits = Limits(tokens_per_min=600)
    clock.now += 3_600  # an idle hour saves no more than a minute
    await (await limiter.acquire("k", limits)).release(601)
    assert (await refused(limiter, limits)).retry_after_s == pytest.approx(0.1)


async def test_the_refusal_names_the_longest_wait(limiter: LocalLimiter):
    limits = Limits(requests_per_s=1, tokens_per_min=60, concurrent=5)
    await (await limiter.acquire("k", limits)).release(120)  # two minutes of tokens

    limited = await refused(limiter, limits)  # out of requests (1 s) and of tokens (60 s)
    assert (limited.code, limited.retry_after_s) == ("tokens_per_minute", pytest.approx(60))


# --- concurrency -----------------------------------------------------------------------------


async def test_requests_in_flight_are_capped_until_released(any_limiter: Limiter):
    limits = Limits(concurrent=2)
    one = await any_limiter.acquire("k", limits)
    await any_limiter.acquire("k", limits)

    limited = await refused(any_limiter, limits)
    assert (limited.code, limited.retry_after_s) == ("concurrent_requests", CONCURRENCY_RETRY_S)
    await one.release(0)
    await any_limiter.acquire("k", limits)


async def test_release_is_idempotent(any_limiter: Limiter):
    limits = Limits(tokens_per_min=600, concurrent=2)
    one = await any_limiter.acquire("k", limits)
    two = await any_limiter.acquire("k", limits)
    await one.release(300)
    await one.release(300)  # neither a second slot nor a second charge

    await any_limiter.acquire("k", limits)  # one slot free, 300 tokens left
    await refused(any_limiter, limits)  # two in flight
    await two.release(300)
    await any_limiter.acquire("k", limits)  # the bucket is at zero: not in debt


async def test_a_refused_request_costs_nothing(limiter: LocalLimiter):
    limits = Limits(requests_per_s=1, burst=2, concurrent=1)
    permit = await limiter.acquire("k", limits)
    assert (await refused(limiter, limits)).code == Limit.CONCURRENT
    await permit.release(0)
    await limiter.acquire("k", limits)  # the refusal took no request from the bucket


async def test_two_hundred_concurrent_acquires_never_hold_more_than_the_limit(
    limiter: LocalLimiter,
):
    limits = Limits(concurrent=5)
    holding, most, admitted = 0, 0, 0

    async def client() -> None:
        nonlocal holding, most, admitted
        for _ in range(10):
            try:
                permit = await limiter.acquire("k", limits)
            except RateLimited:
                await asyncio.sleep(0)
                continue
            holding += 1
            admitted += 1
            most = max(most, holding)
            await asyncio.sleep(0)
            holding -= 1
            await permit.release(0)

    await asyncio.gather(*(client() for _ in range(200)))
    assert most == 5
    assert admitted > 5


@settings(max_examples=200)
@given(st.lists(st.one_of(st.just("acquire"), st.integers(0, 5), st.floats(0, 2)), max_size=80))
def test_no_sequence_holds_more_than_the_limits(operations: list[str | int | float]):
    """Acquire, release the n-th permit held, or let time pass, in any order."""
    clock = FakeClock()
    limiter = LocalLimiter(clock)
    limits = Limits(requests_per_s=4, burst=4, concurrent=3)
    held: list[Permit] = []
    starts: list[float] = []

    async def run() -> None:
        for op in operations:
            if op == "acquire":
                try:
                    held.append(await limiter.acquire("k", limits))
                    starts.append(clock.now)
                except RateLimited:
                    pass
            elif isinstance(op, int):
                if held:
                    await held.pop(op % len(held)).release(op)
            else:
                clock.now += op
            assert len(held) <= 3

    asyncio.run(run())
    for i, start in enumerate(starts):
        for j in range(i, len(starts)):
            assert j - i + 1 <= 4 + 4 * (starts[j] - start) + 1e-9


# --- the unlimited and the idle --------------------------------------------------------------


async def test_unlimited_costs_no_state_and_no_clock():
    def no_clock() -> float:
        raise AssertionError("the unlimited path read the clock")

    limiter = LocalLimiter(no_clock)
    for key in range(100):
        assert await limiter.acquire(str(key), Limits()) is UNCOUNTED
    assert len(limiter) == 0


async def test_a_permit_with_nothing_to_settle_is_the_shared_one(limiter: LocalLimiter):
    assert await limiter.acquire("k", Limits(requests_per_s=10)) is UNCOUNTED


async def test_idle_keys_are_forgotten_busy_ones_kept(limiter: LocalLimiter, clock: FakeClock):
    limits = Limits(requests_per_s=1, concurrent=1)
    busy = await limiter.acquire("busy", limits)
    for key in range(MIN_SWEEP):
        await (await limiter.acquire(f"idle-{key}", limits)).release(0)
    clock.now += 1  # every idle key's bucket is full again
    for key in range(MIN_SWEEP + 10):
        await (await limiter.acquire(f"new-{key}", limits)).release(0)

    assert len(limiter) < 2 * MIN_SWEEP
    await refused(limiter, limits, "busy")  # its permit is still out
    await busy.release(0)


async def test_a_key_in_debt_is_not_forgotten(limiter: LocalLimiter, clock: FakeClock):
    limits = Limits(tokens_per_min=60)
    await (await limiter.acquire("debtor", limits)).release(600)  # nine minutes of debt
    clock.now += 60
    for key in range(2 * MIN_SWEEP + 1):
        await (await limiter.acquire(f"other-{key}", limits)).release(0)

    assert (await refused(limiter, limits, "debtor")).retry_after_s == pytest.approx(480)


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"requests_per_s": 0}, "requests_per_s"),
        ({"requests_per_s": math.inf}, "requests_per_s"),
        ({"tokens_per_min": -1}, "tokens_per_min"),
        ({"requests_per_s": 5, "burst": 0.5}, "burst"),
        ({"burst": 5}, "burst"),  # a burst of what rate?
        ({"concurrent": 0}, "concurrent"),
    ],
)
def test_nonsense_limits_are_refused(fields: dict, message: str):
    with pytest.raises(ValueError, match=message):
        Limits(**fields)
