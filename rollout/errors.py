"""Errors of the control plane, each with the HTTP status the admin API answers with.

RolloutError
├── InvalidPlan          422  the plan names an unknown route or backend
├── PlanTooLarge         413  a plan over MAX_PLAN_BYTES, refused before it is parsed
├── RolloutNotFound      404  no rollout on that route
├── RolloutUnreadable    409  the stored rollout cannot be read back (quarantined): delete it
├── CommandRejected      409  the command does not apply in the rollout's phase
├── RolloutInProgress    409  a rollout is already active on the route
├── AdapterUnavailable   502  a replica of the candidate's pool could not load its adapter
└── StoreError           503  the store could not be read or written
    ├── Unstorable       500  a record that would not read back (inf, nan): refused, not written
    └── Conflict         409  the rollout changed since it was read (compare-and-swap lost)
        └── LeaseLost    409  a controller's write after its lease passed to another

`RolloutUnreadable` is a 409, not a 500 or 503: nothing is wrong with the server
and asking again will not help; the stored state conflicts with the request, and
the client can resolve it (`DELETE /admin/rollouts/{route}`).
"""

from __future__ import annotations


class RolloutError(Exception):
    status = 500


class InvalidPlan(RolloutError):
    status = 422


class PlanTooLarge(RolloutError):
    status = 413


class RolloutNotFound(RolloutError):
    status = 404


class RolloutUnreadable(RolloutError):
    """`revision` is the stored one, so the record can still be deleted."""

    status = 409

    def __init__(self, route: str, revision: int, error: str) -> None:
        super().__init__(
            f"the stored rollout of route {route!r} (revision {revision}) cannot be read: "
            f"{error}; delete it (rollgate delete {route}) to start the route afresh"
        )
        self.route, self.revision, self.error = route, revision, error


class CommandRejected(RolloutError):
    status = 409


class RolloutInProgress(RolloutError):
    status = 409


class AdapterUnavailable(RolloutError):
    status = 502


class StoreError(RolloutError):
    status = 503


class Unstorable(StoreError):
    status = 500


class Conflict(StoreError):
    status = 409


class LeaseLost(Conflict):
    status = 409
