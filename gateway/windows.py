"""The gateway's own metric windows, for the embedded controller (no Prometheus).

`LocalWindows` is an `ExchangeSink` (the `Recorder` feeds it every finished
attempt, every attributed safety incident and every user's score, by tenant) and
a `MetricSource` (the controller reads it):

    windows = LocalWindows()
    app = create_app(settings, routes, sinks=[windows])
    ...
    await windows.window("support", "support-v2", "candidate", now - 60, now)

It keeps one tally per second per (route, variant, role), for an hour. Second
`s` holds what happened in (s - 1, s], and a window (start, end] sums the seconds
with start < s <= end: windows that meet at an edge count everything once, and a
window that ends now reads only seconds that are over. Histograms have the
gateway's bucket bounds, the shape Prometheus gives for the same traffic.
"""

from __future__ import annotations

import bisect
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from gateway.exchange import Exchange, Outcome
from gateway.metrics import LATENCY_BUCKETS, PER_TOKEN_BUCKETS
from rollout.source import IncidentCause, SourceUnavailable
from rollout.tenants import TenantScores, merge
from rollout.windows import Histogram, VariantWindow

RETENTION_S = 3600

Key = tuple[str, str, str]  # route, variant, role
Sparse = dict[int, int]  # bucket index -> count: a second sees few of the buckets


@dataclass(slots=True)
class _Second:
    requests: int = 0
    errors: int = 0
    latency: Sparse = field(default_factory=dict)
    ttft: Sparse = field(default_factory=dict)
    time_per_token: Sparse = field(default_factory=dict)
    feedback_count: int = 0
    feedback_sum: float = 0.0
    feedback_tenants: dict[str, TenantScores] = field(default_factory=dict)
    incidents: int = 0
    prompt_incidents: int = 0


def _observe(counts: Sparse, bounds: Sequence[float], value: float) -> None:
    i = bisect.bisect_left(bounds, value)  # upper-inclusive, like Prometheus' `le`
    counts[i] = counts.get(i, 0) + 1


def _histogram(bounds: Sequence[float], seconds: Iterable[Sparse]) -> Histogram:
    counts = [0.0] * (len(bounds) + 1)
    for sparse in seconds:
        for i, n in sparse.items():
            counts[i] += n
    return Histogram(tuple(bounds), tuple(counts))


def _between(by_second: dict[int, _Second], start: float, end: float) -> list[_Second]:
    """The tallies of the seconds s with start < s <= end."""
    if end - start < len(by_second):
        # A chart's short interval in a long history: look up its few seconds.
        seconds = range(math.floor(start) + 1, math.floor(end) + 1)
        return [tally for s in seconds if (tally := by_second.get(s)) is not None]
    return [tally for s, tally in by_second.items() if start < s <= end]


class LocalWindows:
    """What each variant did, second by second; `clock` is wall-clock epoch seconds.

    Not thread-safe: the gateway's event loop both records and reads.
    """

    def __init__(
        self, clock: Callable[[], float] = time.time, retention: float = RETENTION_S
    ) -> None:
        self._clock = clock
        self._retention = retention
        self._seconds: dict[Key, dict[int, _Second]] = {}
        self._newest = -math.inf

    def record(self, exchange: Exchange) -> None:
        x = exchange
        if x.outcome not in (Outcome.OK, Outcome.ERROR):
            return  # client errors and cancellations say nothing about the variant
        tally = self._now((x.route, x.variant, x.role_label))
        tally.requests += 1
        if x.outcome is Outcome.ERROR:
            tally.errors += 1
            return
        _observe(tally.latency, LATENCY_BUCKETS, x.duration)
        if x.time_to_first_token is not None:
            _observe(tally.ttft, LATENCY_BUCKETS, x.time_to_first_token)
        if x.output_tokens:
            _observe(tally.time_per_token, PER_TOKEN_BUCKETS, x.duration / x.output_tokens)

    def incident(self, exchange: Exchange, cause: IncidentCause) -> None:
        tally = self._now((exchange.route, exchange.variant, exchange.role_label))
        if cause is IncidentCause.PROMPT:
            tally.prompt_incidents += 1
        else:
            tally.incidents += 1

    def scored(self, route: str, variant: str, role: str, score: float, tenant: str) -> None:
        tally = self._now((route, variant, role))
        tally.feedback_count += 1
        tally.feedback_sum += score
        before = tally.feedback_tenants.get(tenant) or TenantScores(tenant, 0.0, 0.0)
        tally.feedback_tenants[tenant] = TenantScores(
            tenant, before.count + 1, before.total + score
        )

    async def window(
        self, route: str, variant: str, role: str, start: float, end: float
    ) -> VariantWindow:
        seconds = _between(self._seconds.get((route, variant, role), {}), start, end)
        return VariantWindow(
            requests=float(sum(t.requests for t in seconds)),
            errors=float(sum(t.errors for t in seconds)),
            latency=_histogram(LATENCY_BUCKETS, (t.latency for t in seconds)),
            ttft=_histogram(LATENCY_BUCKETS, (t.ttft for t in seconds)),
            time_per_token=_histogram(PER_TOKEN_BUCKETS, (t.time_per_token for t in seconds)),
            feedback_count=float(sum(t.feedback_count for t in seconds)),
            feedback_sum=sum(t.feedback_sum for t in seconds),
            feedback_tenants=merge(*(t.feedback_tenants.values() for t in seconds)),
            incidents=float(sum(t.incidents for t in seconds)),
            prompt_incidents=float(sum(t.prompt_incidents for t in seconds)),
        )

    async def value(self, query: str, at: float) -> float | None:
        raise SourceUnavailable("the local source cannot evaluate PromQL; use Prometheus")

    async def close(self) -> None:
        """Nothing to release: the windows live in this process."""

    def _now(self, key: Key) -> _Second:
        second = math.ceil(self._clock())
        if second > self._newest:
            self._newest = second
            self._forget(second - self._retention)
        by_second = self._seconds.setdefault(key, {})
        tally = by_second.get(second)
        if tally is None:
            tally = by_second[second] = _Second()
        return tally

    def _forget(self, horizon: float) -> None:
        """Drop the seconds at or before `horizon`, oldest first in each key's insertion order.

        After a wall clock steps back a few seconds stand out of order; they go
        once the seconds ahead of them do, so memory stays bounded.
        """
        for key in list(self._seconds):
            by_second = self._seconds[key]
            while by_second and (oldest := next(iter(by_second))) <= horizon:
                del by_second[oldest]
            if not by_second:
                del self._seconds[key]
