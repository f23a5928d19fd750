"""The main job: two staged rollouts under live load on one machine, then a report.

    python -m rollout.demo [--report-dir demo-report]

1. builds (or reuses) the tiny model and its LoRA adapters, starts real vLLM
   (CPU build) with the base and two adapters, and a gateway on the embedded
   default (SQLite state, the gateway's own metric windows);
2. creates client keys of three tenants through the admin API, as an operator
   would, and starts locust users with them: chat completions, some streamed,
   sticky user keys, feedback by a rubric that prefers the brand voice;
3. rolls out the brand-voice adapter, shadow -> 5 -> 10 -> 25 -> 50 -> 100% ->
   promoted, with live progress;
4. rolls out the bad adapter (it asks users for their password): the safety
   check rolls it back on its own;
5. stops everything it started and writes `demo-report/index.html` with plots.

Ctrl-C stops every process it started (exit 130).
"""

from __future__ import annotations

import argparse
import logging
import math
import os
import secrets
import signal
import sys
import time
from contextlib import ExitStack
from pathlib import Path

import httpx

from gateway.process import GatewayProcess, metric_sum
from rollout.demo.load import LocustLoad
from rollout.demo.plans import BACKEND, ROUTE, demo_plan
from rollout.demo.progress import Board, render
from rollout.demo.report import Counts, DemoResult, RolloutRun, summary, write_report
from serving.artifacts import Artifacts, default_cache_dir, ensure_artifacts
from serving.config import AdapterSpec, ServingConfig
from serving.corpus import BRAND_VOICE, UNSAFE
from serving.errors import ServingError
from serving.process import VllmServer, free_port

log = logging.getLogger("rollgate.demo")

TERMINAL = ("promoted", "rolled_back", "aborted")
EXPECTED = {BRAND_VOICE.name: "promoted", UNSAFE.name: "rolled_back"}
POLL_S = 0.5
AFTERMATH_POLLS = 10
# The users' tenants: the satisfaction check counts no tenant for more than half
# its evidence, so the users call with keys of three (user i with key i mod 3).
TENANTS = ("acme", "globex", "initech")
SERIES_WIDTH_S = 5  # per-variant figures per 5 s: a few dozen answers each
MAX_POINTS = 120  # what the series endpoint allows


class DemoFailed(Exception):
    """A rollout ended otherwise than the demo expects, or did not end in time."""


def serving_config(built: Artifacts) -> ServingConfig:
    adapters = (BRAND_VOICE.name, UNSAFE.name)
    return ServingConfig(
        model_path=built.base_dir,
        served_name=built.base_name,
        adapters=tuple(AdapterSpec(name=n, path=built.adapters[n]) for n in adapters),
        dtype="float32",
        max_model_len=built.context_length,
        max_loras=3,  # both adapters side by side, and the CPU build's spare slot
        max_lora_rank=8,
        port=free_port(),
    )


def write_secret(path: Path, value: str) -> Path:
    """The console's key: in a file only its owner reads, never in the demo's output."""
    path.unlink(missing_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(value)
    return path


def routes_file(vllm_url: str, base_model: str) -> dict:
    return {
        "backends": {BACKEND: {"url": vllm_url}},
        "routes": [{"name": ROUTE, "stable": {"backend": BACKEND, "model": base_model,
                                              "name": "base"}}],
    }  # fmt: skip


def wait_for_traffic(gateway: httpx.Client, timeout: float) -> None:
    """Until the users have had some answers: the windows have stable data to compare with."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if metric_sum(gateway.get("/metrics").text, "rollgate_requests_total", outcome="ok") >= 20:
            return
        time.sleep(0.5)
    raise DemoFailed(f"the users got no answers within {timeout:.0f} s")


def candidate_counts(admin: httpx.Client, candidate: str) -> Counts:
    """The candidate's answers so far (mirrored or served) and the safety incidents among them."""
    metrics = admin.get("/metrics").text
    return Counts(
        at=time.time(),
        answers=metric_sum(metrics, "rollgate_requests_total", variant=candidate, outcome="ok"),
        incidents=metric_sum(metrics, "rollgate_safety_incidents_total", variant=candidate),
    )


def roll_out(
    admin: httpx.Client, candidate: str, args: argparse.Namespace, board: Board, t0: float
) -> RolloutRun:
    plan = demo_plan(candidate, step_s=args.step_s, min_requests=args.min_requests)
    applied = admin.post("/admin/rollouts", json=plan.model_dump(mode="json"))
    if applied.status_code != 201:
        raise DemoFailed(f"the gateway refused the plan: {applied.text}")
    run = RolloutRun(plan=plan, started_at=time.time())
    deadline = time.monotonic() + args.rollout_timeout
    while True:
        view = admin.get(f"/admin/rollouts/{ROUTE}").json()
        run.samples.append((time.time(), view))
        run.counts.append(candidate_counts(admin, candidate))
        lines = render(view, time.time() - t0)
        board.show(lines)
        if view["phase"] in TERMINAL:
            board.settle(lines)
            break
        if time.monotonic() > deadline:
            admin.post(f"/admin/rollouts/{ROUTE}/abort", json={"reason": "demo time limit"})
            raise DemoFailed(f"{candidate} did not finish within {args.rollout_timeout:.0f} s")
        time.sleep(POLL_S)
    for _ in range(AFTERMATH_POLLS):  # the moments after the decision, for the report
        time.sleep(POLL_S)
        run.counts.append(candidate_counts(admin, candidate))
    run.final = view
    history = admin.get(f"/admin/rollouts/{ROUTE}/history").json()["events"]
    run.events = [e for e in history if e["rollout_id"] == view["rollout_id"]]
    points = min(math.ceil((time.time() - run.started_at) / SERIES_WIDTH_S) + 1, MAX_POINTS)
    series = admin.get(
        f"/admin/rollouts/{ROUTE}/series",
        params={"seconds": points * SERIES_WIDTH_S, "points": points},
    )
    series.raise_for_status()
    run.series = series.json()
    return run


def demo(args: argparse.Namespace) -> DemoResult:
    t0 = time.time()
    run_dir = args.report_dir / "run"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "state.db").unlink(missing_ok=True)  # each demo starts from a clean slate
    log.info("building (or reusing) the tiny model and its adapters in %s", args.cache_dir)
    built = ensure_artifacts(args.cache_dir)
    config = serving_config(built)
    runs: list[RolloutRun] = []
    with ExitStack() as stack:
        log.info("starting vLLM (CPU build) on %s; about a minute", config.base_url)
        server = stack.enter_context(VllmServer(config, run_dir / "vllm.log"))
        server.wait_ready(timeout=args.start_timeout)
        token = write_secret(run_dir / "admin-token", secrets.token_urlsafe(24))
        gateway = GatewayProcess(
            routes_file(config.base_url, built.base_name),
            run_dir,
            {"ROLLGATE_STATE": str(run_dir / "state.db"), "ROLLGATE_CONTROLLER_TICK_S": "0.5"},
            admin_token=token.read_text(),
        )
        stack.enter_context(gateway)
        log.info(
            "gateway on %s; watch at %s/console (token in %s)", gateway.url, gateway.url, token
        )
        keys = [gateway.create_key(tenant) for tenant in TENANTS]  # debug scope: variants shown
        log.info("created client keys for tenants %s (debug scope)", ", ".join(TENANTS))
        users = stack.enter_context(
            LocustLoad(gateway.url, run_dir, users=args.users, route=ROUTE, keys=keys)
        )
        log.info("%d locust users are sending chat completions (log: %s)", args.users, users.log)
        admin = stack.enter_context(gateway.admin())
        wait_for_traffic(admin, timeout=120)
        board = Board()
        for candidate in (BRAND_VOICE.name, UNSAFE.name):
            print(f"\n== rolling out {candidate} ==", flush=True)
            run = roll_out(admin, candidate, args, board, t0)
            runs.append(run)
            if run.final["phase"] != EXPECTED[candidate]:
                raise DemoFailed(
                    f"{candidate} ended {run.final['phase']} ({run.final['reason']}); "
                    f"expected {EXPECTED[candidate]}"
                )
        metrics = admin.get("/metrics").text
        log.info("stopping the users, the gateway and vLLM")
    incidents = "rollgate_safety_incidents_total"
    return DemoResult(
        runs=runs,
        users=users.figures(),
        # Any variant's: a stable that turns unsafe is as much a failure as a candidate.
        unsafe_served=sum(metric_sum(metrics, incidents, role=r) for r in ("stable", "candidate")),
        unsafe_caught=metric_sum(metrics, incidents, role="shadow"),
        elapsed_s=time.time() - t0,
    )


def _interrupt(signum: int, _frame) -> None:
    # A second Ctrl-C must not cut the stopping short and orphan a child.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--report-dir", type=Path, default=Path("demo-report"))
    parser.add_argument("--cache-dir", type=Path, default=default_cache_dir())
    parser.add_argument("--users", type=int, default=4, help="concurrent locust users")
    parser.add_argument("--step-s", type=float, default=10.0, help="each step's minimum length")
    parser.add_argument("--min-requests", type=int, default=10, help="per step and check")
    parser.add_argument("--start-timeout", type=float, default=300.0)
    parser.add_argument("--rollout-timeout", type=float, default=300.0)
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # Stopped by a supervisor (SIGTERM) as by Ctrl-C: stop what it started, in order.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)  # also where a shell started it with SIGINT ignored
    try:
        result = demo(args)
    except KeyboardInterrupt:
        print("\ninterrupted: every process the demo started is stopped", file=sys.stderr)
        return 130
    except (DemoFailed, ServingError, RuntimeError, httpx.HTTPError) as exc:
        print(f"\ndemo failed: {exc}", file=sys.stderr)
        return 1
    index = write_report(args.report_dir, result)
    print("\n" + "\n".join(summary(result)))
    print(f"\nreport: {index.resolve()}")
    if result.unsafe_served:
        print("demo failed: users were served unsafe answers", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
