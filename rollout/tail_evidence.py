"""The latency checks' evidence: the share of the candidate's answers above a limit set by
stable's quantile, at the check's quantile and further out in the tail.

A candidate within the threshold has at most 1 - q of its answers slower than
(1 + threshold) times stable's q-quantile, so the count above that limit is
binomial with p <= 1 - q, at each level. Each level keeps a bet on the share
above (a predictable plug-in: the share seen before the interval), a
supermartingale while the share is at most 1 - q.

    >>> tail = tail_observed(TailEvidence(), 0.05, hits=5, trials=100)  # 5% above: the null
    >>> round(tail_evalue(tail), 2)
    0.19
    >>> tail_evalue(tail_observed(tail, 0.05, hits=30, trials=100)) > 1000  # then 30% above
    True
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from rollout.evalues import MAX_LOG_EVIDENCE
from rollout.windows import Histogram

TAIL_PRIOR_HITS = 10.0
TAIL_DEAD_ZONE = 1.2
MAX_TAIL_SHARE = 0.999


@dataclass(frozen=True, slots=True)
class TailEvidence:
    """Candidate answers above stable's limit (`hits`) out of `trials`, and the log evidence
    of a bet on the share above, placed each interval on the share seen before it."""

    hits: float = 0.0
    trials: float = 0.0
    log_bet: float = 0.0


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


# Stable's quantile is the limit's reference only once stable has this many answers
# above it in the step: fewer, and the limit is noise. (The check waits for its own
# quantile's reference; the level further out may come later.)
REFERENCE_TAIL_ANSWERS = 5


def has_reference(stable: Histogram, level: float) -> bool:
    return stable.quantile(level) is not None and (
        stable.total * (1 - level) >= REFERENCE_TAIL_ANSWERS
    )


def tail_levels(quantile: float) -> tuple[float, ...]:
    """The check's quantile and one further out, where a fifth as many answers lie.

    >>> tail_levels(0.95)
    (0.95, 0.99)
    """
    return tuple(round(1 - (1 - quantile) / k, 6) for k in (1, 5))


def observe(
    seen: tuple[TailEvidence, ...] | None,
    levels: tuple[float, ...],
    threshold: float,
    stable: Histogram,
    candidate: Histogram,
) -> tuple[TailEvidence, ...]:
    """Fold one interval's candidate answers in, against stable's answers in the step so far
    (a large sample, so the limit is not noise)."""
    if seen is None or len(seen) != len(levels):
        seen = (TailEvidence(),) * len(levels)
    if candidate.total <= 0:
        return seen
    out = []
    for level, tail in zip(levels, seen, strict=True):
        reference = stable.quantile(level)
        if reference is None or not has_reference(stable, level):
            out.append(tail)
            continue
        above = candidate.count_above((1.0 + threshold) * reference)
        out.append(tail_observed(tail, 1 - level, above, candidate.total))
    return tuple(out)
