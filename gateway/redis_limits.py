"""Per-key limits shared by every gateway replica: Redis.

    limiter = RedisLimiter("redis://redis:6379/0")  # replicas sharing `prefix` share limits
    permit = await limiter.acquire("key-7", Limits(requests_per_s=5, concurrent=4))
    ...
    await permit.release(tokens)

Keys, under `prefix`, per API key (the braces keep a key's three in one cluster slot):

    {prefix}:limits:{key_id}:requests    hash: level, at; the requests bucket
    {prefix}:limits:{key_id}:tokens      hash: level, at; the tokens bucket (below 0: debt)
    {prefix}:limits:{key_id}:in-flight   sorted set: permit ids, scored by their lease's end

One Lua script per acquire checks and updates all three together, one per
release charges the tokens and removes the permit; both mirror
`gateway.limits.admit` and `settle`, on Redis's clock (TIME), so the replicas'
clocks do not matter. A bucket expires once it would be full again and the
in-flight set once its last lease ends: an idle key leaves nothing behind.

A replica that dies holding permits leaks their slots only until their lease
ends (`lease_s`, 10 minutes by default, longer than an answer should take; a
longer answer loses its slot early and the key may briefly exceed its limit).

When Redis fails, the limiter fails over to a `LocalLimiter`: see `RedisLimiter`.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import secrets
import time
from collections.abc import Sequence
from dataclasses import dataclass

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import NoBackoff
from redis.exceptions import RedisError

from gateway.exchange import Clock
from gateway.limits import (
    CONCURRENCY_RETRY_S,
    UNCOUNTED,
    Limit,
    Limits,
    LocalLimiter,
    Permit,
    rate_limited,
)

log = logging.getLogger("rollgate.limits")

LEASE_S = 600.0
TIMEOUT_S = 0.25  # on the hot path: a slower Redis is treated as a down one
RETRY_S = 1.0  # after a failure, how long requests are limited locally before Redis is asked again
MAX_CONNECTIONS = 32  # per replica: a burst of requests queues for them, not opens one each
REFUSALS = (Limit.REQUESTS, Limit.TOKENS, Limit.CONCURRENT)  # the script's 1, 2, 3

_BUCKETS = """
local clock = redis.call('TIME')
local now = tonumber(clock[1]) + tonumber(clock[2]) / 1000000

local function level_at(key, rate, capacity)
  local stored = redis.call('HMGET', key, 'level', 'at')
  if not stored[1] then return capacity end
  return math.min(capacity, tonumber(stored[1]) + rate * math.max(0, now - tonumber(stored[2])))
end

-- Expires once full again, when a missing bucket (a full one) is the same.
local function store(key, level, rate, capacity)
  redis.call('HSET', key, 'level', string.format('%.17g', level), 'at', string.format('%.17g', now))
  local full_in_ms = math.min(1e12, math.ceil((capacity - level) / rate * 1000) + 1)
  redis.call('PEXPIRE', key, string.format('%d', full_in_ms))
end
"""

# KEYS: requests, tokens, in-flight. ARGV: requests per s, burst, tokens per s, tokens per
# min, concurrent ('' for a limit that is off), permit id, lease in ms. Returns {0, ''} when
# admitted, else {1 requests | 2 tokens | 3 concurrent: the longest wait, the wait in s}.
_ACQUIRE = (
    _BUCKETS
    + f"""
local refused, retry = 0, 0
local rps, burst = tonumber(ARGV[1]), tonumber(ARGV[2])
local requests
if rps then
  requests = level_at(KEYS[1], rps, burst)
  if requests < 1 then refused, retry = 1, (1 - requests) / rps end
end
local tps, tpm = tonumber(ARGV[3]), tonumber(ARGV[4])
if tps then
  local tokens = level_at(KEYS[2], tps, tpm)
  if tokens < 0 and -tokens / tps > retry then refused, retry = 2, -tokens / tps end
end
local concurrent = tonumber(ARGV[5])
if concurrent then
  redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', string.format('%.17g', now))
  local full = redis.call('ZCARD', KEYS[3]) >= concurrent
  if full and retry < {CONCURRENCY_RETRY_S} then refused, retry = 3, {CONCURRENCY_RETRY_S} end
end
if refused > 0 then return {{refused, string.format('%.17g', retry)}} end
if rps then store(KEYS[1], requests - 1, rps, burst) end
if concurrent then
  local lease_ms = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[3], string.format('%.17g', now + lease_ms / 1000), ARGV[6])
  redis.call('PEXPIRE', KEYS[3], ARGV[7])
end
return {{0, ''}}
"""
)

# KEYS: tokens, in-flight. ARGV: tokens per s, tokens per min ('' when off), tokens, permit id.
_RELEASE = (
    _BUCKETS
    + """
redis.call('ZREM', KEYS[2], ARGV[4])
local tps, tpm, used = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
if tps and used > 0 then store(KEYS[1], level_at(KEYS[1], tps, tpm) - used, tps, tpm) end
return 1
"""
)


@dataclass(slots=True)
class _Outage:
    retry_at: float  # when Redis is asked again
    since: float
    local: int = 0  # acquires decided by this replica alone meanwhile


class RedisLimiter:
    """`Limiter` on one Redis server; replicas sharing `prefix` share every key's limits.

    When Redis fails or is slower than `timeout_s` (counting the wait for one of
    `max_connections` connections), requests are limited by this
    replica alone (a `LocalLimiter`) for `retry_s`, then Redis is asked again.
    Failing closed would turn a Redis blip into an outage of the whole gateway;
    failing open to no limits would hand a hostile client everything while it
    lasts. Failed over, a key gets at most its limits on each replica. The
    failover and the return are logged, the return with how many requests were
    decided locally. A release that fails counts as Redis failing and is
    dropped: its slot frees at the end of its lease, its tokens go uncharged.

    `clock` (monotonic seconds) drives only the failover and its local limits;
    the limits in Redis run on Redis's clock.
    A client passed in keeps its own timeouts and retries, and stays the caller's to close.
    """

    def __init__(
        self,
        url_or_client: str | redis.Redis,
        prefix: str = "rollgate",
        clock: Clock = time.monotonic,
        *,
        lease_s: float = LEASE_S,
        timeout_s: float = TIMEOUT_S,
        retry_s: float = RETRY_S,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        if isinstance(url_or_client, str):
            pool = redis.BlockingConnectionPool.from_url(
                url_or_client,
                max_connections=max_connections,
                timeout=timeout_s,  # waiting for a free connection
                socket_timeout=timeout_s,
                socket_connect_timeout=timeout_s,
                # No retries: a retry doubles the wait of a request that can be decided locally.
                retry=Retry(NoBackoff(), 0),
            )
            self._redis = redis.Redis.from_pool(pool)
        else:
            self._redis = url_or_client
        self._owned = isinstance(url_or_client, str)
        self._prefix = prefix
        self._clock = clock
        self._lease_ms = max(1, round(lease_s * 1000))
        self._retry_s = retry_s
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)
        self._local = LocalLimiter(clock)
        self._outage: _Outage | None = None
        self._releases: set[asyncio.Task[None]] = set()
        self._replica = secrets.token_hex(6)  # permit ids: unique across replicas
        self._permits = itertools.count()

    async def acquire(self, key_id: str, limits: Limits) -> Permit:
        if limits.unlimited:
            return UNCOUNTED
        outage = self._outage
        if outage is not None:
            now = self._clock()
            if now < outage.retry_at:
                return await self._acquire_locally(outage, key_id, limits)
            outage.retry_at = now + self._retry_s  # this request asks Redis; the rest stay local
        keys = self._keys(key_id)
        permit_id = f"{self._replica}:{next(self._permits)}" if limits.concurrent else ""
        try:
            refused, retry = await self._acquire(keys, self._acquire_args(limits, permit_id))
        except RedisError as exc:
            return await self._acquire_locally(self._failed(exc), key_id, limits)
        if outage is not None and outage is self._outage:
            self._recovered(outage)
        if refused:
            raise rate_limited(REFUSALS[refused - 1], float(retry), limits)
        return _RedisPermit(self, keys, limits, permit_id) if limits.settles else UNCOUNTED

    @property
    def failed_over(self) -> bool:
        """Whether requests are limited per replica now, Redis having failed."""
        return self._outage is not None

    async def close(self) -> None:
        await asyncio.gather(*self._releases, return_exceptions=True)
        await self._local.close()
        if self._owned:
            await self._redis.aclose()

    def _acquire_args(self, limits: Limits, permit_id: str) -> list[str | float | int]:
        rps, tpm = limits.requests_per_s, limits.tokens_per_min
        return [
            rps or "",
            limits.capacity if rps else "",
            limits.tokens_per_s if tpm else "",
            tpm or "",
            limits.concurrent or "",
            permit_id,
            self._lease_ms,
        ]

    def _release_later(
        self, keys: Sequence[str], limits: Limits, permit_id: str, tokens: int
    ) -> asyncio.Task[None]:
        """The release as a task of its own, held here: cancelling the request that
        awaits it (a client gone) must not leave the slot held until its lease ends."""
        task = asyncio.ensure_future(self._settle(keys, limits, permit_id, tokens))
        self._releases.add(task)
        task.add_done_callback(self._releases.discard)
        return task

    async def _settle(
        self, keys: Sequence[str], limits: Limits, permit_id: str, tokens: int
    ) -> None:
        tpm = limits.tokens_per_min
        args = [limits.tokens_per_s if tpm else "", tpm or "", max(0, tokens), permit_id]
        try:
            await self._release(keys[1:], args)
        except RedisError as exc:
            self._failed(exc)

    async def _acquire_locally(self, outage: _Outage, key_id: str, limits: Limits) -> Permit:
        outage.local += 1
        return await self._local.acquire(key_id, limits)

    def _failed(self, exc: RedisError) -> _Outage:
        now = self._clock()
        if self._outage is None:
            log.warning("rate limits: redis failed (%s); limiting per replica meanwhile", exc)
            self._outage = _Outage(retry_at=now + self._retry_s, since=now)
        else:
            self._outage.retry_at = now + self._retry_s
        return self._outage

    def _recovered(self, outage: _Outage) -> None:
        log.warning(
            "rate limits: redis is back after %.1f s; %d requests were limited per replica",
            self._clock() - outage.since,
            outage.local,
        )
        self._outage = None

    def _keys(self, key_id: str) -> list[str]:
        base = f"{self._prefix}:limits:{{{key_id}}}"
        return [f"{base}:requests", f"{base}:tokens", f"{base}:in-flight"]


class _RedisPermit:
    __slots__ = ("_keys", "_limiter", "_limits", "_permit_id", "_released")

    def __init__(
        self, limiter: RedisLimiter, keys: Sequence[str], limits: Limits, permit_id: str
    ) -> None:
        self._limiter = limiter
        self._keys = keys
        self._limits = limits
        self._permit_id = permit_id
        self._released = False

    async def release(self, tokens: int) -> None:
        if self._released:
            return
        self._released = True
        if self._limits.concurrent is None and tokens <= 0:
            return  # no slot to free, nothing to charge
        task = self._limiter._release_later(self._keys, self._limits, self._permit_id, tokens)
        await asyncio.shield(task)
