"""LoRA adapters kept loaded on every replica of a pool: the fleet the control plane steers.

vLLM loads an adapter into one process; a pool has many, and a restarted one
comes back with only what its command line names. So the gateway keeps, per
pool, the adapters the stored rollouts want (their candidates, in every phase
until the rollout is deleted: a rolled-back candidate stays for an instant
retry) and loads them wherever they are missing:

- before a rollout starts (`prepare`): on every available replica, or the
  rollout does not start and the error names the replicas that refused;
- when a probe finds a replica without one (it restarted, or discovery found
  a new one): loaded before that replica gets requests for it, because the
  balancer sends requests for a model only to replicas that list it;
- when the rollouts change (`follow`, awaited before the new routing is published).

And unloads: a promoted rollout's old stable once `unload_after_s` has passed
(None: never), and a deleted rollout's candidate at once, unless a route still
uses them. Only models the replicas list as adapters (with a parent) are unloaded.

It also answers the controller's capacity question from the pool's balancer.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import httpx

from gateway.exchange import Clock
from gateway.pool import BackendPool
from rollout.errors import AdapterUnavailable, InvalidPlan
from rollout.machine import Phase
from rollout.record import Rollout
from rollout.traffic import TrafficPlan
from serving.client import VllmClient
from serving.errors import InvalidAdapter, VllmRequestError
from serving.validation import BaseModelInfo, validate_adapter

log = logging.getLogger("rollgate.adapters")

MANAGEMENT_TIMEOUT_S = 60.0  # a large adapter on a busy GPU replica takes seconds to load
FOLLOW_WAIT_S = 5.0  # how long new routing waits for repairs before it is published anyway
RETIRE_CHECK_S = 1.0  # promotions age without a write to the store: how often to look
# After a failed repair, how long before a probe may start another on that replica: one
# that cannot load an adapter must not be asked again (and logged again) at every probe.
REPAIR_RETRY_S = 10.0
Key = tuple[str, str]  # (backend, model)


@dataclass(frozen=True, slots=True)
class AdapterCheck:
    """Validates adapters against the base before any replica sees them (`serving.validation`)."""

    base_dir: Path
    base_name: str
    max_lora_rank: int

    def __call__(self, model: str, adapter: str) -> None:
        base = BaseModelInfo.read(self.base_dir, self.base_name)
        try:
            validate_adapter(model, Path(adapter), base, max_lora_rank=self.max_lora_rank)
        except InvalidAdapter as exc:
            raise InvalidPlan(f"candidate.adapter: {exc}") from exc


class AdapterFleet:
    def __init__(
        self,
        pools: Mapping[str, BackendPool],
        clock: Clock,
        *,
        check: Callable[[str, str], None] | None = None,
        unload_after_s: float | None = None,
    ) -> None:
        self._pools = pools
        self._clock = clock
        self._check = check
        self._unload_after_s = unload_after_s
        self._wanted: dict[Key, str] = {}  # -> the adapter's path on the replicas
        # What rollouts have wanted while this gateway ran: unloaded once none does.
        self._ours: set[Key] = set()
        self._promoted_at: dict[str, float] = {}  # rollout id -> when first seen promoted
        self._retired: set[str] = set()  # promoted rollouts whose old stable was unloaded
        self._plan: TrafficPlan | None = None
        self._rollouts: Sequence[Rollout] = ()
        self._task: asyncio.Task[None] | None = None
        self._repairs: dict[tuple[str, str], asyncio.Task[None]] = {}  # (backend, address)
        self._repair_failed_at: dict[tuple[str, str], float] = {}
        self._closed = False

    def start(self) -> None:
        for pool in self._pools.values():
            pool.on_probed(lambda address, pool=pool: self._probed(pool, address))
        if self._unload_after_s is not None:
            self._task = asyncio.create_task(self._retire_when_due(), name="retire adapters")

    async def close(self) -> None:
        self._closed = True  # the pools probe until they are closed: start no more repairs
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
        for task in self._repairs.values():
            task.cancel()
        await asyncio.gather(*self._repairs.values(), return_exceptions=True)

    # --- the control plane's calls ------------------------------------------------------------

    async def prepare(self, backend: str, model: str, adapter: str) -> None:
        if self._check is not None:
            self._check(model, adapter)
        pool = self._pools[backend]
        targets = [r.address for r in pool.balancer.available()]
        if not targets:
            raise AdapterUnavailable(
                f"cannot load adapter {model!r}: no replica of pool {backend!r} takes requests "
                f"now ({len(pool.members)} members; GET /readyz shows why)"
            )
        results = await asyncio.gather(
            *(self._load(pool, a, model, adapter) for a in targets), return_exceptions=True
        )
        failed = [(a, r) for a, r in zip(targets, results, strict=True) if r is not None]
        if failed:
            if not self._in_use((backend, model)):
                # Undone everywhere: a replica whose answer timed out may have loaded it.
                await asyncio.gather(*(self._unload(pool, a, model) for a in targets))
            why = "; ".join(f"{a}: {_describe(e)}" for a, e in failed)
            raise AdapterUnavailable(
                f"adapter {model!r} could not be loaded on {len(failed)} of {len(targets)} "
                f"replicas of pool {backend!r}, so the rollout did not start: {why}"
            )
        self._ours.add((backend, model))

    async def follow(self, plan: TrafficPlan, rollouts: Sequence[Rollout]) -> None:
        before = set(self._wanted)
        self._wanted = {
            (r.plan.candidate.backend, r.plan.candidate.model): r.plan.candidate.adapter
            for r in rollouts
            if r.plan.candidate.adapter is not None
        }
        self._ours |= self._wanted.keys()
        self._plan, self._rollouts = plan, rollouts
        await self._unload_unused()
        if self._wanted.keys() <= before:
            return  # nothing newly wanted: routing away from an adapter never waits
        for pool in self._pools.values():
            for address in pool.members:
                self._probed(pool, address, retry=True)
        repairs = list(self._repairs.values())
        if repairs:
            await asyncio.wait(repairs, timeout=FOLLOW_WAIT_S)

    async def _unload_unused(self) -> None:
        """Unload the old stables whose time has come, and what this fleet loaded for
        rollouts that are gone; never anything a route or a rollout still uses."""
        now, plan = self._clock(), self._plan
        if plan is None:
            return
        ids = {r.rollout_id for r in self._rollouts}
        self._promoted_at = {k: v for k, v in self._promoted_at.items() if k in ids}
        drop = self._ours - set(self._wanted)
        for r in self._rollouts:
            if r.status.phase is not Phase.PROMOTED or self._unload_after_s is None:
                continue
            promoted_at = self._promoted_at.setdefault(r.rollout_id, now)
            if now - promoted_at >= self._unload_after_s and r.rollout_id not in self._retired:
                self._retired.add(r.rollout_id)
                drop.add((r.stable.backend, r.stable.model))
        self._retired &= ids
        drop = {key for key in drop if not self._in_use(key)}
        self._ours -= drop
        for backend, model in sorted(drop):
            pool = self._pools.get(backend)
            if pool is not None:
                await asyncio.gather(*(self._unload(pool, a, model) for a in pool.members))

    def _in_use(self, key: Key) -> bool:
        """A route serves it, or a stored rollout wants it."""
        if key in self._wanted:
            return True
        routes = self._plan.routes.values() if self._plan is not None else ()
        return any(
            (v.backend, v.model) == key for t in routes for v in (t.stable, t.candidate) if v
        )

    async def _retire_when_due(self) -> None:
        # Promotions age without any write to the store: look again every second.
        while True:
            await asyncio.sleep(RETIRE_CHECK_S)
            try:
                await self._unload_unused()
            except Exception:
                log.exception("unloading unused adapters failed")

    def no_headroom(self, backend: str) -> str | None:
        pool = self._pools.get(backend)
        return pool.balancer.no_headroom() if pool is not None else None

    # --- repairs -----------------------------------------------------------------------------

    def _probed(self, pool: BackendPool, address: str, retry: bool = False) -> None:
        """A replica was probed: repair it in the background when it lacks a wanted adapter
        (not again within REPAIR_RETRY_S of a failed repair, unless `retry`)."""
        if self._closed:
            return
        now = self._clock()
        replica = pool.balancer.replica(address)
        if replica is None or replica.blocker(None, now) is not None:
            return  # down replicas are repaired once they are back
        missing = [
            m
            for (b, m) in self._wanted
            # Unknown lists (a server without /v1/models) are left alone: nothing to compare.
            if b == pool.name and replica.models is not None and m not in replica.models
        ]
        key = (pool.name, address)
        failed_at = self._repair_failed_at.get(key)
        if not retry and failed_at is not None and now - failed_at < REPAIR_RETRY_S:
            return
        if missing and key not in self._repairs:
            task = asyncio.create_task(self._repair(pool, address), name=f"repair {address}")
            self._repairs[key] = task
            task.add_done_callback(lambda _: self._repairs.pop(key, None))

    async def _repair(self, pool: BackendPool, address: str) -> None:
        key = (pool.name, address)
        try:
            async with _vllm(pool, address) as client:
                listed = {m.id for m in await client.models()}
        except (httpx.HTTPError, VllmRequestError) as exc:
            log.warning("pool %s: cannot list the models of %s: %s", pool.name, address, exc)
            self._repair_failed_at[key] = self._clock()
            return
        pool.balancer.observe_models(address, listed)
        failed = False
        for (backend, model), adapter in list(self._wanted.items()):
            if backend == pool.name and model not in listed:
                error = await self._load(pool, address, model, adapter)
                if error is None:
                    log.info("pool %s: loaded %s on %s again", pool.name, model, address)
                else:
                    failed = True
                    log.warning(
                        "pool %s: %s still lacks %s (tried again in %g s): %s",
                        pool.name, address, model, REPAIR_RETRY_S, _describe(error),
                    )  # fmt: skip
        if failed:
            self._repair_failed_at[key] = self._clock()
        else:
            self._repair_failed_at.pop(key, None)

    # --- vLLM calls --------------------------------------------------------------------------

    async def _load(
        self, pool: BackendPool, address: str, model: str, adapter: str
    ) -> Exception | None:
        """Load and confirm through the replica's list (an adapter loaded meanwhile, by
        another gateway, counts); the balancer learns the new list at once."""
        try:
            async with _vllm(pool, address) as client:
                try:
                    await client.load_adapter(model, Path(adapter))
                    error: Exception | None = None
                except VllmRequestError as exc:
                    error = exc
                listed = {m.id for m in await client.models()}
        except (httpx.HTTPError, VllmRequestError) as exc:
            return exc
        pool.balancer.observe_models(address, listed)
        if model in listed:
            return None
        return error or RuntimeError("loaded, yet not listed")

    async def _unload(self, pool: BackendPool, address: str, model: str) -> None:
        try:
            async with _vllm(pool, address) as client:
                served = {m.id: m for m in await client.models()}
                if model in served and served[model].parent is not None:
                    await client.unload_adapter(model)
                    log.info("pool %s: unloaded %s from %s", pool.name, model, address)
                served.pop(model, None)
        except (httpx.HTTPError, VllmRequestError) as exc:
            log.warning("pool %s: cannot unload %s from %s: %s", pool.name, model, address, exc)
            return
        pool.balancer.observe_models(address, served)


@asynccontextmanager
async def _vllm(pool: BackendPool, address: str) -> AsyncIterator[VllmClient]:
    """A client for one management call: they are rare, and replicas come and go, so
    no connections are kept for addresses that may be gone tomorrow."""
    key = pool.spec.api_key()
    headers = {"authorization": f"Bearer {key}"} if key else {}
    async with httpx.AsyncClient(
        base_url=address, headers=headers, timeout=MANAGEMENT_TIMEOUT_S
    ) as http:
        yield VllmClient(http)


def _describe(error: BaseException) -> str:
    if isinstance(error, VllmRequestError):
        return f"{error.status}: {error.body[:200]}"
    return f"{type(error).__name__}: {error}"
