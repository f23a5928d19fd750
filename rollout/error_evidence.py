"""The error-rate check's evidence: an e-process that is quick on gross failures, hears a
regression that starts late, and is not fooled by bursts of errors.

Pure: `observe` folds one evaluation interval in, `assess` reads the evidence.

Every interval is compared the same way: given the errors both variants made in
it, how many are the candidate's is binomial, with a share fixed by the two
request counts and the rate ratio. An incident that hits both variants at once
moves both counts and says nothing against the candidate. Each *component*
below multiplies these interval likelihood ratios for one alternative ratio
against the threshold ratio 1 + t; the evidence is their weighted mean, which
by Ville's inequality reaches 1/alpha with probability at most alpha while
errors are independent and the candidate within its threshold.

* **steady**: a plug-in bet on the ratio the candidate has shown lately (half-
  life `RECENT_HALF_LIFE_S`, a prior of 2x worth two expected errors), placed
  only outside a dead zone just above the threshold, where it would cost more
  than it could win. A bet chosen from the past only keeps the product a
  supermartingale (Robbins and Siegmund 1974; Waudby-Smith and Ramdas 2024,
  "Estimating means of bounded random variables by betting").
* **watchful**: the same with a lighter prior and a wider dead zone. While the
  candidate is healthy it does not bet, so its evidence stays where it was
  instead of being ground down, and a regression that starts after weeks is
  heard as if it started now. A fixed-ratio mixture forgets nothing: healthy
  history drags it down.
* **gross**: fixed ratios of 10, 30 and 100 times the threshold: a handful of
  errors decide.
* **outage**: the candidate failing most of its requests, measured against
  neither stable nor a ratio but against half its requests (or the threshold
  times stable's own rate, if stable fails that much too); it bets only after
  an interval in which the candidate failed at least half the time.

Bursts. The binomial per interval assumes errors independent of each other.
Real errors come in bursts (a replica restarting) that hit one variant and not
the other: a burst minute of the candidate's looks like a regression, however
healthy it is on average, and no test can tell the two apart inside that minute.
So intervals are grouped in blocks of `BLOCK_S` and a block that holds far more
candidate errors than the candidate's own recent rate predicts (more than
`BURST_Z` standard deviations, and more than a couple of errors) is *damped*:
its likelihood ratio L > 1 counts as L ** eta, eta = (Z^2 var + C) / excess^2.
Damping only ever lowers the evidence (L ** eta <= L), so the guarantee for
independent errors stands as it is; that it also holds false rollbacks down under
bursts is measured, not proven (BENCHMARKS.md, rollout statistics). A regression
that lasts is not damped for long: the recent rate learns it within a few blocks.
The outage component is not damped: a burst that fails more than half of a
variant's requests is an outage, and is rolled back as one; nor is a block in which
the candidate fails nine in ten of at least ten requests.

    >>> def interval(failed):  # 10 candidate requests, 990 to stable with 10 errors
    ...     return Counts(10, failed, 990, 10)
    >>> burst = observe(ErrorEvidence(), 0.1, interval(4), seconds=10.0, stable_rate=0.01)
    >>> assess(burst, 0.01).evalue < 60  # four of ten failed: it could be a burst
    True
    >>> outage = observe(ErrorEvidence(), 0.1, interval(10), seconds=10.0, stable_rate=0.01)
    >>> found = assess(outage, 0.01)
    >>> found.evalue > 60, found.leading  # ten of ten: it is not
    (True, 'gross 100x')
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

from rollout.evalues import MAX_LOG_EVIDENCE

BLOCK_S = 60.0  # errors closer together than this may be one burst
RECENT_HALF_LIFE_S = 300.0  # the plug-in bets' memory
RATE_HALF_LIFE_BLOCKS = 3.0  # the memory of the candidate's own rate, for damping
BURST_Z = 3.0
BURST_SLACK = 1.0  # a single error is never a burst; a second in the same block may be
RATE_PRIOR_REQUESTS = 50.0  # before its history, the candidate is expected at 2x stable's rate
OUTAGE_SHARE = 0.5
# A block in which the candidate fails nearly every one of at least this many requests is
# an outage, not a burst: it is not damped.
OUTAGE_BLOCK_SHARE = 0.9
OUTAGE_BLOCK_REQUESTS = 10
OUTAGE_ALTERNATIVE = 0.999
MAX_RATIO = 5.0  # times the threshold ratio: beyond, the gross bets speak


@dataclass(frozen=True, slots=True)
class Component:
    name: str
    weight: float
    ratio: float | None = None  # a fixed alternative (times the threshold ratio)
    prior_ratio: float = 2.0  # plug-ins: where the estimate starts
    prior_expected: float = 0.0  # plug-ins: how many expected errors the prior is worth
    dead_zone: float = 1.0  # plug-ins: bet only above dead_zone x the threshold ratio


COMPONENTS = (
    Component("steady", 0.35, prior_expected=2.0, dead_zone=1.15),
    Component("watchful", 0.35, prior_expected=1.0, dead_zone=1.5),
    Component("gross 10x", 0.05 / 3, ratio=10.0),
    Component("gross 30x", 0.05 / 3, ratio=30.0),
    Component("gross 100x", 0.05 / 3, ratio=100.0),
    Component("outage", 0.25),
)
_OUTAGE = len(COMPONENTS) - 1


@dataclass(frozen=True, slots=True)
class Counts:
    """One interval's requests and errors, by variant."""

    candidate_requests: float
    candidate_errors: float
    stable_requests: float
    stable_errors: float


@dataclass(frozen=True, slots=True)
class ErrorEvidence:
    """Stored with the rollout: every figure the next interval needs, none of the past."""

    closed: tuple[float, ...] = (0.0,) * len(COMPONENTS)  # log evidence of closed blocks
    block: tuple[float, ...] = (0.0,) * len(COMPONENTS)  # log likelihood ratios, open block
    block_seconds: float = 0.0
    block_errors: float = 0.0  # the candidate's, in the open block
    block_requests: float = 0.0
    # In the intervals both variants served, for the plug-ins:
    block_compared_errors: float = 0.0  # the candidate's
    block_compared_requests: float = 0.0
    block_stable_errors: float = 0.0
    block_stable_requests: float = 0.0
    recent_errors: float = 0.0  # the same, discounted by block: the plug-ins' data
    recent_requests: float = 0.0
    recent_stable_errors: float = 0.0
    recent_stable_requests: float = 0.0
    rate_errors: float = 0.0  # the candidate's, discounted by block: damping's reference
    rate_requests: float = 0.0
    last_share: float = 0.0  # of the candidate's requests that failed, in its last interval
    damped_blocks: int = 0  # blocks damped as bursts, shown with the verdict
    last_block_damped: bool = False


def observe(
    e: ErrorEvidence, threshold: float, c: Counts, *, seconds: float, stable_rate: float
) -> ErrorEvidence:
    """Fold one interval in. `seconds`: its length (memories fade by time, not by count);
    `stable_rate`: stable's error rate over the attempt (the candidate's rate before it has one).
    """
    bound = 1.0 + threshold
    logs = tuple(_log_lr(e, comp, bound, c) for comp in COMPONENTS)
    compared = c.candidate_requests > 0 and c.stable_requests > 0
    e = replace(
        e,
        block=tuple(a + b for a, b in zip(e.block, logs, strict=True)),
        block_seconds=e.block_seconds + seconds,
        block_errors=e.block_errors + c.candidate_errors,
        block_requests=e.block_requests + c.candidate_requests,
        block_compared_errors=e.block_compared_errors + c.candidate_errors * compared,
        block_compared_requests=e.block_compared_requests + c.candidate_requests * compared,
        block_stable_errors=e.block_stable_errors + c.stable_errors * compared,
        block_stable_requests=e.block_stable_requests + c.stable_requests * compared,
        last_share=(
            c.candidate_errors / c.candidate_requests if c.candidate_requests > 0 else e.last_share
        ),
    )
    return _close_block(e, stable_rate) if e.block_seconds >= BLOCK_S else e


def _close_block(e: ErrorEvidence, stable_rate: float) -> ErrorEvidence:
    """Bank the block, damped; the plug-ins learn from it with a burst's excess cut off, so
    that a burst does not raise the next bets."""
    burst = _burst(e, stable_rate)
    keep_rate = 0.5 ** (1 / RATE_HALF_LIFE_BLOCKS)
    keep_recent = 0.5 ** (e.block_seconds / RECENT_HALF_LIFE_S)
    kept = min(e.block_compared_errors, burst.cap)
    return replace(
        e,
        closed=tuple(a + b for a, b in zip(e.closed, _damped(e.block, burst.eta), strict=True)),
        block=(0.0,) * len(COMPONENTS),
        block_seconds=0.0,
        block_errors=0.0,
        block_requests=0.0,
        block_compared_errors=0.0,
        block_compared_requests=0.0,
        block_stable_errors=0.0,
        block_stable_requests=0.0,
        recent_errors=keep_recent * e.recent_errors + kept,
        recent_requests=keep_recent * e.recent_requests + e.block_compared_requests,
        recent_stable_errors=keep_recent * e.recent_stable_errors + e.block_stable_errors,
        recent_stable_requests=keep_recent * e.recent_stable_requests + e.block_stable_requests,
        # A burst teaches the damping's reference only its allowance: a burst split over two
        # blocks is damped in both. A second damped block in a row teaches it all: a
        # candidate that fails more for good stops being damped in its third minute, even
        # against a stable that never fails.
        rate_errors=keep_rate * e.rate_errors
        + (e.block_errors if e.last_block_damped else min(e.block_errors, burst.cap)),
        rate_requests=keep_rate * e.rate_requests + e.block_requests,
        damped_blocks=e.damped_blocks + (burst.eta < 1.0),
        last_block_damped=burst.eta < 1.0,
    )


@dataclass(frozen=True, slots=True)
class Burst:
    eta: float  # the exponent of the block's likelihood ratios: 1, or less in a burst
    cap: float  # the most candidate errors the block may teach the plug-ins


def _burst(e: ErrorEvidence, stable_rate: float) -> Burst:
    """The open block against the candidate's own recent rate."""
    prior = RATE_PRIOR_REQUESTS
    rate = (e.rate_errors + prior * min(2 * stable_rate, 1.0)) / (e.rate_requests + prior)
    rate = min(max(rate, 1e-9), 1.0)
    mean = e.block_requests * rate
    excess = e.block_errors - mean
    allowed = BURST_Z**2 * mean * (1 - rate) + BURST_SLACK
    eta = 1.0 if excess * excess <= allowed else allowed / (excess * excess)
    if e.block_requests >= OUTAGE_BLOCK_REQUESTS and e.block_errors >= (
        OUTAGE_BLOCK_SHARE * e.block_requests
    ):
        eta = 1.0  # an outage, not a burst: nothing is damped
    return Burst(eta, mean + math.sqrt(allowed))


def _damped(logs: tuple[float, ...], eta: float) -> tuple[float, ...]:
    return tuple(
        x * eta if x > 0 and i != _OUTAGE else x for i, x in enumerate(logs)
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class Assessment:
    """The evidence as a check reads it."""

    evalue: float
    leading: str  # the component holding the most evidence: the test that fires, for the audit
    bursting: bool  # the last or the open block held a burst: evidence damped, not absent


def assess(e: ErrorEvidence, stable_rate: float) -> Assessment:
    """Read once per judgement: the open block damped as if it closed now."""
    eta = _burst(e, stable_rate).eta
    logs = tuple(a + b for a, b in zip(e.closed, _damped(e.block, eta), strict=True))
    pairs = list(zip(COMPONENTS, logs, strict=True))
    return Assessment(
        evalue=sum(c.weight * math.exp(min(x, MAX_LOG_EVIDENCE)) for c, x in pairs),
        leading=max(pairs, key=lambda p: math.log(p[0].weight) + p[1])[0].name,
        bursting=e.last_block_damped or eta < 1.0,
    )


def recent_ratio(e: ErrorEvidence) -> float | None:
    """The candidate's recent errors over what stable's rate would give; None without data."""
    expected = _recent_expected(e)
    return e.recent_errors / expected if expected > 0 else None


def _recent_expected(e: ErrorEvidence) -> float:
    """The candidate's recent errors had it failed at stable's recent rate."""
    if e.recent_stable_requests <= 0:
        return 0.0
    return e.recent_requests * e.recent_stable_errors / e.recent_stable_requests


def _share(c: Counts, ratio: float) -> float:
    """Of an interval's errors, the share expected from the candidate at `ratio`."""
    weighted = c.candidate_requests * ratio
    return weighted / (weighted + c.stable_requests)


def _bet(e: ErrorEvidence, comp: Component, bound: float) -> float | None:
    """The ratio a component bets on in the next interval; None: no bet (likelihood ratio 1)."""
    if comp.ratio is not None:
        return comp.ratio * bound
    prior = comp.prior_expected
    estimate = (comp.prior_ratio * prior + e.recent_errors) / (prior + _recent_expected(e))
    if not math.isfinite(estimate) or estimate < comp.dead_zone * bound:
        return None
    return min(estimate, MAX_RATIO * bound)


def _log_lr(e: ErrorEvidence, comp: Component, bound: float, c: Counts) -> float:
    if comp is COMPONENTS[_OUTAGE]:
        return _outage_log_lr(e, bound, c)
    if c.candidate_requests <= 0 or c.stable_requests <= 0:
        return 0.0
    ratio = _bet(e, comp, bound)
    if ratio is None:
        return 0.0
    null, alt = _share(c, bound), _share(c, ratio)
    return c.candidate_errors * math.log(alt / null) + c.stable_errors * math.log(
        (1 - alt) / (1 - null)
    )


def _outage_log_lr(e: ErrorEvidence, bound: float, c: Counts) -> float:
    if e.last_share < OUTAGE_SHARE or c.candidate_requests <= 0:
        return 0.0
    stable_rate = c.stable_errors / c.stable_requests if c.stable_requests > 0 else 0.0
    null = max(OUTAGE_SHARE, bound * stable_rate)
    if null >= OUTAGE_ALTERNATIVE:
        return 0.0  # stable fails as much: nothing the candidate does stands out
    alt, fails = OUTAGE_ALTERNATIVE, c.candidate_errors
    return fails * math.log(alt / null) + (c.candidate_requests - fails) * math.log(
        (1 - alt) / (1 - null)
    )
