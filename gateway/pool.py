"""A backend: the pool of vLLM replicas behind a variant, and sending a request to one of them.

`BackendPool` puts the edges around the pure `Balancer`: one keep-alive
`Endpoint` per replica, a background task that discovers the replicas (static
list or DNS) and probes each of them, and `post`, which picks a replica and,
when it fails before answering, tries another replica of the same pool.

Retried on another replica: connect failures, a connection lost before the
response head, 5xx, and 404 (that replica lacks the model: its model list is
corrected at once and re-read). Not retried: a timeout, because the replica may
still be working on the request and a retry would double both the client's
wait and the load on a pool that is already slow. The caller
(`gateway.forward`) fails a candidate over to stable after the pool gives up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress

from gateway.balancer import Balancer
from gateway.discovery import Resolver, discover, resolve_dns
from gateway.errors import BadUpstream, UpstreamDown, UpstreamError, UpstreamTimeout
from gateway.exchange import Clock
from gateway.probe import probe
from gateway.routes import BackendSpec
from gateway.upstream import Endpoint, Reply, Timeouts

log = logging.getLogger("rollgate.pool")

MAX_TRIES = 3  # replicas one request may try: enough to get past a dying one or two
RESOLVE_TIMEOUT_S = 5.0


class BackendPool:
    def __init__(
        self,
        name: str,
        spec: BackendSpec,
        timeouts: Timeouts,
        *,
        clock: Clock,
        resolver: Resolver = resolve_dns,
        max_tries: int = MAX_TRIES,
    ) -> None:
        self.name = name
        self.spec = spec
        self.balancer = Balancer((), clock=clock, config=spec.balancing.config(), name=name)
        self.retries = 0  # requests sent to a second (third...) replica, for the metrics
        self._timeouts = timeouts
        self._clock = clock
        self._resolver = resolver
        self._max_tries = max_tries
        self._endpoints: dict[str, Endpoint] = {}
        self._resolved_at: float | None = None
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[str], None]] = []

    def __repr__(self) -> str:
        return f"BackendPool({self.name!r}, {len(self._endpoints)} replicas)"

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self) -> None:
        """Find and probe the replicas once, so the first requests find them; then keep watching."""
        await self.refresh()
        self._task = asyncio.create_task(self._watch(), name=f"pool {self.name}")

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        for endpoint in self._endpoints.values():
            endpoint.close()
        self._endpoints.clear()

    def on_probed(self, listener: Callable[[str], None]) -> None:
        """Call `listener(address)` after each probe of a replica (the adapter reconciler)."""
        self._listeners.append(listener)

    # --- the request path -----------------------------------------------------------------------

    @asynccontextmanager
    async def post(self, path: str, body: bytes, model: str) -> AsyncIterator[Reply]:
        """POST to a replica that serves `model`; yields its reply (any 4xx but 404 included).

        Raises `UpstreamError` when no replica answered; a failure while the body
        is read (raised inside the block) counts against the replica too.
        """
        reply, address = await self._send(path, body, model)
        failed = False
        try:
            yield reply
        except UpstreamError:
            failed = True
            raise
        finally:
            reply.release()
            self.balancer.finished(address, ok=not failed)

    async def _send(self, path: str, body: bytes, model: str) -> tuple[Reply, str]:
        tried: list[str] = []
        error: UpstreamError | None = None
        while len(tried) < self._max_tries:
            replica = self.balancer.pick(model, tried)
            if replica is None:
                break
            address = replica.address
            self.balancer.started(address)  # before the await: concurrent picks see it
            if tried:
                self.retries += 1
            tried.append(address)
            try:
                return await self._endpoints[address].send(path, body), address
            except UpstreamError as exc:
                lacks_model = isinstance(exc, BadUpstream) and exc.upstream_status == 404
                ejections = self.balancer.ejections_total
                # A 404 says the replica lacks the model, not that it is broken.
                self.balancer.finished(address, ok=lacks_model)
                if lacks_model:
                    self._forget_model(address, model)
                # One line per ejection, not one per failed request of a dead replica.
                if self.balancer.ejections_total > ejections:
                    log.warning("pool %s: %s ejected: %s", self.name, address, exc.message)
                if isinstance(exc, UpstreamTimeout):
                    raise
                error = exc
            except BaseException:
                self.balancer.finished(address, ok=True)  # cancelled: not the replica's doing
                raise
        if error is not None:
            raise error
        raise UpstreamDown(self.balancer.explain(model, tried))

    def _forget_model(self, address: str, model: str) -> None:
        replica = self.balancer.replica(address)
        if replica is not None and replica.models is not None:
            self.balancer.observe_models(address, replica.models - {model})
        self._wake.set()  # and read its list again soon

    # --- the background ---------------------------------------------------------------------------

    async def _watch(self) -> None:
        while True:
            with suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.spec.probe_interval_s)
            self._wake.clear()
            try:
                await self.refresh()
            except Exception:
                log.exception("pool %s: refresh failed", self.name)

    async def refresh(self) -> None:
        """Discover the replicas (when due), then probe every one of them."""
        await self._discover()
        addresses = list(self._endpoints)
        probes = await asyncio.gather(
            *(probe(self._endpoints[a], self.spec.probe_timeout_s) for a in addresses)
        )
        for address, result in zip(addresses, probes, strict=True):
            if result.models is not None:
                self.balancer.observe_models(address, result.models)
            if result.has_load:
                self.balancer.observe_load(address, result.waiting, result.kv_usage)
            self.balancer.observe_health(address, result.healthy)
            for listener in self._listeners:
                listener(address)

    async def _discover(self) -> None:
        urls = self.spec.static_urls()
        if urls is None:
            now = self._clock()
            due = self._resolved_at is None or (
                now - self._resolved_at >= self.spec.resolve_interval_s
            )
            if not due:
                return
            assert self.spec.dns is not None
            try:
                # Bounded: a resolver that hangs would stall this pool's probes too.
                async with asyncio.timeout(RESOLVE_TIMEOUT_S):
                    urls = await discover(self.spec.dns, self._resolver)
            except OSError as exc:  # TimeoutError included
                # A DNS blip must not empty the pool: keep the replicas known so far.
                log.warning("pool %s: cannot resolve %s: %s", self.name, self.spec.dns, exc)
                return
            self._resolved_at = now
        self._set_members(urls)

    def _set_members(self, urls: list[str]) -> None:
        # Nothing awaited: a request never picks a replica whose endpoint is gone.
        if list(self._endpoints) == urls:
            return
        added = [u for u in urls if u not in self._endpoints]
        removed = [u for u in self._endpoints if u not in urls]
        for url in added:
            endpoint = Endpoint(self.name, url, self._timeouts, self.spec.api_key())
            endpoint.start()
            self._endpoints[url] = endpoint
        for url in removed:
            self._endpoints.pop(url).close()
        self._endpoints = {u: self._endpoints[u] for u in urls}
        self.balancer.set_members(urls)
        if added or removed:
            log.info("pool %s: replicas now %s", self.name, ", ".join(urls) or "(none)")

    # --- views ---------------------------------------------------------------------------------

    @property
    def members(self) -> tuple[str, ...]:
        return self.balancer.members
