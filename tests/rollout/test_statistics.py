"""Issue 13's targets for the analysis, asserted on simulated rollouts (where one is not
met yet, the closest the analysis achieves, so that it cannot slip back).

`loadtests/rollout_statistics.py` runs the real analysis and state machine over
simulated traffic (`loadtests/traffic_patterns.py`); each test below asserts
targets written as the constants that follow, on enough rollouts to mean
something. A rollout at 50 requests a second takes ~200 evaluations (the 1%
step waits for 200 users' scores), ~70 ms; at 10,000 requests per interval ~15 ms.
How many rollouts each test runs, and why:

* A/A, <= 1% false rollbacks: 1,000 per scenario at 10,000 requests per interval:
  at a true 0.5% the count is 5 +- 2.2 against a limit of 10. At 50 rps (where
  fast paths for gross failures would misfire, if anywhere) 500: 2.5 +- 1.6
  against 5, a looser check for a cost of 30 s.
* Worse candidates (2x errors, 1.5x latency), >= 95% rolled back: 1,000 each, cheap.
* Failing every request, >= 99% rolled back within 20 requests: 500 per traffic:
  at a true 99.5%, 2.5 +- 1.6 misses against a limit of 5.
* 20x errors, median to detection: 200 per traffic; the median's rank is then
  known to +-7 rollouts (about the 46th to 54th percentile).
* Bursts: 100 per pattern, flavour and stable rate, 1,200 in all. Shared bursts'
  <= 1% is asserted on their 600 (at a true 0.3%, 1.8 +- 1.3 against 6);
  independent bursts' closest achieved on theirs, and each of the twelve alone on
  its 100. Each alone to 1% needs 1,000 rollouts: the harness's
  `--only 'bursts*' --rollouts 1000`.
* Late onset, caught nearly as often as the same regression without healthy
  history: 250 each; the difference of two shares near 80% is known to +-3.6 points.
* Tail-only regressions (slowest 2% 3x, slowest 10% 1.5x) rolled back: 300 each;
  at a true 97%, 9 +- 3 misses against the 95% target's 15.
* A better candidate, never rolled back: 500 at 10,000 requests per interval, 300
  at 50 rps. Its e-values fall, so a rollback is far rarer than false alarms at
  the thresholds; a single one is a finding.
* Power, median <= 0.7x the fixed-sample bound, and the p95: 200 per stable rate;
  the p95 is then the 190th of 200, known to about +-10%.

Each test shares its rollouts among JOBS processes. On 2 cores (shared with other
work) with the analysis of commit d341487 the file took 171 s; the slowest tests
were power at 0.5% (24 s) and bursts (23 s).
"""

from __future__ import annotations

import doctest

import pytest

from loadtests import traffic_patterns
from loadtests.rollout_statistics import GROSS_REQUESTS, Row, run_all, table
from loadtests.traffic_patterns import BURST_PATTERNS, SCENARIOS, Behaviour, Bursts

JOBS = 2  # processes: the machine's cores

# Issue 13's targets, where the analysis meets them (asserted as they are).
MAX_FALSE_ROLLBACKS = 0.01  # a candidate equal to stable, on average (shared bursts included)
MIN_PROMOTED = 0.98  # and not left waiting either
MIN_WORSE_ROLLED_BACK = 0.95  # 2x errors, 1.5x latency
MIN_GROSS_CAUGHT = 0.99  # a candidate failing every request, within GROSS_REQUESTS of them
MIN_TAIL_10_CAUGHT = 0.95  # the slowest 10% 1.5x slower
MIN_TAIL_2_CAUGHT = 0.90  # the slowest 2% 3x slower: a p99 regression
MAX_BETTER_ROLLED_BACK = 0.0
MAX_MEDIAN_OVER_BOUND = 0.7  # candidate requests to detection, over the fixed-sample bound

# Where it does not (yet), the closest it achieves, asserted so that it does not slip back;
# the targets, the figures and why some cannot be met are in BENCHMARKS.md.
MAX_INDEPENDENT_BURST_FALSE_ROLLBACKS = 0.07  # target 0.01; 2.4-6.8% measured on 500 each
MAX_INDEPENDENT_BURST_FALSE_ROLLBACKS_EACH = 0.15  # of 100 rollouts (6.8% + 3 sd)
MAX_MEDIAN_20X = {"errors-20x-5rps": 35, "errors-20x-50rps": 70}  # target 20 (impossible at
# 50 rps together with the burst target: BENCHMARKS.md)
MAX_ONSET_GAP = 0.25  # target 0.10; 10-16 points measured on 500 (+-4 on 250)
MAX_P95_OVER_BOUND = 2.2  # target 1.25, below the oracle SPRT's own 1.26-1.40; 1.70-1.76
# measured on 500 (the 95th percentile of 200 moves by about 10%)


def simulated(names: list[str], rollouts: int, seed: int) -> list[Row]:
    rows = run_all([SCENARIOS[n] for n in names], rollouts, seed, jobs=JOBS)
    print(table(rows))
    return rows


def test_traffic_patterns_keep_their_promises() -> None:
    """Bursts keep the mean error rate; a slowed tail moves its share and no more."""
    assert doctest.testmod(traffic_patterns).failed == 0
    for every, share in BURST_PATTERNS:
        calm, burst = Bursts(every, share, shared=True).factors()
        assert calm * (1 - 1 / every) + burst / every == pytest.approx(1)
        assert burst / every == pytest.approx(share)  # burst minutes' share of the errors
    cut = Behaviour().latency_quantile(0.98)
    slowed = Behaviour(slow_share=0.02, slow_factor=3.0)
    assert slowed.latency_cdf(cut) == pytest.approx(0.98)
    assert 1 - slowed.latency_cdf(2.99 * cut) == pytest.approx(0.02)


@pytest.mark.parametrize(
    ("name", "rollouts"),
    [("same", 1000), ("same-tenants", 1000), ("same-one-big-tenant", 1000), ("same-50rps", 500)],
)
def test_a_healthy_candidate_is_rarely_rolled_back(name: str, rollouts: int) -> None:
    """With scores from many tenants, or one holding 60% (capped to half), as without tenants."""
    (row,) = simulated([name], rollouts, seed=1)
    assert row.rolled_back <= MAX_FALSE_ROLLBACKS
    assert row.promoted >= MIN_PROMOTED


@pytest.mark.parametrize("name", ["errors-2x", "latency-1.5x"])
def test_a_worse_candidate_is_rolled_back_before_promotion(name: str) -> None:
    (row,) = simulated([name], 1000, seed=2)
    assert row.rolled_back >= MIN_WORSE_ROLLED_BACK


@pytest.mark.parametrize("name", ["fails-all-5rps", "fails-all-50rps"])
def test_a_candidate_failing_every_request_serves_few_of_them(name: str) -> None:
    (row,) = simulated([name], 500, seed=3)
    assert row.within_gross is not None
    assert row.within_gross >= MIN_GROSS_CAUGHT, f"within {GROSS_REQUESTS} requests"


@pytest.mark.parametrize("name", sorted(MAX_MEDIAN_20X))
def test_a_gross_error_rate_is_found_in_few_requests(name: str) -> None:
    (row,) = simulated([name], 200, seed=4)
    assert row.median is not None
    assert row.median <= MAX_MEDIAN_20X[name]


def test_error_bursts_are_no_reason_to_roll_back() -> None:
    """Shared (an upstream incident) and independent bursts, at stable 0.2%, 0.5% and 1%."""
    rows = simulated([n for n in SCENARIOS if n.startswith("bursts")], 100, seed=5)
    assert len(rows) == 12
    shared = [r for r in rows if "-shared-" in r.scenario.name]
    independent = [r for r in rows if "-independent-" in r.scenario.name]
    assert sum(r.rolled_back for r in shared) / len(shared) <= MAX_FALSE_ROLLBACKS
    assert (
        sum(r.rolled_back for r in independent) / len(independent)
        <= MAX_INDEPENDENT_BURST_FALSE_ROLLBACKS
    )
    worst = max(independent, key=lambda r: r.rolled_back)
    assert worst.rolled_back <= MAX_INDEPENDENT_BURST_FALSE_ROLLBACKS_EACH, worst.scenario.name


@pytest.mark.parametrize("rate", ["0.5%", "1%"])
def test_healthy_history_does_not_hide_a_late_regression(rate: str) -> None:
    """30 healthy minutes, then 3x the errors for 30, against those 30 alone (held at 1%)."""
    late, fresh = simulated([f"late-3x-{rate}", f"no-history-3x-{rate}"], 250, seed=6)
    assert late.rolled_back >= fresh.rolled_back - MAX_ONSET_GAP


@pytest.mark.parametrize(
    ("name", "caught"), [("tail-2%-3x", MIN_TAIL_2_CAUGHT), ("tail-10%-1.5x", MIN_TAIL_10_CAUGHT)]
)
def test_a_tail_only_latency_regression_is_rolled_back(name: str, caught: float) -> None:
    (row,) = simulated([name], 300, seed=7)
    assert row.rolled_back >= caught


@pytest.mark.parametrize(("name", "rollouts"), [("better", 500), ("better-50rps", 300)])
def test_a_better_candidate_is_never_rolled_back(name: str, rollouts: int) -> None:
    """Half the errors and 0.8x the latency."""
    (row,) = simulated([name], rollouts, seed=8)
    assert row.rolled_back <= MAX_BETTER_ROLLED_BACK


@pytest.mark.parametrize("name", ["power-2x-0.5%", "power-2x-1%"])
def test_detection_takes_few_more_requests_than_a_fixed_sample_test(name: str) -> None:
    """2x the errors held at 1% until rolled back: requests to detection against the bound."""
    (row,) = simulated([name], 200, seed=9)
    bound = row.scenario.bound
    assert bound is not None
    assert row.median is not None
    assert row.p95 is not None
    assert row.median <= MAX_MEDIAN_OVER_BOUND * bound
    assert row.p95 <= MAX_P95_OVER_BOUND * bound
