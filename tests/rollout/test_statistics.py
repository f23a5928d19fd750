"""The analysis on simulated traffic: 1,000 rollouts per scenario at 1% traffic first.

The figures (how many requests detection took) are printed by
`python -m loadtests.rollout_statistics` and kept in BENCHMARKS.md.
"""

from __future__ import annotations

import pytest

from loadtests.rollout_statistics import SCENARIOS, run, summary
from rollout.machine import Phase

ROLLOUTS = 1000


def share(results, phase: Phase) -> float:
    return sum(r.phase is phase for r in results) / len(results)


@pytest.mark.parametrize("scenario", ["same", "same-tenants", "same-one-big-tenant"])
def test_a_healthy_candidate_is_rarely_rolled_back(scenario: str) -> None:
    """With scores from many tenants, or one holding 60% (capped to half), as without tenants."""
    results = run(SCENARIOS[scenario], ROLLOUTS, seed=1)
    print(summary(results))
    assert share(results, Phase.ROLLED_BACK) <= 0.01
    assert share(results, Phase.PROMOTED) >= 0.98  # and it is not left waiting either


@pytest.mark.parametrize("scenario", ["errors-2x", "latency-1.5x"])
def test_a_worse_candidate_is_rolled_back_before_promotion(scenario: str) -> None:
    results = run(SCENARIOS[scenario], ROLLOUTS, seed=2)
    print(summary(results))
    assert share(results, Phase.ROLLED_BACK) >= 0.95
