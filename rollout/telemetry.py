"""The control plane's own Prometheus metrics: phase, step, weight, checks, decisions, leadership.

Every replica exports the state it routes by (dashboards take `max by (route)`);
decisions are counted by the replica whose controller made them.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

from prometheus_client import CollectorRegistry, Counter, Gauge

from rollout.machine import CONTROLLER, AuditEvent, EventKind, Phase, weight_bp
from rollout.record import Rollout

CHECK_VALUES = {"pass": 0, "skipped": 0, "inconclusive": 1, "fail": 2}
ACTOR_TYPES = ("controller", "sre")


class ControlPlaneMetrics:
    def __init__(self, registry: CollectorRegistry) -> None:
        def gauge(name: str, doc: str, labels: Sequence[str]) -> Gauge:
            return Gauge(f"rollgate_{name}", doc, labels, registry=registry)

        self.phase = gauge(
            "rollout_phase", "1 for the rollout's current phase.", ("route", "phase")
        )
        self.step = gauge("rollout_step", "Index of the current step.", ("route", "rollout_id"))
        self.weight = gauge(
            "rollout_candidate_weight_percent", "The candidate's weight.", ("route", "candidate")
        )
        self.check = gauge(
            "rollout_check_status",
            "Each check's last verdict: 0 pass or skipped, 1 inconclusive, 2 fail.",
            ("route", "check"),
        )
        self.transitions = Counter(
            "rollgate_rollout_transitions_total",
            "Rollout transitions, by kind (advanced, rolled_back, ...) and actor type.",
            ("route", "kind", "by"),
            registry=registry,
        )
        self.quarantined = gauge(
            "rollout_quarantined",
            "1 for a route whose stored rollout does not read back (served by its stable).",
            ("route",),
        )
        self.leader = gauge("controller_leader", "1 while this replica's controller leads.", ())
        self.routed_at = gauge(
            "routing_published_timestamp_seconds",
            "When this replica's routing last changed (weights, shadow, variants).",
            (),
        )

    def show(self, rollouts: Iterable[Rollout], quarantined: Iterable[str] = ()) -> None:
        """The rollouts routed by, and the routes whose record is quarantined."""
        for family in (self.phase, self.step, self.weight, self.check, self.quarantined):
            family.clear()
        for route in quarantined:
            self.quarantined.labels(route).set(1)
        for r in rollouts:
            for phase in Phase:
                self.phase.labels(r.route, phase.value).set(int(r.status.phase is phase))
            self.step.labels(r.route, r.rollout_id).set(r.status.step)
            self.weight.labels(r.route, r.candidate.name).set(weight_bp(r.status, r.plan) / 100)
            for result in r.last_verdict.results if r.last_verdict else ():
                self.check.labels(r.route, result.name).set(CHECK_VALUES[result.status.value])
            # At 0 before the first of each kind, so increase() sees the first rollback.
            for kind in EventKind:
                for by in ACTOR_TYPES:
                    self.transitions.labels(r.route, kind.value, by)

    def count(self, events: Iterable[AuditEvent]) -> None:
        for e in events:
            by = ACTOR_TYPES[0] if e.actor == CONTROLLER else ACTOR_TYPES[1]
            self.transitions.labels(e.route, e.kind.value, by).inc()
