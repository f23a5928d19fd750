"""A rollout as stored: plan (spec), status (facts), evidence, and the traffic derived from them.

>>> status, _ = start("r1", plan, now=0.0, actor="sre")
>>> rollout = Rollout(plan, Variant("base", "local", "tiny-llama"), status, created_at=0.0)
>>> rollout.traffic().weight_bp   # shadow first: no user sees the candidate
0
>>> Rollout.from_json(rollout.to_json()) == rollout
True

What is written reads back: `to_json` refuses (`Unstorable`) a record holding a
float JSON cannot (inf, nan: pydantic would write null, which no float field
reads back).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, fields, is_dataclass, replace

from pydantic import BaseModel, TypeAdapter
from pydantic_core import PydanticSerializationError

from rollout.analysis import Verdict
from rollout.errors import Unstorable
from rollout.evidence import Evidence
from rollout.machine import AuditEvent, Phase, RolloutStatus, shadow_sample, weight_bp
from rollout.plan import RolloutPlan
from rollout.traffic import RouteTraffic, TrafficPlan, Variant


@dataclass(frozen=True, slots=True)
class Rollout:
    plan: RolloutPlan
    stable: Variant  # the route's stable variant when the rollout was created
    status: RolloutStatus
    created_at: float
    evidence: Evidence = field(default_factory=Evidence)
    last_verdict: Verdict | None = None
    evaluated_until: float | None = None  # the end of the last measured window
    revision: int = 0  # the store's compare-and-swap counter; 0 = never stored

    @property
    def route(self) -> str:
        return self.plan.route

    @property
    def rollout_id(self) -> str:
        return self.status.rollout_id

    @property
    def candidate(self) -> Variant:
        return self.plan.candidate.variant()

    def with_status(self, status: RolloutStatus) -> Rollout:
        """A new attempt (retry) starts its evidence afresh; a new step its step window."""
        evidence = self.evidence
        if status.attempt != self.status.attempt:
            evidence = Evidence()
        elif status.step != self.status.step:
            evidence = evidence.next_step()
        return replace(self, status=status, evidence=evidence)

    def traffic(self) -> RouteTraffic:
        """What the gateway routes by. After promotion the candidate is the route's stable."""
        if self.status.phase is Phase.PROMOTED:
            return RouteTraffic(self.route, self.candidate)
        if self.status.phase is Phase.ABORTED:
            return RouteTraffic(self.route, self.stable)
        # Rolled back: weight 0 but the candidate stays named (and its adapter loaded), so a
        # retry with the same rollout id brings the same users back at once.
        return RouteTraffic(
            self.route,
            self.stable,
            self.candidate,
            rollout_id=self.rollout_id,
            weight_bp=weight_bp(self.status, self.plan),
            shadow_sample=shadow_sample(self.status, self.plan),
        )

    def to_json(self) -> bytes:
        return _dump(_ROLLOUT, self, f"the rollout of route {self.route!r}")

    @classmethod
    def from_json(cls, data: bytes | str) -> Rollout:
        return _ROLLOUT.validate_json(data)


def traffic_plan(base: TrafficPlan, rollouts: Iterable[Rollout], version: int) -> TrafficPlan:
    """The configured routes with each rollout's traffic laid over its route."""
    routes = dict(base.routes)
    for rollout in rollouts:
        if rollout.route in routes:  # a route removed from the config is not resurrected
            routes[rollout.route] = rollout.traffic()
    return TrafficPlan(routes, version)


_ROLLOUT = TypeAdapter(Rollout)
_EVENT = TypeAdapter(AuditEvent)


def event_to_json(event: AuditEvent) -> bytes:
    return _dump(_EVENT, event, f"the {event.kind.value} event of route {event.route!r}")


def non_finite(value: object, path: str = "") -> str | None:
    """The dotted path of the first float in `value` that is inf or nan; None if none is.

    >>> non_finite({"tails": ({"hits": 1.0}, {"trials": math.inf})})
    'tails.1.trials'
    """
    if isinstance(value, float):
        return None if math.isfinite(value) else path
    if isinstance(value, BaseModel):
        children: Iterable[tuple[object, object]] = (
            (name, getattr(value, name)) for name in type(value).model_fields
        )
    elif is_dataclass(value):
        children = ((f.name, getattr(value, f.name)) for f in fields(value))
    elif isinstance(value, Mapping):
        children = value.items()
    elif isinstance(value, tuple | list):
        children = enumerate(value)
    else:
        return None
    for key, child in children:
        found = non_finite(child, f"{path}.{key}" if path else str(key))
        if found is not None:
            return found
    return None


def _dump(adapter: TypeAdapter, value: object, what: str) -> bytes:
    where = non_finite(value)
    if where is not None:
        raise Unstorable(f"{what} was not stored: {where} is not a finite number")
    try:
        return adapter.dump_json(value)
    except PydanticSerializationError as exc:
        raise Unstorable(f"{what} was not stored: {exc}") from exc


def event_from_json(data: bytes | str) -> AuditEvent:
    return _EVENT.validate_json(data)
