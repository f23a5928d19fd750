"""E-values of satisfaction, and the cap every e-value keeps.

An e-value is a (super)martingale while the candidate is within its threshold,
so that by Ville's inequality it reaches 1/alpha during a rollout with
probability at most alpha, however often it is looked at. The error rate's is
in `error_evidence.py`, the latencies' in `tail_evidence.py`.

    >>> from rollout.windows import VariantWindow, Window
    >>> def scores(mean):
    ...     return VariantWindow(feedback_count=400, feedback_sum=400 * mean)
    >>> satisfaction_evalue(5, Window(scores(0.8), scores(0.8), 0, 1))  # equal: no evidence
    1.0
    >>> satisfaction_evalue(5, Window(scores(0.8), scores(0.6), 0, 1)) > 60  # 20 points less
    True
"""

from __future__ import annotations

import math

from rollout.windows import VariantWindow, Window

SATISFACTION_MIXTURE_SD = 0.10  # mSPRT prior scale, in score units (10 points)
MAX_LOG_EVIDENCE = 700.0  # e-values are capped below float overflow (and JSON's reach)


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
