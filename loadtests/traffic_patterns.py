"""Synthetic traffic for simulated rollouts, and the named scenarios built from it.

A `Behaviour` is a variant's steady state: its error rate, a log-normal latency
(optionally with only its slowest answers slowed: a tail-only regression) and
its users' scores. `Bursts` make errors come in bursts by the minute, the mean
rate unchanged. `RolloutTraffic` draws both variants' facts for each evaluation
interval as the gateway reports them: `VariantWindow`s, latencies in the
gateway's buckets. A `Scenario` names a stable and a candidate behaviour, the
route's traffic and how the candidate is exposed; `SCENARIOS` holds them all.

`detection_bound` is the yardstick detection is measured against: the candidate
requests a fixed-sample test would need to find the candidate's regression.

    >>> [round(f, 3) for f in Bursts(every=20, share=0.5, shared=True).factors()]
    [0.526, 10.0]
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from statistics import NormalDist

import numpy as np

from gateway.metrics import LATENCY_BUCKETS
from rollout.tenants import TenantScores
from rollout.windows import Histogram, VariantWindow, Window

_NORMAL = NormalDist()
INTERVAL_S = 10.0  # between evaluations
PER_MINUTE = round(60 / INTERVAL_S)  # intervals; bursts come by the minute
# The default plan's thresholds, which the bound and "should be rolled back" refer to:
# 1.1x stable's error rate, 1.2x stable's latency quantile, 5 points of satisfaction.
ERROR_THRESHOLD = 0.10
LATENCY_THRESHOLD = 0.20
SATISFACTION_THRESHOLD = 5.0

# The fixed-sample test detection is compared with: one-sided, 1% false alarms, 95% power.
BOUND_ALPHA = 0.01
BOUND_POWER = 0.95
# Quantiles a tail-latency test could compare at; the bound takes the one that separates best.
BOUND_QUANTILES = (0.9, 0.95, 0.975, 0.99)


@dataclass(frozen=True, slots=True)
class Behaviour:
    """One variant's steady state."""

    error_rate: float = 0.01
    latency_median_s: float = 0.8
    latency_sigma: float = 0.5  # log-normal
    # A tail-only regression: the answers above the log-normal's 1 - slow_share quantile
    # take slow_factor (>= 1) times as long. Tail scenarios keep stable's median and
    # sigma, so the cut is stable's quantile.
    slow_share: float = 0.0
    slow_factor: float = 1.0
    feedback_rate: float = 0.3  # share of answers a user scores
    satisfaction: float = 0.8  # share of scores that are 1 (the rest 0)

    def latency_quantile(self, q: float) -> float:
        """Of the log-normal before its tail is slowed."""
        return self.latency_median_s * math.exp(self.latency_sigma * _NORMAL.inv_cdf(q))

    def latency_cdf(self, x: float) -> float:
        """The share of answers that take at most `x` seconds."""
        if self.slow_share <= 0:
            return self._lognormal_cdf(x)
        cut = self.latency_quantile(1 - self.slow_share)
        # At most x: answers left alone up to min(x, cut), and slowed ones whose time
        # before slowing lay in (cut, x / slow_factor].
        slowed = self._lognormal_cdf(x / self.slow_factor) - self._lognormal_cdf(cut)
        return self._lognormal_cdf(min(x, cut)) + max(slowed, 0.0)

    def _lognormal_cdf(self, x: float) -> float:
        z = (math.log(x) - math.log(self.latency_median_s)) / self.latency_sigma
        return _NORMAL.cdf(z)

    def bucket_probabilities(self, bounds: Sequence[float]) -> np.ndarray:
        """Each histogram bucket's share of answers; the last is above every bound."""
        cumulative = [self.latency_cdf(x) for x in bounds] + [1.0]
        return np.diff(np.array([0.0, *cumulative]))


@dataclass(frozen=True, slots=True)
class Bursts:
    """Each minute, each variant is in a burst minute with probability 1/every.

    Burst minutes hold `share` of the errors on average; the mean error rate is
    the variant's own. `shared`: both variants burst in the same minutes (an
    upstream incident); otherwise each variant's burst minutes are drawn apart.
    """

    every: int
    share: float
    shared: bool

    def factors(self) -> tuple[float, float]:
        """The error rate's multipliers in a calm minute and in a burst minute."""
        return (1 - self.share) / (1 - 1 / self.every), self.share * self.every

    def draw(self, rng: np.random.Generator, minutes: int) -> tuple[list[float], list[float]]:
        """Stable's and the candidate's multiplier for each minute."""
        burst = rng.random((minutes, 2)) < 1 / self.every
        if self.shared:
            burst[:, 1] = burst[:, 0]
        calm, high = self.factors()
        per_minute = np.where(burst, high, calm)
        return per_minute[:, 0].tolist(), per_minute[:, 1].tolist()


class VariantTraffic:
    """Draws one variant's facts for one interval."""

    def __init__(
        self, b: Behaviour, rng: np.random.Generator, tenants: tuple[float, ...] = ()
    ) -> None:
        self.b, self.rng, self.tenants = b, rng, tenants
        self.buckets = b.bucket_probabilities(LATENCY_BUCKETS)

    def interval(self, requests: int, error_factor: float = 1.0) -> VariantWindow:
        errors = int(self.rng.binomial(requests, min(1.0, self.b.error_rate * error_factor)))
        answered = requests - errors
        # Python floats, not numpy's: the analysis adds these up every interval.
        latency = self.rng.multinomial(answered, self.buckets).astype(float).tolist()
        scored = int(self.rng.binomial(answered, self.b.feedback_rate))
        by_tenant = self._by_tenant(scored)
        if self.tenants:
            good = sum(s.total for s in by_tenant)
        else:  # drawn as before tenants were simulated: the same seed, the same figures
            good = float(self.rng.binomial(scored, self.b.satisfaction))
        return VariantWindow(
            requests=requests,
            errors=errors,
            latency=Histogram(LATENCY_BUCKETS, tuple(latency)),
            feedback_count=scored,
            feedback_sum=good,
            feedback_tenants=by_tenant,
        )

    def _by_tenant(self, scored: int) -> tuple[TenantScores, ...]:
        if not self.tenants:
            return ()
        counts = self.rng.multinomial(scored, self.tenants)
        return tuple(
            TenantScores(f"t{i:02d}", float(n), float(self.rng.binomial(n, self.b.satisfaction)))
            for i, n in enumerate(counts)
            if n
        )


def zipf_shares(n: int) -> tuple[float, ...]:
    """`n` tenants, the k-th largest holding a share proportional to 1/k."""
    weights = [1 / k for k in range(1, n + 1)]
    return tuple(w / sum(weights) for w in weights)


def fixed_sample_bound(p0: float, p1: float) -> int | None:
    """Samples a fixed-sample one-sided test needs to tell a rate `p1` from `p0`.

    At `BOUND_ALPHA` false alarms and `BOUND_POWER` power, by the normal
    approximation; None when `p1` is no worse than `p0` (up to rounding: a candidate
    exactly at a latency threshold). The candidate's share of traffic is small, so
    stable's rate counts as known.

    >>> fixed_sample_bound(0.011, 0.02)  # 2x errors at stable 1%, against the 1.1x threshold
    2762
    >>> fixed_sample_bound(0.011, 1.0)  # every request fails
    1
    >>> fixed_sample_bound(0.011, 0.011) is None
    True
    """
    if p1 <= p0 or math.isclose(p1, p0, rel_tol=1e-9):
        return None
    z_alpha, z_power = _NORMAL.inv_cdf(1 - BOUND_ALPHA), _NORMAL.inv_cdf(BOUND_POWER)
    spread = z_alpha * math.sqrt(p0 * (1 - p0)) + z_power * math.sqrt(p1 * (1 - p1))
    return math.ceil((spread / (p1 - p0)) ** 2)


def detection_bound(stable: Behaviour, candidate: Behaviour) -> int | None:
    """The fewest candidate requests a fixed-sample test needs to find the regression.

    Error rate: against (1 + threshold) times stable's rate. Latency: the share of
    answers above (1 + threshold) times stable's q-quantile, against 1 - q, at the
    quantile of `BOUND_QUANTILES` that separates them best. None: no regression.
    """
    bounds = [fixed_sample_bound((1 + ERROR_THRESHOLD) * stable.error_rate, candidate.error_rate)]
    for q in BOUND_QUANTILES:
        limit = (1 + LATENCY_THRESHOLD) * stable.latency_quantile(q)
        bounds.append(fixed_sample_bound(1 - q, 1 - candidate.latency_cdf(limit)))
    return min((n for n in bounds if n is not None), default=None)


# --- scenarios -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class FixedWeight:
    """Hold the candidate at one weight instead of the graduated plan."""

    percent: float
    duration_s: float | None  # None: until rolled back (the simulation caps it)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str  # short: for --only and the table
    about: str
    candidate: Behaviour
    stable: Behaviour = field(default_factory=Behaviour)
    # Each tenant's share of users' scores (summing to 1); none: scores are untracked, as
    # from a source that does not know tenants, and no cap applies.
    tenants: tuple[float, ...] = ()
    route_per_interval: int = 10_000
    bursts: Bursts | None = None
    onset_s: float = 0.0  # the candidate behaves as stable until then
    fixed: FixedWeight | None = None  # None: the graduated plan

    @property
    def rps(self) -> float:
        return self.route_per_interval / INTERVAL_S

    @property
    def bound(self) -> int | None:
        return detection_bound(self.stable, self.candidate)

    @property
    def regression(self) -> bool:
        """Worse than the plan allows: a rollback is the right answer."""
        drop = 100 * (self.stable.satisfaction - self.candidate.satisfaction)
        return self.bound is not None or drop > SATISFACTION_THRESHOLD


class RolloutTraffic:
    """Both variants' traffic through one rollout: bursts drawn up front, the onset applied."""

    def __init__(self, s: Scenario, rng: np.random.Generator, intervals: int) -> None:
        self.stable = VariantTraffic(s.stable, rng, s.tenants)
        self.healthy = VariantTraffic(s.stable, rng, s.tenants)  # the candidate before onset
        self.worse = VariantTraffic(s.candidate, rng, s.tenants)
        self.onset = round(s.onset_s / INTERVAL_S)
        minutes = intervals // PER_MINUTE + 2
        calm = [1.0] * minutes
        self.factors = s.bursts.draw(rng, minutes) if s.bursts else (calm, calm)
        # Bursts start on no particular interval: the analysis must not rely on them lining
        # up with its own blocks of time.
        self.phase = int(rng.integers(PER_MINUTE)) if s.bursts else 0

    def window(self, i: int, stable_requests: int, candidate_requests: int) -> Window:
        minute, at = (i + self.phase) // PER_MINUTE, i * INTERVAL_S
        candidate = self.worse if i >= self.onset else self.healthy
        return Window(
            self.stable.interval(stable_requests, self.factors[0][minute]),
            candidate.interval(candidate_requests, self.factors[1][minute]),
            at,
            at + INTERVAL_S,
        )


# --- the catalogue ---------------------------------------------------------------------------

HONEST_TENANTS = zipf_shares(20)  # the largest holds 28%: under the cap, nobody is capped
ONE_BIG_TENANT = (0.6,) + (0.04,) * 10  # one tenant holds 60%: capped to half the evidence
BURST_PATTERNS = ((20, 0.5), (50, 0.8))  # (every, share)
BURST_RATES = (0.002, 0.005, 0.01)
ONSET_RATES = (0.005, 0.01)
ONSET_S = 30 * 60.0  # healthy for this long, then regressed for as long again
GROSS = (
    ("fails-all", "candidate fails every request", 1.0),
    ("errors-20x", "candidate at 20x stable's 1% error rate", 0.2),
)


def _at(rps: float) -> int:
    return round(rps * INTERVAL_S)


def as_percent(p: float) -> str:
    return f"{100 * p:g}%"


def _original() -> tuple[Scenario, ...]:
    same, unsatisfying = Behaviour(), Behaviour(satisfaction=0.7)
    return (
        Scenario("same", "candidate = stable", same),
        Scenario("errors-2x", "candidate at 2x the error rate", Behaviour(error_rate=0.02)),
        Scenario("latency-1.5x", "candidate at 1.5x the latency", Behaviour(latency_median_s=1.2)),
        Scenario("satisfaction-10", "candidate 10 points less satisfying", unsatisfying),
        # At the thresholds themselves a rollback is a false alarm the guarantee still bounds.
        Scenario("errors-1.1x", "candidate at 1.1x the error rate (the threshold)",
                 Behaviour(error_rate=0.011)),
        Scenario("latency-1.2x", "candidate at 1.2x the latency (the threshold)",
                 Behaviour(latency_median_s=0.96)),
        # Honest traffic from several tenants: the cap must not change false rollbacks.
        Scenario("same-tenants", "candidate = stable, scores from 20 tenants (largest 28%)",
                 same, tenants=HONEST_TENANTS),
        Scenario("same-one-big-tenant", "candidate = stable, one tenant gives 60% of the scores",
                 same, tenants=ONE_BIG_TENANT),
        Scenario("satisfaction-10-tenants",
                 "candidate 10 points less satisfying, scores from 20 tenants",
                 unsatisfying, tenants=HONEST_TENANTS),
        Scenario("satisfaction-10-one-big-tenant",
                 "candidate 10 points less satisfying, one tenant gives 60% of the scores",
                 unsatisfying, tenants=ONE_BIG_TENANT),
    )  # fmt: skip


def _real_world() -> tuple[Scenario, ...]:
    """Issue 13: the traffic patterns of real routes, at 5 and 50 requests a second."""
    better = Behaviour(error_rate=0.005, latency_median_s=0.64)
    return (
        *(Scenario(f"same-{rps}rps", "candidate = stable", Behaviour(), route_per_interval=_at(rps))
          for rps in (5, 50)),
        Scenario("better", "half the errors, 0.8x the latency", better),
        Scenario("better-50rps", "half the errors, 0.8x the latency", better,
                 route_per_interval=_at(50)),
        *(_bursty(Bursts(every, share, shared), p)
          for every, share in BURST_PATTERNS for shared in (True, False) for p in BURST_RATES),
        *(Scenario(f"{name}-{rps}rps", about, Behaviour(error_rate=rate),
                   route_per_interval=_at(rps))
          for name, about, rate in GROSS for rps in (5, 50)),
        *(_onset(p, late) for late in (True, False) for p in ONSET_RATES),
        _tail(0.10, 1.5),
        _tail(0.05, 1.5),
        _tail(0.02, 3.0),
        *(_power(p) for p in ONSET_RATES),
    )  # fmt: skip


def _bursty(bursts: Bursts, p: float) -> Scenario:
    flavour = "shared" if bursts.shared else "independent"
    about = f"candidate = stable, errors in bursts ({flavour}): a minute in {bursts.every} "
    about += f"holds {bursts.share:.0%} of them"
    b = Behaviour(error_rate=p)
    return Scenario(
        f"bursts{bursts.every}-{flavour}-{as_percent(p)}", about, b, b,
        route_per_interval=_at(50), bursts=bursts,
    )  # fmt: skip


def _onset(p: float, late: bool) -> Scenario:
    name = f"{'late' if late else 'no-history'}-3x-{as_percent(p)}"
    about = ("as stable for 30 min, then " if late else "") + "3x the errors for 30 min, at 1%"
    return Scenario(
        name, about, Behaviour(error_rate=3 * p), Behaviour(error_rate=p),
        route_per_interval=_at(50), onset_s=ONSET_S if late else 0.0,
        fixed=FixedWeight(1, ONSET_S * (2 if late else 1)),
    )  # fmt: skip


def _tail(share: float, factor: float) -> Scenario:
    return Scenario(
        f"tail-{share:.0%}-{factor:g}x", f"the slowest {share:.0%} of answers {factor:g}x slower",
        Behaviour(slow_share=share, slow_factor=factor), route_per_interval=_at(50),
    )  # fmt: skip


def _power(p: float) -> Scenario:
    return Scenario(
        f"power-2x-{as_percent(p)}", "2x the errors, held at 1% until rolled back",
        Behaviour(error_rate=2 * p), Behaviour(error_rate=p),
        route_per_interval=_at(50), fixed=FixedWeight(1, None),
    )  # fmt: skip


SCENARIOS = {s.name: s for s in (*_original(), *_real_world())}
