"""Where rollouts and their audit events live: one seam, two stores.

`SqliteStore` (one file, the embedded default) and `RedisStore` (several
gateway replicas) both keep, per route, the current rollout and its history.
Writes are compare-and-swap on `Rollout.revision`, so two replicas (or an SRE
and the controller) never overwrite each other's decision unseen: the loser
gets `Conflict`, reloads and decides again.

Replicas learn about changes by polling `changes()`, a counter that grows with
every write: cheap enough to ask several times a second.

A stored record that does not read back (written by hand, or by an older
version under other rules) is quarantined, never fatal: `list()` answers the
rollouts that read back and, apart, each quarantined record with why; nothing
routes by it or evaluates it (its route is served by its configured stable) and
`delete` removes it at the revision listed. `get` raises `RolloutUnreadable`.
Both stores parse records off the event loop, with `read_rollout` and
`read_listing`, so they quarantine alike.

`Lease` elects the one controller that evaluates rollouts: a holder renews it
well within its time to live; when the holder dies, another takes it over once
the lease expires.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import ValidationError

from rollout.errors import Conflict, LeaseLost, RolloutUnreadable, StoreError, Unstorable
from rollout.machine import AuditEvent
from rollout.record import Rollout

__all__ = [
    "Conflict",
    "Lease",
    "LeaseLost",
    "Listing",
    "Quarantined",
    "RolloutStore",
    "RolloutUnreadable",
    "StoreError",
    "Unstorable",
]  # the errors belong to the seam

MAX_ERROR_CHARS = 500  # of why a record is quarantined: the API and logs show it


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A stored rollout that does not read back, at the store's revision (to delete it)."""

    route: str
    revision: int
    error: str


@dataclass(frozen=True, slots=True)
class Listing:
    rollouts: list[Rollout]  # that read back, by route
    quarantined: list[Quarantined]  # that do not, by route


class RolloutStore(Protocol):
    async def get(self, route: str) -> Rollout | None:
        """The route's rollout, None if there is none; `RolloutUnreadable` if it does not
        read back."""
        ...

    async def list(self) -> Listing:
        """Every stored rollout: those that read back, and apart those that do not."""
        ...

    async def put(
        self, rollout: Rollout, events: Sequence[AuditEvent] = (), *, fence: str | None = None
    ) -> Rollout:
        """Write `rollout` and append `events` atomically, if the stored revision is still
        `rollout.revision` (0: none stored for the route). Returns it with the new revision.
        Raises `Conflict` otherwise. With `fence`, writes only while that holder holds the
        lease (else `LeaseLost`): a controller that stalled past its lease decides nothing.
        Raises `Unstorable`, writing nothing, for what would not read back (inf, nan)."""
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


def read_rollout(route: str, revision: int, data: bytes | str) -> Rollout:
    """A stored record as the route's rollout at the store's `revision` (the store's own
    counter, not the copy in the JSON), or `RolloutUnreadable` saying why not."""
    try:
        rollout = Rollout.from_json(data)
    except ValueError as exc:  # pydantic's ValidationError included: bad JSON, a bad field
        raise RolloutUnreadable(route, revision, _why(exc)) from exc
    if rollout.route != route:
        raise RolloutUnreadable(route, revision, f"it holds the route {rollout.route!r}")
    return replace(rollout, revision=revision)


def read_listing(rows: Iterable[tuple[str, int, bytes | str]]) -> Listing:
    """(route, revision, json) rows as the rollouts that read back and those quarantined."""
    rollouts, quarantined = [], []
    for route, revision, data in sorted(rows, key=lambda row: row[0]):
        try:
            rollouts.append(read_rollout(route, revision, data))
        except RolloutUnreadable as exc:
            quarantined.append(Quarantined(route, revision, exc.error))
    return Listing(rollouts, quarantined)


def _why(exc: ValueError) -> str:
    """One line, short: the fields that failed and how (not the stored values)."""
    if isinstance(exc, ValidationError):
        errors = exc.errors(include_url=False, include_input=False)
        why = "; ".join(
            f"{'.'.join(map(str, e['loc'])) or 'record'}: {e['msg']}" for e in errors[:3]
        )
        if len(errors) > 3:
            why += f"; and {len(errors) - 3} more"
    else:
        why = str(exc)
    return why[:MAX_ERROR_CHARS]
