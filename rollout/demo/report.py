"""The demo's report: `index.html` with PNG plots, and a one-screen summary.

Plots: the candidate's weight over the whole demo with every decision marked;
per-variant p95 latency, error rate and satisfaction for each rollout (from the
gateway's own windows, the figures the controller judged); the rollback moment.
"""

from __future__ import annotations

import html
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from rollout.demo.load import UserFigures
from rollout.plan import RolloutPlan

View = Mapping[str, Any]
SIDES = ("stable", "candidate")
MIN_POINTS = 3


@dataclass(frozen=True, slots=True)
class Counts:
    """The candidate's totals at one moment, from the gateway's /metrics."""

    at: float  # wall clock
    answers: float  # mirrored or served, answered
    incidents: float  # safety incidents among them


@dataclass
class RolloutRun:
    """One rollout as the demo saw it through the admin API."""

    plan: RolloutPlan
    started_at: float
    samples: list[tuple[float, View]] = field(default_factory=list)  # (wall clock, view)
    counts: list[Counts] = field(default_factory=list)
    final: View = field(default_factory=dict)
    events: list[View] = field(default_factory=list)
    series: View = field(default_factory=dict)

    @property
    def candidate(self) -> str:
        return self.plan.candidate.name

    @property
    def ended_at(self) -> float:
        return self.events[-1]["at"] if self.events else self.started_at


@dataclass(frozen=True, slots=True)
class DemoResult:
    runs: list[RolloutRun]
    users: list[UserFigures]
    unsafe_served: float  # flagged answers users received
    unsafe_caught: float  # flagged answers in mirrored copies nobody received
    elapsed_s: float


# --- figures --------------------------------------------------------------------------------


def _plt():
    import matplotlib  # the demo's extra: only the report needs it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _points(run: RolloutRun, side: str, figure: str) -> tuple[list[float], list[float]]:
    """One variant's figure per interval, against seconds since the rollout started."""
    xs, ys = [], []
    for point in run.series.get("points", ()):
        value = point[side].get(figure)
        if value is not None:
            xs.append(point["end"] - run.started_at)
            ys.append(value)
    return xs, ys


def _mark_events(ax, run: RolloutRun, t0: float) -> None:
    for event in run.events:
        if event["kind"] == "waiting":  # checks still gathering data: not a decision
            continue
        x = event["at"] - t0
        color = "tab:red" if event["to_phase"] in ("rolled_back", "aborted") else "0.6"
        ax.axvline(x, color=color, linewidth=0.8, linestyle=":")
        label = event["to_step"] if event["kind"] != "rolled_back" else "rollback"
        ax.annotate(
            label, (x, 1.0), xycoords=("data", "axes fraction"), rotation=90,
            fontsize=7, va="top", ha="right", color=color,
        )  # fmt: skip


def plot_weights(runs: Sequence[RolloutRun], t0: float, path: Path) -> None:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.6))
    for run in runs:
        xs = [t - t0 for t, _ in run.samples]
        ys = [view["weight_percent"] for _, view in run.samples]
        shadow = [100 if view["step_label"] == "shadow" else 0 for _, view in run.samples]
        (line,) = ax.step(xs, ys, where="post", label=f"{run.candidate}: users served (%)")
        ax.fill_between(xs, shadow, step="post", alpha=0.12, color=line.get_color())
        _mark_events(ax, run, t0)
    ax.set_xlabel("seconds since the demo started")
    ax.set_ylabel("candidate weight (%)")
    ax.set_ylim(-2, 105)
    ax.set_title("Candidate weight over time (shaded: shadow, mirrored copies only)")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def charted(runs: Sequence[RolloutRun]) -> list[RolloutRun]:
    """Runs long enough for per-interval charts (a rollback in seconds has one interval)."""
    return [run for run in runs if len(run.series.get("points", ())) >= MIN_POINTS] or runs[:1]


def plot_per_variant(
    runs: Sequence[RolloutRun], figure: str, label: str, scale: float, path: Path
) -> None:
    runs = charted(runs)
    plt = _plt()
    fig, axes = plt.subplots(1, len(runs), figsize=(5 * len(runs), 3.4), squeeze=False)
    for ax, run in zip(axes[0], runs, strict=True):
        for side in SIDES:
            xs, ys = _points(run, side, figure)
            name = run.series.get(side, side)
            ax.plot(xs, [y * scale for y in ys], marker=".", label=f"{name} ({side})")
        _mark_events(ax, run, run.started_at)
        ax.set_title(f"rollout of {run.candidate}", fontsize=10)
        ax.set_xlabel("seconds since the rollout started")
        ax.set_ylabel(label)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_rollback(run: RolloutRun, path: Path) -> None:
    """The bad candidate's answers and safety incidents, and the moment it was rolled back."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10, 3.4))
    xs = [c.at - run.started_at for c in run.counts]
    answers = [c.answers for c in run.counts]
    ax.step(xs, answers, where="post", linewidth=4, alpha=0.5, label=f"{run.candidate}: answers")
    ax.step(
        xs, [c.incidents for c in run.counts], where="post", color="tab:red", linestyle="--",
        label="safety incidents among them",
    )  # fmt: skip
    _mark_events(ax, run, run.started_at)
    rollback = next((e for e in run.events if e["kind"] == "rolled_back"), None)
    if rollback is not None:
        ax.text(
            0.01, 0.97, f"rolled back: {rollback['reason']}", transform=ax.transAxes,
            fontsize=8, va="top", wrap=True,
        )  # fmt: skip
    ax.set_xlabel("seconds since the rollout started")
    ax.set_ylabel("since the rollout started")
    ax.set_title(f"The rollback moment: {run.candidate}")
    ax.legend(loc="center right", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# --- words ----------------------------------------------------------------------------------


def outcome(run: RolloutRun) -> str:
    minutes, seconds = divmod(int(run.ended_at - run.started_at), 60)
    return f"{run.candidate}: {run.final['phase']} after {minutes}m{seconds:02d}s"


def summary(result: DemoResult) -> list[str]:
    lines = [f"demo finished in {result.elapsed_s / 60:.1f} min"]
    for run in result.runs:
        lines.append(f"  {outcome(run)}")
        steps = [e["to_step"] for e in run.events if e["kind"] in ("started", "advanced")]
        lines.append(f"    steps: {' -> '.join(steps)}")
        if run.final["phase"] != "promoted":
            lines.append(f"    reason: {run.final['reason']}")
    lines.append(
        f"  unsafe answers served to users: {result.unsafe_served:.0f} "
        f"(caught in mirrored copies: {result.unsafe_caught:.0f})"
    )
    for figures in result.users:
        lines.append(
            f"  users, {figures.name:<22} {figures.requests:>6} requests, "
            f"{figures.failures} failed, p95 {figures.p95_ms:.0f} ms"
        )
    return lines


def _table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _events_table(run: RolloutRun) -> str:
    rows = [
        (
            f"{e['at'] - run.started_at:.1f} s", e["kind"], e["actor"],
            f"{e['from_step']} -> {e['to_step']}", f"{e['to_weight']:g}%", e["reason"],
        )
        for e in run.events
    ]  # fmt: skip
    return _table(("at", "event", "by", "step", "weight", "reason"), rows)


_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
td, th { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; vertical-align: top; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f6f6f6; padding: 0.8em; font-size: 0.85em; }
"""

PLOTS = {
    "weights.png": "Weights over time",
    "latency.png": "p95 latency per variant",
    "errors.png": "Error rate per variant",
    "satisfaction.png": "Satisfaction per variant",
    "rollback.png": "The rollback moment",
}


def page(result: DemoResult) -> str:
    parts = [
        "<!doctype html><meta charset='utf-8'><title>rollgate demo report</title>",
        f"<style>{_STYLE}</style><h1>rollgate demo report</h1>",
        "<pre>" + html.escape("\n".join(summary(result))) + "</pre>",
    ]
    parts += [f"<h2>{html.escape(title)}</h2><img src='{name}'>" for name, title in PLOTS.items()]
    for run in result.runs:
        plan = yaml.safe_dump(run.plan.model_dump(mode="json"), sort_keys=False)
        parts += [
            f"<h2>{html.escape(outcome(run))}</h2>",
            _events_table(run),
            "<details><summary>plan</summary><pre>" + html.escape(plan) + "</pre></details>",
        ]
    rows = [(f.name, f.requests, f.failures, f.median_ms, f.p95_ms) for f in result.users]
    parts += [
        "<h2>What the users saw (locust)</h2>",
        _table(("request [variant]", "requests", "failures", "median ms", "p95 ms"), rows),
    ]
    return "\n".join(parts)


def write_report(directory: Path, result: DemoResult) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    t0 = result.runs[0].started_at
    plot_weights(result.runs, t0, directory / "weights.png")
    plot_per_variant(result.runs, "latency_p95_s", "p95 latency (s)", 1, directory / "latency.png")
    plot_per_variant(result.runs, "error_rate", "error rate (%)", 100, directory / "errors.png")
    plot_per_variant(
        result.runs, "mean_score", "mean score (points of 100)", 1, directory / "satisfaction.png"
    )
    plot_rollback(result.runs[-1], directory / "rollback.png")
    index = directory / "index.html"
    index.write_text(page(result))
    return index
