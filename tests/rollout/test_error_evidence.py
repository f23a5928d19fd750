"""The error-rate check's e-process (`rollout/error_evidence.py`), fed interval counts.

Every interval is 10 s and stable fails 1% of its requests. The fail level is the default
plan's: its three statistical checks share alpha = 5%, so each fails at 1 / (0.05 / 3) = 60.
Errors are drawn at random where chance is the point (false alarms); elsewhere intervals hold
their expected counts, so that a figure measures the method, not a seed.
"""

from __future__ import annotations

import doctest
from collections.abc import Iterable, Iterator
from dataclasses import replace
from itertools import cycle, islice
from types import ModuleType

import numpy as np
import pytest

from rollout import error_evidence, evalues, tail_evidence
from rollout.error_evidence import (
    BLOCK_S,
    COMPONENTS,
    Counts,
    ErrorEvidence,
    assess,
    observe,
    recent_ratio,
)

INTERVAL_S = 10.0
STABLE_RATE = 0.01
THRESHOLD = 0.1
FAIL_LEVEL = 60.0
BLOCK = round(BLOCK_S / INTERVAL_S)  # intervals in a block


def fold(counts: Iterable[Counts], e: ErrorEvidence | None = None) -> Iterator[ErrorEvidence]:
    """The evidence after each interval."""
    e = e or ErrorEvidence()
    for c in counts:
        e = observe(e, THRESHOLD, c, seconds=INTERVAL_S, stable_rate=STABLE_RATE)
        yield e


def after(counts: Iterable[Counts], e: ErrorEvidence | None = None) -> ErrorEvidence:
    *_, last = fold(counts, e)
    return last


def value(e: ErrorEvidence) -> float:
    return assess(e, STABLE_RATE).evalue


def crossing(states: Iterable[ErrorEvidence]) -> tuple[int, ErrorEvidence]:
    """The first interval (from 1) whose evidence reaches the fail level, and that evidence."""
    return next((i, e) for i, e in enumerate(states, 1) if value(e) >= FAIL_LEVEL)


def expected(ratio: float = 1.0, candidate: float = 50, stable: float = 450) -> Counts:
    """An interval's expected counts (fractional, as Prometheus' increase() gives them)."""
    return Counts(candidate, candidate * STABLE_RATE * ratio, stable, stable * STABLE_RATE)


def drawn(rng: np.random.Generator, candidate: int, stable: int) -> Iterator[Counts]:
    """Endless intervals of independent errors, both variants at stable's rate."""
    while True:
        errors = rng.binomial((candidate, stable), STABLE_RATE)
        yield Counts(candidate, float(errors[0]), stable, float(errors[1]))


HEALTHY = expected()
ONE_HOUR = 360  # intervals


@pytest.mark.parametrize(("candidate", "stable"), [(5, 45), (50, 450)], ids=["5rps", "50rps"])
def test_a_candidate_equal_to_stable_never_reaches_the_fail_level(
    candidate: int, stable: int
) -> None:
    """2,000 looks (5.6 hours at 10% weight) are many times a rollout's: a fixed-sample test
    looked at this often would have fired. Ville's inequality bounds the chance of ever
    reaching 60 by 1/60 for any seed, and damping only lowers it: over 100 seeds at 50 rps
    the highest evidence seen was 15."""
    states = fold(islice(drawn(np.random.default_rng(13), candidate, stable), 2000))
    assert max(value(e) for e in states) < FAIL_LEVEL


def failing_every_request(
    route: int, sent: tuple[int, ...], stable_errors: tuple[int, ...]
) -> list[Counts]:
    """`route` requests an interval, `sent` of them to the candidate in turn, all failing."""
    pairs = islice(zip(cycle(sent), cycle(stable_errors)), 100)
    return [Counts(n, n, route - n, s) for n, s in pairs]


GROSS = {
    "5rps at 1%": (50, (1, 0), (0, 1)),  # half a candidate request an interval
    "5rps at 5%": (50, (2, 3), (0, 1)),
    "50rps at 1%": (500, (5,), (5,)),
}


@pytest.mark.parametrize("name", GROSS)
def test_a_candidate_failing_every_request_fails_within_20_of_them(name: str) -> None:
    counts = failing_every_request(*GROSS[name])
    i, _ = crossing(fold(counts))
    assert sum(c.candidate_requests for c in counts[:i]) <= 20


@pytest.mark.parametrize("name", ["5rps at 5%", "50rps at 1%"])
def test_a_candidate_failing_every_request_is_decided_by_undamped_evidence(name: str) -> None:
    """A burst never fails nine in ten requests: neither that block nor the outage bet is
    damped."""
    _, e = crossing(fold(failing_every_request(*GROSS[name])))
    assert assess(e, STABLE_RATE).leading in {"outage", "gross 100x"}
    assert e.damped_blocks == 0


@pytest.mark.parametrize(("candidate", "stable"), [(5, 45), (50, 450)], ids=["5rps", "50rps"])
def test_a_candidate_failing_half_its_requests_fails_in_its_third_minute_where_stable_never_does(
    candidate: int, stable: int
) -> None:
    """For two minutes a half-failing candidate looks like a burst (damped, perhaps split over
    two blocks); by the end of the third the damping's reference has learned its rate."""
    e = ErrorEvidence()
    for _ in range(3 * BLOCK):
        half = Counts(candidate, candidate / 2, stable, 0.0)
        e = observe(e, THRESHOLD, half, seconds=INTERVAL_S, stable_rate=0.0)
    assert assess(e, 0.0).evalue >= FAIL_LEVEL


@pytest.mark.parametrize("intervals", [1, BLOCK, 2 * BLOCK])
def test_an_incident_hitting_both_variants_adds_no_evidence(intervals: int) -> None:
    """Both error counts up 50x, in proportion to traffic: the candidate's share is unchanged."""
    before = after([HEALTHY] * 3 * BLOCK)
    incident = [Counts(50, 25, 450, 225)] * intervals
    states = fold(incident + [HEALTHY] * 3 * BLOCK, before)
    assert max(value(e) for e in states) <= value(before) <= 1.0


BURST = expected(20)  # one minute at 20x the candidate's recent error rate


def test_a_burst_block_is_damped() -> None:
    healthy = after([HEALTHY] * 2 * BLOCK)
    almost = after([BURST] * (BLOCK - 1), healthy)
    # The open block's log likelihood ratios banked as they are: what the counts alone say.
    undamped = replace(
        almost,
        closed=tuple(a + b for a, b in zip(almost.closed, almost.block, strict=True)),
        block=(0.0,) * len(COMPONENTS),
    )
    assert value(undamped) > 1e6 * FAIL_LEVEL
    burst = after([BURST], almost)
    assert burst.damped_blocks == 1
    assert value(burst) < 1.0
    assert max(value(e) for e in fold([HEALTHY] * 10 * BLOCK, burst)) < 1.0


def test_the_same_excess_lasting_is_not_damped_away() -> None:
    i, _ = crossing(fold([BURST] * 100, after([HEALTHY] * 2 * BLOCK)))
    assert i <= 60


def intervals_to_fail(ratio: float, history: int) -> int:
    healthy = after([HEALTHY] * history) if history else None
    return crossing(fold([expected(ratio)] * 200, healthy))[0]


@pytest.mark.parametrize("history", [0, ONE_HOUR], ids=["from-the-start", "after-an-hour"])
def test_a_sustained_3x_regression_fails_within_10_minutes(history: int) -> None:
    assert intervals_to_fail(3, history) <= 60


def test_a_late_regression_is_heard_the_same_after_an_hour_or_ten() -> None:
    """The plug-ins stop betting while the candidate is healthy: history does not pile up."""
    assert intervals_to_fail(3, ONE_HOUR) == intervals_to_fail(3, 10 * ONE_HOUR)


@pytest.mark.xfail(
    strict=True,
    reason="measured: 3x found after 11 intervals from the start, 32 after an hour's health "
    "(seeded binomial draws: medians 11 and 41.5); the plug-ins' estimate must first climb "
    "from ~1 over the dead zone, learning only as blocks close",
)
def test_a_late_regression_is_found_within_twice_the_time_from_the_start() -> None:
    assert intervals_to_fail(3, ONE_HOUR) <= 2 * intervals_to_fail(3, 0)


def test_a_larger_late_regression_is_found_no_later_than_a_smaller_one() -> None:
    assert intervals_to_fail(20, ONE_HOUR) <= intervals_to_fail(3, ONE_HOUR)


def test_the_recent_ratio_learns_only_when_a_block_closes() -> None:
    first = list(fold([expected(3)] * BLOCK))
    assert [recent_ratio(e) for e in first[:-1]] == [None] * (BLOCK - 1)
    learned = recent_ratio(first[-1])
    assert learned is not None
    second = list(fold([expected(1)] * BLOCK, first[-1]))
    assert [recent_ratio(e) for e in second[:-1]] == [learned] * (BLOCK - 1)
    assert recent_ratio(second[-1]) < learned


@pytest.mark.parametrize(
    ("candidate", "stable"),
    [(5, 495), (50, 450), (250, 250)],
    ids=["1%", "10%", "50%"],
)
def test_the_recent_ratio_is_the_ratio_the_candidate_showed(candidate: int, stable: int) -> None:
    e = after([expected(3, candidate, stable)] * BLOCK)
    assert recent_ratio(e) == pytest.approx(3.0, rel=0.05)


@pytest.mark.parametrize("name", ["steady", "watchful"])
def test_an_intervals_own_errors_do_not_move_the_ratio_bet_on_in_it(name: str) -> None:
    """With the bet fixed beforehand the log likelihood ratio is linear in the candidate's
    errors; a bet that peeked at them would bend it."""
    k = [c.name for c in COMPONENTS].index(name)
    bettor = after([expected(3)] * BLOCK)  # past the dead zone: both plug-ins bet

    def log_lr(errors: float) -> float:
        return after([Counts(50, errors, 450, 4.5)], bettor).block[k]

    step = log_lr(1) - log_lr(0)
    assert step > 0
    for errors in (5, 20, 50):
        assert log_lr(errors) - log_lr(0) == pytest.approx(errors * step)


@pytest.mark.parametrize("module", [error_evidence, tail_evidence, evalues])
def test_the_examples_in_the_evidence_modules_hold(module: ModuleType) -> None:
    assert doctest.testmod(module).failed == 0


def test_a_check_whose_evidence_is_being_damped_does_not_pass() -> None:
    """Damped evidence is evidence not yet heard: the step waits to see if the burst lasts."""
    healthy = after([HEALTHY] * 2 * BLOCK)
    assert not assess(healthy, STABLE_RATE).bursting
    assert assess(after([BURST] * 2, healthy), STABLE_RATE).bursting
    calm_again = after([HEALTHY] * 2 * BLOCK, after([BURST] * BLOCK, healthy))
    assert not assess(calm_again, STABLE_RATE).bursting
