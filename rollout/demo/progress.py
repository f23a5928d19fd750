"""Live progress in the terminal: a rollout as the admin API shows it, in a few lines.

`render` is pure (a rollout view in, lines out); `Board` redraws those lines in
place on a terminal and prints one line per change when stdout is a file or pipe.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from typing import Any, TextIO

View = Mapping[str, Any]  # a rollout as GET /admin/rollouts/{route} returns it

_MARK = {"pass": "ok", "fail": "FAIL", "inconclusive": "..", "skipped": "--"}


def _check(view: View, metric: str) -> Mapping[str, Any] | None:
    return next((c for c in view.get("checks", ()) if c["metric"] == metric), None)


def _number(value: float | None, fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def variant_rows(view: View) -> list[str]:
    """Per variant: requests in this step, error rate, p95 latency, mean user score."""
    errors = _check(view, "error_rate") or {}
    latency = _check(view, "latency_p95") or {}
    score = _check(view, "satisfaction") or {}
    rows = [f"  {'':<22}{'requests':>9}{'errors':>9}{'p95':>10}{'score':>8}"]
    candidate_role = "shadow" if view.get("step_label") == "shadow" else "candidate"
    for role, name in (
        ("stable", view["stable"]["name"]),
        ("candidate", view["candidate"]["name"]),
    ):
        label = f"{name} ({candidate_role if role == 'candidate' else role})"
        error_rate = errors.get(role)
        p95 = latency.get(role)
        # Every check counts the step's requests; at 100% only safety still does.
        requests = max((c[f"{role}_samples"] for c in view.get("checks", ())), default=0)
        rows.append(
            f"  {label:<22}{requests:>9.0f}"
            f"{_number(None if error_rate is None else 100 * error_rate, '.1f'):>8}%"
            f"{_number(p95, '.3f'):>9}s{_number(score.get(role), '.1f'):>8}"
        )
    return rows


def render(view: View, elapsed_s: float) -> list[str]:
    steps: Sequence[str] = view["steps"]
    minutes, seconds = divmod(int(elapsed_s), 60)
    head = (
        f"{view['candidate']['name']} on {view['route']}: {view['phase']}, "
        f"step {min(view['step'] + 1, len(steps))}/{len(steps)} ({view['step_label']}), "
        f"weight {view['weight_percent']:g}%  [{minutes:02d}:{seconds:02d}]"
    )
    lines = [head, *variant_rows(view)]
    for check in view.get("checks", ()):
        mark = _MARK.get(check["status"], check["status"])
        lines.append(f"  {mark:>4} {check['name']:<14} {check['reason']}")
    if view.get("hold"):
        lines.append(f"  held: {view['hold'].get('reason', '')}")
    if view["phase"] != "running" and view.get("reason"):
        lines.append(f"  {view['phase']}: {view['reason']}")
    return lines


class Board:
    """Shows the latest lines: redrawn in place on a terminal, else one line per change."""

    def __init__(self, out: TextIO = sys.stdout) -> None:
        self._out = out
        self._tty = out.isatty()
        self._drawn = 0
        self._last_head = ""

    def show(self, lines: list[str]) -> None:
        if self._tty:
            # Up to the first line drawn last time, clear to the end, draw again.
            up = f"\x1b[{self._drawn}F\x1b[J" if self._drawn else ""
            self._out.write(up + "\n".join(lines) + "\n")
            self._drawn = len(lines)
        else:
            head = lines[0].rsplit("  [", 1)[0]  # without the clock: print on changes only
            if head != self._last_head:
                self._out.write(lines[0] + "\n")
                self._last_head = head
        self._out.flush()

    def settle(self, lines: list[str]) -> None:
        """Keeps the final state on screen (after its `show`); the next `show` starts below."""
        if not self._tty:
            self._out.write("\n".join(lines[1:]) + "\n")  # `show` printed the head
        self._drawn = 0
        self._last_head = ""
