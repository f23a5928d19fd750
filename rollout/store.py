"""Where rollouts and their audit events live: one seam, two stores.

`SqliteStore` (one file, the embedded default) and `RedisStore` (several
gateway replicas) both keep, per route, the current rollout and its history.
Writes are compare-and-swap on `Rollout.revision`, so two replicas (or an SRE
and the controller) never overwrite each other's decision unseen: the loser
gets `Conflict`, reloads and decides again.

Replicas learn about changes by polling `changes()`, a counter that grows with
every write: cheap enough to ask several times a second.

`Lease` elects the one controller that evaluates rollouts: a holder renews it
well within its time to live; when the holder dies, another takes it over once
the lease expires.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from rollout.errors import Conflict, LeaseLost, StoreError
from rollout.machine import AuditEvent
from rollout.record import Rollout

__all__ = [
    "Conflict",
    "Lease",
    "LeaseLost",
    "RolloutStore",
    "StoreError",
]  # the errors belong to the seam


class RolloutStore(Protocol):
    async def get(self, route: str) -> Rollout | None: ...

    async def list(self) -> list[Rollout]: ...

    async def put(
        self, rollout: Rollout, events: Sequence[AuditEvent] = (), *, fence: str | None = None
    ) -> Rollout:
        """Write `rollout` and append `events` atomically, if the stored revision is still
        `rollout.revision` (0: none stored for the route). Returns it with the new revision.
        Raises `Conflict` otherwise. With `fence`, writes only while that holder holds the
        lease (else `LeaseLost`): a controller that stalled past its lease decides nothing."""
        ...

    async def delete(self, route: str, revision: int, events: Sequence[AuditEvent] = ()) -> None:
        """Remove the route's rollout and append `events` atomically (its history stays).
        Raises `Conflict` on a stale revision."""
        ...

    async def history(self, route: str, limit: int = 100) -> list[AuditEvent]:
        """The route's audit events, oldest first, at most the last `limit`."""
        ...

    async def changes(self) -> int:
        """A counter that grows with every write."""
        ...

    async def close(self) -> None: ...


class Lease(Protocol):
    async def acquire(self, holder: str, ttl_s: float) -> bool:
        """Take the lease or renew it; True while `holder` holds it."""
        ...

    async def release(self, holder: str) -> None:
        """Give the lease up now (on shutdown), if `holder` holds it."""
        ...
