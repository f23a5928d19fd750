"""Who may use `/admin`: named admin tokens with a role, separate from client keys.

A viewer reads (rollouts, history, series, shadow pairs) and reviews shadow
pairs blind; an operator also changes rollouts and credentials. The caller's
identity goes on `request.state.admin`: its name is what audit events record.
"""

from __future__ import annotations

from collections.abc import Callable

from starlette.requests import Request

from gateway.chat import bearer
from gateway.keys import Role
from gateway.services import Services

READS = frozenset({"GET", "HEAD"})


def admin_dependency(needed: Role | None) -> Callable[[Request], None]:
    """A FastAPI dependency requiring `needed`; None: a viewer for reads, else an operator."""

    def require(request: Request) -> None:
        services: Services = request.app.state.services
        role = needed or (Role.VIEWER if request.method in READS else Role.OPERATOR)
        peer = request.client.host if request.client else "unknown"
        request.state.admin = services.access.admin(bearer(request), role, peer)

    return require
