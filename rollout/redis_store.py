"""The shared rollout store for several gateway replicas: Redis.

    >>> store = RedisStore("redis://redis:6379/0")
    >>> stored = await store.put(rollout, events)   # revision 0: the route must be new
    >>> await store.changes()                        # what replicas poll
    1

Keys, under `prefix`:

    {prefix}:rollout:{route}   hash: json, revision
    {prefix}:events:{route}    list of audit events, oldest first, the last MAX_EVENTS
    {prefix}:routes            set of routes with a rollout
    {prefix}:changes           counter, incremented by every put and delete
    {prefix}:lease             the controller lease's holder, expiring with its time to live

Every write is one Lua script, so the revision check, the write, the events and
the counter happen together or not at all, whichever replica runs first.
Records are written and parsed in a worker thread: the event loop serves
requests meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace

import redis.asyncio as redis
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialBackoff
from redis.exceptions import RedisError

from rollout.machine import AuditEvent
from rollout.record import Rollout, event_from_json, event_to_json
from rollout.store import Conflict, LeaseLost, Listing, StoreError, read_listing, read_rollout

MAX_EVENTS = 10_000  # per route; older events are trimmed
TIMEOUT_S = 2.0
RETRIES = 2  # then fail: the controller tries again on its next tick anyway

# KEYS: rollout, events, routes, changes, lease. ARGV: expected revision, json, route,
# fence (the lease holder the write needs, or ""), events... Returns the revision it found
# (the write happened if that is the expected one), or -1 when the fence's lease is gone.
_PUT = f"""
if ARGV[4] ~= '' and redis.call('GET', KEYS[5]) ~= ARGV[4] then return -1 end
local stored = tonumber(redis.call('HGET', KEYS[1], 'revision') or '0')
if stored ~= tonumber(ARGV[1]) then return stored end
redis.call('HSET', KEYS[1], 'json', ARGV[2], 'revision', stored + 1)
redis.call('SADD', KEYS[3], ARGV[3])
for i = 5, #ARGV do redis.call('RPUSH', KEYS[2], ARGV[i]) end
redis.call('LTRIM', KEYS[2], -{MAX_EVENTS}, -1)
redis.call('INCR', KEYS[4])
return stored
"""

# KEYS: rollout, routes, changes, events. ARGV: expected revision, route, events...
_DELETE = f"""
if redis.call('HGET', KEYS[1], 'revision') ~= ARGV[1] then return 0 end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[2])
for i = 3, #ARGV do redis.call('RPUSH', KEYS[4], ARGV[i]) end
redis.call('LTRIM', KEYS[4], -{MAX_EVENTS}, -1)
redis.call('INCR', KEYS[3])
return 1
"""

# KEYS: lease. ARGV: holder, ttl in milliseconds. Takes a free lease or renews our own.
_ACQUIRE = """
local holder = redis.call('GET', KEYS[1])
if holder == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
if holder then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
"""

# KEYS: lease. ARGV: holder.
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class RedisStore:
    """`RolloutStore` and `Lease` on one Redis server; replicas sharing `prefix` share state."""

    def __init__(self, url: str, prefix: str = "rollgate") -> None:
        self._prefix = prefix
        self._redis = redis.Redis.from_url(
            url,
            socket_timeout=TIMEOUT_S,
            socket_connect_timeout=TIMEOUT_S,
            retry=Retry(ExponentialBackoff(cap=0.5, base=0.05), RETRIES),
        )
        self._put = self._redis.register_script(_PUT)
        self._delete = self._redis.register_script(_DELETE)
        self._acquire = self._redis.register_script(_ACQUIRE)
        self._release = self._redis.register_script(_RELEASE)

    async def get(self, route: str) -> Rollout | None:
        with _translated():
            json, revision = await self._redis.hmget(
                self._key("rollout", route), "json", "revision"
            )
        if json is None:
            return None
        return await asyncio.to_thread(read_rollout, route, _revision(revision), json)

    async def list(self) -> Listing:
        with _translated():
            routes = sorted(r.decode() for r in await self._redis.smembers(self._key("routes")))
            async with self._redis.pipeline(transaction=True) as pipe:
                for route in routes:
                    pipe.hmget(self._key("rollout", route), "json", "revision")
                found = await pipe.execute()
        rows = [
            (route, _revision(revision), json)
            for route, (json, revision) in zip(routes, found, strict=True)
            # A route deleted between the two reads has no json left: it is gone, not an error.
            if json is not None
        ]
        return await asyncio.to_thread(read_listing, rows)

    async def put(
        self, rollout: Rollout, events: Sequence[AuditEvent] = (), *, fence: str | None = None
    ) -> Rollout:
        stored = replace(rollout, revision=rollout.revision + 1)
        data = await asyncio.to_thread(stored.to_json)
        route = rollout.route
        keys = [
            self._key("rollout", route),
            self._key("events", route),
            self._key("routes"),
            self._key("changes"),
            self._key("lease"),
        ]
        events_json = map(event_to_json, events)
        args = [rollout.revision, data, route, fence or "", *events_json]
        with _translated():
            found = await self._put(keys, args)
        if found == -1:
            raise LeaseLost(f"{fence} no longer holds the controller lease")
        if found != rollout.revision:
            raise Conflict(f"route {route!r} is at revision {found}, not {rollout.revision}")
        return stored

    async def delete(self, route: str, revision: int, events: Sequence[AuditEvent] = ()) -> None:
        keys = [
            self._key("rollout", route),
            self._key("routes"),
            self._key("changes"),
            self._key("events", route),
        ]
        with _translated():
            deleted = await self._delete(
                keys, [revision, route, *(event_to_json(e) for e in events)]
            )
        if not deleted:
            raise Conflict(f"route {route!r} is not at revision {revision}")

    async def history(self, route: str, limit: int = 100) -> list[AuditEvent]:
        if limit <= 0:
            return []  # LRANGE -0 -1 would read the whole list
        with _translated():
            found = await self._redis.lrange(self._key("events", route), -limit, -1)
        return await asyncio.to_thread(lambda: [event_from_json(json) for json in found])

    async def changes(self) -> int:
        with _translated():
            value = await self._redis.get(self._key("changes"))
        return int(value or 0)

    async def acquire(self, holder: str, ttl_s: float) -> bool:
        ttl_ms = max(1, round(ttl_s * 1000))
        with _translated():
            return bool(await self._acquire([self._key("lease")], [holder, ttl_ms]))

    async def release(self, holder: str) -> None:
        with _translated():
            await self._release([self._key("lease")], [holder])

    async def close(self) -> None:
        with _translated():
            await self._redis.aclose()

    def _key(self, *parts: str) -> str:
        return ":".join((self._prefix, *parts))


def _revision(stored: bytes | None) -> int:
    """The hash's revision; 0 when it is no number (a hash made by hand)."""
    return int(stored) if stored is not None and stored.isdigit() else 0


@contextmanager
def _translated() -> Iterator[None]:
    """Redis's errors (refused, timed out, script failed) become `StoreError` here only."""
    try:
        yield
    except RedisError as exc:
        raise StoreError(f"redis rollout store: {exc}") from exc
