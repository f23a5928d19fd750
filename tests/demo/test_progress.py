"""The demo's live progress: a rollout view rendered as lines, redrawn or printed on change."""

from __future__ import annotations

import io

from rollout.demo.progress import Board, render


def check(name: str, metric: str, status: str, reason: str, **figures) -> dict:
    samples = {"candidate_samples": 40.0, "stable_samples": 760.0}
    return {"name": name, "metric": metric, "status": status, "reason": reason, **samples,
            **figures}  # fmt: skip


def view(**changes) -> dict:
    base = {
        "route": "support",
        "phase": "running",
        "step": 1,
        "step_label": "5%",
        "steps": ["shadow", "5%", "10%", "25%", "50%", "100%"],
        "weight_percent": 5.0,
        "stable": {"name": "base"},
        "candidate": {"name": "acme-voice"},
        "hold": None,
        "reason": "",
        "checks": [
            check("error-rate", "error_rate", "pass", "0 errors", candidate=0.0, stable=0.01),
            check("latency-p95", "latency_p95", "inconclusive", "waiting", candidate=0.52,
                  stable=0.41),
            check("satisfaction", "satisfaction", "pass", "better", candidate=100.0, stable=70.0,
                  candidate_samples=20.0, stable_samples=380.0),
            check("safety", "safety", "pass", "no incident in 40 candidate answers"),
        ],
    }  # fmt: skip
    return base | changes


def test_render_shows_phase_weight_per_variant_figures_and_every_check() -> None:
    lines = render(view(), elapsed_s=83)
    assert lines[0] == "acme-voice on support: running, step 2/6 (5%), weight 5%  [01:23]"
    stable = next(line for line in lines if line.strip().startswith("base (stable)"))
    candidate = next(line for line in lines if line.strip().startswith("acme-voice (candidate)"))
    assert stable.split()[2:] == ["760", "1.0%", "0.410s", "70.0"]
    assert candidate.split()[2:] == ["40", "0.0%", "0.520s", "100.0"]
    assert "    .. latency-p95    waiting" in lines
    assert "    ok safety         no incident in 40 candidate answers" in lines


def test_render_names_the_shadow_role_and_the_reason_of_a_rollback() -> None:
    rolled_back = view(
        phase="rolled_back", step=0, step_label="shadow", weight_percent=0.0,
        reason="safety: 1 safety incident(s) in the candidate's answers",
        checks=[check("safety", "safety", "fail", "1 safety incident(s)")],
    )  # fmt: skip
    lines = render(rolled_back, elapsed_s=5)
    assert any(line.strip().startswith("acme-voice (shadow)") for line in lines)
    assert "  FAIL safety         1 safety incident(s)" in lines
    assert lines[-1] == "  rolled_back: safety: 1 safety incident(s) in the candidate's answers"


class Tty(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_board_redraws_in_place() -> None:
    out = Tty()
    board = Board(out)
    board.show(["a", "b"])
    board.show(["c", "d", "e"])
    assert out.getvalue() == "a\nb\n\x1b[2F\x1b[Jc\nd\ne\n"
    board.settle(["c", "d", "e"])
    board.show(["f"])  # below the settled lines, not over them
    assert out.getvalue().endswith("c\nd\ne\nf\n")


def test_into_a_file_the_board_prints_a_line_per_change_and_the_final_details() -> None:
    out = io.StringIO()
    board = Board(out)
    for elapsed in (1, 2):
        board.show(render(view(), elapsed))
    board.show(render(view(step=2, step_label="10%", weight_percent=10.0), 3))
    final = render(view(phase="promoted", reason="every check passed"), 4)
    board.show(final)
    board.settle(final)
    printed = out.getvalue().splitlines()
    assert [line.split(",")[1] for line in printed[:3]] == [
        " step 2/6 (5%)",
        " step 3/6 (10%)",
        " step 2/6 (5%)",
    ]
    assert printed[3:] == final[1:]
