"""What per-key limits cost on the hot path: one acquire plus its release, in microseconds.

    .venv/bin/python -m loadtests.bench_limits [--scale 1.0]

Side by side, in one run (figures and ratios, never assertions):

(a) no limits (`Limits()`, the shared permit);
(b) `LocalLimiter`, all three limits;
(c) `RedisLimiter` against a throwaway local redis-server: requests per second
    alone (one round trip), then all three (two: acquire, release);
(d) the `limits` library's moving and sliding windows against the same Redis,
    as a rival to (c)'s requests per second, and its moving window paying a
    request's tokens up front (one list entry per token, the way it would have to
    count tokens per minute). It is not a dependency: run with
    `PYTHONPATH=<a folder where pip --target put limits, deprecated, wrapt>`,
    else (d) is skipped and says so.

Each runs sequentially (the mean) and then under CONCURRENCY asyncio tasks
(p50 and p99 of one acquire plus release, and the throughput). No limit ever
refuses: the limits are set far above what the run asks. The client and the
redis-server share the machine's cores. Were Redis to time out, the limiter's
failover would be logged here, and (c)'s figures would be partly local ones.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import statistics
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from gateway.limits import Limiter, Limits, LocalLimiter
from gateway.redis_limits import RedisLimiter
from tests.redis_server import redis_server

CONCURRENCY = 32
KEYS = [f"key-{n}" for n in range(100)]
NO_LIMITS = Limits()
RATE_ONLY = Limits(requests_per_s=1e9)
ALL_THREE = Limits(requests_per_s=1e9, tokens_per_min=1e15, concurrent=1_000_000)
TOKENS = 300  # charged by each release

Op = Callable[[int], Awaitable[None]]  # one acquire and its release, for the i-th request


@dataclass(frozen=True, slots=True)
class Figures:
    name: str
    mean_us: float
    p50_us: float
    p99_us: float
    per_s: float


def ours(limiter: Limiter, limits: Limits) -> Op:
    async def op(i: int) -> None:
        permit = await limiter.acquire(KEYS[i % len(KEYS)], limits)
        await permit.release(TOKENS)

    return op


async def measure(name: str, op: Op, n: int) -> Figures:
    for i in range(min(n, 200)):  # warm: scripts loaded, connections open
        await op(i)
    started = time.perf_counter()
    for i in range(n):
        await op(i)
    mean_us = (time.perf_counter() - started) / n * 1e6

    latencies: list[float] = []

    async def task(first: int) -> None:
        for i in range(first, first + n // CONCURRENCY):
            began = time.perf_counter()
            await op(i)
            latencies.append(time.perf_counter() - began)

    started = time.perf_counter()
    await asyncio.gather(*(task(t * n) for t in range(CONCURRENCY)))
    elapsed = time.perf_counter() - started
    cuts = statistics.quantiles(latencies, n=100)
    return Figures(name, mean_us, cuts[49] * 1e6, cuts[98] * 1e6, len(latencies) / elapsed)


async def rivals(url: str, n: int) -> list[Figures]:
    try:
        from limits import parse
        from limits.aio.storage import RedisStorage
        from limits.aio.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter
    except ImportError:
        print("(d) skipped: the `limits` library is not importable (see the module docstring)")
        return []
    storage = RedisStorage(url.replace("redis://", "async+redis://"), implementation="redispy")
    item = parse("1000000000/second")
    found = []
    for name, strategy, cost in [
        ("(d) limits: moving window", MovingWindowRateLimiter(storage), 1),
        ("(d) limits: sliding window", SlidingWindowCounterRateLimiter(storage), 1),
        # What a tokens-per-minute limit would cost it: one list entry per token.
        (f"(d) moving window, cost {TOKENS}", MovingWindowRateLimiter(storage), TOKENS),
    ]:

        async def op(i: int, strategy=strategy, cost=cost) -> None:
            if not await strategy.hit(item, KEYS[i % len(KEYS)], cost=cost):
                raise RuntimeError("the rival refused: the limit is meant to be out of reach")

        found.append(await measure(name, op, n))
    return found


async def run(scale: float) -> list[Figures]:
    local_n, redis_n = int(100_000 * scale), int(4_000 * scale)
    found = [
        await measure("(a) no limits", ours(LocalLimiter(), NO_LIMITS), local_n),
        await measure("(b) local, all three", ours(LocalLimiter(), ALL_THREE), local_n),
    ]
    with redis_server() as url:
        limiter = RedisLimiter(url, prefix="bench")
        found.append(await measure("(c) redis, requests/s", ours(limiter, RATE_ONLY), redis_n))
        found.append(await measure("(c) redis, all three", ours(limiter, ALL_THREE), redis_n))
        await limiter.close()
        found += await rivals(url, redis_n)
    return found


def report(found: list[Figures]) -> None:
    unlimited = found[0].mean_us
    print(f"{'':28} {'mean µs':>9} {'/ (a)':>8} {'p50 µs':>9} {'p99 µs':>9} {'per s':>9}")
    print(f"{'':28} {'sequential':>18} {f'{CONCURRENCY} concurrent tasks':>29}")
    for f in found:
        print(
            f"{f.name:28} {f.mean_us:9.2f} {f.mean_us / unlimited:8.1f} "
            f"{f.p50_us:9.1f} {f.p99_us:9.1f} {f.per_s:9.0f}"
        )
    by_name = {f.name: f for f in found}
    ours_rate = by_name["(c) redis, requests/s"].mean_us
    for name in ("(d) limits: moving window", "(d) limits: sliding window"):  # one hit each
        if name in by_name:
            print(f"{name} / (c) redis, requests/s: {by_name[name].mean_us / ours_rate:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scale", type=float, default=1.0, help="more or fewer iterations")
    logging.basicConfig(level=logging.WARNING, format="%(name)s: %(message)s")
    report(asyncio.run(run(parser.parse_args().scale)))


if __name__ == "__main__":
    main()
