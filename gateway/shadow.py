"""Shadow traffic: a sampled copy of a request goes to the candidate, off the hot path.

The client only ever sees stable's answer. Copies wait in a bounded queue
(when it is full the copy is dropped and counted); workers send them, wait for
stable's answer, compare the two and keep a capped, rotating sample of pairs
for blind review: A and B are shuffled and only the server knows which is which.
A reviewer's preference becomes a score for each variant (role `review`), which
the rollout's satisfaction check judges in the shadow phase; a reviewed pair
leaves the sample.

Stable's answers also tell whether a flagged candidate answer is the candidate's
doing (`gateway/attribution.py`): in shadow the pair's stable half is weighed
(`served_answer`); at weights stable is asked the same request again (`ask_again`).
The mirror starts and stops those rechecks with its own workers.
"""

from __future__ import annotations

import asyncio
import logging
import random
import uuid
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from gateway.attribution import AskStable, StableRecheck
from gateway.body import ChatBody
from gateway.compare import compare
from gateway.errors import UpstreamError
from gateway.exchange import Clock, Exchange, Outcome
from gateway.forward import Attempt, exchange_whole
from gateway.pool import BackendPool
from gateway.recorder import Recorder
from rollout.source import REVIEW_ROLE
from rollout.tenants import REVIEW_TENANT
from rollout.traffic import Role, Variant

log = logging.getLogger("rollgate.shadow")

Preference = Literal["a", "b", "same"]


@dataclass(slots=True)
class ShadowJob:
    request_id: str
    route: str
    attempt: Attempt
    messages: Any  # the prompt, kept only in the review sample (admin-only)
    stable: asyncio.Future[Exchange | None] = field(default_factory=asyncio.Future)


@dataclass(frozen=True, slots=True)
class BlindPair:
    pair_id: str
    route: str
    messages: Any
    answer_a: str
    answer_b: str
    # Never leave the server: a reviewer who knew them could no longer judge blind.
    a_is_candidate: bool
    candidate: str  # variant names
    stable: str

    def scores(self, preferred: Preference) -> tuple[tuple[str, float], tuple[str, float]]:
        """(variant, score) for candidate and stable: the preferred answer 1, the other 0."""
        if preferred == "same":
            return (self.candidate, 0.5), (self.stable, 0.5)
        candidate_won = (preferred == "a") == self.a_is_candidate
        won, lost = (1.0, 0.0) if candidate_won else (0.0, 1.0)
        return (self.candidate, won), (self.stable, lost)

    def public(self) -> dict[str, Any]:
        return {
            "pair_id": self.pair_id,
            "route": self.route,
            "messages": self.messages,
            "a": self.answer_a,
            "b": self.answer_b,
        }


class PairSample:
    """The latest `capacity` pairs; older ones rotate out."""

    def __init__(self, capacity: int, rng: random.Random) -> None:
        self._pairs: OrderedDict[str, BlindPair] = OrderedDict()
        self._capacity = capacity
        self._rng = rng

    def add(self, route: str, messages: Any, stable: Exchange, candidate: Exchange) -> BlindPair:
        a_is_candidate = self._rng.random() < 0.5
        a, b = (candidate, stable) if a_is_candidate else (stable, candidate)
        pair = BlindPair(
            uuid.uuid4().hex, route, messages, a.text, b.text, a_is_candidate,
            candidate.variant, stable.variant,
        )  # fmt: skip
        self._pairs[pair.pair_id] = pair
        while len(self._pairs) > self._capacity:
            self._pairs.popitem(last=False)
        return pair

    def get(self, pair_id: str) -> BlindPair | None:
        return self._pairs.get(pair_id)

    def take(self, pair_id: str) -> BlindPair | None:
        """The pair, removed from the sample (each is reviewed once); None if not there."""
        return self._pairs.pop(pair_id, None)

    def list(self, route: str | None = None) -> list[BlindPair]:
        return [p for p in self._pairs.values() if route in (None, p.route)]


def served_answer(stable: asyncio.Future[Exchange | None]) -> AskStable:
    """Stable's answer to a mirrored request: the one the client was served."""

    async def ask() -> str | None:
        served = await asyncio.shield(stable)  # the shadow worker waits for it too
        return None if served is None else served.text

    return ask


def ask_again(
    stable: Variant, backends: Mapping[str, BackendPool], body: ChatBody, clock: Clock
) -> AskStable:
    """Stable's answer to the client's request, asked anew: whole, with `model` rewritten.

    Built per candidate request, it costs nothing until a flagged answer asks.
    The answer serves no one, so it is not recorded as stable's traffic.
    """

    async def ask() -> str | None:
        attempt = Attempt(
            stable, Role.STABLE, backends[stable.backend], body.for_shadow(stable.model)
        )
        x = Exchange("recheck", "", stable.name, Role.STABLE, clock())  # holds the answer only
        await exchange_whole(attempt, x, clock)
        return x.text if x.outcome is Outcome.OK else None

    return ask


class ShadowMirror:
    def __init__(
        self,
        *,
        recorder: Recorder,
        recheck: StableRecheck,
        pairs: PairSample,
        clock: Clock,
        queue_size: int,
        workers: int,
        stable_timeout: float,
    ) -> None:
        self._recorder = recorder
        self._recheck = recheck
        self.pairs = pairs
        self._clock = clock
        self._queue: asyncio.Queue[ShadowJob] = asyncio.Queue(maxsize=queue_size)
        self._workers = workers
        self._stable_timeout = stable_timeout
        self._tasks: list[asyncio.Task] = []

    def submit(self, job: ShadowJob) -> bool:
        try:
            self._queue.put_nowait(job)
        except asyncio.QueueFull:
            self._recorder.metrics.shadow_dropped.labels(job.route, "queue_full").inc()
            return False
        return True

    def review(self, pair_id: str, preferred: Preference) -> BlindPair | None:
        """Record a blind review as both variants' scores; None for a pair not in the sample."""
        pair = self.pairs.take(pair_id)
        if pair is not None:
            for variant, score in pair.scores(preferred):
                # Reviewers are admins: one fixed tenant, never capped.
                self._recorder.scored(pair.route, variant, REVIEW_ROLE, score, REVIEW_TENANT)
        return pair

    def start(self) -> None:
        self._tasks = [asyncio.create_task(self._work()) for _ in range(self._workers)]
        self._recheck.start()

    async def stop(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self._tasks = []
        # After the mirror's workers: what they flagged on the way out is still counted.
        await self._recheck.stop()

    async def _work(self) -> None:
        while True:
            job = await self._queue.get()
            try:
                await self._mirror(job)
            except Exception:  # one bad pair must not stop the worker
                log.exception("shadow comparison failed for request %s", job.request_id)
            finally:
                self._queue.task_done()

    async def _mirror(self, job: ShadowJob) -> None:
        variant = job.attempt.variant
        x = Exchange(
            job.request_id, job.route, variant.name, job.attempt.role, self._clock(), shadow=True
        )
        try:
            await exchange_whole(job.attempt, x, self._clock)
        except UpstreamError as error:
            x.finish(self._clock(), Outcome.ERROR, error.status, error.kind)
        self._recorder.asking(served_answer(job.stable)).finished(x)
        try:
            stable = await asyncio.wait_for(asyncio.shield(job.stable), self._stable_timeout)
        except TimeoutError:
            stable = None
        if stable is None:  # stable failed or the client left: nothing to compare with
            self._recorder.metrics.shadow_dropped.labels(job.route, "no_stable_answer").inc()
            return
        ok = x.outcome is Outcome.OK
        comparison = compare(stable.text, stable.duration, x.text if ok else None, x.duration)
        self._recorder.metrics.compared(job.route, variant.name, comparison)
        if ok:
            self.pairs.add(job.route, job.messages, stable, x)
