"""What the control plane asks of the serving fleet: adapters on every replica, and headroom.

The gateway implements it over its replica pools (`gateway.adapters.AdapterFleet`);
a control plane without a fleet (`NO_FLEET`) leaves adapters to whoever runs
vLLM and never holds a step for capacity.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rollout.record import Rollout
from rollout.traffic import TrafficPlan


class Fleet(Protocol):
    async def prepare(self, backend: str, model: str, adapter: str) -> None:
        """Validate the adapter and load it as `model` on every available replica of
        `backend` now (one that is down gets it when it is back).

        Raises `InvalidPlan` for an adapter that must not be served and
        `AdapterUnavailable` when a replica could not load it.
        """
        ...

    async def follow(self, plan: TrafficPlan, rollouts: Sequence[Rollout]) -> None:
        """The rollouts as stored now and the routing they make: keep their adapters
        loaded wherever they are missing, unload those nothing uses any more. Awaited
        before `plan` is published."""
        ...

    def no_headroom(self, backend: str) -> str | None:
        """Why `backend`'s pool cannot take more load now; None when it can."""
        ...


class NoFleet:
    async def prepare(self, backend: str, model: str, adapter: str) -> None:
        return None

    async def follow(self, plan: TrafficPlan, rollouts: Sequence[Rollout]) -> None:
        return None

    def no_headroom(self, backend: str) -> str | None:
        return None


NO_FLEET = NoFleet()
