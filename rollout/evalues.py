"""E-values: the evidence each statistical check keeps, and what it is worth.

Pure functions of counts. Each is a likelihood-ratio mixture over a grid of
alternatives (equally weighted), a (super)martingale while the candidate is
within its threshold, so that by Ville's inequality it reaches 1/alpha during a
rollout with probability at most alpha, however often it is looked at.

    >>> round(tail_evalue(TailEvidence(hits=5, trials=100), 0.05), 2)  # 5% above: the null
    0.13
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollout.windows import VariantWindow, Window

# Alternatives the e-value mixes over, equally weighted. Wider grids react to
# gross regressions sooner; denser ones near the threshold find marginal ones.
TAIL_SHARE_GRID = (1.5, 2.0, 3.0, 4.0, 6.0, 10.0)  # times the null share above the limit
SATISFACTION_MIXTURE_SD = 0.10  # mSPRT prior scale, in score units (10 points)
MAX_LOG_EVIDENCE = 700.0  # e-values are capped below float overflow (and JSON's reach)


@dataclass(frozen=True, slots=True)
class TailEvidence:
    """Candidate answers above stable's limit (`hits`) out of `trials`."""

    hits: float = 0.0
    trials: float = 0.0


def _mixture(log_lrs: tuple[float, ...]) -> float:
    top = max(log_lrs)
    if top > MAX_LOG_EVIDENCE:
        return math.exp(MAX_LOG_EVIDENCE)
    return sum(math.exp(x) for x in log_lrs) / len(log_lrs)


def tail_evalue(tail: TailEvidence, null_share: float) -> float:
    """Evidence that more than `null_share` of the candidate's answers are above the limit."""
    if tail.trials <= 0:
        return 1.0
    misses = tail.trials - tail.hits
    shares = (min(null_share * m, 0.99) for m in TAIL_SHARE_GRID)
    return _mixture(tuple(
        tail.hits * math.log(p / null_share) + misses * math.log((1 - p) / (1 - null_share))
        for p in shares
    ))  # fmt: skip


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
