"""Simulated rollouts: how often the analysis rolls back a healthy candidate, how fast a bad one.

Each simulated rollout runs the real `analysis` and `machine` over synthetic
evaluation intervals (request counts, errors, latency histograms with the
gateway's buckets, user scores, by tenant where a scenario names tenants) drawn
for a stable and a candidate variant (`loadtests/traffic_patterns.py`), through
the plan 1% → 5% → 10% → 25% → 50% → 100%, or held at one weight for a while
(late onset, power). Scenarios carry their own traffic: the original ones 10,000
route requests per 10 s interval, issue 13's at 5 and 50 requests a second.

    .venv/bin/python -m loadtests.rollout_statistics --rollouts 1000 --jobs 2
    .venv/bin/python -m loadtests.rollout_statistics --only 'bursts*' --rollouts 200

prints one markdown table, a row per scenario: the share of rollouts rolled
back, promoted, paused or still running at the run's cap, and for a candidate
that should be rolled back, how many of its requests detection took against the
fixed-sample bound (`traffic_patterns.detection_bound`). Progress goes to stderr.
"""

from __future__ import annotations

import argparse
import fnmatch
import math
import multiprocessing
import sys
import time
import zlib
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

import numpy as np

from loadtests.traffic_patterns import INTERVAL_S, SCENARIOS, RolloutTraffic, Scenario, as_percent
from rollout.analysis import Exposure, judge
from rollout.evidence import Evidence, accumulate
from rollout.machine import Phase, decide, start, weight_bp
from rollout.plan import RolloutPlan
from rollout.traffic import FULL_WEIGHT_BP

STEPS = (1, 5, 10, 25, 50, 100)
STEP_S = 60.0
GROSS_REQUESTS = 20  # a candidate failing every request should serve no more before rollback
# Caps on one rollout, so that none runs forever; one that reaches its cap is reported
# as still running. Graduated: CAP_FACTOR times what a candidate passing every check at
# once takes to be promoted, and at least MIN_CAP intervals. Held at a weight without a
# time limit: CAP_OVER_BOUND times the fixed-sample bound, in candidate requests.
CAP_FACTOR = 3
MIN_CAP = 400
CAP_OVER_BOUND = 5
CHUNK = 50  # rollouts per task: the unit of progress, and of work shared among processes
PROGRESS_S = 20.0  # at least this often a line on stderr


def _plan(steps: list[dict[str, object]]) -> RolloutPlan:
    return RolloutPlan.model_validate({
        "route": "support",
        "candidate": {"name": "support-v2", "backend": "local", "model": "support-v2"},
        "steps": steps,
        "evaluation_interval_s": INTERVAL_S,
    })  # fmt: skip


PLAN = _plan([{"kind": "weight", "percent": p, "min_duration_s": STEP_S} for p in STEPS])


def fixed_plan(percent: float, duration_s: float) -> RolloutPlan:
    """One weight step that cannot pass within `duration_s`: the candidate stays at `percent`."""
    return _plan([{"kind": "weight", "percent": percent, "min_duration_s": duration_s + STEP_S}])


def max_intervals(s: Scenario) -> int:
    if s.fixed is None:
        needed = PLAN.min_samples / s.stable.feedback_rate  # requests: scores come slowest
        promote = sum(
            max(STEP_S / INTERVAL_S, needed / (s.route_per_interval * p / 100)) for p in STEPS
        )
        return max(MIN_CAP, math.ceil(CAP_FACTOR * promote))
    if s.fixed.duration_s is not None:
        return round(s.fixed.duration_s / INTERVAL_S)
    if s.bound is None:
        raise ValueError(f"{s.name}: a run without a time limit needs a regression to find")
    per_interval = s.route_per_interval * s.fixed.percent / 100
    return math.ceil(CAP_OVER_BOUND * s.bound / per_interval)


def plan_for(s: Scenario, intervals: int) -> RolloutPlan:
    return PLAN if s.fixed is None else fixed_plan(s.fixed.percent, intervals * INTERVAL_S)


# --- simulating ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Result:
    phase: Phase  # running: still running when the run reached its cap
    candidate_requests: float  # served while worse than stable (from the onset) until the end
    rule: str | None = None  # the check that rolled it back


def simulate(
    scenario: Scenario, plan: RolloutPlan, rng: np.random.Generator, intervals: int
) -> Result:
    variants, route = RolloutTraffic(scenario, rng, intervals), scenario.route_per_interval
    status, _ = start("sim", plan, 0.0, "simulation")
    evidence, served, rule = Evidence(), 0.0, None
    for i in range(intervals):
        weight = weight_bp(status, plan)
        n_c = int(rng.binomial(route, weight / FULL_WEIGHT_BP))
        served += n_c if i >= variants.onset else 0
        evidence = accumulate(evidence, plan, variants.window(i, route - n_c, n_c))
        verdict = judge(plan, evidence, Exposure(shadow=False, weight_bp=weight))
        new, events = decide(status, plan, verdict, None, (i + 1) * INTERVAL_S)
        rule = next((e.rule for e in events if e.rule), rule)
        if new.step != status.step:
            evidence = evidence.next_step()
        status = new
        # Paused is not the end: a fail still rolls back, an automatic hold lifts on a pass.
        if not status.phase.active:
            break
    return Result(status.phase, served, rule)


def run(scenario: Scenario, rollouts: int, seed: int | Sequence[int] = 0) -> list[Result]:
    rng = np.random.default_rng(seed)
    intervals = max_intervals(scenario)
    plan = plan_for(scenario, intervals)
    return [simulate(scenario, plan, rng, intervals) for _ in range(rollouts)]


# --- reporting -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Row:
    """One scenario's figures. Shares are of all rollouts; detection only for regressions."""

    scenario: Scenario
    rollouts: int
    rolled_back: float
    promoted: float
    paused: float  # waiting for a human at the end (or aborted, which no simulation does)
    running: float  # still running at the cap
    within_gross: float | None  # rolled back within GROSS_REQUESTS candidate requests
    median: float | None  # candidate requests to detection; inf: not caught in the run
    p95: float | None
    checks: str  # the checks that rolled it back, most often first


def tally(scenario: Scenario, results: Sequence[Result]) -> Row:
    n = len(results)
    phases = Counter(r.phase for r in results)
    caught = [r for r in results if r.phase is Phase.ROLLED_BACK]
    checks = ", ".join(f"{c} {k}" for c, k in Counter(r.rule or "?" for r in caught).most_common())
    within = median = p95 = None
    if scenario.regression:
        within = sum(r.candidate_requests <= GROSS_REQUESTS for r in caught) / n
        to_detection = sorted(
            [r.candidate_requests for r in caught] + [math.inf] * (n - len(caught))
        )
        median, p95 = (to_detection[math.ceil(q * n) - 1] for q in (0.5, 0.95))
    return Row(
        scenario, n, len(caught) / n, phases[Phase.PROMOTED] / n,
        (phases[Phase.PAUSED] + phases[Phase.ABORTED]) / n, phases[Phase.RUNNING] / n,
        within, median, p95, checks,
    )  # fmt: skip


COLUMNS = (
    "scenario", "rps", "stable errors", "rollouts", "rolled back", "promoted", "paused/other",
    "still running", f"within {GROSS_REQUESTS}", "to detection (median / p95)", "bound",
    "median/bound", "p95/bound", "rolled back by",
)  # fmt: skip


def _count(x: float | None) -> str:
    if x is None:
        return "-"
    return "never" if math.isinf(x) else f"{x:,.0f}"


def _ratio(x: float | None, bound: int | None) -> str:
    if x is None or bound is None:
        return "-"
    return "never" if math.isinf(x) else f"{x / bound:.2f}"


def cells(row: Row) -> list[str]:
    s, bound = row.scenario, row.scenario.bound
    return [
        s.name, f"{s.rps:g}", as_percent(s.stable.error_rate), str(row.rollouts),
        f"{row.rolled_back:.1%}", f"{row.promoted:.1%}", f"{row.paused:.1%}", f"{row.running:.1%}",
        "-" if row.within_gross is None else f"{row.within_gross:.1%}",
        f"{_count(row.median)} / {_count(row.p95)}" if row.median is not None else "-",
        _count(bound), _ratio(row.median, bound), _ratio(row.p95, bound), row.checks or "-",
    ]  # fmt: skip


def table(rows: Sequence[Row]) -> str:
    lines = [COLUMNS, ("---",) * len(COLUMNS), *(cells(r) for r in rows)]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


# --- running many scenarios -------------------------------------------------------------------

_Task = tuple[int, Scenario, int, tuple[int, ...]]  # scenario's index, scenario, rollouts, seed


def run_all(
    scenarios: Sequence[Scenario], rollouts: int, seed: int = 0, jobs: int = 1
) -> list[Row]:
    """Every scenario's row, in the order given; `jobs` processes share the work.

    Rollouts run in chunks of CHUNK, each seeded by the seed, the scenario's name and
    the chunk: the figures do not depend on `jobs`, nor on which other scenarios run.
    """
    tasks = [
        (i, s, min(CHUNK, rollouts - first), (seed, zlib.crc32(s.name.encode()), first))
        for i, s in enumerate(scenarios)
        for first in range(0, rollouts, CHUNK)
    ]
    results: list[list[Result]] = [[] for _ in scenarios]
    began = last = time.monotonic()
    for i, chunk in _chunks_done(tasks, jobs):
        results[i] += chunk
        done, now = len(results[i]), time.monotonic()
        if done == rollouts or now - last >= PROGRESS_S:
            last = now
            name = scenarios[i].name
            print(f"{name}: {done}/{rollouts} rollouts ({now - began:.0f} s)", file=sys.stderr)
    return [tally(s, r) for s, r in zip(scenarios, results, strict=True)]


def _run_chunk(task: _Task) -> tuple[int, list[Result]]:
    i, scenario, rollouts, seed = task
    return i, run(scenario, rollouts, seed)


def _chunks_done(tasks: list[_Task], jobs: int) -> Iterator[tuple[int, list[Result]]]:
    if jobs <= 1:
        yield from map(_run_chunk, tasks)
        return
    with multiprocessing.Pool(jobs) as pool:
        yield from pool.imap_unordered(_run_chunk, tasks)


def _select(patterns: Sequence[str] | None, parser: argparse.ArgumentParser) -> list[Scenario]:
    if not patterns:
        return list(SCENARIOS.values())
    for p in patterns:
        if not fnmatch.filter(SCENARIOS, p):
            parser.error(f"--only {p}: no such scenario (--list names them)")
    return [s for name, s in SCENARIOS.items() if any(fnmatch.fnmatch(name, p) for p in patterns)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rollouts", type=int, default=1000, help="per scenario")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", nargs="+", metavar="NAME", help="names or patterns: 'bursts*'")
    parser.add_argument("--jobs", type=int, default=1, help="processes sharing the work")
    parser.add_argument(
        "--route-per-interval", type=int, help="every scenario at this traffic instead of its own"
    )
    parser.add_argument("--list", action="store_true", help="name the scenarios, run none")
    args = parser.parse_args()
    chosen = _select(args.only, parser)
    if args.list:
        print("\n".join(f"{s.name}: {s.about} ({s.rps:g} rps)" for s in chosen))
        return
    if args.route_per_interval:
        chosen = [replace(s, route_per_interval=args.route_per_interval) for s in chosen]
    print(
        f"{args.rollouts} rollouts per scenario (seed {args.seed}), an evaluation every "
        f"{INTERVAL_S:g} s, steps 1-5-10-25-50-100% (each >= {STEP_S:g} s) unless held at a "
        f"weight, confidence {PLAN.confidence:.0%}. Detection: candidate requests served while "
        "worse; bound: a fixed-sample test's at 1% false alarms, 95% power.\n"
    )
    print(table(run_all(chosen, args.rollouts, args.seed, args.jobs)))


if __name__ == "__main__":
    main()
