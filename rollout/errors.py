"""Errors of the control plane, each with the HTTP status the admin API answers with.

RolloutError
├── InvalidPlan        422  the plan names an unknown route or backend
├── RolloutNotFound    404  no rollout on that route
├── CommandRejected    409  the command does not apply in the rollout's phase
├── RolloutInProgress  409  a rollout is already active on the route
├── AdapterUnavailable 502  a replica of the candidate's pool could not load its adapter
└── StoreError         503  the store could not be read or written
    └── Conflict       409  the rollout changed since it was read (compare-and-swap lost)
        └── LeaseLost  409  a controller's write after its lease passed to another
"""

from __future__ import annotations


class RolloutError(Exception):
    status = 500


class InvalidPlan(RolloutError):
    status = 422


class RolloutNotFound(RolloutError):
    status = 404


class CommandRejected(RolloutError):
    status = 409


class RolloutInProgress(RolloutError):
    status = 409


class AdapterUnavailable(RolloutError):
    status = 502


class StoreError(RolloutError):
    status = 503


class Conflict(StoreError):
    status = 409


class LeaseLost(Conflict):
    status = 409
