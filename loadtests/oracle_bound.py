"""How fast could any open-ended sequential test catch a 2x error regression? An oracle's answer.

The oracle knows the regression exactly (the candidate's error ratio, stable's
rate) and runs Wald's sequential probability ratio test of that ratio against
the threshold ratio 1.1, on the same conditional-binomial intervals the analysis
sees (50 route requests a second, 1% to the candidate, 10 s intervals), rejecting
at 1/alpha. Among tests that never stop on their own, the SPRT needs the fewest
requests on average (Wald and Wolfowitz 1948); the spread of its stopping time
is what an always-valid test pays for being allowed to stop at any look.

    .venv/bin/python -m loadtests.oracle_bound --rollouts 2000

prints, for several alpha, the median and 95th percentile of the candidate
requests it needed, over the fixed-sample bound (`traffic_patterns.fixed_sample_bound`).
"""

from __future__ import annotations

import argparse

import numpy as np

from loadtests.traffic_patterns import fixed_sample_bound

THRESHOLD_RATIO = 1.1
ROUTE_PER_INTERVAL = 500
WEIGHT = 0.01
ALPHAS = (0.05 / 3, 0.01, 0.05)  # the error check's share of the default plan's 5%; 1%; all 5%


def requests_to_detection(
    p: float, ratio: float, alpha: float, rollouts: int, rng: np.random.Generator
) -> np.ndarray:
    """Candidate requests until the oracle SPRT rejects, per rollout (inf: not within the cap)."""
    bound = fixed_sample_bound(THRESHOLD_RATIO * p, ratio * p) or 1
    intervals = int(5 * bound / (ROUTE_PER_INTERVAL * WEIGHT)) + 1  # to 5x the bound
    n_c = rng.binomial(ROUTE_PER_INTERVAL, WEIGHT, (intervals, rollouts))
    n_s = ROUTE_PER_INTERVAL - n_c
    k_c, k_s = rng.binomial(n_c, min(ratio * p, 1.0)), rng.binomial(n_s, p)
    served_any = n_c > 0  # an interval without candidate requests compares nothing
    both = np.where(served_any, n_c, 1)
    null = both * THRESHOLD_RATIO / (both * THRESHOLD_RATIO + n_s)
    alt = both * ratio / (both * ratio + n_s)
    step = k_c * np.log(alt / null) + k_s * np.log((1 - alt) / (1 - null))
    log_lr = np.cumsum(np.where(served_any, step, 0.0), axis=0)
    crossed = log_lr >= np.log(1 / alpha)
    first = np.where(crossed.any(axis=0), crossed.argmax(axis=0), -1)
    served = np.cumsum(n_c, axis=0)
    return np.where(first >= 0, served[first, np.arange(rollouts)], np.inf).astype(float)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print("| stable errors | alpha | median / bound | p95 / bound | within 1.25x bound |")
    print("| --- | --- | --- | --- | --- |")
    for p in (0.005, 0.01):
        bound = fixed_sample_bound(THRESHOLD_RATIO * p, 2 * p) or 1
        for alpha in ALPHAS:
            n = requests_to_detection(p, 2.0, alpha, args.rollouts, rng) / bound
            print(
                f"| {p:.1%} | {alpha:.4f} | {np.median(n):.2f} | {np.quantile(n, 0.95):.2f} "
                f"| {np.mean(n <= 1.25):.1%} |"
            )


if __name__ == "__main__":
    main()
