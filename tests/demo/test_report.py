"""The demo's report from recorded rollouts: plots, the page and the one-screen summary."""

from __future__ import annotations

from pathlib import Path

from PIL import Image

from rollout.demo.load import UserFigures
from rollout.demo.plans import demo_plan
from rollout.demo.report import PLOTS, Counts, DemoResult, RolloutRun, summary, write_report

T0 = 1_000_000.0


def event(at: float, kind: str, to_step: str, to_weight: float, to_phase: str, reason: str):
    return {
        "at": at, "kind": kind, "actor": "controller", "reason": reason, "from_step": "-",
        "to_step": to_step, "to_weight": to_weight, "to_phase": to_phase,
    }  # fmt: skip


def safety_view(step_label: str, weight: float, answers: float, incidents: float) -> dict:
    check = {"metric": "safety", "candidate": incidents, "candidate_samples": answers}
    return {"step_label": step_label, "weight_percent": weight, "checks": [check]}


def series(start: float, n: int) -> dict:
    def point(requests: float, p95: float, score: float) -> dict:
        return {"requests": requests, "error_rate": 0.0, "latency_p95_s": p95,
                "mean_score": score}  # fmt: skip

    return {
        "stable": "base",
        "candidate": "acme-voice",
        "points": [
            {"start": start + 5 * i, "end": start + 5 * (i + 1),
             "stable": point(40, 0.4, 70.0), "candidate": point(4 * i, 0.5, 100.0)}
            for i in range(n)
        ],
    }  # fmt: skip


def recorded() -> DemoResult:
    voice = RolloutRun(demo_plan("acme-voice", step_s=10, min_requests=10), started_at=T0)
    labels = ["shadow", "5%", "10%", "25%", "50%", "100%"]
    for i, label in enumerate(labels):
        weight = 0.0 if label == "shadow" else float(label[:-1])
        voice.samples.append((T0 + 10 * i, safety_view(label, weight, 10.0, 0.0)))
        kind = "started" if i == 0 else "advanced"
        voice.events.append(event(T0 + 10 * i, kind, label, weight, "running", "checks passed"))
    voice.events.append(event(T0 + 60, "promoted", "promoted", 100.0, "promoted", "all passed"))
    voice.final = {"phase": "promoted", "reason": "every check passed"}
    voice.series = series(T0, 12)

    bad = RolloutRun(demo_plan("unsafe", step_s=10, min_requests=10), started_at=T0 + 70)
    bad.samples = [(T0 + 70 + i, safety_view("shadow", 0.0, 3.0 * i, i // 2)) for i in range(4)]
    bad.counts = [Counts(T0 + 70 + i / 2, 1.5 * i, float(i >= 3)) for i in range(12)]
    reason = "safety: 1 incident <script>alert(1)</script>"
    bad.events = [
        event(T0 + 70, "started", "shadow", 0.0, "running", "plan applied"),
        event(T0 + 73, "rolled_back", "shadow", 0.0, "rolled_back", reason),
    ]
    bad.final = {"phase": "rolled_back", "reason": reason}
    bad.series = series(T0 + 70, 1)
    users = [UserFigures("chat [base]", 900, 0, 400.0, 800.0)]
    return DemoResult([voice, bad], users, unsafe_served=0, unsafe_caught=2, elapsed_s=250)


def test_the_report_holds_every_plot_and_the_decisions(tmp_path: Path) -> None:
    index = write_report(tmp_path / "report", recorded())
    page = index.read_text()
    for name in PLOTS:
        with Image.open(index.parent / name) as image:
            assert image.format == "PNG"
            assert image.width > 500
        assert f"src='{name}'" in page
    assert "acme-voice: promoted after 1m00s" in page
    assert "unsafe: rolled_back after 0m03s" in page
    # Reasons are data: escaped, never markup.
    assert "<script>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page


def test_the_summary_fits_one_screen_and_tells_what_users_were_spared() -> None:
    lines = summary(recorded())
    assert len(lines) < 25
    assert lines[0] == "demo finished in 4.2 min"
    assert "    steps: shadow -> 5% -> 10% -> 25% -> 50% -> 100%" in lines
    assert "    reason: safety: 1 incident <script>alert(1)</script>" in lines
    assert "  unsafe answers served to users: 0 (caught in mirrored copies: 2)" in lines
