"""Per-API-key limits: requests per second, tokens per minute, requests in flight.

    limiter = LocalLimiter(clock=time.monotonic)  # or RedisLimiter(url): shared by replicas
    permit = await limiter.acquire("key-7", Limits(requests_per_s=5, tokens_per_min=20_000))
    tokens = 0
    try:
        answer = await forward(request)
        tokens = answer.usage.total_tokens
    finally:
        await permit.release(tokens)

`acquire` raises `RateLimited` (429, with retry-after and the limit's name as
`code`) or hands out a `Permit`; `release` charges the tokens the answer used
and frees the concurrency slot. Requests per second is a token bucket of
`burst` requests. Tokens per minute is a token bucket of one minute's tokens,
post-paid: a request's cost is known only once it is answered, so a request is
admitted while the bucket is not in debt, and the real count is charged after;
one long answer can put the bucket into debt, and the key then waits until it
has refilled to zero.

The decisions are pure (`take`, `charge`, `admit`, `settle`): the limiters only
store their results, here in a dict, in `gateway.redis_limits` in Redis (whose
Lua scripts mirror `admit` and `settle`).

We do not use the `limits` library (5.8): it has fixed and sliding windows but
no token bucket, no concurrency limit and no post-paid cost (a hit's cost is
paid up front and refused whole), and its Redis moving window pushes one list
entry per unit of cost, 4,000 pushes for a 4,000-token answer.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Protocol

from gateway.errors import RateLimited
from gateway.exchange import Clock

CONCURRENCY_RETRY_S = 1.0  # when a slot frees is unknowable: a guess, the shortest answer's time
MIN_SWEEP = 1024  # keys held before the first sweep for idle ones


class Limit(StrEnum):
    """Which limit refused a request: the `code` of its 429."""

    REQUESTS = "requests_per_second"
    TOKENS = "tokens_per_minute"
    CONCURRENT = "concurrent_requests"


@dataclass(frozen=True, slots=True)
class Limits:
    """One key's limits; None is unlimited. `burst` defaults to max(1, requests_per_s)."""

    requests_per_s: float | None = None
    burst: float | None = None
    tokens_per_min: float | None = None
    concurrent: int | None = None
    # Derived once, as fields rather than properties: every request reads them.
    unlimited: bool = field(init=False, repr=False, compare=False)
    settles: bool = field(init=False, repr=False, compare=False)  # a release has work to do
    capacity: float = field(init=False, repr=False, compare=False)  # the requests bucket's
    tokens_per_s: float = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("requests_per_s", "tokens_per_min"):
            value = getattr(self, name)
            if value is not None and not (0 < value < math.inf):
                raise ValueError(f"{name} must be a positive number, not {value}")
        if self.burst is not None and (
            self.requests_per_s is None or not 1 <= self.burst < math.inf
        ):
            raise ValueError(
                f"burst must be at least 1 and go with requests_per_s, not {self.burst}"
            )
        if self.concurrent is not None and self.concurrent < 1:
            raise ValueError(f"concurrent must be at least 1, not {self.concurrent}")
        settles = self.tokens_per_min is not None or self.concurrent is not None
        capacity = self.burst if self.burst is not None else max(1.0, self.requests_per_s or 0.0)
        object.__setattr__(self, "unlimited", self.requests_per_s is None and not settles)
        object.__setattr__(self, "settles", settles)
        object.__setattr__(self, "capacity", capacity)
        object.__setattr__(self, "tokens_per_s", (self.tokens_per_min or 0.0) / 60)


class Permit(Protocol):
    async def release(self, tokens: int) -> None:
        """Charge the tokens the request used (0 if unknown) and free its slot; idempotent."""
        ...


class Limiter(Protocol):
    async def acquire(self, key_id: str, limits: Limits) -> Permit:
        """Admit one request of `key_id` (a key's id, never its secret) or raise RateLimited."""
        ...

    async def close(self) -> None: ...


# --- the token bucket ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Bucket:
    """A bucket's level at a moment; below zero is debt. No bucket at all is a full one."""

    level: float
    at: float


@dataclass(frozen=True, slots=True)
class Taken:
    allowed: bool
    bucket: Bucket  # charged when allowed; refilled to `now` when not
    retry_after_s: float = 0.0  # math.inf when the cost exceeds the capacity


def level_at(bucket: Bucket | None, rate: float, capacity: float, now: float) -> float:
    if bucket is None:
        return capacity
    elapsed = now - bucket.at
    level = bucket.level + rate * elapsed if elapsed > 0 else bucket.level  # a clock gone back
    return level if level < capacity else capacity


def take(bucket: Bucket | None, rate: float, capacity: float, cost: float, now: float) -> Taken:
    """Take `cost` from the bucket if it holds that much.

    >>> take(None, rate=1.0, capacity=2.0, cost=1.0, now=0.0)
    Taken(allowed=True, bucket=Bucket(level=1.0, at=0.0), retry_after_s=0.0)
    >>> take(Bucket(0.5, at=0.0), rate=1.0, capacity=2.0, cost=1.0, now=0.0).retry_after_s
    0.5
    """
    level = level_at(bucket, rate, capacity, now)
    if level >= cost:
        return Taken(True, Bucket(level - cost, now))
    return Taken(False, Bucket(level, now), _wait(level, rate, capacity, cost, now))


def charge(bucket: Bucket | None, rate: float, capacity: float, cost: float, now: float) -> Bucket:
    """Take `cost` whatever the level: a post-paid cost may leave the bucket in debt."""
    return Bucket(level_at(bucket, rate, capacity, now) - cost, now)


def _wait(level: float, rate: float, capacity: float, cost: float, now: float) -> float:
    if cost > capacity:
        return math.inf
    wait = (cost - level) / rate
    # Rounded up until the arithmetic `take` will do at `now + wait` admits: a client that
    # waits exactly as long as it was told is never refused again.
    while level + rate * ((now + wait) - now) < cost:
        wait += math.ulp(now + wait)
    return wait


# --- one key's state: all three limits ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyState:
    requests: Bucket | None = None
    tokens: Bucket | None = None
    in_flight: int = 0
    limits: Limits | None = None  # what the key was last counted under


FRESH = KeyState()


@dataclass(frozen=True, slots=True)
class Admission:
    state: KeyState  # to store, whether admitted or not
    refused: Limit | None = None
    retry_after_s: float = 0.0


def admit(state: KeyState, limits: Limits, now: float) -> Admission:
    """Admit a request when every limit allows it; charge none of them otherwise.

    A refusal names the limit that keeps the key waiting longest, with that wait.
    """
    refused, retry = None, 0.0
    requests, charged, tokens = state.requests, state.requests, state.tokens
    if limits.requests_per_s is not None:
        taken = take(requests, limits.requests_per_s, limits.capacity, 1.0, now)
        if taken.allowed:
            charged = taken.bucket
        else:
            refused, retry, requests = Limit.REQUESTS, taken.retry_after_s, taken.bucket
    if limits.tokens_per_min is not None:
        taken = take(tokens, limits.tokens_per_s, limits.tokens_per_min, 0.0, now)
        tokens = taken.bucket  # taking 0 only refills
        if not taken.allowed and taken.retry_after_s > retry:
            refused, retry = Limit.TOKENS, taken.retry_after_s
    full = limits.concurrent is not None and state.in_flight >= limits.concurrent
    if full and retry < CONCURRENCY_RETRY_S:
        refused, retry = Limit.CONCURRENT, CONCURRENCY_RETRY_S
    if refused is not None:
        # A refused bucket is kept refilled to `now`, so its retry-after is exact.
        return Admission(KeyState(requests, tokens, state.in_flight, limits), refused, retry)
    in_flight = state.in_flight + 1 if limits.settles else state.in_flight
    return Admission(KeyState(charged, tokens, in_flight, limits))


def settle(state: KeyState, limits: Limits, tokens: int, now: float) -> KeyState:
    """A permit comes back: charge its tokens (the bucket may go into debt), free its slot."""
    bucket = state.tokens
    if limits.tokens_per_min is not None and tokens > 0:
        bucket = charge(bucket, limits.tokens_per_s, limits.tokens_per_min, tokens, now)
    in_flight = state.in_flight - 1 if state.in_flight > 0 else 0
    return KeyState(state.requests, bucket, in_flight, limits)


def idle(state: KeyState, now: float) -> bool:
    """Nothing in flight and both buckets full again: forgetting the key loses nothing."""
    limits = state.limits
    if state.in_flight > 0:
        return False
    if limits is None:
        return True
    requests, tokens = limits.requests_per_s, limits.tokens_per_min
    return (
        state.requests is None
        or requests is None
        or level_at(state.requests, requests, limits.capacity, now) >= limits.capacity
    ) and (
        state.tokens is None
        or tokens is None
        or level_at(state.tokens, limits.tokens_per_s, tokens, now) >= tokens
    )


def rate_limited(limit: Limit, retry_after_s: float, limits: Limits) -> RateLimited:
    if limit is Limit.REQUESTS:
        allowed = f"{limits.requests_per_s:g} requests per second (bursts of {limits.capacity:g})"
    elif limit is Limit.TOKENS:
        allowed = f"{limits.tokens_per_min:g} tokens per minute"
    else:
        allowed = f"{limits.concurrent} requests at once"
    return RateLimited(
        f"rate limit reached: this key may use {allowed}; retry after {retry_after_s:.2f} s",
        retry_after_s=retry_after_s,
        code=limit.value,
    )


# --- in process ---------------------------------------------------------------------------------


class _Uncounted:
    """The permit of a request that nothing counts after admission."""

    async def release(self, tokens: int) -> None:
        return None


UNCOUNTED: Permit = _Uncounted()


class LocalLimiter:
    """Limits kept in this process: exact for one replica, per replica for several.

    Nothing awaits between reading a key's state and storing the next, so the event
    loop makes every acquire and release atomic without a lock. Memory stays
    bounded: a key whose buckets are full again and that has nothing in flight is
    forgotten (a fresh key is the same), swept whenever the dict has doubled.
    """

    def __init__(self, clock: Clock = time.monotonic) -> None:
        self._clock = clock
        self._states: dict[str, KeyState] = {}
        self._sweep_above = MIN_SWEEP

    async def acquire(self, key_id: str, limits: Limits) -> Permit:
        if limits.unlimited:
            return UNCOUNTED
        now = self._clock()
        admission = admit(self._states.get(key_id, FRESH), limits, now)
        self._store(key_id, admission.state, now)
        if admission.refused is not None:
            raise rate_limited(admission.refused, admission.retry_after_s, limits)
        return _LocalPermit(self, key_id, limits) if limits.settles else UNCOUNTED

    async def close(self) -> None:
        self._states.clear()

    def __len__(self) -> int:
        """Keys held now."""
        return len(self._states)

    def _settle(self, key_id: str, limits: Limits, tokens: int) -> None:
        now = self._clock()
        self._store(key_id, settle(self._states.get(key_id, FRESH), limits, tokens, now), now)

    def _store(self, key_id: str, state: KeyState, now: float) -> None:
        self._states[key_id] = state
        if len(self._states) > self._sweep_above:
            self._states = {k: s for k, s in self._states.items() if not idle(s, now)}
            self._sweep_above = max(MIN_SWEEP, 2 * len(self._states))


class _LocalPermit:
    __slots__ = ("_key_id", "_limiter", "_limits", "_released")

    def __init__(self, limiter: LocalLimiter, key_id: str, limits: Limits) -> None:
        self._limiter = limiter
        self._key_id = key_id
        self._limits = limits
        self._released = False

    async def release(self, tokens: int) -> None:
        if self._released:
            return
        self._released = True
        self._limiter._settle(self._key_id, self._limits, tokens)
