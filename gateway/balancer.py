"""Which replica of a variant's pool serves a request: the balancing decision, and only that.

Pure: no I/O, and no clock but the injected one. The gateway's edges feed the
balancer what they observe (active `/health` probes, `/v1/models` lists, vLLM's
`/metrics` scraped in the background, the outcome of every request) and the
hot path asks it for a replica, in O(replicas) with nothing awaited. Which
*variant* serves a user stays the sticky assignment's decision; the balancer
only picks a replica inside that variant's pool, so rebalancing never moves a
user between variants.

A replica is never picked when any of these holds:

- the request already tried it (`exclude`: a failure before the first byte is
  retried on another replica of the same variant before failing over);
- its probes do not say healthy (a new replica waits for its first good probe);
- it is ejected: `eject_after` failed requests in a row take it out for a
  cool-down that doubles with each ejection in a row, up to a cap (cut short
  when its probes saw it down and then back); back from one, a single failure
  ejects it again, and a success resets both the count and the doubling;
- its `/v1/models` list is known and lacks the requested model (base or adapter).

Among the rest, in order of preference:

1. known to serve the model, over not yet known;
2. headroom (waiting requests <= `max_waiting`, KV-cache use <= `max_kv_usage`)
   over none; load not yet scraped, or older than `load_ttl_s`, counts as headroom;
3. fewer requests in flight through this gateway;
4. still tied: round robin (one rotation per model), so equal replicas get equal shares.

When none can serve, `pick` answers None and `explain` says why; the caller
fails over to stable, or answers 503 for stable itself. There is no panic
routing to ejected replicas: each of them failed its last requests, a cool-down
lasts seconds, a candidate pool has stable behind it, and routing around the
ejections would hide a dead pool from `/readyz` and the failover metrics.

    >>> now = 0.0
    >>> pool = Balancer(["http://a:8000", "http://b:8000"], clock=lambda: now)
    >>> pool.pick("tiny-llama") is None  # nobody probed yet
    True
    >>> for address in pool.members:
    ...     pool.observe_health(address, ok=True)
    >>> pool.observe_models("http://a:8000", {"tiny-llama", "acme-voice"})
    >>> pool.observe_models("http://b:8000", {"tiny-llama"})
    >>> pool.pick("acme-voice").address
    'http://a:8000'
    >>> [pool.pick("tiny-llama").address for _ in range(3)]
    ['http://a:8000', 'http://b:8000', 'http://a:8000']
    >>> pool.explain("pirate")
    "no replica of pool 'pool' (2) can serve 'pirate': lacks the model: 2"
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection, Iterable
from dataclasses import dataclass, replace
from enum import StrEnum

from gateway.exchange import Clock

MAX_CURSORS = 256  # round-robin positions kept, one per model asked for


class Health(StrEnum):
    UNKNOWN = "unknown"  # not probed yet
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"


class Blocker(StrEnum):
    """Why a replica cannot take a request; the first that applies, in this order."""

    EXCLUDED = "already tried"
    UNPROBED = "not yet probed"
    UNHEALTHY = "unhealthy"
    EJECTED = "ejected"
    LACKS_MODEL = "lacks the model"


@dataclass(frozen=True, slots=True)
class BalancerConfig:
    eject_after: int = 3  # consecutive failed requests
    ejection_s: float = 10.0  # the first cool-down; doubles with each ejection in a row
    max_ejection_s: float = 300.0
    # A serving replica is marked unhealthy only after this many failed probes in
    # a row: vLLM's /health can miss one probe's timeout under load, and real
    # request failures are caught faster by passive ejection anyway.
    unhealthy_after: int = 2
    # vllm:num_requests_waiting. A few queued requests are normal under load;
    # a larger queue means the scheduler is out of batch slots or KV cache.
    max_waiting: float = 4
    max_kv_usage: float = 0.9  # vllm:kv_cache_usage_perc, a fraction despite its name
    # Metrics older than this are ignored: a scraper that stopped must not pin a
    # replica as busy (or idle) forever. About three missed scrapes at 5 s.
    load_ttl_s: float = 15.0

    def __post_init__(self) -> None:
        if self.eject_after < 1:
            raise ValueError("eject_after must be at least 1")
        if self.unhealthy_after < 1:
            raise ValueError("unhealthy_after must be at least 1")
        if not 0 < self.ejection_s <= self.max_ejection_s:
            raise ValueError("the cool-downs need 0 < ejection_s <= max_ejection_s")
        if self.max_waiting < 0:
            raise ValueError("max_waiting must not be negative")
        if not 0 < self.max_kv_usage <= 1:
            raise ValueError("max_kv_usage is a fraction in (0, 1]")
        if self.load_ttl_s <= 0:
            raise ValueError("load_ttl_s must be positive")

    def cooldown(self, ejections: int) -> float:
        """The cool-down of the `ejections`-th ejection in a row (1 = the first)."""
        # The exponent is bounded so that a replica failing for days cannot overflow a float.
        return min(self.ejection_s * 2.0 ** min(max(ejections - 1, 0), 32), self.max_ejection_s)


@dataclass(frozen=True, slots=True)
class Replica:
    """One replica as the balancer sees it. Immutable: snapshots can be handed out safely."""

    address: str
    in_flight: int = 0  # requests this gateway has started on it and not yet finished
    health: Health = Health.UNKNOWN
    failed_probes: int = 0  # in a row
    failures: int = 0  # failed requests in a row
    ejections: int = 0  # ejections in a row, each without a success between
    ejected_until: float | None = None
    models: frozenset[str] | None = None  # base and loaded adapters; None: not yet known
    waiting: float | None = None  # None: not yet known
    kv_usage: float | None = None
    load_at: float | None = None

    def ejected(self, now: float) -> bool:
        return self.ejected_until is not None and now < self.ejected_until

    def serves(self, model: str) -> bool | None:
        """Whether it serves `model`; None while its models are not known."""
        return None if self.models is None else model in self.models

    def load_fresh(self, now: float, config: BalancerConfig) -> bool:
        return self.load_at is not None and now - self.load_at <= config.load_ttl_s

    def headroom(self, now: float, config: BalancerConfig) -> bool:
        """Room for more by its own metrics; unknown or stale metrics do not count against it."""
        if not self.load_fresh(now, config):
            return True
        return (self.waiting is None or self.waiting <= config.max_waiting) and (
            self.kv_usage is None or self.kv_usage <= config.max_kv_usage
        )

    def blocker(self, model: str | None, now: float) -> Blocker | None:
        """Why it cannot serve `model` now (any model when None), or None when it can."""
        if self.health is not Health.HEALTHY:
            return Blocker.UNPROBED if self.health is Health.UNKNOWN else Blocker.UNHEALTHY
        if self.ejected(now):
            return Blocker.EJECTED
        if model is not None and self.models is not None and model not in self.models:
            return Blocker.LACKS_MODEL
        return None


class Balancer:
    """The replicas of one variant's pool and the choice among them.

    Replica addresses are opaque strings (the backend URLs). Reports about an
    address that is not a member (a probe or a request that outlived the
    replica's removal by discovery) are dropped.

    `pick` and `started` are separate so a caller can pick without sending;
    call `started` before the next `await`, or concurrent picks will not see
    the request and may all choose the same replica.
    """

    def __init__(
        self,
        addresses: Iterable[str],
        *,
        clock: Clock,
        config: BalancerConfig | None = None,
        name: str = "pool",
    ) -> None:
        self.name = name
        self.config = config or BalancerConfig()
        self._clock = clock
        self._replicas: dict[str, Replica] = {}
        self._order: tuple[str, ...] = ()
        # Where the round robin looks first, per model: a shared cursor would let
        # the picks for one model skew the turns of another (the replica after one
        # that lacks an adapter would get its turns too).
        self._next: dict[str, int] = {}
        self.ejections_total = 0  # for the pool's metrics
        self.set_members(addresses)

    # --- the hot path -----------------------------------------------------------------------

    def pick(self, model: str, exclude: Collection[str] = ()) -> Replica | None:
        """The replica to send a request for `model` to, or None when no replica can serve it."""
        now, config, order = self._clock(), self.config, self._order
        count = len(order)
        best: Replica | None = None
        best_key: tuple[bool, bool, int] | None = None
        best_at = 0
        start = self._next.get(model, 0)
        for step in range(count):
            at = (start + step) % count
            replica = self._replicas[order[at]]
            if replica.address in exclude or replica.blocker(model, now) is not None:
                continue
            key = (replica.models is None, not replica.headroom(now, config), replica.in_flight)
            # Strictly smaller: among equals the first from the cursor wins, which is
            # round robin once the cursor moves past it.
            if best_key is None or key < best_key:
                best, best_key, best_at = replica, key, at
        if best is not None:
            if len(self._next) >= MAX_CURSORS and model not in self._next:
                self._next.clear()  # only a tie-break: forgetting costs nothing
            self._next[model] = (best_at + 1) % count
        return best

    def started(self, address: str) -> None:
        replica = self._replicas.get(address)
        if replica is not None:
            self._replicas[address] = replace(replica, in_flight=replica.in_flight + 1)

    def finished(self, address: str, ok: bool) -> None:
        """A request started on `address` ended.

        `ok` says whether the *replica* worked: False for connect errors, timeouts
        and 5xx only. A client's 4xx is ok. So is a 404 for the model: the replica
        lacks it (refresh its models), which says nothing about its health.
        """
        replica = self._replicas.get(address)
        if replica is None:
            return
        now, config = self._clock(), self.config
        # Never below zero: a replica removed and re-added between a request's
        # start and end starts again from zero.
        in_flight = max(replica.in_flight - 1, 0)
        if replica.ejected(now):
            # The request was sent before the ejection: its outcome is old news.
            # Counting it would lengthen the cool-down twice for one incident.
            replica = replace(replica, in_flight=in_flight)
        elif ok:
            replica = replace(replica, in_flight=in_flight, failures=0, ejections=0)
        elif replica.failures + 1 < config.eject_after:
            replica = replace(replica, in_flight=in_flight, failures=replica.failures + 1)
        else:
            ejections = replica.ejections + 1
            self.ejections_total += 1
            replica = replace(
                replica,
                in_flight=in_flight,
                # Back from the cool-down it is on probation: one more failure ejects it
                # again (for twice as long); a success resets the count.
                failures=config.eject_after - 1,
                ejections=ejections,
                ejected_until=now + config.cooldown(ejections),
            )
        self._replicas[address] = replica

    # --- observations from the background -------------------------------------------------

    def observe_health(self, address: str, ok: bool) -> None:
        """The result of one active `/health` probe.

        A good probe after good probes does not lift a passive ejection: /health
        says the engine runs, the ejection says requests failed, and only the
        cool-down tells. A good probe after failed ones does: the replica was
        down and is back (a restarted vLLM is a new process), so its cool-down
        ends now rather than up to minutes after it could serve again. It
        returns on probation, as from a cool-down that ran out.
        """
        replica = self._replicas.get(address)
        if replica is None:
            return
        if ok:
            back = replica.failed_probes > 0 or replica.health is Health.UNHEALTHY
            if back and replica.ejected_until is not None:
                replica = replace(replica, ejected_until=None)
            replica = replace(replica, health=Health.HEALTHY, failed_probes=0)
        else:
            failed = replica.failed_probes + 1
            # A replica not yet admitted has nothing to lose: one failed probe is enough.
            keep = replica.health is Health.HEALTHY and failed < self.config.unhealthy_after
            health = Health.HEALTHY if keep else Health.UNHEALTHY
            replica = replace(replica, health=health, failed_probes=failed)
        self._replicas[address] = replica

    def observe_models(self, address: str, models: Iterable[str]) -> None:
        """What the replica's `/v1/models` lists: the base and the adapters loaded now.

        Kept until the next list, however old: forgetting it would make a replica
        that lacks an adapter eligible for it again.
        """
        replica = self._replicas.get(address)
        if replica is not None:
            self._replicas[address] = replace(replica, models=frozenset(models))

    def observe_load(self, address: str, waiting: float | None, kv_usage: float | None) -> None:
        """vLLM's `num_requests_waiting` and `kv_cache_usage_perc` (None: not in the scrape)."""
        replica = self._replicas.get(address)
        if replica is not None:
            self._replicas[address] = replace(
                replica, waiting=waiting, kv_usage=kv_usage, load_at=self._clock()
            )

    def set_members(self, addresses: Iterable[str]) -> None:
        """The pool's replicas now (a static list, or what discovery resolved).

        Replicas that stay keep their state (in-flight count, health, ejection,
        models, load); removed ones are forgotten; new ones start unprobed.

        A new replica takes traffic only once a probe says healthy, not at once:
        discovery sees a vLLM pod as soon as it has an address, which is minutes
        before it has loaded its weights. Sending it requests then would fail
        them (retries, latency) and feed passive ejection with failures that say
        nothing; waiting costs one probe interval of capacity.
        """
        order = tuple(dict.fromkeys(addresses))
        known = self._replicas
        self._replicas = {a: known[a] if a in known else Replica(a) for a in order}
        self._order = order

    # --- views --------------------------------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        return self._order

    def replica(self, address: str) -> Replica | None:
        return self._replicas.get(address)

    def replicas(self) -> tuple[Replica, ...]:
        return tuple(self._replicas[a] for a in self._order)

    def available(self) -> tuple[Replica, ...]:
        """The replicas that take requests now (for some model)."""
        now = self._clock()
        return tuple(r for r in self.replicas() if r.blocker(None, now) is None)

    def no_headroom(self) -> str | None:
        """Why the pool should take no more load now, or None when it can.

        Room means at least half of the replicas that take requests have
        headroom by their own metrics (queue and KV cache): below that, the
        pool as a whole is near its limits and a higher weight for an adapter
        that shares it would push it over.
        """
        now, config = self._clock(), self.config
        available = self.available()
        if not available:
            return f"pool {self.name!r} has no replica taking requests"
        roomy = sum(1 for r in available if r.headroom(now, config))
        if 2 * roomy >= len(available):
            return None
        return (
            f"pool {self.name!r} is near its limits: {len(available) - roomy} of "
            f"{len(available)} replicas have more than {config.max_waiting:g} requests "
            f"waiting or more than {config.max_kv_usage:.0%} of their KV cache in use"
        )

    def explain(self, model: str, exclude: Collection[str] = ()) -> str:
        """Why `pick(model, exclude)` finds no replica, for the failover's log and error."""
        if not self._order:
            return f"pool {self.name!r} has no replicas"
        now = self._clock()
        counts = Counter(
            Blocker.EXCLUDED if r.address in exclude else r.blocker(model, now)
            for r in self.replicas()
        )
        if counts[None]:
            return f"{counts[None]} of {len(self._order)} replicas of {self.name!r} can serve"
        reasons = ", ".join(f"{b.value}: {counts[b]}" for b in Blocker if counts[b])
        return (
            f"no replica of pool {self.name!r} ({len(self._order)}) can serve {model!r}: {reasons}"
        )

    def summary(self) -> dict[str, object]:
        """JSON-ready state of the pool, for /readyz and the console."""
        now, config = self._clock(), self.config
        replicas = []
        for r in self.replicas():
            blocker = r.blocker(None, now)
            fresh = r.load_fresh(now, config)
            left = r.ejected_until - now if r.ejected_until is not None else 0.0
            replicas.append({
                "address": r.address,
                "state": blocker.value if blocker else "available",
                "in_flight": r.in_flight,
                "failures": r.failures,
                "ejected_for_s": round(left, 3) if left > 0 else None,
                "models": sorted(r.models) if r.models is not None else None,
                "waiting": r.waiting if fresh else None,
                "kv_usage": r.kv_usage if fresh else None,
                "headroom": r.headroom(now, config),
            })  # fmt: skip
        available = sum(1 for r in replicas if r["state"] == "available")
        return {
            "pool": self.name,
            "ready": available > 0,
            "available": available,
            "members": len(replicas),
            "replicas": replicas,
        }
