"""What one variant did in one time window: the facts every check is judged on.

Both metric sources (Prometheus and the gateway's own windows) answer with a
`VariantWindow`, and latencies come as histograms with the gateway's bucket
bounds, so a check sees the same shape of data from either.

    >>> h = Histogram.of((1.0, 2.0), [0.5, 1.5, 1.5, 3.0])
    >>> h.counts, h.quantile(0.5)
    ((1.0, 2.0, 1.0), 1.5)
"""

from __future__ import annotations

import bisect
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from rollout.tenants import TenantScores, merge


@dataclass(frozen=True, slots=True)
class Histogram:
    """Counts per bucket: `counts[i]` lies in (bounds[i-1], bounds[i]]; the last is above all.

    Counts are floats because Prometheus' `increase()` extrapolates.
    """

    bounds: tuple[float, ...] = ()
    counts: tuple[float, ...] = (0.0,)

    def __post_init__(self) -> None:
        if len(self.counts) != len(self.bounds) + 1:
            raise ValueError("a histogram needs one count per bound plus one above them")

    @classmethod
    def of(cls, bounds: Sequence[float], values: Iterable[float]) -> Histogram:
        counts = [0.0] * (len(bounds) + 1)
        for value in values:
            counts[bisect.bisect_left(bounds, value)] += 1
        return cls(tuple(bounds), tuple(counts))

    @classmethod
    def from_cumulative(cls, buckets: Sequence[tuple[float, float]]) -> Histogram:
        """From Prometheus `le` buckets: (upper bound, cumulative count), +Inf included."""
        ordered = sorted(buckets)
        bounds = tuple(le for le, _ in ordered if le != float("inf"))
        cumulative = [max(c, 0.0) for _, c in ordered]
        if len(cumulative) == len(bounds):  # no +Inf bucket came back
            cumulative.append(cumulative[-1] if cumulative else 0.0)
        counts, below = [], 0.0
        for c in cumulative:
            # Extrapolated increases can dip below the bucket before; counts stay >= 0.
            counts.append(max(c - below, 0.0))
            below = max(below, c)
        return cls(bounds, tuple(counts))

    @property
    def total(self) -> float:
        return sum(self.counts)

    def __add__(self, other: Histogram) -> Histogram:
        if not other.bounds and not other.total:
            return self
        if not self.bounds and not self.total:
            return other
        if self.bounds != other.bounds:
            raise ValueError("cannot add histograms with different buckets")
        return Histogram(
            self.bounds, tuple(a + b for a, b in zip(self.counts, other.counts, strict=True))
        )

    def _edges(self, i: int) -> tuple[float, float]:
        return (self.bounds[i - 1] if i else 0.0), self.bounds[i]

    def quantile(self, q: float) -> float | None:
        """Like PromQL's histogram_quantile: linear inside a bucket; None when empty."""
        total = self.total
        if total <= 0:
            return None
        rank, seen = q * total, 0.0
        for i, count in enumerate(self.counts[:-1]):
            if seen + count >= rank and count > 0:
                low, high = self._edges(i)
                return low + (high - low) * (rank - seen) / count
            seen += count
        return self.bounds[-1] if self.bounds else None

    def count_above(self, x: float) -> float:
        """How many observations exceed `x`, interpolating inside its bucket.

        The open top bucket counts as above any `x`: an answer slower than the
        highest bound is slow by every standard.
        """
        i = bisect.bisect_left(self.bounds, x)
        above = sum(self.counts[i + 1 :])
        if i == len(self.bounds):
            return above + self.counts[-1]
        low, high = self._edges(i)
        share = (high - max(x, low)) / (high - low) if high > low else 0.0
        return above + self.counts[i] * share


@dataclass(frozen=True, slots=True)
class VariantWindow:
    """One variant, one role, one window. Client errors and cancellations are left out."""

    requests: float = 0.0  # answered or failed by the variant
    errors: float = 0.0
    latency: Histogram = field(default_factory=Histogram)  # answered requests, seconds
    ttft: Histogram = field(default_factory=Histogram)
    time_per_token: Histogram = field(default_factory=Histogram)
    feedback_count: float = 0.0
    feedback_sum: float = 0.0  # scores 0..1
    # The same scores by tenant (at most MAX_TENANTS; any rest is untracked), sorted.
    feedback_tenants: tuple[TenantScores, ...] = ()
    incidents: float = 0.0  # safety incidents counted against the variant
    prompt_incidents: float = 0.0  # flagged, but stable's answer to the same prompt was too

    def __add__(self, other: VariantWindow) -> VariantWindow:
        return VariantWindow(
            requests=self.requests + other.requests,
            errors=self.errors + other.errors,
            latency=self.latency + other.latency,
            ttft=self.ttft + other.ttft,
            time_per_token=self.time_per_token + other.time_per_token,
            feedback_count=self.feedback_count + other.feedback_count,
            feedback_sum=self.feedback_sum + other.feedback_sum,
            feedback_tenants=merge(self.feedback_tenants, other.feedback_tenants),
            incidents=self.incidents + other.incidents,
            prompt_incidents=self.prompt_incidents + other.prompt_incidents,
        )


@dataclass(frozen=True, slots=True)
class Window:
    """Stable and candidate over the same interval: what a check compares."""

    stable: VariantWindow
    candidate: VariantWindow
    start: float
    end: float

    def __add__(self, later: Window) -> Window:
        return Window(
            self.stable + later.stable, self.candidate + later.candidate, self.start, later.end
        )
