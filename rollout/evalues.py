"""E-values: the evidence each statistical check keeps, and what it is worth.

Pure functions of counts. Each is a likelihood-ratio mixture over a grid of
alternatives (equally weighted), a (super)martingale while the candidate is
within its threshold, so that by Ville's inequality it reaches 1/alpha during a
rollout with probability at most alpha, however often it is looked at.

    >>> tail = tail_observed(TailEvidence(), 0.05, hits=5, trials=100)  # 5% above: the null
    >>> round(tail_evalue(tail), 2)
    0.19
    >>> tail_evalue(tail_observed(tail, 0.05, hits=30, trials=100)) > 1000  # then 30% above
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollout.windows import VariantWindow, Window

TAIL_PRIOR_HITS = 10.0
TAIL_DEAD_ZONE = 1.2
MAX_TAIL_SHARE = 0.999
SATISFACTION_MIXTURE_SD = 0.10  # mSPRT prior scale, in score units (10 points)
MAX_LOG_EVIDENCE = 700.0  # e-values are capped below float overflow (and JSON's reach)


@dataclass(frozen=True, slots=True)
class TailEvidence:
    """Candidate answers above stable's limit (`hits`) out of `trials`, and the log evidence
    of a bet on the share above, placed each interval on the share seen before it."""

    hits: float = 0.0
    trials: float = 0.0
    log_bet: float = 0.0


def _mixture(log_lrs: tuple[float, ...]) -> float:
    top = max(log_lrs)
    if top > MAX_LOG_EVIDENCE:
        return math.exp(MAX_LOG_EVIDENCE)
    return sum(math.exp(x) for x in log_lrs) / len(log_lrs)


def tail_observed(
    seen: TailEvidence, null_share: float, hits: float, trials: float
) -> TailEvidence:
    """Fold in one interval: `hits` of its `trials` above the limit.

    The share bet on comes from earlier intervals only (with a prior of twice the null
    share, worth `TAIL_PRIOR_HITS`), so the product of the bets is a supermartingale
    while at most `null_share` of the answers are above; a share within
    `TAIL_DEAD_ZONE` of the null is not bet on. A bet tuned by the data costs less than
    a mixture's spread over alternatives it does not need.
    """
    prior_trials = TAIL_PRIOR_HITS / (2 * null_share)
    share = min((seen.hits + TAIL_PRIOR_HITS) / (seen.trials + prior_trials), MAX_TAIL_SHARE)
    log_bet = seen.log_bet
    if share >= TAIL_DEAD_ZONE * null_share and trials > 0:
        log_bet += hits * math.log(share / null_share) + (trials - hits) * math.log(
            (1 - share) / (1 - null_share)
        )
    return TailEvidence(seen.hits + hits, seen.trials + trials, log_bet)


def tail_evalue(tail: TailEvidence) -> float:
    """Evidence that more of the candidate's answers are above the limit than the null share."""
    return math.exp(min(tail.log_bet, MAX_LOG_EVIDENCE))


def _mean_and_variance(v: VariantWindow) -> tuple[float, float]:
    mean = v.feedback_sum / v.feedback_count
    smoothed = (v.feedback_sum + 0.5) / (
        v.feedback_count + 1
    )  # keeps 0/1-only scores from a zero variance
    return mean, smoothed * (1 - smoothed) / v.feedback_count


def satisfaction_evalue(threshold_points: float, w: Window, *, paired: bool = False) -> float:
    """mSPRT (normal mixture): stable's mean exceeds the candidate's by more than the threshold.

    `paired`: blind reviews, where each review scores both variants.
    """
    if w.candidate.feedback_count <= 0 or w.stable.feedback_count <= 0:
        return 1.0
    m_c, var_c = _mean_and_variance(w.candidate)
    m_s, var_s = _mean_and_variance(w.stable)
    excess = (m_s - m_c) - threshold_points / 100
    if excess <= 0:
        return 1.0
    var, tau2 = var_c + var_s, SATISFACTION_MIXTURE_SD**2
    if paired:
        # A review's two scores add up to 1: their covariance is -var_c (= -var_s, with the
        # smoothing above), which doubles the variance of the difference.
        var *= 2
    exponent = tau2 * excess**2 / (2 * var * (var + tau2))
    exponent = min(exponent, MAX_LOG_EVIDENCE)
    return math.sqrt(var / (var + tau2)) * math.exp(exponent)
