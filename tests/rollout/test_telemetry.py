"""The control plane's own metrics, as Prometheus reads them."""

from __future__ import annotations

from prometheus_client import CollectorRegistry

from rollout.machine import CONTROLLER, AuditEvent, EventKind, Phase, start
from rollout.plan import RolloutPlan
from rollout.record import Rollout
from rollout.telemetry import ControlPlaneMetrics
from rollout.traffic import Variant

PLAN = RolloutPlan.model_validate(
    {"route": "support", "candidate": {"name": "v2", "backend": "local", "model": "v2"}}
)


def transitions(registry: CollectorRegistry, kind: str, by: str) -> float | None:
    labels = {"route": "support", "kind": kind, "by": by}
    return registry.get_sample_value("rollgate_rollout_transitions_total", labels)


def test_transition_counters_exist_at_zero_before_their_first_event() -> None:
    registry = CollectorRegistry()
    metrics = ControlPlaneMetrics(registry)
    assert transitions(registry, "rolled_back", "controller") is None
    status, _ = start("r1", PLAN, now=0.0, actor="sre")
    metrics.show([Rollout(PLAN, Variant("base", "local", "base"), status, created_at=0.0)])
    # increase() over a series that appears with its first count misses that count.
    assert transitions(registry, "rolled_back", "controller") == 0
    assert transitions(registry, "aborted", "sre") == 0

    rollback = AuditEvent(
        at=1.0, route="support", rollout_id="r1", attempt=1, kind=EventKind.ROLLED_BACK,
        actor=CONTROLLER, reason="safety", from_phase=Phase.RUNNING,
        to_phase=Phase.ROLLED_BACK, from_step="5%", to_step="5%", from_weight=5, to_weight=0,
    )  # fmt: skip
    metrics.count([rollback])
    assert transitions(registry, "rolled_back", "controller") == 1
    assert transitions(registry, "rolled_back", "sre") == 0
