"""The demo's rollout plans: the default plan's shape, with steps short enough to watch."""

from __future__ import annotations

from rollout.plan import RolloutPlan

ROUTE = "support"
BACKEND = "vllm"
SHADOW_SAMPLE = 0.5  # every mirrored copy is a second generation on the same two cores

# The default triggers, but one: on the CPU build a LoRA adapter costs measurably more
# per token than the base model (more so on a loaded 2-core machine), so a healthy
# adapter's p95 can exceed the base's by more than 20%, a real regression the default
# plan rightly refuses. The demo allows +100%; a GPU deployment keeps the default.
CPU_CHECKS = (
    {"name": "error-rate", "metric": "error_rate", "threshold": 0.10},
    {"name": "latency-p95", "metric": "latency_p95", "threshold": 1.0},
    {"name": "satisfaction", "metric": "satisfaction", "threshold": 5},
    {"name": "safety", "metric": "safety"},
)


def demo_plan(candidate: str, *, step_s: float, min_requests: int) -> RolloutPlan:
    """shadow -> 5 -> 10 -> 25 -> 50 -> 100%, each step `step_s` long at least."""
    quick = {"min_duration_s": step_s, "min_requests": min_requests}
    return RolloutPlan.model_validate({
        "route": ROUTE,
        "candidate": {"name": candidate, "backend": BACKEND, "model": candidate},
        "steps": [
            {"kind": "shadow", "sample": SHADOW_SAMPLE, **quick},
            *({"kind": "weight", "percent": p, **quick} for p in (5, 10, 25, 50, 100)),
        ],
        "checks": CPU_CHECKS,
        "min_samples": min_requests,
        "evaluation_interval_s": 2,
        "inconclusive_limit_s": 120,
    })  # fmt: skip
