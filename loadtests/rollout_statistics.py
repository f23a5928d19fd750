"""Simulated rollouts: how often the analysis rolls back a healthy candidate, how fast a bad one.

Each simulated rollout runs the real `analysis` and `machine` over synthetic
evaluation intervals (request counts, errors, latency histograms with the
gateway's buckets, user scores, by tenant where a scenario names tenants) drawn
for a stable and a candidate variant, through the plan 1% → 5% → 10% → 25% →
50% → 100%.

    .venv/bin/python -m loadtests.rollout_statistics --rollouts 1000

prints, per scenario, the share of rollouts rolled back, promoted and paused,
and how many requests detection took.
"""

from __future__ import annotations

import argparse
import math
import statistics
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from gateway.metrics import LATENCY_BUCKETS
from rollout.analysis import Evidence, Exposure, accumulate, judge
from rollout.machine import Phase, decide, start, weight_bp
from rollout.plan import RolloutPlan
from rollout.tenants import TenantScores
from rollout.traffic import FULL_WEIGHT_BP
from rollout.windows import Histogram, VariantWindow, Window

INTERVAL_S = 10.0


@dataclass(frozen=True, slots=True)
class Behaviour:
    error_rate: float = 0.01
    latency_median_s: float = 0.8
    latency_sigma: float = 0.5  # log-normal
    feedback_rate: float = 0.3  # share of answers a user scores
    satisfaction: float = 0.8  # share of scores that are 1 (the rest 0)


@dataclass(frozen=True, slots=True)
class Scenario:
    name: str
    candidate: Behaviour
    stable: Behaviour = Behaviour()
    # Each tenant's share of users' scores (summing to 1); none: scores are untracked, as
    # from a source that does not know tenants, and no cap applies.
    tenants: tuple[float, ...] = ()


def zipf_shares(n: int) -> tuple[float, ...]:
    """`n` tenants, the k-th largest holding a share proportional to 1/k."""
    weights = [1 / k for k in range(1, n + 1)]
    return tuple(w / sum(weights) for w in weights)


HONEST_TENANTS = zipf_shares(20)  # the largest holds 28%: under the cap, nobody is capped
ONE_BIG_TENANT = (0.6,) + (0.04,) * 10  # one tenant holds 60%: capped to half the evidence


SCENARIOS = {
    "same": Scenario("candidate = stable", Behaviour()),
    "errors-2x": Scenario("candidate at 2x the error rate", Behaviour(error_rate=0.02)),
    "latency-1.5x": Scenario("candidate at 1.5x the latency", Behaviour(latency_median_s=1.2)),
    "satisfaction-10": Scenario("candidate 10 points less satisfying", Behaviour(satisfaction=0.7)),
    # At the thresholds themselves a rollback is a false alarm the guarantee still bounds.
    "errors-1.1x": Scenario(
        "candidate at 1.1x the error rate (the threshold)", Behaviour(error_rate=0.011)
    ),
    "latency-1.2x": Scenario(
        "candidate at 1.2x the latency (the threshold)", Behaviour(latency_median_s=0.96)
    ),
    # Honest traffic from several tenants: the cap must not change false rollbacks.
    "same-tenants": Scenario(
        "candidate = stable, scores from 20 tenants (largest 28%)",
        Behaviour(),
        tenants=HONEST_TENANTS,
    ),
    "same-one-big-tenant": Scenario(
        "candidate = stable, one tenant gives 60% of the scores",
        Behaviour(),
        tenants=ONE_BIG_TENANT,
    ),
    "satisfaction-10-tenants": Scenario(
        "candidate 10 points less satisfying, scores from 20 tenants",
        Behaviour(satisfaction=0.7),
        tenants=HONEST_TENANTS,
    ),
    "satisfaction-10-one-big-tenant": Scenario(
        "candidate 10 points less satisfying, one tenant gives 60% of the scores",
        Behaviour(satisfaction=0.7),
        tenants=ONE_BIG_TENANT,
    ),
}

STEPS = (1, 5, 10, 25, 50, 100)
PLAN = RolloutPlan.model_validate({
    "route": "support",
    "candidate": {"name": "support-v2", "backend": "local", "model": "support-v2"},
    "steps": [{"kind": "weight", "percent": p, "min_duration_s": 60} for p in STEPS],
    "evaluation_interval_s": INTERVAL_S,
})  # fmt: skip


@dataclass(frozen=True, slots=True)
class Result:
    phase: Phase
    step: str  # where the rollout ended
    candidate_requests: float  # until it ended
    route_requests: float
    rule: str | None = None  # the check that rolled it back


def _bucket_probabilities(b: Behaviour) -> np.ndarray:
    def cdf(x: float) -> float:
        z = (math.log(x) - math.log(b.latency_median_s)) / b.latency_sigma
        return 0.5 * (1 + math.erf(z / math.sqrt(2)))

    cumulative = [cdf(x) for x in LATENCY_BUCKETS] + [1.0]
    return np.diff(np.array([0.0, *cumulative]))


class _Traffic:
    """Draws one variant's facts for one interval."""

    def __init__(
        self, b: Behaviour, rng: np.random.Generator, tenants: tuple[float, ...] = ()
    ) -> None:
        self.b, self.rng, self.buckets = b, rng, _bucket_probabilities(b)
        self.tenants = tenants

    def interval(self, requests: int) -> VariantWindow:
        errors = int(self.rng.binomial(requests, self.b.error_rate))
        answered = requests - errors
        latency = self.rng.multinomial(answered, self.buckets).astype(float)
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


def simulate(
    scenario: Scenario, rng: np.random.Generator, route_per_interval: int, max_intervals: int
) -> Result:
    stable = _Traffic(scenario.stable, rng, scenario.tenants)
    candidate = _Traffic(scenario.candidate, rng, scenario.tenants)
    now = 0.0
    status, _ = start("sim", PLAN, now, "simulation")
    evidence, served_c, served, rule = Evidence(), 0.0, 0.0, None
    for _ in range(max_intervals):
        weight = weight_bp(status, PLAN)
        n_c = int(rng.binomial(route_per_interval, weight / FULL_WEIGHT_BP))
        interval = Window(
            stable.interval(route_per_interval - n_c),
            candidate.interval(n_c),
            now,
            now + INTERVAL_S,
        )
        now += INTERVAL_S
        served_c, served = served_c + n_c, served + route_per_interval
        evidence = accumulate(evidence, PLAN, interval)
        verdict = judge(PLAN, evidence, Exposure(shadow=False, weight_bp=weight))
        new, events = decide(status, PLAN, verdict, None, now)
        rule = next((e.rule for e in events if e.rule), rule)
        if new.step != status.step:
            evidence = evidence.next_step()
        status = new
        if status.phase is not Phase.RUNNING:
            break
    step = "promoted" if status.phase is Phase.PROMOTED else PLAN.steps[status.step].label
    return Result(status.phase, step, served_c, served, rule)


def run(
    scenario: Scenario, rollouts: int, seed: int = 0, route_per_interval: int = 10_000
) -> list[Result]:
    rng = np.random.default_rng(seed)
    return [simulate(scenario, rng, route_per_interval, max_intervals=400) for _ in range(rollouts)]


def summary(results: list[Result]) -> str:
    phases = Counter(r.phase for r in results)
    rolled_back = [r for r in results if r.phase is Phase.ROLLED_BACK]
    lines = [
        "  " + ", ".join(f"{p.value} {phases[p] / len(results):.1%}" for p in Phase if phases[p])
    ]
    if rolled_back:
        c = sorted(r.candidate_requests for r in rolled_back)
        t = sorted(r.route_requests for r in rolled_back)
        lines.append(
            f"  detection: candidate requests median {statistics.median(c):,.0f}, "
            f"p95 {c[math.ceil(0.95 * len(c)) - 1]:,.0f}; route requests median "
            f"{statistics.median(t):,.0f}"
        )
        lines.append(f"  at step {_tally(r.step for r in rolled_back)}")
        lines.append(f"  by check {_tally(r.rule or '?' for r in rolled_back)}")
    return "\n".join(lines)


def _tally(values: Iterable[str]) -> str:
    return ", ".join(f"{v} {n}" for v, n in Counter(values).most_common())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--route-per-interval", type=int, default=10_000)
    args = parser.parse_args()
    print(
        f"{args.rollouts} rollouts per scenario, {args.route_per_interval:,} route requests per "
        f"{INTERVAL_S:g}s interval, steps 1-5-10-25-50-100%, confidence {PLAN.confidence:.0%}"
    )
    for scenario in SCENARIOS.values():
        print(scenario.name)
        print(summary(run(scenario, args.rollouts, args.seed, args.route_per_interval)))


if __name__ == "__main__":
    main()
