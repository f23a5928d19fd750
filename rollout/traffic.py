"""The traffic plan: what the control plane publishes and the gateway routes by.

Pure data. The gateway holds the latest plan in memory and never asks the
store or Prometheus on the request path.

    >>> stable = Variant(name="base", backend="local", model="tiny-llama")
    >>> canary = Variant(name="support-v2", backend="local", model="support-v2")
    >>> RouteTraffic("support", stable, canary, rollout_id="r1", weight_bp=500).weight_percent
    5.0
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum

FULL_WEIGHT_BP = 10_000  # weights are basis points: 10,000 = 100%


class Role(StrEnum):
    STABLE = "stable"
    CANDIDATE = "candidate"


@dataclass(frozen=True, slots=True)
class Variant:
    """A servable target: the model name `model` served by backend `backend`."""

    name: str
    backend: str
    model: str


@dataclass(frozen=True, slots=True)
class RouteTraffic:
    """How one route splits its traffic right now."""

    route: str
    stable: Variant
    candidate: Variant | None = None
    rollout_id: str = ""
    weight_bp: int = 0
    shadow_sample: float = 0.0  # share of requests mirrored to the candidate

    def __post_init__(self) -> None:
        if not 0 <= self.weight_bp <= FULL_WEIGHT_BP:
            raise ValueError(f"route {self.route!r}: weight_bp must be 0..{FULL_WEIGHT_BP}")
        if not 0.0 <= self.shadow_sample <= 1.0:
            raise ValueError(f"route {self.route!r}: shadow_sample must be 0..1")
        if self.candidate is None and (self.weight_bp or self.shadow_sample):
            raise ValueError(f"route {self.route!r}: a weight or shadow needs a candidate")

    @property
    def weight_percent(self) -> float:
        return self.weight_bp / 100

    def variant(self, role: Role) -> Variant:
        if role is Role.CANDIDATE:
            if self.candidate is None:
                raise ValueError(f"route {self.route!r} has no candidate")
            return self.candidate
        return self.stable


@dataclass(frozen=True, slots=True)
class TrafficPlan:
    """Every route's traffic; `version` grows with each publication."""

    routes: Mapping[str, RouteTraffic] = field(default_factory=dict)
    version: int = 0
